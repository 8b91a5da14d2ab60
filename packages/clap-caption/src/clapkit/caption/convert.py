"""Converting msclap's captioner file ``clapcap_weights_2023.pth``, strictly.

msclap's audio-side layout (``clap.base.htsat.*``, ``clap.projection.*``) is read by
``clapkit.core.split_msclap_audio``; this module adds only clapcap's own parts: the mapper
(``clap_project.*``) and GPT2 (``gpt.*``). It returns a config and a state dict, which
``ClapCaptioner.from_msclap`` assembles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from clapkit.caption.config import CaptionerConfig
from clapkit.caption.mappers import Mapper, MapperConfig, mlp_mapper, transformer_mapper
from clapkit.caption.tokenizer import TokenizerLike
from clapkit.core import (
    check_consumed,
    check_state,
    checkpoint_error,
    drop_harmless_buffers,
    load_checkpoint,
    load_strict,
    split_msclap_audio,
    split_prefix,
)

__all__ = ["CLAPCAP_AUDIO_PREFIX", "ConvertedCaptioner", "convert_clapcap"]

CLAPCAP_AUDIO_PREFIX = "clap."  # clapcap wraps msclap's audio side under this name
_MAPPER_PREFIX, _LM_PREFIX = "clap_project.", "gpt."


@dataclass(frozen=True)
class ConvertedCaptioner:
    """A clapcap checkpoint in clapkit's terms, ready for ``ClapCaptioner.from_converted``.

    Attributes:
        config: the captioner config.
        state_dict: every weight, clapkit names (``audio_encoder.*``, ``audio_projection.*``,
            ``mapper.*``, ``language_model.*``).
        tokenizer: the GPT2 tokenizer (object, folder or hub id) as given.
        source: the file, for error messages.
    """

    config: CaptionerConfig
    state_dict: dict[str, torch.Tensor]
    tokenizer: TokenizerLike
    source: str


def _mapper_from_state(
    state: dict[str, torch.Tensor], *, width: int, num_heads: int, source: str
) -> Mapper:
    """Rebuild the mapper whose weights ``state`` holds (transformer or MLP) from the shapes."""
    if "prefix_const" in state:
        prefix_length, width = state["prefix_const"].shape
        depth = len({k.split(".")[2] for k in state if k.startswith("transformer.layers.")})
        hidden = state["transformer.layers.0.mlp.fc1.weight"].shape[0]
        return transformer_mapper(
            embed_dim=state["linear.weight"].shape[1],
            prefix_length=prefix_length,
            width=width,
            audio_tokens=state["linear.weight"].shape[0] // width,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=hidden / width,
        )
    if "model.0.weight" in state:
        return mlp_mapper(
            embed_dim=state["model.0.weight"].shape[1],
            prefix_length=state["model.2.weight"].shape[0] // width,
            width=width,
            hidden_dim=state["model.0.weight"].shape[0],
        )
    raise checkpoint_error(
        f"{source}: clap_project.* holds neither a transformer nor an MLP mapper"
    )


def convert_clapcap(
    path: str | os.PathLike[str],
    *,
    tokenizer: TokenizerLike = "gpt2",
    language_model_config: GPT2Config | None = None,
    mapper_heads: int = 8,
    **flags: Any,
) -> ConvertedCaptioner:
    """Convert msclap's ``clapcap_weights_2023.pth`` (or a file in its layout), strictly.

    Key groups: ``clap.base.htsat.*`` + ``clap.projection.*`` -> the msclap 2023 audio side
    (``clapkit.core.split_msclap_audio``: STFT kernels dropped, ``melW`` checked),
    ``clap_project.*`` -> the mapper (its sizes read from the shapes), ``gpt.*`` ->
    ``GPT2LMHeadModel`` (old ``attn.bias`` / ``attn.masked_bias`` buffers dropped by name; a
    ``lm_head.weight`` must equal the tied ``wte``). Any other key fails, named.

    Args:
        path: the ``.pth`` (read with ``weights_only=True``) or ``.safetensors`` file.
        tokenizer: GPT2 tokenizer (object, folder with vocab.json + merges.txt, or hub id).
        language_model_config: GPT2 config; default: GPT2 base with vocabulary, positions,
            width and depth read from the weights (12 heads).
        mapper_heads: attention heads of the mapper (not recoverable from shapes; msclap: 8).
        **flags: ``normalize_embedding``, ``freeze_audio``, ``freeze_language_model``.

    Returns:
        Config, clapkit-named state dict and tokenizer.

    Raises:
        clapkit.audio.CheckpointError: on an unsafe/unreadable file or missing/unexpected keys
            (named).
    """
    source = os.fspath(path)
    state = load_checkpoint(path)
    audio = split_msclap_audio(state, prefix=CLAPCAP_AUDIO_PREFIX, version="2023", source=source)
    mapper_state = split_prefix(state, _MAPPER_PREFIX)
    lm_state = drop_harmless_buffers(split_prefix(state, _LM_PREFIX))
    check_consumed(state, source)
    if "transformer.wte.weight" not in lm_state:
        raise checkpoint_error(f"{source}: no {_LM_PREFIX}transformer.wte.weight")
    if language_model_config is None:
        wte, wpe = lm_state["transformer.wte.weight"], lm_state["transformer.wpe.weight"]
        layers = {k.split(".")[2] for k in lm_state if k.startswith("transformer.h.")}
        language_model_config = GPT2Config(
            vocab_size=wte.shape[0], n_positions=wpe.shape[0], n_embd=wte.shape[1],
            n_layer=len(layers),
        )  # fmt: skip
    mapper = _mapper_from_state(
        mapper_state, width=language_model_config.n_embd, num_heads=mapper_heads, source=source
    )
    load_strict(mapper, mapper_state, source=source, prefix=_MAPPER_PREFIX)
    if "lm_head.weight" in lm_state and not torch.equal(
        lm_state["lm_head.weight"], lm_state["transformer.wte.weight"]
    ):
        raise checkpoint_error(
            f"{source}: gpt.lm_head.weight differs from the tied gpt.transformer.wte.weight"
        )
    with torch.device("meta"):  # names and shapes only: no 124M-parameter initialisation here
        language_model = GPT2LMHeadModel(language_model_config)
    check_state(language_model, lm_state, source=source, prefix=_LM_PREFIX)
    config = CaptionerConfig(
        audio=audio.config,
        mapper=MapperConfig.from_dict(mapper.get_config()).to_dict(),
        language_model=language_model.config.to_dict(),
        projection="msclap",
        projection_dim=int(audio.projection_state["linear1.weight"].shape[0]),
        **flags,
    )
    parts = {
        "audio_encoder.": audio.encoder_state,
        "audio_projection.": audio.projection_state,
        "mapper.": mapper.state_dict(),
        "language_model.": lm_state,
    }
    full = {prefix + key: value for prefix, part in parts.items() for key, value in part.items()}
    return ConvertedCaptioner(config=config, state_dict=full, tokenizer=tokenizer, source=source)
