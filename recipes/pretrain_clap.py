"""Contrastive language-audio pretraining: the training runs of the paper's Tables 1 and 2.

Launch:
    accelerate launch recipes/pretrain_clap.py --preset table1-htsat22-gpt2 \
        --train-manifest data/train.jsonl --eval-manifest data/esc50.jsonl data/us8k.jsonl \
        --output-dir runs/table1-htsat22-gpt2
    accelerate launch recipes/pretrain_clap.py --preset demo          # FSDD digits, CPU, minutes
    accelerate launch --cpu recipes/pretrain_clap.py --preset smoke   # the CI check

Reproduces: Elizalde, Deshmukh, Wang, "Natural Language Supervision for General-Purpose Audio
Representations" (arXiv 2309.05767), Table 1 (seven encoder pairs on 119k pairs, 16 zero-shot
tasks) and Table 2 (HTSAT-22 + GPT2 on 4.6M pairs). Paper settings (the defaults of `Config`):
Adam, lr 1e-3, reduce-on-plateau x0.1 with patience 15, batch 1536, random 7 s crops, both
encoders trainable, 40 epochs, the epoch with the best average zero-shot score is kept.

| preset | paper result to reproduce |
|---|---|
| table1-{cnn14-bert, htsat-clip, htsat-roberta, htsat-gpt2} | Table 1 avg .428 .430 .431 .435 |
| table1-{htsat22-roberta, htsat22-clip, htsat22-gpt2} | Table 1 avg .454 .469 .480 |
| table2-htsat22-gpt2 (4.6M pairs as shards) | Table 2: ESC50 .939, US8K .823, FSD50K .485 |

Any `Config` field is a command-line override (``--epochs 3 --seed 1``); ``--preset NAME``
picks the starting values. Multi-GPU/multi-node: ``accelerate launch --config_file ...`` (DDP by
default; FSDP example in ``recipes/configs/fsdp.yaml``).

A run owns its output folder: it refuses a non-empty one unless told ``--resume latest|DIR``
(continue; the checkpoint's run must have the same config, or ``--resume-force``) or
``--overwrite`` (the old run is moved to ``OUT.old-<timestamp>``). Checkpoints are atomic.

Gradient accumulation reaches the global batch in samples per update; with
``--accumulate-negatives`` (the default) the contrastive loss also sees the whole global batch
as negatives (two passes per micro-batch: about 1.3-1.5x the compute of plain accumulation).
``--no-accumulate-negatives``: negatives within one micro-batch, gathered over all processes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clapkit.core import ContrastiveLoss, accumulated_contrastive_step, build_clap
from clapkit.data import ClapCollator, ManifestDataset, ShardDataset, SkippedFiles, read_manifest
from clapkit.train.checkpointing import Progress, replace_folder, save_checkpoint
from clapkit.train.config import jsonable, parse_config
from clapkit.train.demo import build_encoders, fsdd_manifests
from clapkit.train.evaluation import load_zero_shot_tasks, zero_shot_evaluate
from clapkit.train.reporting import flatten, write_model_card, write_report
from clapkit.train.runs import RunPlan, plan_run
from clapkit.train.setup import enable_grad_checkpointing, make_accelerator, setup_logging
from clapkit.train.throughput import ThroughputMeter, count_flops

logger = logging.getLogger("pretrain_clap")
REPO = Path(__file__).resolve().parent.parent
RECIPE = "recipes/pretrain_clap.py"
NOT_IDENTITY = (
    "output_dir",
    "resume",
    "overwrite",
    "resume_force",
    "log_with",
    "max_steps",
    "save_every_steps",
    "torch_threads",
    "extra",
)
"""Config fields that may change when a run is resumed (where it is written, how it is logged,
when it stops): left out of run.json's hash and of the resume check."""


