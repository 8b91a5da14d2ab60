"""Settings of HTSAT-22 pretraining (``recipes/pretrain_htsat22.py``) and its presets.

Elizalde, Deshmukh, Wang (arXiv 2309.05767), section 2, "HTSAT-22": HTS-AT (tiny, unchanged)
trained on 22 audio tasks as in Pengi (Deshmukh et al., arXiv 2305.11834): the audio encoder
(trained) -> msclap projection to 1024 -> L2 normalise -> a 40-token 8-layer transformer mapper
-> the prefix of a frozen GPT2 that generates the answer to a task prompt. The paper gives
neither the 22 tasks nor the optimiser of this stage: the task families are Pengi's
(`PENGI_TASK_FAMILIES`), the optimiser is the paper's Adam with Pengi's settings where known
and ours where not (each `Config` field says which)::

    presets = htsat22_presets(fsdd_root="data/fsdd")
    presets["pengi-22"], presets["smoke"]
    weights = parse_weights(("esc50=1", "clotho=2.5"))   # --task-weights
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from clapkit.train.config import RUN_RESUMABLE_CHANGES, RunSettings
from clapkit.train.demo import DemoSettings

__all__ = [
    "NOTES",
    "PAPER",
    "PENGI_TASK_FAMILIES",
    "RESUMABLE_CHANGES",
    "SMOKE",
    "Config",
    "htsat22_presets",
    "parse_weights",
]

RESUMABLE_CHANGES = (*RUN_RESUMABLE_CHANGES, "num_workers", "epochs", "eval_every")
"""Fields that may change when a run is resumed: where it writes, how it logs, when it stops."""


@dataclass(frozen=True)
class Config(RunSettings):
    """Every setting of a run; defaults are the paper's HTSAT-22 (the ``pengi-22`` preset)."""

    demo: DemoSettings = field(default_factory=DemoSettings)
    """The demo's and smoke runs' settings, apart from the paper's (``--demo.size``,
    ``--demo.fsdd-root``, ...): small models and the FSDD data; off by default."""

    # Model
    audio: str = "htsat-22"
    """Audio encoder (registry name); htsat-22 = HTS-AT tiny with the paper's front end."""
    audio_weights: str | None = None
    """Start the encoder from these weights (e.g. HTS-AT AudioSet); None = scratch (Pengi)."""
    spec_augment: bool = False
    """SpecAugment in the encoder (Pengi: off)."""
    language_model: str = "gpt2"
    """Hub id or folder of the causal LM (frozen; the paper: GPT2 base); with size tiny, the
    size of the random GPT2 of clapkit.train.demo (``tiny`` or ``small``)."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder (default: the language model's)."""
    lm_init_std: float = 0.02
    """size tiny: the random GPT2's weight std (its ``initializer_range``; GPT2's is 0.02)."""
    freeze_language_model: bool = True
    projection: Literal["msclap", "mlp", "linear"] = "msclap"
    projection_dim: int = 1024
    projection_dropout: float = 0.5
    normalize_prefix: bool = True
    """L2-normalise the projected embedding before the mapper (Pengi: yes)."""
    prefix_length: int = 40
    """Audio prefix tokens (Pengi: 40)."""
    mapper: Literal["transformer", "mlp"] = "transformer"
    """Pengi's (and clapcap's) transformer mapper, or ClipCap's MLP mapper."""
    mapper_depth: int = 8
    mapper_heads: int = 8
    # Data
    train_manifest: str | None = None
    """Multi-task manifest (clapkit.data.multitask) of the training pairs."""
    eval_manifest: str | None = None
    """Multi-task manifest answered each epoch (exact-match accuracy per task)."""
    task_weights: tuple[str, ...] = ()
    """NAME=WEIGHT per task: its share of an epoch's draws (default: its size)."""
    samples_per_epoch: int | None = None
    """Draws per epoch over all processes (default: the number of training pairs)."""
    clip_seconds: float = 7.0
    """Training crop (paper: random 7 s segments, shorter audio padded)."""
    max_answer_tokens: int = 77
    """Answers cut to this many tokens, EOS included (Pengi: 77)."""
    cache_audio: bool = False
    on_error: Literal["skip", "raise"] = "skip"
    num_workers: int = 4
    # Optimisation (Adam: the paper; the rest is ours, the paper and Pengi's code are silent)
    epochs: int = 30
    lr: float = 1e-4
    warmup_steps: int = 2000
    global_batch_size: int = 384
    batch_size: int = 48
    """Per-process micro-batch; accumulation = global / (batch_size * processes)."""
    max_grad_norm: float | None = 1.0
    # Evaluation
    max_new_tokens: int = 16
    eval_every: int = 1
    # Runtime (and clapkit.train.config.RunSettings)
    grad_checkpointing: bool = False
    output_dir: str = "runs/pretrain_htsat22"
    save_every_steps: int = 2000


