"""Audio-encoder fine-tuning and linear probes, k-fold cross-validated (the paper's ESC-50 result).

Launch:
    accelerate launch --config_file recipes/configs/ddp.yaml recipes/finetune_audio.py \
        --preset esc50 --data esc50=data/ESC-50-master --clap runs/table2-htsat22-gpt2/best \
        --output-dir runs/finetune-esc50
    accelerate launch recipes/finetune_audio.py --preset esc50 --data esc50=data/ESC-50-master \
        --audio htsat-22 --audio-weights runs/pretrain-htsat22/htsat22.safetensors \
        --mode linear-probe --output-dir runs/probe-esc50
    accelerate launch --cpu recipes/finetune_audio.py --preset smoke   # the CI check (FSDD)

Reproduces: Elizalde, Deshmukh, Wang (arXiv 2309.05767): the audio encoder fine-tuned on ESC-50,
96.70% -> 98.25% accuracy, 5-fold cross-validation (train on four folds, test on the fifth,
every fold in turn). Settings and where each comes from: ``clapkit.train.presets.finetune``.

Start from a registered audio encoder and its weights (``--audio``, ``--audio-weights``), the
audio tower of a ``ClapModel`` folder (``--clap``: its zero-shot score per fold is reported too)
or random weights; ``--mode linear-probe`` (frozen encoder, BatchNorm statistics included) or
``full``; ``--data NAME=PATH`` (:mod:`clapkit.data.tasks`) or a labelled manifest, split by
``--fold-field``. Outputs (the other recipes' layout): ``run.json``, ``config.json``,
``metrics.json``, ``report.md`` (per fold, mean +- std, beside the paper), ``history.csv``,
``curves.png``, ``folds/FOLD/`` and ``best/`` (``AudioClassifier``), ``checkpoints/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from clapkit.data import ClapCollator, ManifestDataset, read_manifest, write_manifest
from clapkit.train.augment import (
    AugmentConfig,
    augment_batch,
    batch_generator,
    configure_spec_augment,
)
from clapkit.train.checkpointing import written_aside
from clapkit.train.config import jsonable
from clapkit.train.finetune_report import write_finetune_report
from clapkit.train.finetuning import AudioClassifier, build_encoder, classifier_logits
from clapkit.train.folds import (
    CrossValidation,
    classification_scores,
    cross_validation_folds,
    load_classification_data,
    target_tensor,
)
from clapkit.train.loaders import batch_buffers, loader_options
from clapkit.train.presets.finetune import (
    NOTES,
    PAPER_ESC50,
    RESUMABLE_CHANGES,
    Config,
    finetune_presets,
)
from clapkit.train.recipe import TrainingRecipe
from clapkit.train.small import small_audio_encoder, speech_frontend
from clapkit.train.steps import update_groups

PRESETS = finetune_presets(fsdd_root=str(Path(__file__).parents[1] / "data" / "fsdd"))


def tiny_encoder(clip_seconds: float = 0.8) -> Any:
    """The smoke preset's random CNN14 (``clapkit.train.small``'s ``classifier`` size) on the
    8 kHz speech front end with a 20 ms hop and 32 mels: half the demo front end's cost."""
    frontend = speech_frontend(clip_seconds, hop_length=160, n_mels=32)
    return small_audio_encoder("cnn14", "classifier", frontend)


