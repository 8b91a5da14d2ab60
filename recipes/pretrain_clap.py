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
encoders trainable, 40 epochs, the epoch with the best average zero-shot score is kept. The
presets, with the paper's numbers each reproduces, live in ``clapkit.train.presets.clap``
(``--help`` lists them): Table 1's seven pairs (average .428 to .480), Table 2 (4.6M pairs of
20 sources as tar shards: ESC50 .939, US8K .823, FSD50K .485), ``demo`` and ``smoke``.

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
import time
from pathlib import Path
from typing import Any

import torch

from clapkit.core import ContrastiveLoss
from clapkit.data import read_manifest
from clapkit.train.checkpointing import (
    full_state_dict,
    save_whole_pretrained,
    written_aside,
)
from clapkit.train.config import parse_config
from clapkit.train.contrastive import ContrastiveUpdates, build_model, flops_per_sample
from clapkit.train.demo import fsdd_manifests
from clapkit.train.evaluation import load_zero_shot_tasks, zero_shot_evaluate
from clapkit.train.loaders import build_train_data, prepare_train_loader
from clapkit.train.presets.clap import (
    NOT_IDENTITY,
    NOTES,
    Config,
    pretraining_presets,
    suite_task_specs,
)
from clapkit.train.recipe import TrainingRecipe
from clapkit.train.reporting import write_model_card, write_report
from clapkit.train.setup import enable_grad_checkpointing
from clapkit.train.throughput import ThroughputMeter

__all__ = ["NOTES", "PRESETS", "Config", "PretrainClapRecipe", "main", "parse_config"]

PRESETS = pretraining_presets(fsdd_root=str(Path(__file__).parents[1] / "data" / "fsdd"))


