"""The FSDD demo: its data, the small encoders and their 8 kHz speech front end.

The Free Spoken Digit Dataset (``data/fsdd`` in the repository: 4 speakers x 10 digits x 50
clips, 8 kHz) is small enough to train a CLAP model on a laptop CPU in minutes: three speakers
train, the fourth is the zero-shot test. ``size="small"``/``"tiny"`` encoders are CNN14 and GPT-2
at a fraction of the paper's width with a word-level tokenizer built from the captions::

    train, heldout = fsdd_manifests("data/fsdd", out / "data", "theo")
    audio, text = build_encoders(cfg, captions)   # cfg.size in {"full", "small", "tiny"}
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CAPTION_TEMPLATES",
    "DIGITS",
    "SMALL_AUDIO",
    "SMALL_TEXT",
    "build_encoders",
    "build_word_tokenizer",
    "fsdd_manifests",
    "speech_frontend",
]

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Varied captions for the demo; the zero-shot prompt ("a man says the digit {}") is one of them.
CAPTION_TEMPLATES = (
    "a man says the digit {}",
    "a man saying {}",
    "the spoken word {}",
    "someone says {}",
    "a male voice says the number {}",
    "{}",
    "a recording of a man saying the number {}",
    "the number {} spoken by a man",
)


def fsdd_manifests(
    root: str | Path, out_dir: Path, heldout_speaker: str, clips_per_digit: int | None = None
) -> tuple[str, str]:
    """Write the demo's train (3 speakers) and held-out-speaker eval manifests.

    Args:
        root: the FSDD folder (``recordings/{digit}_{speaker}_{index}.flac``).
        out_dir: where the two manifests go.
        heldout_speaker: the speaker only seen at evaluation.
        clips_per_digit: take the first N recordings of each speaker and digit (None = all).

    Returns:
        The train and eval manifest paths.

    Raises:
        FileNotFoundError: no recording under ``root``.
        ValueError: the held-out speaker has no recording.
    """
    recordings = Path(root).resolve() / "recordings"
    clips = sorted(recordings.glob("*_*_*.flac"))
    if not clips:
        raise FileNotFoundError(f"no FSDD recording under {recordings}")
    out_dir.mkdir(parents=True, exist_ok=True)
    train, heldout = [], []
    for clip in clips:
        digit, speaker, index = clip.stem.split("_")
        if clips_per_digit is not None and int(index) >= clips_per_digit:
            continue
        word = DIGITS[int(digit)]
        line = {"audio": str(clip), "labels": [word], "speaker": speaker}
        if speaker == heldout_speaker:
            heldout.append({**line, "caption": CAPTION_TEMPLATES[0].format(word)})
        else:
            train.append({**line, "caption": [t.format(word) for t in CAPTION_TEMPLATES]})
    if not heldout:
        raise ValueError(f"speaker {heldout_speaker!r} has no recording under {recordings}")
    paths = out_dir / "train.jsonl", out_dir / f"heldout_{heldout_speaker}.jsonl"
    for path, lines in zip(paths, (train, heldout), strict=True):
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(paths[0]), str(paths[1])


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


def speech_frontend(clip_seconds: float) -> Any:
    """The 8 kHz speech front end of the small encoders (FSDD is 8 kHz speech).

    Args:
        clip_seconds: the clip length the encoder is fed.

    Returns:
        A ``clapkit.audio.FrontendConfig``.
    """
    from clapkit.audio import FrontendConfig

    # FSDD is 8 kHz speech: 32 ms window, 10 ms hop, 40 mels up to Nyquist.
    return FrontendConfig(
        sample_rate=8000,
        n_fft=256,
        win_length=256,
        hop_length=80,
        n_mels=40,
        fmin=20.0,
        fmax=4000.0,
        clip_seconds=clip_seconds,
        fill="pad",
    )


SMALL_AUDIO: dict[str, dict[str, dict[str, Any]]] = {
    "cnn14": {
        "small": {
            "channels": (16, 32, 64, 128),
            "out_dim": 128,
            "num_classes": 0,
            "spec_augment": False,
            "block_dropout": 0.1,
            "embed_dropout": 0.2,
        },
        "tiny": {"channels": (4, 8), "out_dim": 16, "num_classes": 0, "spec_augment": False},
    },
}
SMALL_TEXT: dict[str, dict[str, Any]] = {
    "small": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 32},
    "tiny": {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32},
}


def build_encoders(cfg: Any, texts: Sequence[str]) -> tuple[Any, Any]:
    """The audio and text encoders of a run (random init unless weights are given).

    Args:
        cfg: a recipe config with ``size`` (``"full"``, ``"small"``, ``"tiny"``), ``audio``,
            ``text``, ``audio_weights``, ``text_pretrained``, ``tokenizer`` and ``clip_seconds``.
        texts: the training captions and prompts (for the small word-level tokenizer).

    Returns:
        ``(audio_encoder, text_encoder)``.

    Raises:
        ValueError: a small size for an encoder it is not defined for, or a random-init
            full-size text encoder without ``tokenizer``.
    """
    from clapkit.core import create_audio_tower, create_text_encoder

    if cfg.size == "full":
        audio = create_audio_tower(cfg.audio, weights=cfg.audio_weights)
        if cfg.text_pretrained:
            text = create_text_encoder(cfg.text, pretrained=cfg.text_pretrained)
        else:  # random init at the architecture's base size (no download)
            text = create_text_encoder(cfg.text, **_base_text_config(cfg.text, cfg.tokenizer))
        return audio, text
    if cfg.audio not in SMALL_AUDIO:
        raise ValueError(f"size {cfg.size!r} is defined for audio {sorted(SMALL_AUDIO)} only")
    if cfg.text != "gpt2-eot":
        raise ValueError(f"size {cfg.size!r} is defined for text 'gpt2-eot' only")
    from transformers import GPT2Config

    audio = create_audio_tower(
        cfg.audio, frontend=speech_frontend(cfg.clip_seconds), **SMALL_AUDIO[cfg.audio][cfg.size]
    )
    tokenizer = build_word_tokenizer([t.replace("{}", "") for t in texts])
    config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SMALL_TEXT[cfg.size],
    )
    text = create_text_encoder(
        "gpt2-eot", config=config, tokenizer=tokenizer, max_length=config.n_positions
    )
    return audio, text


def _base_text_config(architecture: str, tokenizer_source: str | None) -> dict[str, Any]:
    """``config=`` (transformers' default = base size) and ``tokenizer=`` for a random init."""
    import transformers

    from clapkit.text import load_tokenizer

    if tokenizer_source is None:
        raise ValueError("a random-init full-size text encoder needs --tokenizer (hub id/folder)")
    classes = {
        "bert": "BertConfig",
        "roberta": "RobertaConfig",
        "clip": "CLIPTextConfig",
        "gpt2-eot": "GPT2Config",
    }
    tokenizer = load_tokenizer(tokenizer_source, architecture)
    config = getattr(transformers, classes[architecture])(vocab_size=len(tokenizer))
    return {"config": config, "tokenizer": tokenizer}
