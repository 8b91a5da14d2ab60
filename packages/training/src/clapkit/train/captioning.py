"""The captioner of a run: a trained CLAP's audio side with a mapper and GPT2, or a tiny one.

::

    captioner = build_captioner(cfg, captions)   # cfg: clapkit.train.presets.captioning.Config
    records = one_caption_each(records)           # --captions-per-clip all
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from clapkit.caption import ClapCaptioner
from clapkit.data import ManifestRecord

__all__ = ["build_captioner", "one_caption_each"]


def build_captioner(cfg: Any, captions: list[str]) -> ClapCaptioner:
    """The captioner: a trained CLAP's audio side (full) or a tiny random model (smoke).

    Args:
        cfg: the settings (a ``clapkit.train.presets.captioning.Config``).
        captions: every training and test caption (the tiny model's word vocabulary).

    Returns:
        The captioner, its frozen parts frozen.

    Raises:
        SystemExit: a full model without ``--clap``.
    """
    from clapkit.caption import CaptionerConfig, transformer_mapper

    if cfg.size == "tiny":
        from transformers import GPT2Config

        from clapkit.audio import cnn14_encoder
        from clapkit.train.demo import (
            SMALL_AUDIO,
            SMALL_TEXT,
            build_word_tokenizer,
            speech_frontend,
        )

        encoder = cnn14_encoder(frontend=speech_frontend(0.8), **SMALL_AUDIO["cnn14"]["tiny"])
        tokenizer = build_word_tokenizer(captions)
        lm = GPT2Config(
            vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id, **SMALL_TEXT["tiny"],
        )  # fmt: skip
        width = lm.n_embd
        mapper = transformer_mapper(
            embed_dim=width, prefix_length=cfg.prefix_length, width=width, depth=cfg.mapper_depth,
            num_heads=cfg.mapper_heads,
        )  # fmt: skip
        config = CaptionerConfig(
            audio=encoder.get_config(), mapper=mapper.get_config(), language_model=lm.to_dict(),
            projection="linear", projection_dim=width,
            freeze_language_model=cfg.freeze_language_model,
        )  # fmt: skip
        return ClapCaptioner(config, tokenizer=tokenizer, audio_encoder=encoder, mapper=mapper)
    if cfg.clap is None:
        raise SystemExit("--clap is required: a ClapModel folder or msclap CLAP_weights_2023.pth")
    from transformers import AutoModelForCausalLM

    from clapkit.core import ClapModel

    tokenizer_source = cfg.tokenizer or cfg.language_model
    if Path(cfg.clap).is_dir():
        clap = ClapModel.from_pretrained(cfg.clap)
    else:
        clap = ClapModel.from_msclap(cfg.clap, version="2023", tokenizer=tokenizer_source)
    language_model = AutoModelForCausalLM.from_pretrained(cfg.language_model)
    mapper = transformer_mapper(
        embed_dim=clap.config.projection_dim, prefix_length=cfg.prefix_length,
        width=int(language_model.config.hidden_size), depth=cfg.mapper_depth,
        num_heads=cfg.mapper_heads,
    )  # fmt: skip
    return ClapCaptioner.from_clap(
        clap, tokenizer=tokenizer_source, language_model=language_model, mapper=mapper,
        freeze_language_model=cfg.freeze_language_model,
    )  # fmt: skip


def one_caption_each(records: list[ManifestRecord]) -> list[ManifestRecord]:
    """Every (clip, caption) pair as its own record (``--captions-per-clip all``)."""
    return [
        dataclasses.replace(r, captions=(c,), key=f"{r.key}#{j}")
        for r in records
        for j, c in enumerate(r.captions)
    ]
