"""The four text towers of the paper's ablation: model classes, poolings, length limits."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    BertConfig,
    BertModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    GPT2Config,
    GPT2Model,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaModel,
)

#: Pooling names. "cls": last_hidden_state[:, 0] (msclap BERT, the paper's RoBERTa);
#: "pooler": pooler_output, dense + tanh over CLS (LAION-CLAP, transformers ClapModel);
#: "eot-projection": CLIP's pooled end-of-text state through text_projection;
#: "eot": hidden state at the last real token from the attention mask (GPT2-EOT).
POOLINGS = ("cls", "pooler", "eot-projection", "eot")


@dataclass(frozen=True)
class Architecture:
    """What one text tower is built from and how it may be pooled.

    Attributes:
        name: Registry name ("bert", "roberta", "clip", "gpt2-eot").
        model_class: The transformers base model class.
        config_class: Its configuration class.
        poolings: Pooling names this tower supports; the first is the default.
        default_max_length: Longest token sequence when the caller gives none.
        default_pretrained: Hub id used when neither weights nor a config are given.
    """

    name: str
    model_class: type[PreTrainedModel]
    config_class: type[PretrainedConfig]
    poolings: tuple[str, ...]
    default_max_length: int
    default_pretrained: str

    def max_positions(self, config: PretrainedConfig) -> int:
        """Longest token sequence the model's position table can take.

        Args:
            config: The model's configuration.

        Returns:
            The number of usable positions.
        """
        if self.name == "gpt2-eot":
            return int(config.n_positions)
        if self.name == "roberta":
            # RoBERTa numbers positions from pad_token_id + 1, which uses up the first slots.
            return int(config.max_position_embeddings) - int(config.pad_token_id) - 1
        return int(config.max_position_embeddings)

    def embedding_dim(self, config: PretrainedConfig) -> int:
        """Width of the pooled embedding.

        Args:
            config: The model's configuration.

        Returns:
            ``projection_dim`` for CLIP, the hidden size otherwise.
        """
        if self.name == "clip":
            return int(config.projection_dim)
        if self.name == "gpt2-eot":
            return int(config.n_embd)
        return int(config.hidden_size)


ARCHITECTURES: dict[str, Architecture] = {
    "bert": Architecture(
        name="bert",
        model_class=BertModel,
        config_class=BertConfig,
        poolings=("cls", "pooler"),
        default_max_length=100,
        default_pretrained="bert-base-uncased",
    ),
    "roberta": Architecture(
        name="roberta",
        model_class=RobertaModel,
        config_class=RobertaConfig,
        poolings=("cls", "pooler"),
        default_max_length=77,
        default_pretrained="roberta-base",
    ),
    "clip": Architecture(
        name="clip",
        model_class=CLIPTextModelWithProjection,
        config_class=CLIPTextConfig,
        poolings=("eot-projection",),
        default_max_length=77,
        default_pretrained="openai/clip-vit-base-patch32",
    ),
    "gpt2-eot": Architecture(
        name="gpt2-eot",
        model_class=GPT2Model,
        config_class=GPT2Config,
        poolings=("eot",),
        default_max_length=77,
        default_pretrained="gpt2",
    ),
}


def get_architecture(name: str) -> Architecture:
    """Look up a text tower by its registry name.

    Args:
        name: "bert", "roberta", "clip" or "gpt2-eot".

    Returns:
        Its description.

    Raises:
        KeyError: If the name is unknown; the message lists the known names.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(
            f"unknown text architecture {name!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None
