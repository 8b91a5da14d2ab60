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
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clapkit.core import ClapModel, ContrastiveLoss, accumulated_contrastive_step, build_clap
from clapkit.data import read_manifest
from clapkit.train.checkpointing import (
    full_state_dict,
    save_whole_pretrained,
    written_aside,
)
from clapkit.train.config import parse_config
from clapkit.train.contrastive import disable_dropout, flops_per_sample
from clapkit.train.demo import build_encoders, fsdd_manifests
from clapkit.train.evaluation import load_zero_shot_tasks, zero_shot_evaluate
from clapkit.train.loaders import build_train_data, prepare_train_loader
from clapkit.train.presets.clap import (
    NOTES,
    RESUMABLE_CHANGES,
    Config,
    pretraining_presets,
    suite_task_specs,
)
from clapkit.train.recipe import TrainingRecipe
from clapkit.train.reporting import write_model_card, write_report
from clapkit.train.setup import enable_grad_checkpointing
from clapkit.train.steps import update_groups
from clapkit.train.throughput import ThroughputMeter

__all__ = [
    "NOTES",
    "PRESETS",
    "Config",
    "PretrainClapRecipe",
    "build_clap_model",
    "main",
    "parse_config",
]

PRESETS = pretraining_presets(fsdd_root=str(Path(__file__).parents[1] / "data" / "fsdd"))


def build_clap_model(cfg: Config, texts: Sequence[str]) -> ClapModel:
    """The run's ``ClapModel``: its encoders at ``cfg.demo.size`` (random unless weights are given),
    the projections and the temperature.

    Args:
        cfg: the run's settings.
        texts: the training captions and the prompt (the small sizes' word tokenizer).

    Returns:
        The model (no dropout anywhere with ``--no-dropout``).
    """
    audio, text = build_encoders(
        cfg.audio, cfg.text, cfg.demo.size, texts, clip_seconds=cfg.clip_seconds,
        audio_weights=cfg.audio_weights, text_pretrained=cfg.text_pretrained,
        tokenizer=cfg.tokenizer,
    )  # fmt: skip
    model = build_clap(
        audio=audio, text=text, projection=cfg.projection,
        projection_dropout=cfg.projection_dropout, projection_dim=cfg.projection_dim,
        init_temperature=cfg.init_temperature,
    )  # fmt: skip
    if not cfg.dropout:
        disable_dropout(model)
    return model


