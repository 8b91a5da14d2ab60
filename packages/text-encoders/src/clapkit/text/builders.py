"""Named text encoders of the paper's ablation, and rebuilding one from its config.

`NAMED_ENCODERS` is the package's one table of named builders; its keys are the keys of
`clapkit.text.architectures.ARCHITECTURES`, and `build_text_encoder` rebuilds through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import transformers
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from clapkit.text.architectures import Architecture, get_architecture
from clapkit.text.encoder import TextEncoder
from clapkit.text.tokenization import EOT_SUFFIX_MSCLAP

TokenizerSource = PreTrainedTokenizerBase | str | os.PathLike[str]
ConfigSource = PretrainedConfig | Mapping[str, Any]

# Fast classes first (transformers 4.x), then the names transformers 5 gives the same classes.
_TOKENIZER_CLASS_NAMES: dict[str, tuple[str, str]] = {
    "bert": ("BertTokenizerFast", "BertTokenizer"),
    "roberta": ("RobertaTokenizerFast", "RobertaTokenizer"),
    "clip": ("CLIPTokenizerFast", "CLIPTokenizer"),
    "gpt2-eot": ("GPT2TokenizerFast", "GPT2Tokenizer"),
}


def _tokenizer_class(architecture: str) -> type[PreTrainedTokenizerBase]:
    fast, plain = _TOKENIZER_CLASS_NAMES[get_architecture(architecture).name]
    found: type[PreTrainedTokenizerBase] = getattr(transformers, fast, None) or getattr(
        transformers, plain
    )
    return found


def load_tokenizer(source: TokenizerSource, architecture: str) -> PreTrainedTokenizerBase:
    """Return a tokenizer object, loading it when given a hub id or a folder.

    A folder holding only vocabulary files (e.g. GPT-2's ``vocab.json`` + ``merges.txt``)
    is read with the architecture's own tokenizer class when ``AutoTokenizer`` cannot tell.

    Args:
        source: A transformers tokenizer, a hub id or a local folder.
        architecture: "bert", "roberta", "clip" or "gpt2-eot".

    Returns:
        The tokenizer.

    Raises:
        TypeError: If ``source`` is neither a tokenizer nor a path or id.
        OSError: If nothing loadable is found at ``source``.
    """
    if isinstance(source, PreTrainedTokenizerBase):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"tokenizer must be a tokenizer, hub id or folder, got {type(source)}")
    name = os.fspath(source)
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, KeyError) as auto_error:
        try:
            return _tokenizer_class(architecture).from_pretrained(name)
        except (OSError, ValueError, TypeError):
            raise OSError(f"cannot load a {architecture} tokenizer from {name!r}") from auto_error


def _config_object(spec: Architecture, config: ConfigSource) -> PretrainedConfig:
    if isinstance(config, PretrainedConfig):
        if not isinstance(config, spec.config_class):
            raise TypeError(
                f"{spec.name} needs a {spec.config_class.__name__}, got {type(config).__name__}"
            )
        return config
    if isinstance(config, Mapping):
        return spec.config_class.from_dict(dict(config))
    raise TypeError(f"config must be a {spec.config_class.__name__} or a dict, got {type(config)}")


def _model_and_tokenizer(
    spec: Architecture,
    pretrained: str | os.PathLike[str] | None,
    config: ConfigSource | None,
    tokenizer: TokenizerSource | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Pretrained weights (hub id / folder) or a random init from a config."""
    if pretrained is not None and config is not None:
        raise ValueError("give pretrained= or config=, not both")
    if config is not None:
        if tokenizer is None:
            raise ValueError("config= needs tokenizer= (a tokenizer, hub id or folder) too")
        model = spec.model_class(_config_object(spec, config))
        return model, load_tokenizer(tokenizer, spec.name)
    source = os.fspath(spec.default_pretrained if pretrained is None else pretrained)
    model = spec.model_class.from_pretrained(source)
    return model, load_tokenizer(source if tokenizer is None else tokenizer, spec.name)


def bert(
    pretrained: str | os.PathLike[str] | None = None,
    *,
    config: ConfigSource | None = None,
    tokenizer: TokenizerSource | None = None,
    pooling: str = "cls",
    max_length: int = 100,
) -> TextEncoder:
    """BERT text encoder as in CLAP 2022 (msclap 2022: bert-base-uncased, 100 tokens, CLS).

    Elizalde et al., "CLAP: Learning Audio Concepts from Natural Language Supervision",
    ICASSP 2023; the CNN14+BERT row of Table 1 in arXiv 2309.05767.

    Args:
        pretrained: Hub id or folder with model and tokenizer. With neither this nor
            ``config``: "bert-base-uncased".
        config: A ``BertConfig`` (or its dict) for random initialisation; needs ``tokenizer``.
        tokenizer: Tokenizer object, hub id or folder; overrides the pretrained one.
        pooling: "cls" (last_hidden_state[:, 0], msclap) or "pooler" (pooler_output).
        max_length: Longest token sequence, [CLS] and [SEP] included.

    Returns:
        The encoder; ``out_dim`` = hidden size (768 for base).

    Raises:
        ValueError: If both ``pretrained`` and ``config`` are given, or ``config`` without
            ``tokenizer``, or a setting does not fit the model (see `TextEncoder`).
    """
    spec = get_architecture("bert")
    model, tok = _model_and_tokenizer(spec, pretrained, config, tokenizer)
    return TextEncoder(
        model=model, tokenizer=tok, architecture="bert", pooling=pooling, max_length=max_length
    )


def roberta(
    pretrained: str | os.PathLike[str] | None = None,
    *,
    config: ConfigSource | None = None,
    tokenizer: TokenizerSource | None = None,
    pooling: str = "cls",
    max_length: int = 77,
) -> TextEncoder:
    """RoBERTa text encoder (the HTSAT+RoBERTa rows of Table 1 in arXiv 2309.05767).

    Use ``pooling="pooler"`` for LAION-CLAP and transformers ``ClapModel`` checkpoints, which
    take ``pooler_output`` (dense + tanh over the first token).

    Args:
        pretrained: Hub id or folder with model and tokenizer. With neither this nor
            ``config``: "roberta-base".
        config: A ``RobertaConfig`` (or its dict) for random initialisation; needs ``tokenizer``.
        tokenizer: Tokenizer object, hub id or folder; its pad id must equal
            ``config.pad_token_id`` (RoBERTa numbers positions around it).
        pooling: "cls" (first token, the paper) or "pooler" (LAION / HF CLAP).
        max_length: Longest token sequence, <s> and </s> included.

    Returns:
        The encoder; ``out_dim`` = hidden size.

    Raises:
        ValueError: As `bert`.
    """
    spec = get_architecture("roberta")
    model, tok = _model_and_tokenizer(spec, pretrained, config, tokenizer)
    return TextEncoder(
        model=model, tokenizer=tok, architecture="roberta", pooling=pooling, max_length=max_length
    )


def clip_text(
    pretrained: str | os.PathLike[str] | None = None,
    *,
    config: ConfigSource | None = None,
    tokenizer: TokenizerSource | None = None,
    pooling: str = "eot-projection",
    max_length: int = 77,
) -> TextEncoder:
    """CLIP text tower with its projection (the HTSAT+CLIP rows of Table 1, arXiv 2309.05767).

    The embedding is CLIP's pooled output at the end-of-text token through
    ``text_projection``, computed by ``CLIPTextModelWithProjection`` itself.

    Args:
        pretrained: Hub id or folder (a full CLIP checkpoint works). With neither this nor
            ``config``: "openai/clip-vit-base-patch32".
        config: A ``CLIPTextConfig`` (or its dict) for random initialisation; needs
            ``tokenizer``; its ``eos_token_id`` must be the tokenizer's end-of-text id.
        tokenizer: Tokenizer object, hub id or folder.
        pooling: "eot-projection", the only CLIP pooling (accepted so that every named
            builder takes the same keywords).
        max_length: Longest token sequence, start and end tokens included.

    Returns:
        The encoder; ``out_dim`` = ``projection_dim``.

    Raises:
        ValueError: As `bert`.
    """
    spec = get_architecture("clip")
    model, tok = _model_and_tokenizer(spec, pretrained, config, tokenizer)
    return TextEncoder(
        model=model, tokenizer=tok, architecture="clip", pooling=pooling, max_length=max_length
    )


def gpt2_eot(
    pretrained: str | os.PathLike[str] | None = None,
    *,
    config: ConfigSource | None = None,
    tokenizer: TokenizerSource | None = None,
    pooling: str = "eot",
    eot_suffix: str = EOT_SUFFIX_MSCLAP,
    max_length: int = 77,
) -> TextEncoder:
    """GPT2 pooled at an appended end-of-text token: the paper's text encoder.

    Elizalde, Deshmukh, Wang, "Natural Language Supervision for General-Purpose Audio
    Representations", arXiv 2309.05767 (msclap 2023: gpt2, 77 tokens). The hidden state at
    the last real token (found from the attention mask) is the embedding. With the default
    ``eot_suffix`` (msclap's " <|endoftext|>", GPT-2 ids 220, 50256) the embedding equals
    msclap's for every text of at most ``max_length`` tokens that holds no "!" token: msclap
    pads with "!" and counts it as padding, so for texts with "!" it pools an earlier token,
    while this encoder always pools the end-of-text token.

    Args:
        pretrained: Hub id or folder with model and tokenizer. With neither this nor
            ``config``: "gpt2".
        config: A ``GPT2Config`` (or its dict) for random initialisation; needs ``tokenizer``.
        tokenizer: Tokenizer object, hub id or folder (a folder with only ``vocab.json`` and
            ``merges.txt`` works). It pads with its end-of-text token.
        pooling: "eot", the only GPT2-EOT pooling (accepted so that every named builder
            takes the same keywords).
        eot_suffix: " <|endoftext|>" (msclap, default) or "<|endoftext|>" (bare token).
        max_length: Longest token sequence, suffix included.

    Returns:
        The encoder; ``out_dim`` = ``n_embd``.

    Raises:
        ValueError: As `bert`, or if ``eot_suffix`` does not end with the end-of-text token.
    """
    spec = get_architecture("gpt2-eot")
    model, tok = _model_and_tokenizer(spec, pretrained, config, tokenizer)
    return TextEncoder(
        model=model,
        tokenizer=tok,
        architecture="gpt2-eot",
        pooling=pooling,
        max_length=max_length,
        eot_suffix=eot_suffix,
    )


#: The named builders, one per text tower of the paper's ablation (Table 1 of arXiv
#: 2309.05767): every builder takes ``pretrained``, ``config``, ``tokenizer``, ``pooling`` and
#: ``max_length`` (``gpt2-eot`` also ``eot_suffix``). clap-core reads its built-in text names here.
NAMED_ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "bert": bert,
    "roberta": roberta,
    "clip": clip_text,
    "gpt2-eot": gpt2_eot,
}


