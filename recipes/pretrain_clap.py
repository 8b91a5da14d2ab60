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

Any `Config` field is a command-line override (``--epochs 3 --seed 1``); ``--preset NAME``
picks the starting values. Multi-GPU/multi-node: ``accelerate launch --config_file ...`` (DDP by
default; FSDP example in ``recipes/configs/fsdp.yaml``).

Gradient accumulation reaches the global batch in samples per update, but the contrastive loss
only sees negatives within one micro-batch (gathered over all processes): the paper's 1536
in-batch negatives need 1536 clips per micro-step across processes.
"""

from __future__ import annotations

import argparse
import dataclasses
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
import tyro
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    ProjectConfiguration,
    gather_object,
    set_seed,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_support import (
    build_encoders,
    fsdd_manifests,
    latest_checkpoint,
    write_outputs,
)

from clapkit.core import ContrastiveLoss, build_clap, zero_shot_scores
from clapkit.core.metrics import accuracy, f1_score, mean_average_precision
from clapkit.data import (
    ClapCollator,
    ManifestDataset,
    ShardDataset,
    SkippedFiles,
    read_manifest,
)
from clapkit.data.tasks import TaskData, get_task, manifest_task

logger = logging.getLogger("pretrain_clap")
REPO = Path(__file__).resolve().parent.parent


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
    max_grad_norm: float | None = None
    # Runtime
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    grad_checkpointing: bool = False
    seed: int = 0
    output_dir: str = "runs/pretrain_clap"
    save_every_steps: int = 500
    """accelerator.save_state every N optimizer steps (and at every epoch end)."""
    resume: str | None = None
    """'latest' or a checkpoint folder written by this recipe."""
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
PRESETS: dict[str, Config] = {
    **TABLE1,
    # Table 2: same pair and recipe on 4.6M pairs (give the shards of the 20 sources).
    "table2-htsat22-gpt2": TABLE1["table1-htsat22-gpt2"],
    "demo": DEMO,
    "smoke": dataclasses.replace(
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
    ),
}


def parse_config(argv: list[str]) -> Config:
    """``--preset NAME`` picks the defaults; every other flag overrides a `Config` field."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="table1-htsat22-gpt2")
    known, rest = parser.parse_known_args(argv)
    description = f"{__doc__}\nPresets: {', '.join(sorted(PRESETS))} (--preset NAME)."
    return tyro.cli(Config, default=PRESETS[known.preset], args=rest, description=description)


@dataclass
class Progress:
    """Where the run is; saved with every checkpoint for an exact resume."""

    epoch: int = 0
    batches_in_epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def eval_tasks(cfg: Config, manifests: Sequence[str]) -> list[TaskData]:
    """The per-epoch zero-shot tasks: labelled manifests and paper tasks (NAME=PATH)."""
    tasks = [manifest_task(m, [cfg.prompt_template]).load(Path(m).parent) for m in manifests]
    for spec in cfg.eval_task:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"--eval-task wants NAME=PATH, got {spec!r}")
        task = get_task(name)
        if task.kind not in ("multiclass", "multilabel"):
            raise SystemExit(f"--eval-task {name}: a {task.kind} task is not a zero-shot task")
        tasks.append(task.load(path))
    return tasks


def evaluate(accelerator: Accelerator, model: Any, tasks: Sequence[TaskData]) -> dict[str, Any]:
    """Zero-shot score of every task and their mean, through clap-core's one zero-shot path.

    The same functions as ``evaluate.py`` and ``ClapModel.zero_shot``: ``embed_audio`` on the
    files (long clips = the mean of their window embeddings), ``class_embeddings`` (template
    ensemble), ``zero_shot_scores``; each process embeds a contiguous share of the clips.
    """
    clap = accelerator.unwrap_model(model)
    was_training = clap.training
    clap.eval()
    results: dict[str, Any] = {}
    with torch.no_grad():
        for data in tasks:
            task = data.task
            paths = [r.audio for r in data.records]
            with accelerator.split_between_processes(paths) as share:
                audio = clap.embed_audio(share).cpu() if share else None
            parts = [a for a in gather_object([audio]) if a is not None]
            labels = [task.label_text(name) for name in data.class_names]
            classes = clap.class_embeddings(labels, task.templates).cpu()
            multilabel = task.kind == "multilabel"
            scores = zero_shot_scores(
                torch.cat(parts), classes, clap.logit_scale_exp.cpu(), multilabel
            )
            metric = task.metrics[0]
            targets = data.targets()
            if not multilabel:
                value = accuracy(scores, targets)
            elif metric == "F1":
                value = f1_score(scores, targets)
            else:
                value = mean_average_precision(scores, targets)
            results[task.name] = {metric: value, "score": value}
    clap.train(was_training)
    if tasks:
        results["zero_shot_score"] = sum(results[t.task.name]["score"] for t in tasks) / len(tasks)
    return results


