"""Settings of contrastive pretraining (``recipes/pretrain_clap.py``) and their paper presets.

Elizalde, Deshmukh, Wang, "Natural Language Supervision for General-Purpose Audio
Representations" (arXiv 2309.05767). `Config`'s defaults are the paper's training (section 3):
Adam, lr 1e-3, reduce-on-plateau x0.1 with patience 15, batch 1536, random 7 s crops, both
encoders trainable, 40 epochs, the epoch with the best average zero-shot score kept.

::

    presets = pretraining_presets(fsdd_root="data/fsdd")
    cfg = presets["table1-htsat22-gpt2"]            # Table 1: 119k pairs, paper avg .480
    cfg = presets["table2-htsat22-gpt2"]            # Table 2: 4.6M pairs as shards of 20 sources
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from clapkit.train.config import RUN_RESUMABLE_CHANGES, RunSettings
from clapkit.train.demo import DemoSettings

__all__ = [
    "NOTES",
    "RESUMABLE_CHANGES",
    "TABLE1_AVERAGE",
    "TABLE2_SCORES",
    "TABLE2_SOURCES",
    "Config",
    "pretraining_presets",
    "suite_task_specs",
]

RESUMABLE_CHANGES = (*RUN_RESUMABLE_CHANGES, "max_steps", "extra")
"""Config fields that may change when a run is resumed (where it is written, how it is logged,
when it stops): left out of run.json's hash and of the resume check."""


@dataclass(frozen=True)
class Config(RunSettings):
    """Every setting of a pretraining run; defaults are the paper's (Table 1, HTSAT-22 + GPT2)."""

    demo: DemoSettings = field(default_factory=DemoSettings)
    """The demo's and smoke runs' settings, apart from the paper's (``--demo.size``,
    ``--demo.fsdd-root``, ...): small models and the FSDD data; off by default."""

    # Model
    audio: str = "htsat-22"
    """Audio encoder (registry name: cnn14, htsat, htsat-22)."""
    text: str = "gpt2-eot"
    """Text encoder (registry name: bert, roberta, clip, gpt2-eot)."""
    audio_weights: str | None = None
    """Audio checkpoint to start from (the paper starts from trained encoders); None = random."""
    text_pretrained: str | None = None
    """Hub id or folder of the pretrained text encoder (paper: gpt2, bert-base-uncased, ...)."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder when the text encoder starts from random weights."""
    projection: str = "msclap"
    projection_dim: int = 1024
    projection_dropout: float = 0.5
    init_temperature: float = 0.007
    """Initial temperature, logits = cosine / T (paper: 0.007, which starts the multiplier at its
    clamp of 100; msclap's code: 0.07)."""
    dropout: bool = True
    """False: no dropout anywhere in the model (every rate set to 0), so that a run's numbers do
    not depend on how its batch is split into processes and micro-steps (equivalence tests)."""
    # Data
    train_manifest: str | None = None
    """JSON Lines manifest of audio-caption pairs."""
    train_shards: tuple[str, ...] = ()
    """Instead of a manifest: WebDataset shards (clapkit.data.ShardDataset): a folder, a glob, a
    brace range (``train-{000000..000999}.tar``), ``pipe:`` or URL specs, or ``NAME=SPEC:WEIGHT``
    entries / a sources YAML that mix several sources by weight."""
    shuffle_buffer: int = 2000
    """Shard samples shuffled in a buffer of this many (compressed) samples per worker."""
    resampled_shards: bool = False
    """Draw shards with replacement (webdataset's ResampledShards; several sources always are):
    epochs of --samples-per-epoch clips without a pass over the data."""
    samples_per_epoch: int | None = None
    """Shards only: clips per epoch over all processes (equal steps on every rank)."""
    eval_manifest: tuple[str, ...] = ()
    """Labelled manifests, one zero-shot task each (file stem = task name)."""
    eval_task: tuple[str, ...] = ()
    """Paper tasks as NAME=PATH (``esc50=/data/ESC-50-master``, see clapkit.data.tasks), read in
    their official layout and scored with their own prompts and metric each epoch."""
    eval_suite: Literal["table1", "table2"] | None = None
    """A paper table's zero-shot tasks, each read from ``--eval-root/<task>/`` when that folder
    exists (missing ones are named in the log); retrieval and captioning rows are scored after
    training by ``recipes/evaluate.py --suite``."""
    eval_root: str = "data/eval"
    """The folder holding one ``<task>/`` folder per dataset (as ``evaluate.py --data-root``)."""
    prompt_template: str = "this is a sound of {}"
    """Zero-shot prompt of the --eval-manifest tasks; {} is the label."""
    clip_seconds: float = 7.0
    """Training crop length (paper: random 7 s segments)."""
    shift_short_clips: bool = False
    """Place clips shorter than the crop at a random offset (time-shift augmentation)."""
    num_workers: int = 4
    prefetch_factor: int = 4
    """Batches each DataLoader worker prepares ahead (with workers)."""
    cache_audio: bool = False
    """Keep decoded audio in memory (small datasets)."""
    on_error: Literal["skip", "raise"] = "skip"
    """Bad training files: skipped, counted and logged by name, or fatal."""
    # Optimisation
    epochs: int = 40
    lr: float = 1e-3
    plateau_factor: float = 0.1
    plateau_patience: int = 15
    global_batch_size: int = 1536
    batch_size: int = 64
    """Per-process micro-batch; accumulation = global / (batch_size * processes)."""
    accumulate_negatives: bool = True
    """Under accumulation, one contrastive loss over the whole global batch (every micro-batch's
    clips are negatives for all others; clapkit.core.accumulated_contrastive_step, open_clip's
    accum_freq): embeddings first without gradients, then each micro-batch again with them.
    --no-accumulate-negatives: a loss per micro-batch (negatives within one micro-step)."""
    max_grad_norm: float | None = None
    # Runtime (and clapkit.train.config.RunSettings)
    grad_checkpointing: bool = False
    compile: bool = False
    """torch.compile both towers and the loss; captions are padded to multiples of
    ``caption_bucket`` tokens so that the compiled graphs see a few fixed shapes."""
    caption_bucket: int = 16
    output_dir: str = "runs/pretrain_clap"
    save_every_steps: int = 500
    max_steps: int | None = None
    """Stop after this many optimizer steps in total (benchmarks, interruption tests)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the config."""


