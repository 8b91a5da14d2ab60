"""The FSDD demo's data, and the encoders of a contrastive run at any size.

The Free Spoken Digit Dataset (``data/fsdd`` in the repository: 4 speakers x 10 digits x 50
clips, 8 kHz) is small enough to train a CLAP model on a laptop CPU in minutes: three speakers
train, the fourth is the zero-shot test. The ``small`` and ``tiny`` sizes are
``clapkit.train.small``'s CNN14 and GPT-2 with a word-level tokenizer built from the captions::

    train, heldout = fsdd_manifests("data/fsdd", out / "data", "theo")
    train, heldout = fsdd_multitask_manifests("data/fsdd", out, "theo", None)   # HTSAT-22's
    audio, text = build_encoders("cnn14", "gpt2-eot", "small", captions, clip_seconds=0.8)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clapkit.train.small import (
    Size,
    build_word_tokenizer,
    small_audio_encoder,
    small_text_encoder,
    speech_frontend,
)

__all__ = [
    "CAPTION_TEMPLATES",
    "DIGITS",
    "DemoSettings",
    "build_encoders",
    "fsdd_manifests",
    "fsdd_multitask_manifests",
]


@dataclass(frozen=True)
class DemoSettings:
    """What the FSDD demo and the smoke runs set apart from the paper's settings: the model size
    and the data built from the Free Spoken Digit Dataset. A recipe config holds one as its
    ``demo`` field (``--demo.size tiny --demo.fsdd-root data/fsdd`` on the command line); the
    default is off: the paper's model sizes, the run's own data."""

    size: Size = "full"
    """full = the paper's encoders; small / tiny = ``clapkit.train.small``'s (an 8 kHz speech
    front end and a word-level tokenizer built from the run's texts; each recipe names the sizes
    it defines)."""
    fsdd_root: str | None = None
    """Build the run's manifests from this FSDD folder (``data/fsdd`` in the repository)."""
    heldout_speaker: str = "theo"
    """The speaker kept out of training, whose clips are the test."""
    clips_per_digit: int | None = None
    """Clips per speaker and digit (None = all 50)."""


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


def build_encoders(
    audio: str,
    text: str,
    size: Size,
    texts: Sequence[str],
    *,
    clip_seconds: float,
    audio_weights: str | None = None,
    text_pretrained: str | None = None,
    tokenizer: str | None = None,
) -> tuple[Any, Any]:
    """The audio and text encoders of a contrastive run (random init unless weights are given).

    Args:
        audio: the audio encoder's registry name (``cnn14``, ``htsat``, ``htsat-22``).
        text: the text encoder's (``bert``, ``roberta``, ``clip``, ``gpt2-eot``).
        size: ``"full"`` (the paper's encoders) or ``"small"`` / ``"tiny"``
            (``clapkit.train.small``: CNN14 and GPT2-EOT on 8 kHz speech).
        texts: the training captions and prompts (the small sizes' word-level tokenizer).
        clip_seconds: the training crop (the small sizes' front end).
        audio_weights: full size: an audio checkpoint to start from.
        text_pretrained: full size: a hub id or folder of the pretrained text encoder.
        tokenizer: full size, random text weights: the tokenizer's hub id or folder.

    Returns:
        ``(audio_encoder, text_encoder)``.

    Raises:
        ValueError: a small size for an encoder it is not defined for, or a random-init
            full-size text encoder without ``tokenizer``.
    """
    from clapkit.core import create_audio_tower, create_text_encoder

    if size == "full":
        audio_encoder = create_audio_tower(audio, weights=audio_weights)
        if text_pretrained:
            text_encoder = create_text_encoder(text, pretrained=text_pretrained)
        else:  # random init at the architecture's base size (no download)
            text_encoder = create_text_encoder(text, **_base_text_config(text, tokenizer))
        return audio_encoder, text_encoder
    if audio != "cnn14":
        raise ValueError(f"size {size!r} is defined for audio ['cnn14'] only")
    if text != "gpt2-eot":
        raise ValueError(f"size {size!r} is defined for text 'gpt2-eot' only")
    words = build_word_tokenizer([t.replace("{}", "") for t in texts])
    audio_encoder = small_audio_encoder("cnn14", size, speech_frontend(clip_seconds))
    return audio_encoder, small_text_encoder(size, words)


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
    from clapkit.data import classification_records, read_manifest, write_multitask_manifest

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
