"""Settings of the captioner (``recipes/train_captioner.py``) and their paper presets.

Elizalde, Deshmukh, Wang (arXiv 2309.05767), Table 2, "AudioCaps captioning" (SPIDEr .455) and
"Clotho captioning" (SPIDEr .271): the CLAP audio encoder and GPT2 frozen, msclap's clapcap
mapper (40-token prefix, 8 layers) trained on the task's captions. The paper gives no mapper
optimiser; the defaults follow ClipCap (AdamW, lr 2e-5, 5000 warm-up steps, batch 40, 10
epochs)::

    presets = captioning_presets(fsdd_root="data/fsdd")
    presets["audiocaps"], presets["clotho"], presets["smoke"]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from clapkit.train.config import RUN_RESUMABLE_CHANGES, RunSettings
from clapkit.train.demo import DemoSettings

__all__ = [
    "AUDIOCAPS",
    "CLOTHO",
    "PRESET_NOTES",
    "RESUMABLE_CHANGES",
    "SMOKE",
    "Config",
    "captioning_presets",
]

RESUMABLE_CHANGES = (
    *RUN_RESUMABLE_CHANGES,
    "num_workers",
    "epochs",
    "eval_every",
    "examples",
)
"""Fields that may change when a run is resumed: where it writes, how it logs, when it stops."""


@dataclass(frozen=True)
class Config(RunSettings):
    """Every setting of a captioner run; defaults are the paper's (the ``audiocaps`` preset)."""

    demo: DemoSettings = field(default_factory=DemoSettings)
    """The demo's and smoke runs' settings, apart from the paper's (``--demo.size``,
    ``--demo.fsdd-root``, ...): small models and the FSDD data; off by default."""

    # Model
    clap: str | None = None
    """ClapModel folder or msclap CLAP_weights_2023.pth whose audio side is used (frozen)."""
    language_model: str = "gpt2"
    """Hub id or folder of the pretrained GPT2 (frozen)."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder (default: the language model's)."""
    prefix_length: int = 40
    mapper_depth: int = 8
    mapper_heads: int = 8
    freeze_language_model: bool = True
    # Data
    data: str | None = None
    """NAME=PATH: train on the task's training split, test on its test split, read from the
    publisher's layout (clotho=PATH: development / evaluation; audiocaps=PATH: train / test)."""
    train_manifest: str | None = None
    """JSON Lines manifest of (audio, caption or captions) pairs."""
    test_manifest: str | None = None
    """Test clips with their reference captions (AudioCaps/Clotho: 5 each)."""
    references_per_item: int | None = 5
    """Enforce the 5-reference protocol (None = any number)."""
    captions_per_clip: Literal["sample", "all"] = "sample"
    """sample = one of a clip's captions per epoch; all = every caption its own training pair."""
    max_caption_tokens: int | None = 67
    """Training captions are cut to this many tokens, EOS included (None = no cut)."""
    long_audio: Literal["mean", "center"] = "mean"
    """Test clips longer than the encoder's window: mean of window embeddings, or the centre."""
    num_workers: int = 4
    # Optimisation
    epochs: int = 10
    lr: float = 2e-5
    warmup_steps: int = 5000
    global_batch_size: int = 40
    batch_size: int = 40
    """Per-process micro-batch; accumulation = global / (batch_size * processes)."""
    max_grad_norm: float | None = 1.0
    # Evaluation
    beam_size: int = 5
    max_new_tokens: int = 67
    eval_every: int = 1
    """Caption the test set every N epochs (and after the last)."""
    examples: int = 20
    # Runtime (and clapkit.train.config.RunSettings)
    output_dir: str = "runs/train_captioner"


AUDIOCAPS = Config(output_dir="runs/captioner-audiocaps")
"""AudioCaps (Kim et al., NAACL 2019): 10 s AudioSet clips, one caption per training clip and
five per test clip. ClipCap's optimiser (Mokady et al. 2021: AdamW, lr 2e-5, 5000 warm-up steps,
batch 40, 10 epochs) and msclap's decoding (beam 5, up to 67 tokens; captions cut to the same
length in training). A 10 s clip is longer than the 7 s window of the 2023 encoder: training
takes a random window, the test embeds the whole clip as the mean of its windows."""
CLOTHO = dataclasses.replace(
    AUDIOCAPS, captions_per_clip="all", max_caption_tokens=40, warmup_steps=2000,
    output_dir="runs/captioner-clotho",
)  # fmt: skip
"""Clotho (Drossos et al., ICASSP 2020; v2.1: 3839 development clips): 15-30 s clips, five
captions each of 8-20 words. Every caption is a training pair (ClipCap trains on each of COCO's
five captions); 40 tokens keep a 20-word caption whole with GPT2's BPE. 5000 warm-up steps would
outlast ten epochs of the development split at batch 40 (3839 x 5 captions / 40 = 480 updates
per epoch), so the warm-up keeps AudioCaps' share of the run instead (5000 of ~12,500 updates,
40% -> 2000 of 4800). The clips are 2-4 encoder windows long: training crops one at random, the
test takes the mean of the windows (``long_audio="mean"``)."""
SMOKE = dataclasses.replace(
    AUDIOCAPS, demo=DemoSettings(size="tiny", fsdd_root="data/fsdd", clips_per_digit=2),
    references_per_item=None, prefix_length=4, mapper_depth=1, mapper_heads=2,
    freeze_language_model=False,  # a random tiny LM knows no language: train it too
    max_caption_tokens=16, epochs=3, lr=1e-2, warmup_steps=0, batch_size=4, global_batch_size=8,
    num_workers=0, beam_size=2, max_new_tokens=10, examples=4,
    output_dir="runs/captioner-smoke", save_every_steps=3, torch_threads=1,
)  # fmt: skip
"""FSDD digits (60 training clips, 20 test clips of a held-out speaker), a tiny random model,
3 epochs of 8 updates (accumulation 2), a checkpoint every 3 updates: the CI check."""
PRESET_NOTES = {
    "audiocaps": "Table 2 AudioCaps captioning (SPIDEr .455)",
    "clotho": "Table 2 Clotho captioning (SPIDEr .271)",
    "smoke": "FSDD, tiny model, CPU, seconds",
}


def captioning_presets(fsdd_root: str = "data/fsdd") -> dict[str, Config]:
    """The captioner's named presets.

    Args:
        fsdd_root: the Free Spoken Digit Dataset folder of ``smoke`` (the recipe passes the
            repository's ``data/fsdd``).

    Returns:
        ``audiocaps`` (`AUDIOCAPS`), ``clotho`` (`CLOTHO`) and ``smoke`` (`SMOKE`).
    """
    return {
        "audiocaps": AUDIOCAPS,
        "clotho": CLOTHO,
        "smoke": dataclasses.replace(
            SMOKE, demo=dataclasses.replace(SMOKE.demo, fsdd_root=fsdd_root)
        ),
    }