def main(cfg: Config) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    torch.set_flush_denormal(True)  # near-silent padding makes denormals that slow CPU kernels
    train_manifest, eval_manifests = cfg.train_manifest, list(cfg.eval_manifest)
    if cfg.fsdd_root and train_manifest is None:
        train_manifest, heldout = fsdd_manifests(
            cfg.fsdd_root, out / "data", cfg.heldout_speaker, cfg.fsdd_clips_per_digit
        )
        eval_manifests = eval_manifests or [heldout]
    if train_manifest is None and cfg.train_shards is None:
        raise SystemExit("give --train-manifest or --train-shards (or --fsdd-root for the demo)")

    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.log_with == "none" else cfg.log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,
    )
    per_update = cfg.batch_size * accelerator.num_processes
    if cfg.global_batch_size % per_update:
        raise SystemExit(
            f"global batch {cfg.global_batch_size} is not a multiple of "
            f"batch_size x processes = {per_update}"
        )
    accelerator.gradient_accumulation_steps = cfg.global_batch_size // per_update
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.ERROR,
        format="%(asctime)s %(name)s: %(message)s",
    )
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    set_seed(cfg.seed)

    captions = [] if train_manifest is None else read_manifest(train_manifest)
    audio_encoder, text_encoder = build_encoders(
        cfg, [c for r in captions for c in r.captions] + [cfg.prompt_template]
    )
    model = build_clap(
        audio=audio_encoder,
        text=text_encoder,
        projection=cfg.projection,
        projection_dropout=cfg.projection_dropout,
        projection_dim=cfg.projection_dim,
        init_temperature=cfg.init_temperature,
    )
    if cfg.grad_checkpointing:
        model.audio_encoder.set_grad_checkpointing(True)
        model.text_encoder.set_grad_checkpointing(True)
    frontend = model.audio_encoder.frontend
    train_frontend = dataclasses.replace(frontend, clip_seconds=cfg.clip_seconds)
    collate = ClapCollator(model.text_encoder.tokenize)
    if cfg.train_shards:
        train_data: Any = ShardDataset(
            cfg.train_shards,
            train_frontend,
            train=True,
            seed=cfg.seed,
            on_error=cfg.on_error,
            samples_per_epoch=cfg.samples_per_epoch,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
        )
        train_loader = DataLoader(
            train_data,
            batch_size=cfg.batch_size,
            collate_fn=collate,
            num_workers=cfg.num_workers,
            drop_last=True,
        )
    else:
        train_data = ManifestDataset(
            train_manifest,
            train_frontend,
            train=True,
            seed=cfg.seed,
            on_error=cfg.on_error,
            cache_audio=cfg.cache_audio,
            shift_short_clips=cfg.shift_short_clips,
        )
        train_loader = DataLoader(
            train_data,
            batch_size=cfg.batch_size,
            shuffle=True,
            collate_fn=collate,
            num_workers=cfg.num_workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
    tasks = eval_tasks(cfg, eval_manifests)

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max" if tasks else "min",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
    )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    progress, skipped = Progress(), SkippedFiles()
    accelerator.register_for_checkpointing(scheduler, progress, skipped)
    if cfg.resume:
        checkpoint = latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume)
        accelerator.load_state(str(checkpoint))
        logger.info(
            "resumed from %s at epoch %d, step %d", checkpoint, progress.epoch, progress.step
        )

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        resolved = {
            **dataclasses.asdict(cfg),
            "train_manifest": train_manifest,
            "eval_manifest": eval_manifests,
            "eval_task": list(cfg.eval_task),
            "gradient_accumulation_steps": accelerator.gradient_accumulation_steps,
            "num_processes": accelerator.num_processes,
        }
        (out / "config.json").write_text(json.dumps(resolved, indent=2, default=str))
    if cfg.log_with != "none":
        accelerator.init_trackers(
            "pretrain_clap",
            config={
                k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in dataclasses.asdict(cfg).items()
            },
        )

    loss_fn = ContrastiveLoss()
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.gradient_accumulation_steps)
    bar = tqdm(
        total=cfg.epochs * steps_per_epoch,
        initial=progress.step,
        unit="step",
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    started = time.perf_counter()

    def save(name: str) -> None:
        accelerator.save_state(str(out / "checkpoints" / name))
        if accelerator.is_main_process:
            (out / "checkpoints" / name / "config.json").write_text(
                (out / "config.json").read_text()
            )

    while progress.epoch < cfg.epochs:
        epoch = progress.epoch
        train_data.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        loader = (
            accelerator.skip_first_batches(train_loader, progress.batches_in_epoch)
            if progress.batches_in_epoch
            else train_loader
        )
        model.train()
        for batch in loader:
            progress.batches_in_epoch += 1
            skipped.update(batch["skipped"])
            sizes = accelerator.gather(
                torch.tensor([batch["waveform"].shape[0]], device=accelerator.device)
            )
            if int(sizes.min()) < 2:  # every clip of a micro-batch was bad on some rank
                logger.warning("skipping a micro-batch with sizes %s", sizes.tolist())
                continue
            with accelerator.accumulate(model):
                output = model(
                    batch["waveform"],
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                )
                loss = loss_fn(output.audio_embeds, output.text_embeds, output.logit_scale_exp)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            progress.loss_sum += loss.item()  # kept in Progress: a resumed epoch averages all
            progress.loss_count += 1
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
            accelerator.log(
                {
                    "train/loss": loss.item(),
                    "train/lr": optimizer.param_groups[0]["lr"],
                    "train/logit_scale": output.logit_scale_exp.item(),
                    "train/skipped_files": skipped.count,
                },
                step=progress.step,
            )
            if progress.step % cfg.save_every_steps == 0:
                save(f"step_{progress.step:08d}")
            if cfg.max_steps is not None and progress.step >= cfg.max_steps:
                break
        if (
            cfg.max_steps is not None
            and progress.step >= cfg.max_steps
            and progress.batches_in_epoch < len(train_loader)
        ):
            logger.info("stopping at step %d (max_steps)", progress.step)
            break
        mean_loss = torch.tensor(
            progress.loss_sum / max(progress.loss_count, 1), device=accelerator.device
        )
        train_loss = float(accelerator.reduce(mean_loss, "mean"))
        results = evaluate(accelerator, model, tasks)
        record = {
            "epoch": epoch,
            "step": progress.step,
            "train_loss": train_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "skipped_files": skipped.count,
            "seconds": time.perf_counter() - started,
            **results,
        }
        scheduler.step(results["zero_shot_score"] if tasks else train_loss)
        progress.history.append(record)
        accelerator.log({f"epoch/{k}": v for k, v in _flatten(record).items()}, step=progress.step)
        score = results.get("zero_shot_score", -train_loss)
        if progress.best is None or score > progress.best["score"]:
            progress.best = {**record, "score": score}
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(out / "best")
        logger.info("epoch %d: %s", epoch, json.dumps(_flatten(record)))
        progress.epoch, progress.batches_in_epoch = epoch + 1, 0
        progress.loss_sum, progress.loss_count = 0.0, 0
        save(f"step_{progress.step:08d}_end")
        if accelerator.is_main_process:
            write_outputs(out, cfg, progress.history, progress.best, skipped)
        if cfg.max_steps is not None and progress.step >= cfg.max_steps:
            break
    bar.close()
    accelerator.end_training()
    if accelerator.is_main_process and skipped.count:
        logger.warning("skipped %d bad clips: %s", skipped.count, sorted(skipped.reasons))
    if accelerator.is_main_process and (out / "report.md").is_file():
        print("\n" + (out / "report.md").read_text(), flush=True)
    return {"history": progress.history, "best": progress.best, "skipped": skipped.state_dict()}


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):
            flat[f"{prefix}{key}"] = float(value)
    return flat


if __name__ == "__main__":
    result = main(parse_config(sys.argv[1:]))