class PretrainClapRecipe(TrainingRecipe[Config]):
    """One pretraining run: ``setup``, ``train`` (evaluating each epoch), ``cleanup``
    (``clapkit.train.recipe.TrainingRecipe``: run folder, resume, checkpoints, the end).

    Args:
        cfg: the resolved config.
        preset: the preset it started from (for the report and the model card).
    """

    resumable_changes, flush_denormal = RESUMABLE_CHANGES, True
    config_class, presets, default_preset, notes = Config, PRESETS, "table1-htsat22-gpt2", NOTES

    # -- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Accelerator, run folder, seed, data manifests, model, optimiser, loaders, resume."""
        cfg = self.cfg
        accelerator = self.accelerator
        self._setup_data_sources()
        records = [] if self.train_manifest is None else read_manifest(self.train_manifest)
        texts = [c for r in records for c in r.captions] + [cfg.prompt_template]
        self.model = build_clap_model(cfg, texts)
        if cfg.grad_checkpointing:
            self.log.info("gradient checkpointing in %s", enable_grad_checkpointing(self.model))
        # one loss over the whole global batch when an update takes several micro-batches
        self.full_negatives = cfg.accumulate_negatives and self.micro_steps > 1
        # every rank's rows padded to a fixed count for the gather: nothing read back per step
        rows = cfg.batch_size * (self.micro_steps if self.full_negatives else 1)
        self.loss_fn = ContrastiveLoss(pad_to=rows)
        frontend = self.model.audio_encoder.frontend
        self.clip_samples = int(frontend.sample_rate * cfg.clip_seconds)
        self.tokenize = self.model.text_encoder.tokenize
        if cfg.compile:  # static shapes: the fixed crop, captions padded to a few lengths
            self.tokenize = functools.partial(self.tokenize, pad_to_multiple_of=cfg.caption_bucket)
        data = build_train_data(
            dataclasses.replace(frontend, clip_seconds=cfg.clip_seconds), self.tokenize,
            manifest=self.train_manifest, shards=cfg.train_shards, batch_size=cfg.batch_size,
            seed=cfg.seed, rank=accelerator.process_index,
            num_processes=accelerator.num_processes, num_workers=cfg.num_workers,
            prefetch_factor=cfg.prefetch_factor, samples_per_epoch=cfg.samples_per_epoch,
            shuffle_buffer=cfg.shuffle_buffer, resampled=cfg.resampled_shards,
            cache_audio=cfg.cache_audio, shift_short_clips=cfg.shift_short_clips,
            on_error=cfg.on_error,
        )  # fmt: skip
        self.train_data = data.dataset
        self.tasks = load_zero_shot_tasks(
            self.eval_manifests, self.eval_tasks, template=cfg.prompt_template
        )
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, **self.optimizer_options()
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max" if self.tasks else "min", factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
        )  # fmt: skip
        self.flops = flops_per_sample(self.model, self.loss_fn, clip_seconds=cfg.clip_seconds)
        if cfg.compile:  # after the count: FlopCounterMode runs the eager modules
            for module in (self.model.audio_encoder, self.model.text_encoder, self.loss_fn):
                module.compile()
        self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
        self.train_loader = prepare_train_loader(
            accelerator, data.loader, splits_itself=data.splits_itself,
            batches_per_epoch=data.batches_per_epoch,
        )  # fmt: skip
        self.resume(self.scheduler)
        self.write_config(
            train_manifest=self.train_manifest, eval_manifest=self.eval_manifests,
            eval_task=self.eval_tasks, accumulate_negatives=self.full_negatives,
            flops_per_sample=dict([self.flops.short, self.flops.long]),
        )  # fmt: skip

    def _setup_data_sources(self) -> None:
        cfg = self.cfg
        self.train_manifest, self.eval_manifests = cfg.train_manifest, list(cfg.eval_manifest)
        self.eval_tasks = list(cfg.eval_task)
        if cfg.eval_suite is not None:
            self.eval_tasks += suite_task_specs(cfg.eval_suite, cfg.eval_root)
        if cfg.demo.fsdd_root and self.train_manifest is None:
            self.train_manifest, heldout = fsdd_manifests(
                cfg.demo.fsdd_root,
                self.out / "data",
                cfg.demo.heldout_speaker,
                cfg.demo.clips_per_digit,
            )
            self.eval_manifests = self.eval_manifests or [heldout]
        if self.train_manifest is None and not cfg.train_shards:
            raise SystemExit(
                "give --train-manifest or --train-shards (or --demo.fsdd-root for the demo)"
            )

    # -- train ----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Epochs of contrastive training, each followed by ``evaluate``; returns the outcome.

        One step: the epoch's micro-batches are grouped into updates (``update_groups``); an
        update is :meth:`contrastive_update` (forward, loss, backward, optimizer step) and
        ``step_done`` counts it, keeping its loss on the device until the next log step.
        """
        cfg, progress = self.cfg, self.progress
        batches = self.batches_per_epoch()
        bar = self.progress_bar(cfg.epochs)
        started = time.perf_counter()
        meter = self.throughput_meter()
        while progress.epoch < cfg.epochs:
            epoch, stop = progress.epoch, False
            self.model.train()
            meter.reset()
            meter.start()
            epoch_batches = meter.timed(self.epoch_batches(self.train_data, self.train_loader))
            for group in update_groups(epoch_batches, self.micro_steps):
                loss = self.contrastive_update(group)
                meter.step_done(*self._work(group))
                if self.step_done(bar, loss, lambda: self._figures(meter), epoch=epoch):
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

    def contrastive_update(self, group: list[dict[str, Any]]) -> Tensor:
        """One optimizer update from its micro-batches; returns its loss (on the device).

        With full-batch negatives (``--accumulate-negatives`` and several micro-batches) one
        contrastive loss spans the whole global batch
        (``clapkit.core.accumulated_contrastive_step``); otherwise each micro-batch has its
        own loss over the micro-batch gathered from every process (``TrainingRecipe.update``).
        """
        inputs = [self.model_inputs(batch) for batch in group]
        if not self.full_negatives:
            return self.update(inputs, self.loss_step)
        accelerator = self.accelerator
        with accelerator.autocast():
            loss: Tensor = accumulated_contrastive_step(
                self.model, inputs, self.loss_fn, backward=accelerator.backward,
                no_sync=lambda: accelerator.no_sync(self.model), check_ranks=False,
            )  # fmt: skip
        self.optimizer_step()
        return loss

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """A collated batch as the model's keyword arguments plus ``valid`` (the loss's).

        A batch whose every clip was bad on this process becomes one silent stand-in row
        marked invalid: the loss's collectives stay in step without asking the others.
        """
        if len(batch["keys"]):
            waveform, ids, mask = batch["waveform"], batch["input_ids"], batch["attention_mask"]
            valid = torch.ones(waveform.shape[0], dtype=torch.bool, device=waveform.device)
            return {"waveform": waveform, "input_ids": ids, "attention_mask": mask,
                    "valid": valid}  # fmt: skip
        device = self.accelerator.device
        tokens = self.tokenize([""])
        return {
            "waveform": torch.zeros(1, self.clip_samples, device=device),
            "input_ids": tokens["input_ids"].to(device),
            "attention_mask": tokens["attention_mask"].to(device),
            "valid": torch.zeros(1, dtype=torch.bool, device=device),
        }

    def loss_step(self, inputs: dict[str, Tensor]) -> Tensor:
        """A micro-batch's contrastive loss: both towers, the projections, the gathered
        symmetric cross-entropy (no backward)."""
        out = self.model(
            inputs["waveform"], input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
        )  # fmt: skip
        loss: Tensor = self.loss_fn(
            out.audio_embeds, out.text_embeds, out.logit_scale_exp, inputs["valid"]
        )
        return loss

    def _work(self, group: list[dict[str, Any]]) -> tuple[int, float]:
        """This process's clips of an update and their FLOPs at each batch's caption length."""
        clips = [(len(b["keys"]), b["input_ids"].shape[1]) for b in group if len(b["keys"])]
        return sum(n for n, _ in clips), sum(n * self.flops(length) for n, length in clips)

    def _figures(self, meter: ThroughputMeter) -> dict[str, float]:
        """What a log step records beside the loss (read there only)."""
        return {"lr": self.optimizer.param_groups[0]["lr"], "logit_scale": self._logit_scale(),
                **meter.take_window().as_dict(),
                "skipped_files": self.skipped.in_epoch(self.progress.epoch)}  # fmt: skip

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
        data = [f"training: `{self.train_manifest or ' '.join(cfg.train_shards)}`"]
        data += [f"zero-shot evaluation: `{t.task.name}`" for t in self.tasks]
        model = accelerator.unwrap_model(self.model)
        with written_aside(self.out / "best") as staged:
            write_model_card(  # before save_pretrained, which keeps an existing README.md
                staged, recipe=self.script, preset=self.preset,
                model=f"audio `{cfg.audio}` + text `{cfg.text}` (size {cfg.demo.size}), "
                f"projection {cfg.projection} to {cfg.projection_dim}, seed {cfg.seed}",
                data=data, metrics=best,
                command=f"accelerate launch {self.script} --preset {self.preset} ...",
            )  # fmt: skip
            save_whole_pretrained(model, staged, state, tokenizer=model.text_encoder.tokenizer)

    def write_report(self) -> None:
        """metrics.json, report.md, history.csv and curves.png in the run folder."""
        cfg, flops = self.cfg, self.flops
        summary = [
            f"audio `{cfg.audio}` + text `{cfg.text}` (size {cfg.demo.size}), seed {cfg.seed}, "
            f"prompt `{cfg.prompt_template}`, preset `{self.preset}`",
            "",
            "FLOPs per sample (forward + backward): "
            + ", ".join(f"{f:.3e} at {n} caption tokens" for n, f in (flops.short, flops.long)),
        ]
        write_report(
            self.out, title="pretrain_clap report", summary=summary,
            history=self.progress.history, best=self.progress.best, skipped=self.skipped,
            extra={"flops_per_sample": dict([flops.short, flops.long])},
        )  # fmt: skip


main = PretrainClapRecipe.main
"""Parse the command line, run the recipe's life cycle, return what its ``train`` returns."""

if __name__ == "__main__":
    main()
