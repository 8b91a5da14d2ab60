"""The life cycle every clapkit training recipe shares (torchtune's recipe interface).

A recipe is a subclass of :class:`TrainingRecipe` that fills in ``setup`` (model, optimiser,
data), ``train`` (returns its outcome) and ``evaluate``; what every training run does the same
way lives here: the run's start (threads, accelerator, logging, run folder, seed), the resolved
config written beside the checkpoints, the resume, atomic checkpoints with the run's identity,
a stop at the first NaN or infinite loss (:class:`TrainingDivergedError`, before anything of
that step is saved), and the end (trackers closed, skipped files named, the report printed).
``main`` is one call::

    class MyRecipe(TrainingRecipe[Config]):  # in recipes/my_recipe.py
        config_class, presets, default_preset, notes = Config, PRESETS, "paper", NOTES
        not_identity = NOT_IDENTITY

        def setup(self) -> None:        # after start(): self.accelerator, the run folder
            ...  # model, optimiser, loaders -> self.accelerator.prepare(...)
            self.resume(scheduler)           # registered for checkpointing, then loaded
            self.write_config(task="...")   # config.json + trackers

        def train(self) -> dict[str, Any]: ...
        def evaluate(self) -> dict[str, Any]: ...

    if __name__ == "__main__":
        MyRecipe.main()
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from clapkit.data import SkippedFiles
from clapkit.train.checkpointing import Progress, load_checkpoint, save_checkpoint
from clapkit.train.config import RunSettings, jsonable, parse_config
from clapkit.train.preemption import Preempted, Preemption, stop_if_preempted
from clapkit.train.setup import start_run
from clapkit.train.write_errors import CheckpointWriteError

__all__ = ["TrainingDivergedError", "TrainingRecipe"]

C = TypeVar("C", bound=RunSettings)


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite: the run stops before it saves anything of
    that step."""