PAPER = Config(eval_suite="table1")
"""The paper's Table 1 setting (HTSAT-22 + GPT2 on 119k pairs, the 16 zero-shot tasks)."""
TABLE1_AVERAGE = {
    "table1-cnn14-bert": 0.428,
    "table1-htsat-clip": 0.430,
    "table1-htsat-roberta": 0.431,
    "table1-htsat-gpt2": 0.435,
    "table1-htsat22-roberta": 0.454,
    "table1-htsat22-clip": 0.469,
    "table1-htsat22-gpt2": 0.480,
}
"""The paper's Table 1 average zero-shot score of each encoder pair (16 tasks, 119k pairs)."""
_TABLE1_PAIRS = {
    "table1-cnn14-bert": ("cnn14", "bert", "bert-base-uncased"),
    "table1-htsat-clip": ("htsat", "clip", "openai/clip-vit-base-patch32"),
    "table1-htsat-roberta": ("htsat", "roberta", "roberta-base"),
    "table1-htsat-gpt2": ("htsat", "gpt2-eot", "gpt2"),
    "table1-htsat22-roberta": ("htsat-22", "roberta", "roberta-base"),
    "table1-htsat22-clip": ("htsat-22", "clip", "openai/clip-vit-base-patch32"),
    "table1-htsat22-gpt2": ("htsat-22", "gpt2-eot", "gpt2"),
}
TABLE1 = {
    name: dataclasses.replace(PAPER, audio=audio, text=text, text_pretrained=pretrained)
    for name, (audio, text, pretrained) in _TABLE1_PAIRS.items()
}
"""Table 1: the seven encoder pairs, each trained on the 119k pairs with the paper's settings
and scored each epoch on the 16 zero-shot tasks (averages in `TABLE1_AVERAGE`: CNN14+BERT
.428, HTSAT+CLIP .430, HTSAT+RoBERTa .431, HTSAT+GPT2 .435, HTSAT-22+RoBERTa .454,
HTSAT-22+CLIP .469, HTSAT-22+GPT2 .480)."""
TABLE2_SOURCES = (
    "wavcaps", "audioset", "fsd50k", "clotho", "audiocaps", "macs", "wavtext5k", "sounddescs",
    "nsynth", "fma", "mosi", "meld", "iemocap", "mosei", "msp-podcast", "cochlscene", "ljspeech",
    "epic-kitchens", "kinetics700", "findsounds",
)  # fmt: skip
"""The 20 sources of Table 2's 4.6M training pairs (paper, section 3), one shard folder each."""
TABLE2_SCORES = {
    "esc50": 0.939, "fsd50k": 0.485, "us8k": 0.823, "dcase17-t4": 0.466, "audioset": 0.102,
    "vocalsound": 0.800, "gtzan-genres": 0.584, "crema-d": 0.300, "speech-commands": 0.164,
}  # fmt: skip
"""Some of the paper's Table 2 zero-shot results of CLAP 2023 (the suite has 26 rows)."""
TABLE2 = dataclasses.replace(
    TABLE1["table1-htsat22-gpt2"],
    train_shards=("data/table2-shards/*/*.tar",),
    samples_per_epoch=4_600_000,
    eval_suite="table2",
    output_dir="runs/table2-htsat22-gpt2",
)
"""Table 2 (CLAP 2023): HTSAT-22 + GPT2 with Table 1's optimisation, trained on 4.6M pairs of
20 sources (`TABLE2_SOURCES`) read as tar shards, ``data/table2-shards/<source>/*.tar``
(``python -m clapkit.data.make_shards``), one epoch = one pass over the 4.6M pairs, scored each
epoch on Table 2's zero-shot tasks. Paper: ESC50 .939, UrbanSound8K .823, FSD50K mAP .485,
DCASE17 F1 .466, AudioSet mAP .102, VocalSound .800."""
NOTES = {
    **{
        name: f"Table 1 ({name[7:]}, 119k pairs): paper average {score:.3f} over 16 tasks"
        for name, score in TABLE1_AVERAGE.items()
    },
    "table2-htsat22-gpt2": "Table 2 (4.6M pairs of 20 sources as shards, Table 2 suite): paper "
    "ESC50 .939, UrbanSound8K .823, FSD50K mAP .485, VocalSound .800",
    "demo": "FSDD digits: 3 speakers train, zero-shot on the 4th (chance 10%), CPU minutes",
    "smoke": "the CI check: tiny encoders, 2 epochs of 2 clips per speaker and digit",
}
"""One line per preset for ``--help``: what it reproduces and the paper's numbers."""