# The paper names none of them; these are Pengi's families (Deshmukh et al., arXiv 2305.11834,
# Table 1 prompts; "generate audio caption", "generate metadata" and "this is a sound of" are in
# Pengi's released code, the other prompts are ours in Pengi's style).
PENGI_TASK_FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("audioset", "this is a sound of", "its labels", "AudioSet balanced + unbalanced train"),
    ("fsd50k", "this is a sound of", "its labels", "FSD50K dev"),
    ("esc50", "this is a sound of", "class", "ESC-50 (folds not tested)"),
    ("us8k", "this is a sound of", "class", "UrbanSound8K (folds not tested)"),
    ("dcase17-t4", "this is a sound of", "its labels", "DCASE 2017 task 4 training"),
    ("scenes", "this acoustic scene is", "scene", "TUT2017 development, CochlScene train"),
    ("vocalsound", "this vocal sound is", "class", "VocalSound train"),
    ("audiocaps", "generate audio caption", "caption", "AudioCaps train"),
    ("clotho", "generate audio caption", "caption", "Clotho development"),
    ("metadata", "generate metadata", "description", "WavText5K, SoundDescs, MACS"),
    ("clotho-aqa", "question: {question}", "answer", "Clotho-AQA train"),
    ("music-genre", "this music genre is", "genre", "GTZAN (not tested), FMA"),
    ("music-speech", "this is music or speech", "music/speech", "GTZAN music/speech"),
    ("nsynth-instrument", "this music instrument is", "family", "NSynth train"),
    ("nsynth-pitch", "this music note is", "pitch", "NSynth train"),
    ("nsynth-velocity", "this music note velocity is", "velocity", "NSynth train"),
    ("nsynth-qualities", "this music note sounds", "its qualities", "NSynth train"),
    ("percussion", "this percussion instrument is", "class", "Beijing Opera percussion"),
    ("emotion", "this emotion is", "emotion", "CREMA-D, RAVDESS, IEMOCAP, MSP-Podcast train"),
    ("sentiment", "this speech sentiment is", "sentiment", "CMU-MOSI, CMU-MOSEI, MELD train"),
    ("keyword", "this spoken word is", "keyword", "Speech Commands v2 train"),
    ("speaker-count", "the number of speakers is", "count", "LibriCount train"),
)
"""The 22 task families: (name, prompt, answer, training data). A dataset that is also a Table 1
zero-shot task (ESC-50, US8K, ...) trains here on its training split only; leaving such
families out (``--task-weights NAME=0``) keeps that column strictly zero-shot: the paper does
not say."""

PAPER = Config(output_dir="runs/htsat22")
"""The paper's HTSAT-22 pretraining on a multi-task manifest of the Pengi task families
(`PENGI_TASK_FAMILIES`)."""
SMOKE = dataclasses.replace(
    PAPER, demo=DemoSettings(size="tiny", fsdd_root="data/fsdd"), language_model="small",
    lm_init_std=0.2,
    projection_dim=32, projection_dropout=0.0, mapper="mlp", prefix_length=4,
    task_weights=("digit=9", "speaker=1"), samples_per_epoch=2400, clip_seconds=0.8,
    max_answer_tokens=4, cache_audio=True, num_workers=0, epochs=6, lr=1e-3, warmup_steps=0,
    global_batch_size=32, batch_size=16, max_new_tokens=3,
    output_dir="runs/htsat22-smoke", save_every_steps=30, torch_threads=1,
)  # fmt: skip
"""FSDD (3 speakers x 10 digits x 50 clips, two tasks: which digit, weight 9; which speaker,
weight 1; the fourth speaker's 500 clips answer "which digit" each epoch), a 2-stage HTSAT at
8 kHz (``--audio cnn14``: clapkit.train.demo's small CNN14), ClipCap's MLP mapper, 6 epochs of
75 updates (accumulation 2), about 40 s on one CPU thread.

The LM is clapkit.train.demo's small GPT2 (2 layers, width 64, word tokens), random and frozen
as the paper's GPT2 is, at weight std 0.2. At GPT2's 0.02 a random LM's answer logits move by
~1e-3 from clip to clip and differ little from one another (std 0.17 over the words): frozen,
its loss cannot fall; trained with the encoder, it learns the answers' prior from the prompt
within ~15 updates and hardly reads its prefix (on digits alone the loss stays at that prior
for 300 updates; in this preset the learning check's probe gains 0.04 instead of 0.19). At 0.2
the prefix moves the answers ~40 times more, and the frozen LM learns nothing by itself: every
fall of the loss goes through the prefix, i.e. through the encoder. Measured (seed 0 / 1):
training loss 1.42 -> 0.32 / 1.45 -> 0.34, the unheard speaker's digits answered right 37% /
37% of the time at the best epoch (chance 10%)."""
NOTES = {
    "pengi-22": f"HTSAT-22 pretraining on the {len(PENGI_TASK_FAMILIES)} Pengi task families "
    "(a multi-task manifest); its encoder feeds Table 1's HTSAT-22 rows (avg .454-.480)",
    "smoke": "FSDD: which digit + which speaker on 3 speakers, tiny model, CPU, seconds",
}
"""One line per preset for ``--help``."""


def htsat22_presets(fsdd_root: str = "data/fsdd") -> dict[str, Config]:
    """The recipe's named presets.

    Args:
        fsdd_root: the Free Spoken Digit Dataset folder of ``smoke`` (the recipe passes the
            repository's ``data/fsdd``).

    Returns:
        ``pengi-22`` (`PAPER`) and ``smoke`` (`SMOKE`).
    """
    return {
        "pengi-22": PAPER,
        "smoke": dataclasses.replace(
            SMOKE, demo=dataclasses.replace(SMOKE.demo, fsdd_root=fsdd_root)
        ),
    }


def parse_weights(pairs: tuple[str, ...]) -> dict[str, float] | None:
    """``--task-weights``: ``("esc50=1", "clotho=2.5")`` -> ``{"esc50": 1.0, "clotho": 2.5}``.

    Args:
        pairs: ``NAME=NUMBER`` strings.

    Returns:
        The weight of each task; None for no pairs (every task weighted by its size).

    Raises:
        SystemExit: a pair that is not ``NAME=NUMBER`` (a command-line error, named).
    """
    if not pairs:
        return None
    weights = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise SystemExit(f"--task-weights: {pair!r} is not NAME=NUMBER") from None
    return weights
