"""Multi-task audio-to-text pretraining (Pengi-style, HTSAT-22): the model of a run and the
smoke data.

::

    train, heldout = fsdd_multitask_manifests("data/fsdd", out, "theo", None)
    model = build_model(cfg, texts)   # cfg: clapkit.train.presets.htsat22.Config
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from clapkit.caption import PrefixLanguageModel
from clapkit.data import (
    classification_records,
    read_manifest,
    write_multitask_manifest,
)
from clapkit.train.demo import (
    SMALL_AUDIO,
    SMALL_TEXT,
    build_word_tokenizer,
    fsdd_manifests,
    speech_frontend,
)
from clapkit.train.presets.htsat22 import Config

__all__ = ["build_model", "fsdd_multitask_manifests"]


def fsdd_multitask_manifests(
    root: str | Path, out: Path, heldout_speaker: str, clips_per_digit: int | None
) -> tuple[str, str]:
    """The smoke data: "which digit" and "which speaker" on three FSDD speakers (train) and
    "which digit" on the fourth (eval), built with ``clapkit.data``'s builders.

    Args:
        root: the FSDD folder (``recordings/{digit}_{speaker}_{index}.flac``).
        out: where the manifests go.
        heldout_speaker: the speaker only heard in the eval manifest.
        clips_per_digit: the first N recordings of each speaker and digit (None = all).

    Returns:
        The paths of the multi-task train and held-out manifests.
    """
    train, heldout = fsdd_manifests(root, out, heldout_speaker, clips_per_digit)
    clips = read_manifest(train)
    speakers = [dataclasses.replace(r, labels=(str(r.extra["speaker"]),)) for r in clips]
    records = classification_records(clips, task="digit", prompt="which digit")
    records += classification_records(speakers, task="speaker", prompt="which speaker")
    test = classification_records(read_manifest(heldout), task="digit", prompt="which digit")
    paths = out / "multitask_train.jsonl", out / f"multitask_heldout_{heldout_speaker}.jsonl"
    write_multitask_manifest(records, paths[0])
    write_multitask_manifest(test, paths[1])
    return str(paths[0]), str(paths[1])


def build_model(cfg: Config, texts: list[str]) -> PrefixLanguageModel:
    """The model of a run: the encoder (trained), the mapper, the LM (frozen unless told).

    Args:
        cfg: the settings.
        texts: every prompt and answer (the tiny model's word vocabulary).

    Returns:
        The model; the encoder has no classification head (no loss reaches one, and DDP
        refuses parameters without gradients).
    """
    from transformers import AutoModelForCausalLM, GPT2Config

    from clapkit.audio import cnn14_encoder, htsat_encoder
    from clapkit.caption import mlp_mapper, transformer_mapper
    from clapkit.core import create_audio_tower

    if cfg.size == "tiny":
        # FSDD's words last ~0.4 s: zero-padded to the clip, half of it would sit at the -100 dB
        # floor, and the tiny HTSAT learns no digit from such clips; repeated, it does. A 20 ms
        # hop makes 0.8 s one 40 x 40 HTSAT image (40 mels), a third of the cost of 80 x 80.
        frontend = dataclasses.replace(
            speech_frontend(cfg.clip_seconds), hop_length=160, fill="repeat"
        )
        encoder: Any = (
            cnn14_encoder(frontend=frontend, **SMALL_AUDIO["cnn14"]["small"])
            if cfg.audio == "cnn14"
            else htsat_encoder(
                frontend=frontend, spec_size=40, embed_dim=32, depths=(1, 1), num_heads=(2, 4),
                window_size=5, num_classes=0, spec_augment=cfg.spec_augment, drop_path_rate=0.0,
            )
        )  # fmt: skip
        tokenizer: Any = build_word_tokenizer(texts)
        lm: Any = GPT2Config(
            vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id, initializer_range=cfg.lm_init_std,
            **SMALL_TEXT[cfg.language_model],
        )  # fmt: skip
        width = lm.n_embd
    else:
        encoder = create_audio_tower(
            cfg.audio, weights=cfg.audio_weights, spec_augment=cfg.spec_augment
        )
        tokenizer = cfg.tokenizer or cfg.language_model
        lm = AutoModelForCausalLM.from_pretrained(cfg.language_model)
        width = int(lm.config.hidden_size)
    mapper: Any = (
        mlp_mapper(embed_dim=cfg.projection_dim, prefix_length=cfg.prefix_length, width=width)
        if cfg.mapper == "mlp"
        else transformer_mapper(
            embed_dim=cfg.projection_dim, prefix_length=cfg.prefix_length, width=width,
            depth=cfg.mapper_depth, num_heads=cfg.mapper_heads,
        )
    )  # fmt: skip
    model = PrefixLanguageModel.build(
        audio_encoder=encoder, mapper=mapper, language_model=lm, tokenizer=tokenizer,
        projection=cfg.projection, projection_dim=cfg.projection_dim,
        projection_dropout=cfg.projection_dropout, normalize_embedding=cfg.normalize_prefix,
        freeze_language_model=cfg.freeze_language_model,
    )  # fmt: skip
    return model
