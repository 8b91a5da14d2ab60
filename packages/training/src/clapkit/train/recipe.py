"""The life cycle every clapkit training recipe shares (torchtune's recipe interface).

A recipe is a subclass of :class:`TrainingRecipe` that fills in ``setup`` (model, optimiser,
data), ``train`` (returns its outcome) and ``evaluate``; what every training run does the same
way lives here: the run's start (threads, accelerator, logging, run folder, seed), the resolved
config written beside the checkpoints, the resume, atomic checkpoints with the run's identity,
and the end (trackers closed, skipped files named, the report printed). The loop's bookkeeping
(epoch batches, updates, loss reads and the stop at the first NaN or infinite loss) is
:class:`~clapkit.train.loop.TrainingLoop`'s, which a recipe is. ``main`` is one call::

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
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from clapkit.data import SkippedFiles
from clapkit.train.checkpointing import Progress, load_checkpoint, save_checkpoint
from clapkit.train.config import RunSettings, jsonable, parse_config
from clapkit.train.loop import TrainingDivergedError, TrainingLoop
from clapkit.train.preemption import Preempted, Preemption
from clapkit.train.setup import accumulation_steps, start_run
from clapkit.train.steps import StepLosses
from clapkit.train.write_errors import CheckpointWriteError

__all__ = ["TrainingDivergedError", "TrainingRecipe"]  # the error is clapkit.train.loop's

C = TypeVar("C", bound=RunSettings)


class TrainingRecipe(TrainingLoop[C]):
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
        cfg = self.cfg
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
