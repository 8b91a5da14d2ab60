"""Every small model of the demo and smoke runs, in one place.

The paper's runs build their encoders at full size (``clapkit.core.create_audio_tower``,
``create_text_encoder``). The FSDD demo and the CI smoke runs train in CPU seconds to minutes on
8 kHz spoken digits, with CNN14 / HTS-AT and GPT-2 at a fraction of the paper's width, an 8 kHz
speech front end and a word-level tokenizer built from the run's own texts::

    frontend = speech_frontend(0.8)                          # 32 ms window, 10 ms hop, 40 mels
    audio = small_audio_encoder("cnn14", "small", frontend)
    tokenizer = build_word_tokenizer(captions)
    text = small_text_encoder("small", tokenizer)           # GPT2-EOT, 2 layers of 64
    lm = small_gpt2_config("tiny", tokenizer)               # a captioner's language model

Sizes (``SMALL_AUDIO``, ``SMALL_TEXT``): ``cnn14`` small (the demo), tiny (the smoke runs and
the tiny captioner) and classifier (the fine-tuning smoke run's); ``htsat`` tiny (HTSAT-22's
smoke run); GPT-2 small and tiny.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "SMALL_AUDIO",
    "SMALL_TEXT",
    "Size",
    "build_word_tokenizer",
    "small_audio_encoder",
    "small_gpt2_config",
    "small_text_encoder",
    "speech_frontend",
]

Size = Literal["full", "small", "tiny"]
"""A run's model size: ``full`` = the paper's encoders, ``small`` / ``tiny`` = this module's."""

SMALL_AUDIO: dict[str, dict[str, dict[str, Any]]] = {
    "cnn14": {
        "small": {
            "channels": (16, 32, 64, 128), "out_dim": 128, "num_classes": 0,
            "spec_augment": False, "block_dropout": 0.1, "embed_dropout": 0.2,
        },
        "tiny": {"channels": (4, 8), "out_dim": 16, "num_classes": 0, "spec_augment": False},
        "classifier": {
            "channels": (8, 16, 32), "out_dim": 64, "num_classes": 0, "block_dropout": 0.0,
            "embed_dropout": 0.0,
        },
    },
    "htsat": {
        "tiny": {
            "spec_size": 40, "embed_dim": 32, "depths": (1, 1), "num_heads": (2, 4),
            "window_size": 5, "num_classes": 0, "drop_path_rate": 0.0,
        },
    },
}  # fmt: skip
"""Audio encoder keyword arguments by family and size (headless: ``num_classes=0``)."""
SMALL_TEXT: dict[str, dict[str, int]] = {
    "small": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 32},
    "tiny": {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32},
}
"""GPT-2 sizes (``transformers.GPT2Config`` fields) of the small text encoders and LMs."""


def speech_frontend(
    clip_seconds: float, *, hop_length: int = 80, n_mels: int = 40, fill: str = "pad"
) -> Any:
    """The 8 kHz speech front end of the small encoders (FSDD is 8 kHz speech).

    Args:
        clip_seconds: the clip length the encoder is fed.
        hop_length: samples per frame (80 = 10 ms; 160 halves the frames and the cost).
        n_mels: mel bands up to Nyquist.
        fill: how a short clip fills the window (``"pad"`` with silence or ``"repeat"``).

    Returns:
        A ``clapkit.audio.FrontendConfig`` (32 ms window).
    """
    from clapkit.audio import FrontendConfig

    return FrontendConfig(
        sample_rate=8000, n_fft=256, win_length=256, hop_length=hop_length, n_mels=n_mels,
        fmin=20.0, fmax=4000.0, clip_seconds=clip_seconds, fill=fill,
    )  # fmt: skip


def small_audio_encoder(family: str, size: str, frontend: Any, **overrides: Any) -> Any:
    """A random small audio encoder of ``SMALL_AUDIO``.

    Args:
        family: ``"cnn14"`` or ``"htsat"``.
        size: one of ``SMALL_AUDIO[family]``.
        frontend: its front end (:func:`speech_frontend`).
        **overrides: encoder arguments to change (``spec_augment=True``).

    Returns:
        The encoder (``clapkit.audio.AudioEncoder``, no classifier head).

    Raises:
        ValueError: a family or size without a small definition.
    """
    from clapkit.core import create_audio_tower

    sizes = SMALL_AUDIO.get(family, {})
    if size not in sizes:
        defined = sorted(f"{f}/{s}" for f, by in SMALL_AUDIO.items() for s in by)
        raise ValueError(f"no small audio encoder {family}/{size}; defined: {defined}")
    return create_audio_tower(family, frontend=frontend, **{**sizes[size], **overrides})


def small_gpt2_config(size: str, tokenizer: Any, **overrides: Any) -> Any:
    """A ``transformers.GPT2Config`` of ``SMALL_TEXT[size]`` over a tokenizer's vocabulary.

    Args:
        size: ``"small"`` or ``"tiny"``.
        tokenizer: from :func:`build_word_tokenizer` (its EOS is also BOS).
        **overrides: config fields to change (``initializer_range=0.2``).

    Returns:
        The config.

    Raises:
        ValueError: an unknown size.
    """
    from transformers import GPT2Config

    if size not in SMALL_TEXT:
        raise ValueError(f"no small GPT-2 {size!r}; defined: {sorted(SMALL_TEXT)}")
    return GPT2Config(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, **{**SMALL_TEXT[size], **overrides},
    )  # fmt: skip


def small_text_encoder(size: str, tokenizer: Any) -> Any:
    """A random small GPT2-EOT text encoder.

    Args:
        size: ``"small"`` or ``"tiny"``.
        tokenizer: from :func:`build_word_tokenizer`.

    Returns:
        The ``clapkit.text`` encoder (its context = the config's ``n_positions``).
    """
    from clapkit.core import create_text_encoder

    config = small_gpt2_config(size, tokenizer, pad_token_id=tokenizer.pad_token_id)
    return create_text_encoder(
        "gpt2-eot", config=config, tokenizer=tokenizer, max_length=config.n_positions
    )


def build_word_tokenizer(texts: Sequence[str]) -> Any:
    """A word-level GPT2-style tokenizer (``<|endoftext|>`` = EOS, ``<pad>``) over ``texts``.

    Args:
        texts: every text the tokenizer must know (captions, prompts); lower-cased, split into
            words and punctuation.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<|endoftext|>", *words])}
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    model.normalizer = normalizers.Lowercase()
    return PreTrainedTokenizerFast(
        tokenizer_object=model,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
