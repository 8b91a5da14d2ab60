"""Recipe-side pieces of ``pretrain_clap.py``: demo data, encoder sizes, the run report.

Kept beside the recipe (not in a package) because they are about this recipe's presets and
output folder, not reusable library behaviour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    """A word-level GPT2-style tokenizer (``<|endoftext|>`` = EOS, ``<pad>``) over ``texts``."""
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


def _speech_frontend(clip_seconds: float) -> Any:
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
SMALL_TEXT = {
    "small": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 32},
    "tiny": {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32},
}


def build_encoders(cfg: Any, texts: Sequence[str]) -> tuple[Any, Any]:
    """The audio and text encoders of a run (random init unless weights are given).

    Args:
        cfg: the recipe's ``Config``.
        texts: the training captions and prompts (for the small word-level tokenizer).

    Returns:
        ``(audio_encoder, text_encoder)``.
    """
    from clapkit.core import create_audio_encoder, create_text_encoder

    if cfg.size == "full":
        audio = create_audio_encoder(cfg.audio, weights=cfg.audio_weights)
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

    audio = create_audio_encoder(
        cfg.audio, frontend=_speech_frontend(cfg.clip_seconds), **SMALL_AUDIO[cfg.audio][cfg.size]
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


def latest_checkpoint(out: Path) -> Path:
    """The most recent checkpoint under ``out/checkpoints`` (names sort by step, then epoch end)."""
    folders = sorted(p for p in (out / "checkpoints").glob("step_*") if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"no checkpoint under {out / 'checkpoints'} to resume from")
    return folders[-1]


def write_outputs(
    out: Path, cfg: Any, history: list[dict[str, Any]], best: dict[str, Any] | None, skipped: Any
) -> None:
    """metrics.json, report.md and curves.png in the output folder."""
    metrics = {"epochs": history, "best": best, "skipped_files": skipped.state_dict()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    tasks = sorted({k for r in history for k, v in r.items() if isinstance(v, dict)})
    lines = [
        "# pretrain_clap report",
        "",
        f"audio `{cfg.audio}` + text `{cfg.text}` (size {cfg.size}), seed {cfg.seed}, "
        f"prompt `{cfg.prompt_template}`",
        "",
        "| epoch | train loss | " + " | ".join(tasks) + " | zero-shot score | lr | s |",
        "|---" * (len(tasks) + 5) + "|",
    ]
    for r in history:
        cells = [f"{r[t]['score']:.3f}" for t in tasks]
        lines.append(
            f"| {r['epoch']} | {r['train_loss']:.4f} | "
            + " | ".join(cells)
            + f" | {r.get('zero_shot_score', float('nan')):.3f} | {r['lr']:.0e} "
            f"| {r['seconds']:.0f} |"
        )
    if best is not None:
        lines += ["", f"Best epoch: {best['epoch']} (score {best['score']:.3f}), saved in `best/`."]
    if skipped.count:
        lines += ["", f"Skipped {skipped.count} bad clips:"]
        lines += [f"- `{name}`: {reason}" for name, reason in sorted(skipped.reasons.items())]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot(out / "curves.png", history, tasks)


def _plot(path: Path, history: list[dict[str, Any]], tasks: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(epochs, [r["train_loss"] for r in history], marker="o")
    left.set(xlabel="epoch", ylabel="train loss", title="contrastive loss")
    for task in tasks:
        right.plot(epochs, [r[task]["score"] for r in history], marker="o", label=task)
    right.set(xlabel="epoch", ylabel="score", title="zero-shot", ylim=(0, 1))
    if tasks:
        right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
