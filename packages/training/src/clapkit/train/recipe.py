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
        resumable_changes = RESUMABLE_CHANGES

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
from clapkit.train.setup import accumulation_steps, start_run
from clapkit.train.steps import LossWindow, StepLosses, accumulate, optimizer_step
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
        resumable_changes: config fields a resume may change (where it writes, how it logs, when it
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
    resumable_changes: ClassVar[Collection[str]] = ()
    flush_denormal: ClassVar[bool] = False
    hub_pipeline_tag: ClassVar[str] = "zero-shot-audio-classification"

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
        self.micro_steps = 1  # micro-batches per optimizer update, set by start()
        self.losses = StepLosses()  # the updates' losses not yet read from the device
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
            self.cfg, ignore=self.resumable_changes, flush_denormal=self.flush_denormal
        )
        cfg: Any = self.cfg
        self.micro_steps = accumulation_steps(
            cfg.global_batch_size, cfg.batch_size, self.accelerator.num_processes
        )
        self.preemption = Preemption(requeue_exit_code=cfg.requeue_exit_code).install(self.out)
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
            "gradient_accumulation_steps": self.micro_steps,
            "precision": accelerator.mixed_precision,
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
            micro_steps: micro-batches per update (default: :attr:`micro_steps`).
                The total is ``epochs`` x updates per epoch of ``train_loader``; unknown
                (a stream without a length) when the loader has no length.
        """
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        micro = micro_steps or self.micro_steps
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

    def throughput_meter(self, flops_per_sample: float = 0.0) -> Any:
        """A ``ThroughputMeter`` of this device: MFU against its peak for the run's precision
        (``clapkit.train.throughput.peak_flops``; None on a device the table does not list)."""
        import torch

        from clapkit.train.throughput import ThroughputMeter, peak_flops

        accelerator = self.accelerator
        peak = peak_flops(accelerator.device, accelerator.mixed_precision,
                          tf32=torch.backends.cuda.matmul.allow_tf32)  # fmt: skip
        return ThroughputMeter(flops_per_sample, peak_flops=peak)

    def optimizer_options(self) -> dict[str, Any]:
        """Keyword arguments of the recipe's Adam/AdamW for this run's device: the fused
        implementation on CUDA (one kernel, its step counter on the device: nothing is read
        back per step); torch's default elsewhere (on a CPU the step counter is a host value)."""
        return {"fused": True} if self.accelerator.device.type == "cuda" else {}

    def update(self, group: Sequence[Any], loss_step: Callable[[Any], Any]) -> Any:
        """One optimizer update from its micro-batches (``clapkit.train.steps``): forward and
        backward of each (``loss_step`` under autocast, the all-reduce once), gradient clipping
        to ``cfg.max_grad_norm`` when the config has one, the optimizer step.

        Args:
            group: the update's micro-batches (from ``update_groups``).
            loss_step: a micro-batch's loss, forward only.

        Returns:
            The update's loss (a device scalar; not read).
        """
        loss = accumulate(self.accelerator, self.model, group, loss_step)
        self.optimizer_step()
        return loss

    def optimizer_step(self) -> None:
        """Clip to ``cfg.max_grad_norm`` (if the config has one), step, drop the gradients."""
        max_grad_norm = getattr(self.cfg, "max_grad_norm", None)
        optimizer_step(self.accelerator, self.model, self.optimizer, max_grad_norm=max_grad_norm)

    def step_done(
        self,
        bar: Any,
        loss: Any,
        extra: Mapping[str, float] | Callable[[], Mapping[str, float]] | None = None,
        **shown: Any,
    ) -> bool:
        """After an optimizer update: the step is counted and its loss kept on the device; the
        bar moves. Every ``log_every`` steps the losses are read back (once for the window),
        checked and logged with ``extra()`` as ``train/<name>``; every ``save_every_steps``
        steps a checkpoint is saved. When any process has received SIGTERM, SIGUSR1 or SIGINT
        (``clapkit.train.preemption``), this step's checkpoint is saved and the run exits
        (:class:`~clapkit.train.preemption.Preempted`). Call on every process.

        Args:
            bar: the run's :meth:`progress_bar`.
            loss: the update's loss (a device scalar).
            extra: the step's other figures (learning rate, throughput...), or a function
                giving them, called at log steps only.
            shown: what the bar shows beside the loss (epoch, fold...).

        Returns:
            Whether a checkpoint was saved (its time is neither data wait nor compute).
        """
        p, cfg = self.progress, self.cfg
        p.step += 1
        self.losses.add(p.step, loss)
        bar.update(1)
        logging_step = p.step % cfg.log_every == 0
        saving_step = p.step % cfg.save_every_steps == 0
        if logging_step:
            window = self.read_losses()
            assert window is not None
            mean = math.fsum(window.losses) / len(window.losses)
            bar.set_postfix(**shown, loss=f"{mean:.3f}")
            figures = extra() if callable(extra) else (extra or {})
            scalars = {"loss": mean, **figures}
            self.accelerator.log({f"train/{k}": v for k, v in scalars.items()}, step=p.step)
        if saving_step:
            self.save_checkpoint(f"step_{p.step:08d}")
        # SIGTERM/SIGUSR1/SIGINT on any process: this step's checkpoint, then exit (preemption)
        stop_if_preempted(self.preemption, self.accelerator, lambda: self.last_checkpoint[0]  # type: ignore[index]
                          if saving_step else self.save_checkpoint(f"step_{p.step:08d}"),
                          step=p.step, run_folder=self.out)  # fmt: skip
        return saving_step

    def read_losses(self) -> LossWindow | None:
        """Read the losses kept since the last read, stop on a NaN or infinite one, and add them
        to the progress (the epoch's mean and each update's loss, checkpointed). Call on every
        process at the same steps (:meth:`step_done`, :meth:`epoch_record` and
        :meth:`save_checkpoint` do).

        Returns:
            The window read, or None when nothing was pending.

        Raises:
            TrainingDivergedError: a loss of the window is NaN or infinite on any process
                (under fp16 it only warns: the gradient scaler skips such updates).
        """
        window = self.losses.read(self.accelerator)
        if window is None:
            return None
        if window.bad_processes:
            self._diverged(window)
        p = self.progress
        p.loss_sum += math.fsum(v for v in window.losses if math.isfinite(v))
        p.loss_count += sum(1 for v in window.losses if math.isfinite(v))
        p.step_losses.extend(window.losses)
        return window

    def _diverged(self, window: LossWindow) -> None:
        """Stop a run whose loss became NaN or infinite, before anything of it is saved."""
        accelerator, p = self.accelerator, self.progress
        here = window.first_bad_step
        where = f" (first here at step {here})" if here is not None else ""
        if accelerator.mixed_precision == "fp16":
            self.log.warning("steps %d-%d: a loss is not finite%s; the fp16 gradient scaler "
                             "skips such updates", window.first_step, window.last_step,
                             where)  # fmt: skip
            return
        if self.last_checkpoint is None:
            kept = "no checkpoint was saved before it"
        else:
            folder, step = self.last_checkpoint
            kept = f"{folder} holds the weights of step {step}"
        raise TrainingDivergedError(
            f"between steps {window.first_step} and {window.last_step} (epoch {p.epoch}) the "
            f"training loss became NaN or infinite{where} on {window.bad_processes} of "
            f"{accelerator.num_processes} process(es); the run stops and saves nothing of "
            f"those steps ({kept}). Go on from there with --resume latest and a lower learning "
            "rate or gradient clipping (and --resume-force, as the config changes); "
            "--log-every 1 narrows the window to the step"
        )

    def epoch_record(self, **fields: Any) -> dict[str, Any]:
        """The record of the epoch that ends: epoch, step, its mean training loss over the
        processes (a resumed epoch's too), ``fields``, the files skipped in it and over the
        run, and each update's loss. Call on every process.

        Args:
            fields: the recipe's own entries (learning rate, seconds, throughput, scores...).
        """
        import torch

        self.read_losses()
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
        self.read_losses()  # the progress saved holds every loss; a NaN stops before the save
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
        if self.cfg.push_to_hub:
            self.push_best()
        report = self.out / "report.md"
        if report.is_file():
            print("\n" + report.read_text(), flush=True)

    def push_best(self, api: Any = None) -> str | None:
        """Upload ``best/`` to ``--push-to-hub`` with a hub model card (the run's own card as its
        body, the recipe's ``hub_pipeline_tag``), in one commit. ``cleanup`` calls it on the main
        process.

        Args:
            api: the ``huggingface_hub.HfApi`` to use (default: a new one).

        Returns:
            The commit's URL, or None when the run saved no ``best/`` (said in the log).
        """
        from clapkit.train.reporting import push_with_card

        cfg, best = self.cfg, self.out / "best"
        if not (best / "config.json").is_file():
            self.log.error("--push-to-hub %s: %s holds no saved model", cfg.push_to_hub, best)
            return None
        assert cfg.push_to_hub is not None
        url = push_with_card(
            best, cfg.push_to_hub, fallback=f"Trained with `{self.command()}`.",
            pipeline_tag=self.hub_pipeline_tag, private=cfg.hub_private, api=api,
        )  # fmt: skip
        self.log.info("best/ pushed to %s: %s", cfg.push_to_hub, url)
        return url

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