class TrainingRecipe(Generic[C]):
    """What a training recipe does the same way as the others; subclasses add the training.

    ``TrainingRecipe[Config]``: ``self.cfg`` is a ``Config``, a
    ``clapkit.train.config.RunSettings`` (precision, seed, run folder, checkpoints, resume,
    logging, threads) with the recipe's own fields.

    Class attributes (set by each recipe):
        name: the recipe's name (tracker project, log lines); default: its file's name
            (``"pretrain_clap"``).
        script: the file that launches it (reports, cards); default: ``recipes/`` + its file's
            name (``"recipes/pretrain_clap.py"``).
        config_class: its frozen config dataclass; presets: name -> config; default_preset:
            the one used without ``--preset``; notes: name -> a line for ``--help`` (the
            paper's numbers it reproduces).
        not_identity: config fields a resume may change (where it writes, how it logs, when it
            stops); every other field must match the checkpoint's run.
        flush_denormal: ``torch.set_flush_denormal(True)`` at the start (CPU speed with
            near-silent padding).

    Attributes:
        cfg: the resolved config (a frozen dataclass).
        preset: the preset it started from.
        out: the run folder (``cfg.output_dir``).
        progress: the run's position (epoch, step, history, best), checkpointed.
        skipped: the bad files skipped so far (per epoch and in total), checkpointed.
        accelerator: set by :meth:`start`.
        model, optimizer, train_loader: prepared by the recipe's ``setup``.
        plan: the run folder's plan (``resume_from``, ``run_json``), set by :meth:`start`.
        resolved: what ``config.json`` holds, set by :meth:`write_config`.
    """

    name: ClassVar[str] = "recipe"
    script: ClassVar[str] = "recipes/recipe.py"
    config_class: ClassVar[type] = object
    presets: ClassVar[Mapping[str, Any]] = {}
    default_preset: ClassVar[str] = ""
    notes: ClassVar[Mapping[str, str]] = {}
    not_identity: ClassVar[Collection[str]] = ()
    flush_denormal: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        file = Path(inspect.getfile(cls))
        if "name" not in cls.__dict__:
            cls.name = file.stem
        if "script" not in cls.__dict__:
            cls.script = f"recipes/{file.name}"

    def __init__(self, cfg: C, preset: str = "custom") -> None:
        self.cfg: C = cfg
        self.preset = preset
        self.out = Path(cfg.output_dir)
        self.progress, self.skipped = Progress(), SkippedFiles()
        self.resolved: dict[str, Any] = {}
        self.accelerator: Any = None
        self.plan: Any = None
        self.model: Any = None  # the prepared model, optimizer and training loader
        self.optimizer: Any = None
        self.train_loader: Any = None
        self.last_checkpoint: tuple[Path, int] | None = None  # (folder, step) saved or resumed
        self.preemption = Preemption()  # installed by start()

    @property
    def log(self) -> logging.Logger:
        """The recipe's logger (named after it)."""
        return logging.getLogger(self.name)

    # -- the life cycle a recipe fills in -------------------------------------------------------
    def setup(self) -> None:
        """Build model, optimiser and data (the run has been started: :meth:`start`), then
        :meth:`resume` and :meth:`write_config`."""
        raise NotImplementedError

    def train(self) -> Any:
        """Train to the end; return the run's outcome (what ``main`` returns)."""
        raise NotImplementedError

    def evaluate(self) -> Any:
        """Score the current model."""
        raise NotImplementedError

    # -- what every recipe does the same way ----------------------------------------------------
    def start(self) -> Any:
        """Threads, the accelerator, logging, the run folder (refused, moved aside or resumed:
        ``clapkit.train.runs``) and the seed; returns the accelerator."""
        self.accelerator, self.plan = start_run(
            self.cfg, ignore=self.not_identity, flush_denormal=self.flush_denormal
        )
        self.preemption = Preemption(requeue_exit_code=self.cfg.requeue_exit_code).install(self.out)
        return self.accelerator

    def resume(self, *stateful: Any) -> None:
        """Register ``stateful`` objects (schedulers, run state) with the progress and skipped
        files for checkpointing, then load the checkpoint the run resumes from, if any.

        Call after ``accelerator.prepare``: ``clapkit.train.checkpointing.load_checkpoint``
        restores the prepared model and optimiser too (from JSON and safetensors; nothing is
        unpickled). A failed restore of the random generators stops the run unless
        ``--resume-force``.
        """
        accelerator = self.accelerator
        accelerator.register_for_checkpointing(*stateful, self.progress, self.skipped)
        if self.plan.resume_from is None:
            return
        load_checkpoint(accelerator, self.plan.resume_from, force=self.cfg.resume_force)
        p = self.progress
        self.last_checkpoint = (Path(self.plan.resume_from), p.step)
        self.log.info(
            "%s resumed from %s: epoch %d, step %d, batch %d of the epoch",
            self.name, self.plan.resume_from, p.epoch, p.step, p.batches_in_epoch,
        )  # fmt: skip

    def write_config(self, **extra: Any) -> None:
        """``config.json`` (the config, the preset, the process count, accumulation and
        ``extra``) on the main process, and the trackers (unless ``--log-with none``)."""
        accelerator = self.accelerator
        self.resolved = {
            **jsonable(self.cfg), "preset": self.preset,
            "gradient_accumulation_steps": accelerator.gradient_accumulation_steps,
            "num_processes": accelerator.num_processes, **jsonable(extra),
        }  # fmt: skip
        if accelerator.is_main_process:
            (self.out / "config.json").write_text(json.dumps(self.resolved, indent=2))
        if self.cfg.log_with != "none":
            config = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                      for k, v in jsonable(self.cfg).items()}  # fmt: skip
            accelerator.init_trackers(self.name, config=config)

    def progress_bar(self, epochs: int, *, micro_steps: int | None = None) -> Any:
        """A tqdm bar of the run's optimizer steps, starting at the run's step, shown by the
        local main process only.

        Args:
            epochs: epochs in the run (or in every fold).
            micro_steps: micro-batches per update (default: the accelerator's accumulation).
                The total is ``epochs`` x updates per epoch of ``train_loader``; unknown
                (a stream without a length) when the loader has no length.
        """
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        micro = micro_steps or self.accelerator.gradient_accumulation_steps
        batches = self.batches_per_epoch()
        total = None if batches is None else epochs * math.ceil(batches / micro)
        return tqdm(
            total=total, initial=self.progress.step, unit="step", dynamic_ncols=True,
            disable=not self.accelerator.is_local_main_process,
        )  # fmt: skip

    def batches_per_epoch(self) -> int | None:
        """The training loader's batches per epoch on this process; None when unknown (tar
        shards without ``--samples-per-epoch``: one pass over a stream without a length)."""
        try:
            return len(self.train_loader)
        except TypeError:
            return None

    def epoch_batches(
        self, dataset: Any, loader: Any, *, needs: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The current epoch's batches from where the run stands, each counted in the progress.

        The dataset (its crops), the loader (its sampler's order) and the skipped-file count
        are set to the epoch; after a mid-epoch resume the batches already trained on are
        passed over (``clapkit.train.loaders.skip_batches``), so the epoch goes on as an
        unbroken run's would. Each batch's skipped files are counted; a batch whose ``needs``
        entry is empty (every clip of it was bad) is counted and not yielded.

        Args:
            dataset: the training dataset (``set_epoch``).
            loader: the prepared training loader (``set_epoch``).
            needs: a batch key that must be non-empty (``"captions"``, ``"labels"``).
        """
        from clapkit.train.loaders import skip_batches

        p = self.progress
        dataset.set_epoch(p.epoch)
        loader.set_epoch(p.epoch)
        self.skipped.set_epoch(p.epoch)
        batches = skip_batches(self.accelerator, loader, p.batches_in_epoch)
        if batches is not loader and hasattr(batches, "set_epoch"):
            # a new loader, whose epoch counter (which sets its sampler's epoch) starts at 0
            batches.set_epoch(p.epoch)
        for batch in batches:
            p.batches_in_epoch += 1
            self.skipped.update(batch["skipped"])
            if needs is None or len(batch[needs]):
                yield batch

    def micro_step(self, compute_loss: Callable[[], Any], *, max_grad_norm: float | None) -> Any:
        """One micro-batch under accelerate's gradient accumulation: ``compute_loss()`` (under
        autocast), backward, and at the accumulation's end gradient clipping to
        ``max_grad_norm``, the optimizer step and zeroed gradients.

        The loss is counted (:meth:`count_loss`).

        Returns:
            The loss when the optimizer stepped, else None (more micro-batches to come).
        """
        accelerator = self.accelerator
        with accelerator.accumulate(self.model), accelerator.autocast():
            loss = compute_loss()
            accelerator.backward(loss)
            if accelerator.sync_gradients and max_grad_norm:
                accelerator.clip_grad_norm_(self.model.parameters(), max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.count_loss(loss, updated=accelerator.sync_gradients)
        return loss if accelerator.sync_gradients else None

    def count_loss(self, loss: Any, *, updated: bool) -> float:
        """A micro-batch's loss joins the epoch's mean (``progress``, checkpointed: a resumed
        epoch averages all its losses); with ``updated`` (the optimizer stepped) a step is
        counted and the loss kept as the update's.

        :meth:`micro_step` calls it; a recipe that runs its own updates (full-batch
        negatives) calls it once per micro-batch.

        Returns:
            The loss as a float.
        """
        p, value = self.progress, float(loss.item())
        p.loss_sum += value
        p.loss_count += 1
        if updated:
            p.step += 1
            p.step_losses.append(value)
        return value

    def step_done(self, bar: Any, scalars: Mapping[str, float], **shown: Any) -> bool:
        """After an optimizer step: the bar moves (showing ``shown`` and the loss), the
        trackers get ``train/<scalar>`` and every ``save_every_steps`` steps a checkpoint is
        saved. When any process has received SIGTERM, SIGUSR1 or SIGINT
        (``clapkit.train.preemption``), this step's checkpoint is saved and the run exits
        (:class:`~clapkit.train.preemption.Preempted`). Call on every process.

        Args:
            bar: the run's :meth:`progress_bar`.
            scalars: the step's figures; ``loss`` is required.
            shown: what the bar shows beside the loss (epoch, fold...).

        Returns:
            Whether a checkpoint was saved (its time is neither data wait nor compute).
        """
        step = self.progress.step
        self._check_loss(scalars["loss"])
        bar.update(1)
        bar.set_postfix(**shown, loss=f"{scalars['loss']:.3f}")
        self.accelerator.log({f"train/{k}": v for k, v in scalars.items()}, step=step)
        saved = not step % self.cfg.save_every_steps
        if saved:
            self.save_checkpoint(f"step_{step:08d}")
        # SIGTERM/SIGUSR1/SIGINT on any process: this step's checkpoint, then exit (preemption)
        stop_if_preempted(self.preemption, self.accelerator, lambda: self.last_checkpoint[0]  # type: ignore[index]
                          if saved else self.save_checkpoint(f"step_{step:08d}"),
                          step=step, run_folder=self.out)  # fmt: skip
        return saved

    def _check_loss(self, loss: float) -> None:
        """Stop a run whose loss is NaN or infinite on any process, before anything of that
        step is saved; under fp16 a step the gradient scaler skipped only warns (the weights
        did not change)."""
        import torch

        accelerator, p = self.accelerator, self.progress
        bad = torch.tensor(0.0 if math.isfinite(loss) else 1.0, device=accelerator.device)
        processes = int(accelerator.reduce(bad, "sum"))
        if not processes:
            return
        if accelerator.optimizer_step_was_skipped:
            self.log.warning("step %d: loss %s; the fp16 gradient scaler skipped the update",
                             p.step, loss)  # fmt: skip
            return
        if self.last_checkpoint is None:
            kept = "no checkpoint was saved before it"
        else:
            folder, step = self.last_checkpoint
            kept = f"{folder} holds the weights of step {step}"
        raise TrainingDivergedError(
            f"step {p.step} (epoch {p.epoch}): the training loss is {loss} on {processes} of "
            f"{accelerator.num_processes} process(es); the run stops and saves nothing of this "
            f"step ({kept}). Go on from there with --resume latest and a lower learning rate "
            "or gradient clipping (and --resume-force, as the config changes)"
        )

    def epoch_record(self, **fields: Any) -> dict[str, Any]:
        """The record of the epoch that ends: epoch, step, its mean training loss over the
        processes (a resumed epoch's too), ``fields``, the files skipped in it and over the
        run, and each update's loss. Call on every process.

        Args:
            fields: the recipe's own entries (learning rate, seconds, throughput, scores...).
        """
        import torch

        p, accelerator = self.progress, self.accelerator
        mean = torch.tensor(p.loss_sum / max(p.loss_count, 1), device=accelerator.device)
        return {
            "epoch": p.epoch, "step": p.step,
            "train_loss": float(accelerator.reduce(mean, "mean")), **fields,
            "skipped_files": self.skipped.in_epoch(p.epoch),
            "skipped_files_total": self.skipped.count, "step_losses": list(p.step_losses),
        }  # fmt: skip

    def close_epoch(self, record: dict[str, Any], *, checkpoint: bool = True) -> None:
        """``record`` (from :meth:`epoch_record`) joins the history, the trackers
        (``epoch/...``) and the log; the progress moves to the next epoch and, with
        ``checkpoint``, the epoch's end checkpoint is saved. Call on every process."""
        from clapkit.train.reporting import flatten

        p = self.progress
        epoch = p.epoch
        if self.skipped.in_epoch(epoch):
            self.log.warning("epoch %d skipped %d bad clips (%d over the run)", epoch,
                             self.skipped.in_epoch(epoch), self.skipped.count)  # fmt: skip
        p.history.append(record)
        self.accelerator.log({f"epoch/{k}": v for k, v in flatten(record).items()}, step=p.step)
        labels = {k: v for k, v in record.items() if isinstance(v, str)}  # e.g. the fold
        self.log.info("epoch %d: %s", epoch, json.dumps({**labels, **flatten(record)}))
        p.epoch, p.batches_in_epoch = epoch + 1, 0
        p.loss_sum, p.loss_count, p.step_losses = 0.0, 0, []
        if checkpoint:
            self.save_checkpoint(f"step_{p.step:08d}_end")

    def save_checkpoint(self, name: str) -> Path:
        """An atomic checkpoint (``clapkit.train.state``: model, optimiser, RNG, what
        :meth:`resume` registered, as JSON + safetensors) as ``checkpoints/NAME``, with
        ``run.json`` and ``config.json`` beside it. Call on every process."""
        files = {"run.json": self.plan.run_json, "config.json": json.dumps(self.resolved, indent=2)}
        folder = save_checkpoint(self.accelerator, self.out / "checkpoints" / name, files=files)
        self.last_checkpoint = (folder, self.progress.step)
        self.log.info("checkpoint saved: %s", folder.name)
        return folder

    def command(self) -> str:
        """The command line that launched the run (for reports and model cards)."""
        return f"accelerate launch {self.script} {' '.join(sys.argv[1:])}".rstrip()

    def cleanup(self) -> None:
        """End the trackers and the process group's work; on the main process name the files
        skipped over the run and print ``report.md``."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        accelerator.end_training()
        if not accelerator.is_main_process:
            return
        if self.skipped.count:
            self.log.warning("skipped bad clips: %s", " ".join(self.skipped.summary()))
        report = self.out / "report.md"
        if report.is_file():
            print("\n" + report.read_text(), flush=True)

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> Any:
        """Parse ``--preset NAME`` and the overrides, then ``start``, ``setup``, ``train``,
        ``cleanup``.

        The presets are the class's ``presets`` (``default_preset`` without ``--preset``),
        ``--help`` shows the recipe module's docstring and ``notes``.

        Args:
            argv: the command line without the program name (None: ``sys.argv[1:]``).

        Returns:
            What ``train`` returned.
        """
        args = sys.argv[1:] if argv is None else list(argv)
        doc = sys.modules[cls.__module__].__doc__
        preset, cfg = parse_config(cls.config_class, cls.presets, args,
                                   default=cls.default_preset, description=doc,
                                   notes=cls.notes)  # fmt: skip
        recipe = cls(cfg, preset)
        recipe.start()
        try:
            recipe.setup()
            result = recipe.train()
        except (TrainingDivergedError, CheckpointWriteError) as error:
            recipe.accelerator.end_training()  # the trackers keep what was logged
            raise SystemExit(f"{recipe.name}: {error}") from error
        except Preempted:  # its checkpoint is saved; exit with the signal's status
            recipe.accelerator.end_training()
            raise
        finally:
            recipe.preemption.uninstall()  # the signals' handlers of before the run
        recipe.cleanup()
        return result
