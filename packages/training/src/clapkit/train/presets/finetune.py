"""Settings of audio-encoder fine-tuning (``recipes/finetune_audio.py``) and its presets.

The paper (arXiv 2309.05767) fine-tunes its audio encoder on ESC-50: 96.70% -> 98.25% accuracy,
5-fold cross-validation. It gives only the data, the encoder (HTSAT-22, 44.1 kHz, 7 s clips:
ESC-50's 5 s clips are padded) and those two numbers. Where it is silent `Config` follows HTS-AT's
ESC-50 fine-tuning (Chen et al., ICASSP 2022; its ``esc_config``: batch 128 = 32 x 4 GPUs, lr
1e-3, 100 epochs; its model's SpecAugment and its ESC-50 loader's random circular time shift;
mixup, which its code applies on AudioSet, is off: ``--mixup-alpha 1.0`` as PANNs' fine-tuning
does). Ours: AdamW, the encoder at a tenth of the head's rate, a 3-epoch linear warm-up then
cosine decay, and each fold's last epoch is the one reported (``--select best`` takes the best
epoch on the test fold itself, which flatters the result)::

    presets = finetune_presets(fsdd_root="data/fsdd")
    cfg = presets["esc50"]        # HTSAT-22, ESC-50, 5 folds
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from clapkit.train.config import RUN_RESUMABLE_CHANGES, RunSettings
from clapkit.train.demo import DemoSettings

__all__ = [
    "NOTES",
    "PAPER_ESC50",
    "RESUMABLE_CHANGES",
    "Config",
    "finetune_presets",
]

PAPER_ESC50 = (96.70, 98.25)
"""The paper's ESC-50 fine-tuning figures: accuracy 96.70% -> 98.25%."""
RESUMABLE_CHANGES = (*RUN_RESUMABLE_CHANGES, "num_workers", "max_steps")


@dataclass(frozen=True)
class Config(RunSettings):
    """Every setting of a run; defaults are the ``esc50`` preset (HTSAT-22 on ESC-50)."""

    demo: DemoSettings = field(default_factory=DemoSettings)
    """The demo's and smoke runs' settings, apart from the paper's (``--demo.size``,
    ``--demo.fsdd-root``, ...): small models and the FSDD data; off by default."""

    # Model
    audio: str = "htsat-22"
    """Registered audio encoder (cnn14, htsat, htsat-22, ...) when --clap is not given."""
    audio_weights: str | None = None
    """Its weights file (PANNs .pth, HTS-AT .ckpt, clapkit safetensors); None = random."""
    clap: str | None = None
    """A ClapModel folder whose audio tower is fine-tuned (its zero-shot score is reported)."""
    mode: Literal["linear-probe", "full"] = "full"
    head_dropout: float = 0.0
    # Data
    data: str | None = None
    """NAME=PATH of a classification task (esc50=data/ESC-50-master) or a labelled manifest."""
    fold_field: str = "fold"
    test_folds: tuple[str, ...] = ()
    """Folds held out in turn; empty = every fold (ESC-50: 1..5)."""
    clip_seconds: float | None = None
    """Clip length fed to the encoder; None = its front end's (HTSAT-22: 7 s)."""
    prompt_template: str | None = None
    """Zero-shot prompt of a manifest task (a task reader's own templates otherwise)."""
    num_workers: int = 4
    cache_audio: bool = False
    on_error: Literal["skip", "raise"] = "skip"
    # Augmentation (training only)
    mixup_alpha: float = 0.0
    """Beta(alpha, alpha) mixup of waveforms and targets; 0 = off (PANNs: 1.0)."""
    time_shift: float = 1.0
    """Random circular shift, up to this fraction of the clip; 0 = off (HTS-AT: any)."""
    spec_augment: bool = True
    """The front end's SpecAugment (full mode: the frozen encoder of a probe never augments)."""
    spec_time_width: int = 64
    spec_freq_width: int = 8
    spec_stripes: int = 2
    # Optimisation
    epochs: int = 100
    lr: float = 1e-3
    """The head's learning rate."""
    encoder_lr_ratio: float = 0.1
    """Full mode: the encoder's learning rate as a fraction of the head's."""
    weight_decay: float = 0.0
    warmup_epochs: int = 3
    global_batch_size: int = 128
    batch_size: int = 32
    """Per-process micro-batch; accumulation = global / (batch_size * processes)."""
    max_grad_norm: float | None = None
    eval_every: int = 1
    select: Literal["last", "best"] = "last"
    """Which epoch of a fold is reported and saved: the last, or the best on the test fold."""
    # Runtime (and clapkit.train.config.RunSettings)
    output_dir: str = "runs/finetune_audio"
    save_every_steps: int = 500
    max_steps: int | None = None
    """Stop after this many optimizer updates in total (interruption tests)."""


NOTES = {
    "esc50": "ESC-50, 5 folds, HTSAT-22: the paper's fine-tuning gives 96.70% -> 98.25%",
    "smoke": "FSDD digits, folds = 4 speakers, tiny CNN14, CPU seconds",
}


def finetune_presets(fsdd_root: str = "data/fsdd") -> dict[str, Config]:
    """The recipe's presets by name: ``esc50`` (the paper's) and ``smoke`` (FSDD, CPU).

    Args:
        fsdd_root: the Free Spoken Digit Dataset folder of the ``smoke`` preset (the recipe
            passes the repository's ``data/fsdd``).

    Returns:
        ``{"esc50": ..., "smoke": ...}``. ``smoke``: FSDD digits, 30 clips per speaker and
        digit, every speaker held out in turn (900 training clips, 300 test clips per fold), a
        tiny random CNN14 trained 3 epochs (336 updates): CPU, about 15 s a fold.
    """
    esc50 = Config(data="esc50=data/ESC-50-master", output_dir="runs/finetune-esc50")
    smoke = dataclasses.replace(
        esc50, audio="cnn14", data=None,
        demo=DemoSettings(size="tiny", fsdd_root=fsdd_root, clips_per_digit=30),
        fold_field="speaker", prompt_template="a man says the digit {}",
        clip_seconds=0.8, time_shift=0.1, spec_time_width=8, spec_freq_width=4, epochs=3, lr=3e-3,
        encoder_lr_ratio=1.0, warmup_epochs=0, global_batch_size=8, batch_size=8, num_workers=0,
        cache_audio=True, save_every_steps=10_000,
        output_dir="runs/finetune-smoke", torch_threads=1,
    )  # fmt: skip
    return {"esc50": esc50, "smoke": smoke}