@dataclass(frozen=True)
class Config:
    """Every setting of a run; defaults are the paper's (Table 1, HTSAT-22 + GPT2)."""

    # Model
    audio: str = "htsat-22"
    """Audio encoder (registry name: cnn14, htsat, htsat-22)."""
    text: str = "gpt2-eot"
    """Text encoder (registry name: bert, roberta, clip, gpt2-eot)."""
    size: Literal["full", "small", "tiny"] = "full"
    """full = paper sizes; small/tiny = demo/smoke encoders with an 8 kHz speech front end and a
    word-level tokenizer built from the training captions."""
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
    # Data
    train_manifest: str | None = None
    """JSON Lines manifest of audio-caption pairs."""
    train_shards: str | None = None
    """Instead of a manifest: a folder or glob of tar shards (see clapkit.data)."""
    samples_per_epoch: int | None = None
    """Shards only: clips per epoch over all processes (equal steps on every rank)."""
    eval_manifest: tuple[str, ...] = ()
    """Labelled manifests, one zero-shot task each (file stem = task name)."""
    eval_task: tuple[str, ...] = ()
    """Paper tasks as NAME=PATH (``esc50=/data/ESC-50-master``, see clapkit.data.tasks), read in
    their official layout and scored with their own prompts and metric each epoch."""
    prompt_template: str = "this is a sound of {}"
    """Zero-shot prompt of the --eval-manifest tasks; {} is the label."""
    clip_seconds: float = 7.0
    """Training crop length (paper: random 7 s segments)."""
    shift_short_clips: bool = False
    """Place clips shorter than the crop at a random offset (time-shift augmentation)."""
    num_workers: int = 4
    cache_audio: bool = False
    """Keep decoded audio in memory (small datasets)."""
    on_error: Literal["skip", "raise"] = "skip"
    """Bad training files: skipped, counted and logged by name, or fatal."""
    fsdd_root: str | None = None
    """Demo data: build the manifests from this Free Spoken Digit Dataset folder."""
    heldout_speaker: str = "theo"
    """Demo data: the speaker kept out of training, whose clips are the zero-shot test."""
    fsdd_clips_per_digit: int | None = None
    """Demo data: clips per speaker and digit (None = all 50)."""
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
    # Runtime
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    grad_checkpointing: bool = False
    seed: int = 0
    output_dir: str = "runs/pretrain_clap"
    save_every_steps: int = 500
    """accelerator.save_state every N optimizer steps (and at every epoch end)."""
    resume: str | None = None
    """'latest' (the newest complete checkpoint in --output-dir) or a checkpoint folder."""
    overwrite: bool = False
    """Start afresh in a non-empty --output-dir: the old run is moved to OUT.old-<timestamp>."""
    resume_force: bool = False
    """Resume although the checkpoint's run had another config (the differences are logged)."""
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    max_steps: int | None = None
    """Stop after this many optimizer steps in total (benchmarks, interruption tests)."""
    torch_threads: int | None = None
    """torch.set_num_threads for CPU runs (None = torch's default)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the config."""