def build_text_encoder(config: Mapping[str, Any], tokenizer: TokenizerSource) -> TextEncoder:
    """Rebuild, with random weights, the encoder that produced ``config``.

    The encoder is built by ``NAMED_ENCODERS[config["architecture"]]``.

    Args:
        config: The dict from `TextEncoder.get_config` (e.g. read back from JSON).
        tokenizer: Tokenizer object, hub id or folder (e.g. from `TextEncoder.save_tokenizer`).

    Returns:
        An encoder with the same architecture, parameter names and shapes, pooling,
        max_length and suffix; ``load_state_dict`` of the original's model makes it identical.

    Raises:
        KeyError: If a required field is missing or the architecture is unknown (the message
            lists the known names).
        ValueError: If a setting does not fit the architecture (see `TextEncoder`).
    """
    missing = [key for key in ("architecture", "model_config") if key not in config]
    if missing:
        raise KeyError(f"text encoder config lacks {missing}")
    name = config["architecture"]
    if name not in NAMED_ENCODERS:
        raise KeyError(f"unknown text architecture {name!r}; known: {', '.join(NAMED_ENCODERS)}")
    options = {key: config.get(key) for key in ("pooling", "max_length")}
    if config.get("eot_suffix"):  # get_config writes "" for towers without a suffix
        if name != "gpt2-eot":
            raise ValueError(f"eot_suffix is for gpt2-eot only, not {name}")
        options["eot_suffix"] = config["eot_suffix"]
    given = {key: value for key, value in options.items() if value is not None}
    return NAMED_ENCODERS[name](config=config["model_config"], tokenizer=tokenizer, **given)