class PretrainClapRecipe(TrainingRecipe[Config]):
    """One pretraining run: ``setup``, ``train`` (evaluating each epoch), ``cleanup``
    (``clapkit.train.recipe.TrainingRecipe``: run folder, resume, checkpoints, the end).

    Args:
        cfg: the resolved config.
        preset: the preset it started from (for the report and the model card).
    """

    not_identity, flush_denormal = NOT_IDENTITY, True
    config_class, presets, default_preset, notes = Config, PRESETS, "table1-htsat22-gpt2", NOTES

    # -- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Accelerator, run folder, seed, data manifests, model, optimiser, loaders, resume."""
        cfg = self.cfg
        accelerator = self.accelerator
        self._setup_data_sources()
        records = [] if self.train_manifest is None else read_manifest(self.train_manifest)
        texts = [c for r in records for c in r.captions] + [cfg.prompt_template]
        self.model = build_model(cfg, texts)
        if cfg.grad_checkpointing:
            self.log.info("gradient checkpointing in %s", enable_grad_checkpointing(self.model))
        self.loss_fn = ContrastiveLoss()
        frontend = self.model.audio_encoder.frontend
        data = build_train_data(
            cfg, dataclasses.replace(frontend, clip_seconds=cfg.clip_seconds),
            self.model.text_encoder.tokenize, manifest=self.train_manifest,
            rank=accelerator.process_index, num_processes=accelerator.num_processes,
        )  # fmt: skip
        self.train_data = data.dataset
        self.tasks = load_zero_shot_tasks(
            self.eval_manifests, self.eval_tasks, template=cfg.prompt_template
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max" if self.tasks else "min", factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
        )  # fmt: skip
        prompt = cfg.prompt_template.format("sound")
        self.flops_per_sample = flops_per_sample(
            self.model, self.loss_fn, clip_seconds=cfg.clip_seconds, prompt=prompt
        )
        self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
        self.train_loader = prepare_train_loader(
            accelerator, data.loader, splits_itself=data.splits_itself,
            batches_per_epoch=data.batches_per_epoch,
        )  # fmt: skip
        self.updates = ContrastiveUpdates(
            accelerator, self.model, self.optimizer, self.loss_fn,
            accumulate_negatives=cfg.accumulate_negatives, max_grad_norm=cfg.max_grad_norm,
        )  # fmt: skip
        self.resume(self.scheduler)
        self.write_config(
            train_manifest=self.train_manifest, eval_manifest=self.eval_manifests,
            eval_task=self.eval_tasks, gradient_accumulation_steps=self.updates.micro_steps,
            accumulate_negatives=self.updates.full_negatives,
            flops_per_sample=self.flops_per_sample,
        )  # fmt: skip

    def _setup_data_sources(self) -> None:
        cfg = self.cfg
        self.train_manifest, self.eval_manifests = cfg.train_manifest, list(cfg.eval_manifest)
        self.eval_tasks = list(cfg.eval_task)
        if cfg.eval_suite is not None:
            self.eval_tasks += suite_task_specs(cfg.eval_suite, cfg.eval_root)
        if cfg.fsdd_root and self.train_manifest is None:
            self.train_manifest, heldout = fsdd_manifests(
                cfg.fsdd_root, self.out / "data", cfg.heldout_speaker, cfg.fsdd_clips_per_digit
            )
            self.eval_manifests = self.eval_manifests or [heldout]
        if self.train_manifest is None and cfg.train_shards is None:
            raise SystemExit(
                "give --train-manifest or --train-shards (or --fsdd-root for the demo)"
            )

    # -- train ----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Epochs of contrastive training, each followed by ``evaluate``; returns the outcome."""
        cfg, accelerator, progress = self.cfg, self.accelerator, self.progress
        updates = self.updates
        batches = self.batches_per_epoch()
        bar = self.progress_bar(cfg.epochs, micro_steps=updates.micro_steps)
        started = time.perf_counter()
        meter = ThroughputMeter(self.flops_per_sample)
        while progress.epoch < cfg.epochs:
            epoch = progress.epoch
            loader = self.epoch_batches(self.train_data, self.train_loader)
            self.model.train()
            meter.reset()
            meter.start()
            stop, samples = False, 0
            # None closes the epoch: a short last group of micro-batches still makes an update
            for batch in itertools.chain(loader, [None]):
                if batch is None:
                    loss = updates.flush()
                    if loss is None:
                        break
                else:
                    meter.batch_arrived()
                    sizes = accelerator.gather(
                        torch.tensor([batch["waveform"].shape[0]], device=accelerator.device)
                    )
                    if int(sizes.min()) < 2:  # every clip of a micro-batch was bad on some rank
                        self.log.warning("skipping a micro-batch with sizes %s", sizes.tolist())
                        meter.micro_step_done()
                        continue
                    samples += int(sizes.sum())
                    keys = ("waveform", "input_ids", "attention_mask")
                    loss = updates.feed({k: batch[k] for k in keys})
                    if loss is None:  # gathered for a full-negatives update
                        continue
                value = self.count_loss(loss, updated=updates.updated)
                if not updates.updated:
                    meter.micro_step_done()
                    continue
                speed, samples = meter.step_done(samples), 0
                scalars = {"loss": value, "lr": self.optimizer.param_groups[0]["lr"],
                           "logit_scale": self._logit_scale(), **speed.as_dict(),
                           "skipped_files": self.skipped.in_epoch(epoch)}  # fmt: skip
                if self.step_done(bar, scalars, epoch=epoch):
                    meter.start()  # the save is neither data wait nor training compute
                if cfg.max_steps is not None and progress.step >= cfg.max_steps:
                    stop = True
                    break
            if stop and batches is not None and progress.batches_in_epoch < batches:
                self.log.info("stopping at step %d (max_steps)", progress.step)
                break
            self._end_epoch(time.perf_counter() - started, meter.summary().as_dict())
            if stop:
                break
        bar.close()
        return {"history": progress.history, "best": progress.best,
                "skipped": self.skipped.state_dict()}  # fmt: skip

    def _end_epoch(self, seconds: float, speed: dict[str, float]) -> None:
        results = self.evaluate()
        record = self.epoch_record(
            lr=self.optimizer.param_groups[0]["lr"], seconds=seconds, **speed, **results
        )
        train_loss = record["train_loss"]
        self.scheduler.step(results["zero_shot_score"] if self.tasks else train_loss)
        score = results.get("zero_shot_score", -train_loss)
        if self.progress.best is None or score > self.progress.best["score"]:
            self.progress.best = {**record, "score": score}
            self.save_best()
        self.close_epoch(record)
        if self.accelerator.is_main_process:
            self.write_report()

    def _logit_scale(self) -> float:
        return float(self.accelerator.unwrap_model(self.model).logit_scale_exp.item())

    # -- evaluate -------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Zero-shot score of every task and their mean (clapkit.train.evaluation)."""
        return zero_shot_evaluate(self.accelerator, self.model, self.tasks)

    # -- outputs --------------------------------------------------------------------------------
    def save_best(self) -> None:
        """The kept epoch's model in ``best/`` (save_pretrained + this run's card), atomically.

        Under FSDP every process takes part in gathering the full state dict; the main process
        writes it.
        """
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        state = full_state_dict(accelerator, self.model)  # collective under FSDP
        if not accelerator.is_main_process:
            return
        cfg, best = self.cfg, self.progress.best or {}
        data = [f"training: `{self.train_manifest or cfg.train_shards}`"]
        data += [f"zero-shot evaluation: `{t.task.name}`" for t in self.tasks]
        model = accelerator.unwrap_model(self.model)
        with written_aside(self.out / "best") as staged:
            write_model_card(  # before save_pretrained, which keeps an existing README.md
                staged, recipe=self.script, preset=self.preset,
                model=f"audio `{cfg.audio}` + text `{cfg.text}` (size {cfg.size}), "
                f"projection {cfg.projection} to {cfg.projection_dim}, seed {cfg.seed}",
                data=data, metrics=best,
                command=f"accelerate launch {self.script} --preset {self.preset} ...",
            )  # fmt: skip
            save_whole_pretrained(model, staged, state, tokenizer=model.text_encoder.tokenizer)

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
            self.out, title="pretrain_clap report", summary=summary,
            history=self.progress.history, best=self.progress.best, skipped=self.skipped,
            extra={"flops_per_sample": self.flops_per_sample},
        )  # fmt: skip


main = PretrainClapRecipe.main
"""Parse the command line, run the recipe's life cycle, return what its ``train`` returns."""

if __name__ == "__main__":
    main()