PAPER = Config()
TABLE1 = {
    "table1-cnn14-bert": dataclasses.replace(
        PAPER, audio="cnn14", text="bert", text_pretrained="bert-base-uncased"
    ),
    "table1-htsat-clip": dataclasses.replace(
        PAPER, audio="htsat", text="clip", text_pretrained="openai/clip-vit-base-patch32"
    ),
    "table1-htsat-roberta": dataclasses.replace(
        PAPER, audio="htsat", text="roberta", text_pretrained="roberta-base"
    ),
    "table1-htsat-gpt2": dataclasses.replace(
        PAPER, audio="htsat", text="gpt2-eot", text_pretrained="gpt2"
    ),
    "table1-htsat22-roberta": dataclasses.replace(
        PAPER, audio="htsat-22", text="roberta", text_pretrained="roberta-base"
    ),
    "table1-htsat22-clip": dataclasses.replace(
        PAPER, audio="htsat-22", text="clip", text_pretrained="openai/clip-vit-base-patch32"
    ),
    "table1-htsat22-gpt2": dataclasses.replace(
        PAPER, audio="htsat-22", text="gpt2-eot", text_pretrained="gpt2"
    ),
}
DEMO = dataclasses.replace(
    PAPER,
    audio="cnn14",
    text="gpt2-eot",
    size="small",
    projection="linear",
    projection_dim=128,
    projection_dropout=0.0,
    init_temperature=0.07,
    fsdd_root=str(REPO / "data" / "fsdd"),
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
SMOKE = dataclasses.replace(
    DEMO,
    size="tiny",
    projection_dim=32,
    epochs=2,
    fsdd_clips_per_digit=2,
    batch_size=8,
    global_batch_size=16,
    output_dir="runs/smoke",
    save_every_steps=2,
    plateau_patience=1,
)
PRESETS: dict[str, Config] = {
    **TABLE1,
    # Table 2: the same pair and optimisation on 4.6M pairs of 20 sources, read as tar shards
    # (python -m clapkit.data.make_shards); one epoch = one pass over the 4.6M pairs.
    "table2-htsat22-gpt2": dataclasses.replace(
        TABLE1["table1-htsat22-gpt2"],
        train_shards="data/table2-shards",
        samples_per_epoch=4_600_000,
        output_dir="runs/table2-htsat22-gpt2",
    ),
    "demo": DEMO,
    "smoke": SMOKE,
}
TABLE1_AVERAGE = {  # the paper's Table 1 average zero-shot score of each pair (16 tasks)
    "table1-cnn14-bert": 0.428,
    "table1-htsat-clip": 0.430,
    "table1-htsat-roberta": 0.431,
    "table1-htsat-gpt2": 0.435,
    "table1-htsat22-roberta": 0.454,
    "table1-htsat22-clip": 0.469,
    "table1-htsat22-gpt2": 0.480,
}
NOTES = {
    **{
        name: f"Table 1 ({name[7:]}, 119k pairs): paper average {score:.3f} over 16 tasks"
        for name, score in TABLE1_AVERAGE.items()
    },
    "table2-htsat22-gpt2": "Table 2 (4.6M pairs, --train-shards): paper ESC50 .939, "
    "UrbanSound8K .823, FSD50K mAP .485, VocalSound .800 (--eval-task NAME=PATH)",
    "demo": "FSDD digits: 3 speakers train, zero-shot on the 4th (chance 10%), CPU minutes",
    "smoke": "the CI check: tiny encoders, 2 epochs of 2 clips per speaker and digit",
}


class PretrainClapRecipe:
    """One pretraining run: ``setup``, ``train`` (evaluating each epoch), ``cleanup``.

    Args:
        cfg: the resolved config.
        preset: the preset it started from (for the report and the model card).
    """

    def __init__(self, cfg: Config, preset: str = "custom") -> None:
        self.cfg, self.preset = cfg, preset
        self.out = Path(cfg.output_dir)
        self.progress, self.skipped = Progress(), SkippedFiles()

    # -- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Accelerator, run folder, seed, data manifests, model, optimiser, loaders, resume."""
        cfg = self.cfg
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.set_flush_denormal(True)  # near-silent padding makes denormals that slow CPU kernels
        self.accelerator = accelerator = make_accelerator(
            self.out,
            mixed_precision=cfg.mixed_precision,
            log_with=cfg.log_with,
            global_batch_size=cfg.global_batch_size,
            batch_size=cfg.batch_size,
        )
        setup_logging(accelerator)
        self.micro_steps = accelerator.gradient_accumulation_steps
        # full-batch negatives: clapkit.core's step runs all micro-batches of an update itself,
        # so accelerate must neither divide the losses nor count micro-steps
        self.full_negatives = cfg.accumulate_negatives and self.micro_steps > 1
        if self.full_negatives:
            accelerator.gradient_accumulation_steps = 1
        identity = {**dataclasses.asdict(cfg), "num_processes": accelerator.num_processes}
        self.plan: RunPlan = plan_run(
            self.out,
            identity,
            seed=cfg.seed,
            resume=cfg.resume,
            overwrite=cfg.overwrite,
            force=cfg.resume_force,
            ignore=NOT_IDENTITY,
        )
        accelerator.wait_for_everyone()  # every rank has read the folder before it changes
        if accelerator.is_main_process:
            self.plan.apply()
        accelerator.wait_for_everyone()
        set_seed(cfg.seed)
        self._setup_data_sources()
        self._setup_model()
        self._setup_data()
        self.tasks = load_zero_shot_tasks(
            self.eval_manifests, cfg.eval_task, template=cfg.prompt_template
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="max" if self.tasks else "min",
            factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
        )
        self.flops_per_sample = self._count_flops()
        self.model, self.optimizer, self.train_loader = accelerator.prepare(
            self.model, self.optimizer, self.train_loader
        )
        accelerator.register_for_checkpointing(self.scheduler, self.progress, self.skipped)
        if self.plan.resume_from is not None:
            accelerator.load_state(str(self.plan.resume_from))
            logger.info(
                "resumed from %s at epoch %d, step %d",
                self.plan.resume_from,
                self.progress.epoch,
                self.progress.step,
            )
        self.resolved = {
            **dataclasses.asdict(cfg),
            "preset": self.preset,
            "train_manifest": self.train_manifest,
            "eval_manifest": self.eval_manifests,
            "eval_task": list(cfg.eval_task),
            "gradient_accumulation_steps": self.micro_steps,
            "accumulate_negatives": self.full_negatives,
            "num_processes": accelerator.num_processes,
            "flops_per_sample": self.flops_per_sample,
        }
        if accelerator.is_main_process:
            (self.out / "config.json").write_text(self._config_json())
        if cfg.log_with != "none":
            accelerator.init_trackers(
                "pretrain_clap",
                config={
                    k: v if isinstance(v, (int, float, str, bool)) else str(v)
                    for k, v in dataclasses.asdict(cfg).items()
                },
            )

    def _config_json(self) -> str:
        return json.dumps(jsonable(self.resolved), indent=2)

    def _setup_data_sources(self) -> None:
        cfg = self.cfg
        self.train_manifest, self.eval_manifests = cfg.train_manifest, list(cfg.eval_manifest)
        if cfg.fsdd_root and self.train_manifest is None:
            self.train_manifest, heldout = fsdd_manifests(
                cfg.fsdd_root, self.out / "data", cfg.heldout_speaker, cfg.fsdd_clips_per_digit
            )
            self.eval_manifests = self.eval_manifests or [heldout]
        if self.train_manifest is None and cfg.train_shards is None:
            raise SystemExit(
                "give --train-manifest or --train-shards (or --fsdd-root for the demo)"
            )

    def _setup_model(self) -> None:
        cfg = self.cfg
        records = [] if self.train_manifest is None else read_manifest(self.train_manifest)
        texts = [c for r in records for c in r.captions] + [cfg.prompt_template]
        audio_encoder, text_encoder = build_encoders(cfg, texts)
        self.model = build_clap(
            audio=audio_encoder,
            text=text_encoder,
            projection=cfg.projection,
            projection_dropout=cfg.projection_dropout,
            projection_dim=cfg.projection_dim,
            init_temperature=cfg.init_temperature,
        )
        if cfg.grad_checkpointing:
            switched = enable_grad_checkpointing(self.model)
            logger.info("gradient checkpointing in %s", switched)
        self.loss_fn = ContrastiveLoss()

    def _setup_data(self) -> None:
        cfg, accelerator = self.cfg, self.accelerator
        frontend = self.model.audio_encoder.frontend
        train_frontend = dataclasses.replace(frontend, clip_seconds=cfg.clip_seconds)
        collate = ClapCollator(self.model.text_encoder.tokenize)
        if cfg.train_shards:
            self.train_data: Any = ShardDataset(
                cfg.train_shards,
                train_frontend,
                train=True,
                seed=cfg.seed,
                on_error=cfg.on_error,
                samples_per_epoch=cfg.samples_per_epoch,
                rank=accelerator.process_index,
                world_size=accelerator.num_processes,
            )
            shuffle: dict[str, Any] = {}
        else:
            self.train_data = ManifestDataset(
                self.train_manifest,
                train_frontend,
                train=True,
                seed=cfg.seed,
                on_error=cfg.on_error,
                cache_audio=cfg.cache_audio,
                shift_short_clips=cfg.shift_short_clips,
            )
            shuffle = {"shuffle": True, "generator": torch.Generator().manual_seed(cfg.seed)}
        self.train_loader = DataLoader(
            self.train_data,
            batch_size=cfg.batch_size,
            collate_fn=collate,
            num_workers=cfg.num_workers,
            drop_last=True,
            **shuffle,
        )

    def _count_flops(self) -> float:
        """Forward + backward FLOPs per sample on a stand-in batch of two (once, before prepare).

        Counting leaves the model and the random generators as they were (see count_flops).
        """
        model, cfg = self.model, self.cfg
        samples = int(model.audio_encoder.frontend.sample_rate * cfg.clip_seconds)
        waveform = torch.randn(2, samples, generator=torch.Generator().manual_seed(0))
        batch = model.text_encoder.tokenize([cfg.prompt_template.format("sound")] * 2)

        def step() -> None:
            output = model(
                waveform, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            )
            self.loss_fn(output.audio_embeds, output.text_embeds, output.logit_scale_exp).backward()

        return count_flops(step, model) / 2

    # -- train ----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Epochs of contrastive training, each followed by ``evaluate``; returns the outcome."""
        cfg, accelerator, progress = self.cfg, self.accelerator, self.progress
        model, optimizer = self.model, self.optimizer
        steps_per_epoch = math.ceil(len(self.train_loader) / self.micro_steps)
        bar = tqdm(
            total=cfg.epochs * steps_per_epoch,
            initial=progress.step,
            unit="step",
            disable=not accelerator.is_local_main_process,
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        meter = ThroughputMeter(self.flops_per_sample)
        while progress.epoch < cfg.epochs:
            epoch = progress.epoch
            self.train_data.set_epoch(epoch)
            self.train_loader.set_epoch(epoch)
            loader = (
                accelerator.skip_first_batches(self.train_loader, progress.batches_in_epoch)
                if progress.batches_in_epoch
                else self.train_loader
            )
            model.train()
            meter.reset()
            meter.start()
            stop, pending, samples = False, [], 0
            # None closes the epoch: a short last group still makes an update, as accelerate's
            # accumulation steps on the end of the data loader
            for batch in itertools.chain(loader, [None]):
                if batch is None and not pending:
                    break
                if batch is not None:
                    meter.batch_arrived()
                    progress.batches_in_epoch += 1
                    self.skipped.update(batch["skipped"])
                    sizes = accelerator.gather(
                        torch.tensor([batch["waveform"].shape[0]], device=accelerator.device)
                    )
                    if int(sizes.min()) < 2:  # every clip of a micro-batch was bad on some rank
                        logger.warning("skipping a micro-batch with sizes %s", sizes.tolist())
                        meter.micro_step_done()
                        continue
                    samples += int(sizes.sum())
                    inputs = {
                        "waveform": batch["waveform"],
                        "input_ids": batch["input_ids"],
                        "attention_mask": batch["attention_mask"],
                    }
                if self.full_negatives:
                    if batch is not None:
                        pending.append(inputs)
                        if len(pending) < self.micro_steps:
                            continue
                    loss = accumulated_contrastive_step(
                        model,
                        pending,
                        self.loss_fn,
                        backward=accelerator.backward,  # accumulation 1 here: no division
                        no_sync=lambda: accelerator.no_sync(model),
                    )
                    if cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                    pending = []
                else:
                    with accelerator.accumulate(model):
                        output = model(**inputs)
                        loss = self.loss_fn(
                            output.audio_embeds, output.text_embeds, output.logit_scale_exp
                        )
                        accelerator.backward(loss)
                        if accelerator.sync_gradients and cfg.max_grad_norm:
                            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad()
                # kept in Progress: a resumed epoch averages all its losses
                progress.loss_sum += loss.item()
                progress.loss_count += 1
                if not self.full_negatives and not accelerator.sync_gradients:
                    meter.micro_step_done()
                    continue
                progress.step += 1
                speed, samples = meter.step_done(samples), 0
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
                accelerator.log(
                    {
                        "train/loss": loss.item(),
                        "train/lr": optimizer.param_groups[0]["lr"],
                        "train/logit_scale": self._logit_scale(),
                        "train/skipped_files": self.skipped.count,
                        **{f"train/{k}": v for k, v in speed.as_dict().items()},
                    },
                    step=progress.step,
                )
                if progress.step % cfg.save_every_steps == 0:
                    self.save_checkpoint(f"step_{progress.step:08d}")
                    meter.start()  # the save is neither data wait nor training compute
                if cfg.max_steps is not None and progress.step >= cfg.max_steps:
                    stop = True
                    break
            if stop and progress.batches_in_epoch < len(self.train_loader):
                logger.info("stopping at step %d (max_steps)", progress.step)
                break
            self._end_epoch(epoch, time.perf_counter() - started, meter.summary().as_dict())
            if stop:
                break
        bar.close()
        return {
            "history": progress.history,
            "best": progress.best,
            "skipped": self.skipped.state_dict(),
        }

    def _end_epoch(self, epoch: int, seconds: float, speed: dict[str, float]) -> None:
        accelerator, progress = self.accelerator, self.progress
        mean_loss = torch.tensor(
            progress.loss_sum / max(progress.loss_count, 1), device=accelerator.device
        )
        train_loss = float(accelerator.reduce(mean_loss, "mean"))
        results = self.evaluate()
        record = {
            "epoch": epoch,
            "step": progress.step,
            "train_loss": train_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "skipped_files": self.skipped.count,
            "seconds": seconds,
            **speed,
            **results,
        }
        self.scheduler.step(results["zero_shot_score"] if self.tasks else train_loss)
        progress.history.append(record)
        accelerator.log({f"epoch/{k}": v for k, v in flatten(record).items()}, step=progress.step)
        score = results.get("zero_shot_score", -train_loss)
        if progress.best is None or score > progress.best["score"]:
            progress.best = {**record, "score": score}
            self.save_best()
        logger.info("epoch %d: %s", epoch, json.dumps(flatten(record)))
        progress.epoch, progress.batches_in_epoch = epoch + 1, 0
        progress.loss_sum, progress.loss_count = 0.0, 0
        self.save_checkpoint(f"step_{progress.step:08d}_end")
        if accelerator.is_main_process:
            self.write_report()

    def _logit_scale(self) -> float:
        return float(self.accelerator.unwrap_model(self.model).logit_scale_exp.item())

    # -- evaluate -------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Zero-shot score of every task and their mean (clapkit.train.evaluation)."""
        return zero_shot_evaluate(self.accelerator, self.model, self.tasks)

    # -- checkpoints and outputs ----------------------------------------------------------------
    def save_checkpoint(self, name: str) -> Path:
        """Atomic ``accelerator.save_state`` into ``checkpoints/NAME`` with run.json and config."""
        return save_checkpoint(
            self.accelerator,
            self.out / "checkpoints" / name,
            files={"run.json": self.plan.run_json, "config.json": self._config_json()},
        )

    def save_best(self) -> None:
        """The kept epoch's model in ``best/`` (save_pretrained + this run's card), atomically."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        cfg, best = self.cfg, self.progress.best or {}
        staged = self.out / ".best.partial"
        if staged.exists():
            import shutil

            shutil.rmtree(staged)
        data = [f"training: `{self.train_manifest or cfg.train_shards}`"]
        data += [f"zero-shot evaluation: `{t.task.name}`" for t in self.tasks]
        write_model_card(  # before save_pretrained, which keeps an existing README.md
            staged,
            recipe=RECIPE,
            preset=self.preset,
            model=f"audio `{cfg.audio}` + text `{cfg.text}` (size {cfg.size}), "
            f"projection {cfg.projection} to {cfg.projection_dim}, seed {cfg.seed}",
            data=data,
            metrics=best,
            command=f"accelerate launch {RECIPE} --preset {self.preset} ...",
        )
        self.accelerator.unwrap_model(self.model).save_pretrained(staged)
        replace_folder(staged, self.out / "best")

    def write_report(self) -> None:
        """metrics.json, report.md, history.csv and curves.png in the run folder."""
        cfg = self.cfg
        summary = [
            f"audio `{cfg.audio}` + text `{cfg.text}` (size {cfg.size}), seed {cfg.seed}, "
            f"prompt `{cfg.prompt_template}`, preset `{self.preset}`",
            "",
            f"FLOPs per sample (forward + backward): {self.flops_per_sample:.3e}",
        ]
        write_report(
            self.out,
            title="pretrain_clap report",
            summary=summary,
            history=self.progress.history,
            best=self.progress.best,
            skipped=self.skipped,
            extra={"flops_per_sample": self.flops_per_sample},
        )

    def cleanup(self) -> None:
        """End the trackers; report skipped files and print the report."""
        self.accelerator.end_training()
        if not self.accelerator.is_main_process:
            return
        if self.skipped.count:
            logger.warning(
                "skipped %d bad clips: %s", self.skipped.count, sorted(self.skipped.reasons)
            )
        if (self.out / "report.md").is_file():
            print("\n" + (self.out / "report.md").read_text(), flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line, run the recipe's life cycle, return its outcome."""
    args = sys.argv[1:] if argv is None else list(argv)
    preset, cfg = parse_config(
        Config, PRESETS, args, default="table1-htsat22-gpt2", description=__doc__, notes=NOTES
    )
    recipe = PretrainClapRecipe(cfg, preset)
    recipe.setup()
    result = recipe.train()
    recipe.cleanup()
    return result


if __name__ == "__main__":
    main()