def pretraining_presets(fsdd_root: str = "data/fsdd") -> dict[str, Config]:
    """Every named preset of the pretraining recipe.

    Args:
        fsdd_root: the Free Spoken Digit Dataset folder of the ``demo`` and ``smoke`` presets
            (the recipe passes the repository's ``data/fsdd``).

    Returns:
        name -> config: the seven ``table1-*`` pairs, ``table2-htsat22-gpt2``, ``demo`` (FSDD
        digits: three speakers train, the fourth is the zero-shot test; 10 epochs, about a
        minute on a CPU, >= 40% on the unheard speaker where chance is 10%) and ``smoke`` (the
        CI check: tiny encoders, 2 epochs of 2 clips per speaker and digit).
    """
    demo = dataclasses.replace(
        PAPER,
        audio="cnn14",
        text="gpt2-eot",
        projection="linear",
        projection_dim=128,
        projection_dropout=0.0,
        init_temperature=0.07,
        eval_suite=None,
        demo=DemoSettings(size="small", fsdd_root=fsdd_root),
        prompt_template="a man says the digit {}",
        clip_seconds=0.8,
        shift_short_clips=True,
        cache_audio=True,
        num_workers=0,
        epochs=10,
        global_batch_size=16,
        batch_size=16,
        plateau_patience=3,
        output_dir="runs/demo",
        save_every_steps=10_000,
        log_with="tensorboard",
        torch_threads=2,
    )
    smoke = dataclasses.replace(
        demo,
        demo=DemoSettings(size="tiny", fsdd_root=fsdd_root, clips_per_digit=2),
        projection_dim=32,
        epochs=2,
        batch_size=8,
        global_batch_size=16,
        output_dir="runs/smoke",
        save_every_steps=2,
        plateau_patience=1,
    )
    return {**TABLE1, "table2-htsat22-gpt2": TABLE2, "demo": demo, "smoke": smoke}


def suite_task_specs(suite: str, root: str) -> list[str]:
    """``NAME=PATH`` for each zero-shot task of a paper table whose folder is under ``root``.

    Args:
        suite: ``"table1"`` (16 tasks) or ``"table2"`` (its zero-shot rows).
        root: the folder holding one ``<task>/`` folder per dataset.

    Returns:
        The ``--eval-task`` entries of the tasks found; the others are logged by name.
    """
    import logging

    from clapkit.data.tasks import TABLE1_TASKS, TABLE2_TASKS, get_task

    names = {"table1": TABLE1_TASKS, "table2": TABLE2_TASKS}[suite]
    found: list[str] = []
    missing: list[str] = []
    for name in names:
        if get_task(name).kind not in ("multiclass", "multilabel"):
            continue  # retrieval and captioning: recipes/evaluate.py after training
        folder = Path(root) / name
        (found if folder.is_dir() else missing).append(f"{name}={folder}")
    if missing:
        logging.getLogger(__name__).warning(
            "%s: %d zero-shot tasks have no folder under %s: %s",
            suite, len(missing), root, ", ".join(m.partition("=")[0] for m in missing),
        )  # fmt: skip
    return found
