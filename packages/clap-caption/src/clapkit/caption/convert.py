"""Loading msclap's captioner file ``clapcap_weights_2023.pth`` strictly."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from clapkit.caption.captioner import ClapCaptioner
from clapkit.caption.config import CaptionerConfig
from clapkit.caption.mappers import Mapper, MapperConfig, mlp_mapper, transformer_mapper
from clapkit.caption.tokenizer import TokenizerLike
from clapkit.core.projection import build_projection
from clapkit.core.state_dict import (
    CheckpointError,
    check_consumed,
    drop_harmless_buffers,
    load_checkpoint,
    load_strict,
    split_prefix,
)


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
    raise CheckpointError(f"{source}: clap_project.* holds neither a transformer nor an MLP mapper")


def from_msclap(
    path: str | os.PathLike[str],
    *,
    tokenizer: TokenizerLike = "gpt2",
    language_model_config: GPT2Config | None = None,
    mapper_heads: int = 8,
    **flags: Any,
) -> ClapCaptioner:
    """Load msclap's ``clapcap_weights_2023.pth`` (or a file in its layout), strictly.

    Key groups: ``clap.base.htsat.*`` -> the HTSAT encoder with the msclap 2023 front end
    (``clapkit.audio.load_reference_state_dict``: STFT kernels dropped, ``melW`` checked),
    ``clap.projection.*`` -> msclap projection, ``clap_project.*`` -> the mapper (its sizes
    read from the shapes), ``gpt.*`` -> ``GPT2LMHeadModel`` (old ``attn.bias`` /
    ``attn.masked_bias`` buffers dropped by name). Any other key fails, named.

    Args:
        path: the ``.pth`` (read with ``weights_only=True``) or ``.safetensors`` file.
        tokenizer: GPT2 tokenizer (object, folder with vocab.json + merges.txt, or hub id).
        language_model_config: GPT2 config; default: GPT2 base with vocabulary, positions,
            width and depth read from the weights (12 heads).
        mapper_heads: attention heads of the mapper (not recoverable from shapes; msclap: 8).
        **flags: ``normalize_embedding``, ``freeze_audio``, ``freeze_language_model``.

    Returns:
        The captioner in eval mode.

    Raises:
        CheckpointError: on an unsafe/unreadable file or missing/unexpected keys (named).
    """
    from clapkit.audio import htsat_msclap_2023, load_reference_state_dict

    source = str(path)
    state = load_checkpoint(path)
    encoder = htsat_msclap_2023()
    audio_state = split_prefix(state, "clap.base.htsat.")
    if not audio_state:
        raise CheckpointError(f"{source}: no clap.base.htsat.* keys: not a clapcap checkpoint")
    load_reference_state_dict(encoder, audio_state, strict=True)
    projection = build_projection("msclap", int(encoder.out_dim), 1024)
    load_strict(
        projection,
        split_prefix(state, "clap.projection."),
        source=source,
        prefix="clap.projection.",
    )
    mapper_state = split_prefix(state, "clap_project.")
    lm_state = drop_harmless_buffers(split_prefix(state, "gpt."))
    check_consumed(state, source)
    if language_model_config is None:
        wte, wpe = lm_state["transformer.wte.weight"], lm_state["transformer.wpe.weight"]
        layers = {k.split(".")[2] for k in lm_state if k.startswith("transformer.h.")}
        language_model_config = GPT2Config(
            vocab_size=wte.shape[0],
            n_positions=wpe.shape[0],
            n_embd=wte.shape[1],
            n_layer=len(layers),
        )
    language_model = GPT2LMHeadModel(language_model_config)
    mapper = _mapper_from_state(
        mapper_state, width=language_model_config.n_embd, num_heads=mapper_heads, source=source
    )
    load_strict(mapper, mapper_state, source=source, prefix="clap_project.")
    if "lm_head.weight" in lm_state and not torch.equal(
        lm_state["lm_head.weight"], lm_state["transformer.wte.weight"]
    ):
        raise CheckpointError(
            f"{source}: gpt.lm_head.weight differs from the tied gpt.transformer.wte.weight"
        )
    load_strict(language_model, lm_state, source=source, prefix="gpt.")
    config = CaptionerConfig(
        audio=encoder.get_config(),
        mapper=MapperConfig.from_dict(mapper.get_config()).to_dict(),
        language_model=language_model.config.to_dict(),
        projection="msclap",
        projection_dim=1024,
        **flags,
    )
    captioner = ClapCaptioner(
        config,
        tokenizer=tokenizer,
        audio_encoder=encoder,
        audio_projection=projection,
        mapper=mapper,
        language_model=language_model,
    )
    return captioner.eval()
