"""Pieces shared by the checkpoint converters: text configs from weights, the converted result.

Converters never build a `ClapModel`: they return a `ConvertedClap` (config, clapkit-named state
dict, tokenizer) that ``ClapModel.from_converted`` assembles, so the model module imports the
converters and never the other way round.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from clapkit.core.config import ClapConfig
from clapkit.core.state_dict import checkpoint_error

__all__ = [
    "ConvertedClap",
    "converted_clap",
    "count_layers",
    "import_transformers",
    "load_audio_weights",
    "text_model_config",
]


@dataclass(frozen=True)
class ConvertedClap:
    """A released checkpoint in clapkit's terms, ready for ``ClapModel.from_converted``.

    Attributes:
        config: the model config (encoders' ``get_config()``, projection, logit clamp).
        state_dict: every weight of the `ClapModel`, clapkit names (``audio_encoder.*``,
            ``text_encoder.*``, ``audio_projection.*``, ``text_projection.*``, ``logit_scale``).
        tokenizer: the text encoder's tokenizer object.
        source: the file (or object) converted, for error messages.
    """

    config: ClapConfig
    state_dict: dict[str, Tensor]
    tokenizer: Any
    source: str


def import_transformers() -> Any:
    """``transformers``, imported on first use: clap-core itself does not depend on it.

    Returns:
        The ``transformers`` module.

    Raises:
        ImportError: naming what to install (the text encoders bring it).
    """
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "converting text weights needs transformers: pip install 'clapkit-core[text]' "
            "(or clapkit-text-encoders)"
        ) from error
    return transformers


def count_layers(state: dict[str, Tensor], pattern: str) -> int:
    """Number of distinct layer indices matching ``pattern`` (a regex with one group)."""
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def text_model_config(kind: str, state: dict[str, Tensor], source: str) -> Any:
    """A transformers config for a BERT / RoBERTa / GPT-2 base model, sized from its weights.

    The head count cannot be read from weights: 64-dimensional heads are assumed (true of
    bert-base, roberta-base and gpt2). Pass your own config to the loader otherwise.

    Args:
        kind: ``"bert"``, ``"roberta"`` or ``"gpt2"``.
        state: the base model's state dict (prefix removed).
        source: the file, for error messages.

    Returns:
        ``BertConfig``, ``RobertaConfig`` or ``GPT2Config``.

    Raises:
        clapkit.audio.CheckpointError: if the weights lack the embedding tables.
        ImportError: naming what to install when transformers is missing.
    """
    transformers = import_transformers()
    try:
        if kind == "gpt2":
            vocab, width = state["wte.weight"].shape
            return transformers.GPT2Config(
                vocab_size=vocab,
                n_positions=state["wpe.weight"].shape[0],
                n_embd=width,
                n_layer=count_layers(state, r"h\.(\d+)\."),
                n_head=max(1, width // 64),
            )
        vocab, width = state["embeddings.word_embeddings.weight"].shape
        common: dict[str, Any] = {
            "vocab_size": vocab,
            "hidden_size": width,
            "num_hidden_layers": count_layers(state, r"encoder\.layer\.(\d+)\."),
            "num_attention_heads": max(1, width // 64),
            "intermediate_size": state["encoder.layer.0.intermediate.dense.weight"].shape[0],
            "max_position_embeddings": state["embeddings.position_embeddings.weight"].shape[0],
            "type_vocab_size": state["embeddings.token_type_embeddings.weight"].shape[0],
        }
    except KeyError as error:
        raise checkpoint_error(f"{source}: the {kind} text weights lack {error}") from error
    if kind == "roberta":
        return transformers.RobertaConfig(
            **common, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2
        )
    return transformers.BertConfig(**common)


def load_audio_weights(
    audio_lib: Any, encoder: nn.Module, state: dict[str, Tensor], *, source: str, prefix: str
) -> None:
    """``clapkit.audio.load_reference_state_dict``, its errors naming the file and key prefix.

    Args:
        audio_lib: the ``clapkit.audio`` module.
        encoder: the audio encoder to fill.
        state: reference-named weights (``prefix`` removed).
        source: the file, for the message.
        prefix: the prefix the keys had in the file.

    Raises:
        clapkit.audio.CheckpointError: for missing, unexpected or mis-shaped keys or a wrong
            filterbank.
    """
    try:
        audio_lib.load_reference_state_dict(encoder, state)
    except ValueError as error:
        raise checkpoint_error(f"{source} (keys under {prefix!r}): {error}") from error


def converted_clap(
    *,
    audio_encoder: Any,
    text_encoder: Any,
    projection: str,
    audio_projection: dict[str, Tensor],
    text_projection: dict[str, Tensor],
    logit_scale: Tensor,
    source: str,
) -> ConvertedClap:
    """The config and full state dict of a model around loaded encoders and projection weights.

    The clamp ``max_logit_scale`` stays 100 unless the checkpoint's trained multiplier is
    larger, in which case it is raised to that value so the released numbers are unchanged.

    Args:
        audio_encoder: loaded audio encoder.
        text_encoder: loaded text encoder.
        projection: ``"msclap"`` or ``"mlp"``.
        audio_projection: clapkit-named projection weights.
        text_projection: clapkit-named projection weights.
        logit_scale: the stored ``ln`` multiplier (scalar).
        source: the file, for error messages.

    Returns:
        The converted checkpoint (projection keys are checked when the model loads it).

    Raises:
        clapkit.audio.CheckpointError: when there are no audio projection weights.
    """
    weight = audio_projection.get("linear1.weight")
    if weight is None:
        raise checkpoint_error(f"{source}: no audio projection weights found")
    scale = logit_scale.detach().reshape(()).float()
    config = ClapConfig(
        audio=audio_encoder.get_config(),
        text=text_encoder.get_config(),
        projection=projection,
        projection_dim=int(weight.shape[0]),
        max_logit_scale=max(100.0, math.exp(float(scale.item()))),
    )
    state: dict[str, Tensor] = {}
    parts: dict[str, dict[str, Tensor]] = {
        "audio_encoder.": audio_encoder.state_dict(),
        "text_encoder.": text_encoder.state_dict(),
        "audio_projection.": audio_projection,
        "text_projection.": text_projection,
    }
    for prefix, part in parts.items():
        state.update({prefix + key: value for key, value in part.items()})
    state["logit_scale"] = scale
    return ConvertedClap(
        config=config, state_dict=state, tokenizer=text_encoder.tokenizer, source=source
    )