class FinetuneAudioRecipe(TrainingRecipe[Config]):
    """One cross-validated run: ``setup``, ``train`` (every fold: epochs, ``evaluate``,
    ``save_checkpoint``), ``cleanup`` (``clapkit.train.recipe.TrainingRecipe``); ``setup``
    resumes when ``--resume`` is given.

    Args:
        cfg: the resolved settings.
        preset: the preset's name (for the report).
    """

    resumable_changes, flush_denormal = RESUMABLE_CHANGES, True
    hub_pipeline_tag = "audio-classification"
    config_class, presets, default_preset, notes = Config, PRESETS, "esc50", NOTES

    def __init__(self, cfg: Config, preset: str = "esc50") -> None:
        super().__init__(cfg, preset)
        self.cv = CrossValidation()
        self.augment = AugmentConfig(
            mixup_alpha=cfg.mixup_alpha, time_shift=cfg.time_shift,
            spec_augment=cfg.spec_augment and cfg.mode == "full",
            spec_time_width=cfg.spec_time_width, spec_freq_width=cfg.spec_freq_width,
            spec_stripes=cfg.spec_stripes,
        )  # fmt: skip

    # -- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Accelerator, run folder, data and folds, model, zero-shot baseline, optimiser, resume."""
        cfg = self.cfg
        accelerator = self.accelerator
        self.data = load_classification_data(self._data_source(), self._templates())
        self.multilabel = self.data.task.kind == "multilabel"
        self.class_index = {name: i for i, name in enumerate(self.data.class_names)}
        self.folds = cross_validation_folds(self.data.records, cfg.fold_field, cfg.test_folds)
        clap = self._build_model()
        if clap is not None:
            self.cv.zero_shot = self._zero_shot(clap)
        frontend = self.encoder.frontend
        if cfg.clip_seconds is not None:
            frontend = dataclasses.replace(frontend, clip_seconds=cfg.clip_seconds)
        first = self.folds[0]
        self.train_set = ManifestDataset(
            list(first.train), frontend, train=True, seed=cfg.seed, on_error=cfg.on_error,
            cache_audio=cfg.cache_audio, require_captions=False,
        )  # fmt: skip
        self.test_set = ManifestDataset(
            list(first.test), frontend, train=False, cache_audio=cfg.cache_audio
        )
        loader = DataLoader(
            self.train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
            collate_fn=ClapCollator(buffers=batch_buffers(cfg.num_workers)),
            generator=torch.Generator().manual_seed(cfg.seed),
            # each fold sets the training set's records in this process: workers start afresh
            **loader_options(cfg.num_workers, persistent=False),
        )  # fmt: skip
        groups = self.classifier.parameter_groups(cfg.lr, cfg.encoder_lr_ratio)
        optimizer = torch.optim.AdamW(
            groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **self.optimizer_options()
        )
        self.model, self.optimizer, self.train_loader = accelerator.prepare(
            self.classifier, optimizer, loader
        )
        self.resume(self.cv)
        if self.plan.resume_from is not None:
            self.log.info("resumed in fold %d (%s)", self.cv.fold, self.folds[self.cv.fold].name)
        self.write_config(
            folds=[f.name for f in self.folds], classes=list(self.data.class_names),
            task=self.data.task.name, augment=self.augment,
        )  # fmt: skip

    def _data_source(self) -> str:
        """``--data``, or the FSDD manifest of all four speakers (smoke)."""
        cfg = self.cfg
        if cfg.data is not None:
            return cfg.data
        if cfg.demo.fsdd_root is None:
            raise SystemExit("give --data NAME=PATH or a labelled manifest (or --demo.fsdd-root)")
        from clapkit.train.demo import fsdd_manifests

        path = self.out / "data" / "fsdd.jsonl"
        if self.accelerator.is_main_process:
            parts = fsdd_manifests(
                cfg.demo.fsdd_root, self.out / "data", "theo", cfg.demo.clips_per_digit
            )
            write_manifest([r for p in parts for r in read_manifest(p)], path)
        self.accelerator.wait_for_everyone()
        return str(path)

    def _templates(self) -> tuple[str, ...]:
        return (self.cfg.prompt_template,) if self.cfg.prompt_template else ()

    def _build_model(self) -> Any:
        """The classifier (``self.classifier``) and its initial weights; returns the ClapModel
        whose audio tower it took, if any."""
        cfg, clap = self.cfg, None
        if cfg.clap is not None:
            from clapkit.core import ClapModel

            clap = ClapModel.from_pretrained(cfg.clap)
            encoder = clap.audio_encoder
            encoder.reset_classifier(0)
        elif cfg.demo.size == "tiny":
            encoder = tiny_encoder(cfg.clip_seconds or 0.8)
        else:
            encoder = build_encoder(cfg.audio, weights=cfg.audio_weights)
        configure_spec_augment(encoder, self.augment)
        self.encoder = encoder
        self.classifier = AudioClassifier(
            encoder.train(), class_names=self.data.class_names, mode=cfg.mode,
            multilabel=self.multilabel, dropout=cfg.head_dropout,
        )  # fmt: skip
        # every fold starts from these weights (the same in a resumed process: seeded build)
        self.initial = {k: v.detach().clone() for k, v in self.classifier.state_dict().items()}
        return clap

    def _zero_shot(self, clap: Any) -> dict[str, float]:
        """The starting ClapModel's zero-shot score on each test fold (before any training)."""
        from clapkit.data.tasks import TaskData
        from clapkit.train.evaluation import zero_shot_evaluate

        tasks = [
            TaskData(dataclasses.replace(self.data.task, name=f.name), self.data.split,
                     self.data.root, f.test, self.data.class_names)
            for f in self.folds
        ]  # fmt: skip
        results = zero_shot_evaluate(self.accelerator, clap, tasks)
        return {f.name: float(results[f.name]["score"]) for f in self.folds}

    # -- train ----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Every remaining fold and epoch; returns metrics.json's content."""
        cfg, progress, cv = self.cfg, self.progress, self.cv
        updates = math.ceil(len(self.train_loader) / self.micro_steps)
        bar = self.progress_bar(len(self.folds) * cfg.epochs)
        stop = False
        while cv.fold < len(self.folds) and not stop:
            fold = self.folds[cv.fold]
            self.train_set.records, self.test_set.records = list(fold.train), list(fold.test)
            if progress.epoch == 0 and progress.batches_in_epoch == 0:  # a fold's first batch
                self._reset_model()
                cv.fold_start_step = progress.step
            while progress.epoch < cfg.epochs and not stop:
                stop = self._train_epoch(updates, bar)
                if not stop:
                    self._end_epoch(fold.name)
            if not stop:
                self._end_fold(fold.name)
        bar.close()
        return self.metrics()

    def _reset_model(self) -> None:
        """The fold's fresh start: initial weights, empty optimiser state."""
        self.classifier.load_state_dict(self.initial)
        self.optimizer.optimizer.state.clear()

    def _lr_factor(self, fold_step: int, updates: int) -> float:
        """Linear warm-up for ``warmup_epochs``, then cosine decay to 0 at the fold's end."""
        total, warmup = self.cfg.epochs * updates, self.cfg.warmup_epochs * updates
        if fold_step < warmup:
            return (fold_step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (fold_step - warmup) / max(total - warmup, 1)))

    def _train_epoch(self, updates: int, bar: Any) -> bool:
        """The rest of the current epoch; True when ``max_steps`` stopped it."""
        cfg, progress, cv = self.cfg, self.progress, self.cv
        epoch, started = progress.epoch, time.perf_counter()
        self.model.train()
        batches = self.epoch_batches(self.train_set, self.train_loader, needs="labels")
        for group in update_groups(map(self._augmented, batches), self.micro_steps):
            factor = self._lr_factor(progress.step - cv.fold_start_step, updates)
            for param_group in self.optimizer.param_groups:
                param_group["lr"] = param_group["base_lr"] * factor
            loss = self.update(group, self.loss_step)
            figures = {"lr_head": cfg.lr * factor}
            self.step_done(bar, loss, figures, fold=self.folds[cv.fold].name, epoch=epoch)
            if cfg.max_steps is not None and progress.step >= cfg.max_steps:
                self.log.info("stopping at step %d (max_steps)", progress.step)
                return True
        self.epoch_seconds = time.perf_counter() - started
        return False

    def _augmented(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        """A batch's waveforms and targets after mixup and time shift, drawn as it arrives
        (the draws are keyed on its place in the epoch: a resumed epoch repeats them)."""
        cfg, accelerator, progress = self.cfg, self.accelerator, self.progress
        targets = target_tensor(batch["labels"], self.class_index, multilabel=self.multilabel)
        generator = batch_generator(
            cfg.seed, self.folds[self.cv.fold].name, progress.epoch, progress.batches_in_epoch,
            accelerator.process_index,
        )  # fmt: skip
        return augment_batch(  # type: ignore[no-any-return]
            batch["waveform"], targets.to(accelerator.device, non_blocking=True), self.augment,
            generator, encoder=self.encoder,
        )  # fmt: skip

    def loss_step(self, batch: tuple[Any, Any]) -> Any:
        """Cross-entropy (soft targets under mixup), or binary cross-entropy if multilabel."""
        waveform, targets = batch
        logits = self.model(waveform).float()
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets)

    def _end_epoch(self, fold: str) -> None:
        """The epoch's record (train loss, test score), the fold's kept model, a checkpoint."""
        cfg, progress, cv = self.cfg, self.progress, self.cv
        record = self.epoch_record(fold=fold, lr=self.optimizer.param_groups[0]["lr"],
                                   seconds=self.epoch_seconds)  # fmt: skip
        last = progress.epoch + 1 == cfg.epochs
        if (progress.epoch + 1) % cfg.eval_every == 0 or last:
            record["test"] = self.evaluate()
            kept = cv.current
            better = kept is None or record["test"]["score"] > kept["test"]["score"]
            if (cfg.select == "best" and better) or (cfg.select == "last" and last):
                cv.current = record
                self.save_fold_model(fold)
        # the fold's last epoch is checkpointed after the fold closes
        self.close_epoch(record, checkpoint=not last)
        if self.accelerator.is_main_process:
            self.write_report()

    def _end_fold(self, fold: str) -> None:
        """The fold's result (and ``best/`` if it is the best fold), then the next fold."""
        accelerator, progress, cv = self.accelerator, self.progress, self.cv
        chosen = cv.current or {}
        result = {"fold": fold, "epoch": chosen.get("epoch"), **chosen.get("test", {}),
                  "zero_shot": cv.zero_shot.get(fold)}  # fmt: skip
        cv.results.append(result)
        if progress.best is None or result.get("score", -1.0) > progress.best["score"]:
            progress.best = result
            if accelerator.is_main_process:
                with written_aside(self.out / "best") as staged:
                    shutil.copytree(self.out / "folds" / fold, staged)
        self.log.info("fold %s: %s", fold, json.dumps(result))
        cv.fold, cv.current = cv.fold + 1, None
        progress.epoch, progress.batches_in_epoch = 0, 0
        self.save_checkpoint(f"step_{progress.step:08d}_end")
        if accelerator.is_main_process:
            self.write_report()

    # -- evaluate -------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """The test fold's accuracy (mAP if multilabel); each process scores a share."""
        logits = classifier_logits(
            self.accelerator, self.classifier, self.test_set, batch_size=self.cfg.batch_size
        )
        labels = [r.labels for r in self.test_set.records]
        targets = target_tensor(labels, self.class_index, multilabel=self.multilabel)
        return classification_scores(logits, targets, multilabel=self.multilabel)

    # -- outputs --------------------------------------------------------------------------------
    def save_fold_model(self, fold: str) -> None:
        """The fold's kept classifier as ``folds/FOLD`` (written aside, then swapped in)."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        with written_aside(self.out / "folds" / fold) as staged:
            self.classifier.save_pretrained(staged)

    def metrics(self) -> dict[str, Any]:
        """What metrics.json holds (see ``write_finetune_report``)."""
        return {
            "folds": self.cv.results,
            "epochs": self.progress.history,
            "best": self.progress.best,
        }

    def write_report(self) -> None:
        """metrics.json, report.md, history.csv and curves.png."""
        cfg = self.cfg
        start = (
            cfg.clap
            or cfg.audio_weights
            or ("random tiny CNN14" if cfg.demo.size == "tiny" else "random")
        )
        summary = [
            f"Preset `{self.preset}`: `{cfg.audio if not cfg.clap else 'ClapModel audio tower'}` "
            f"from {start}, mode `{cfg.mode}`, task `{self.data.task.name}` ({len(self.data)} "
            f"clips), folds by `{cfg.fold_field}`, seed {cfg.seed}, epoch kept: {cfg.select}.",
            f"Augmentation: {json.dumps(jsonable(self.augment))}.",
            f"Command: `{self.command()}`",
        ]
        paper = PAPER_ESC50 if self.data.task.name == "esc50" else None
        write_finetune_report(
            self.out, title="finetune_audio report", summary=summary, folds=self.cv.results,
            history=self.progress.history, paper=paper, skipped=self.skipped,
            metric="mAP" if self.multilabel else "accuracy", mode=cfg.mode,
        )  # fmt: skip


main = FinetuneAudioRecipe.main
"""Parse the command line, run the recipe's life cycle, return what its ``train`` returns."""

if __name__ == "__main__":
    main()
