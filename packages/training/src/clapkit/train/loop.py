"""The training loop's bookkeeping that every recipe shares: a recipe's ``train`` calls these
between its own loss steps (``clapkit.train.recipe.TrainingRecipe`` is a ``TrainingLoop``).

Per epoch, :meth:`TrainingLoop.epoch_batches` gives the batches from where the run stands (a
mid-epoch resume passes over those already trained on); per update,
:meth:`TrainingLoop.update` runs the micro-batches' forward and backward and the optimizer
step, and :meth:`TrainingLoop.step_done` counts the step, keeps its loss on the device, reads
the losses every ``log_every`` updates (a NaN or infinite one stops the run:
:class:`TrainingDivergedError`), saves the periodic checkpoints and answers preemption; at the
epoch's end :meth:`TrainingLoop.epoch_record` and :meth:`TrainingLoop.close_epoch`::

    for batch_group in update_groups(self.epoch_batches(dataset, loader), self.micro_steps):
        loss = self.update(batch_group, self.loss_step)
        self.step_done(bar, loss, extra=lambda: {"lr": lr})
    self.close_epoch(self.epoch_record(seconds=elapsed))
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from clapkit.data import SkippedFiles
from clapkit.train.checkpointing import Progress
from clapkit.train.config import RunSettings
from clapkit.train.preemption import Preemption, stop_if_preempted
from clapkit.train.steps import LossWindow, StepLosses, accumulate, optimizer_step

__all__ = ["TrainingDivergedError", "TrainingLoop"]

C = TypeVar("C", bound=RunSettings)


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite: the run stops before it saves anything of
    that step."""


class TrainingLoop(Generic[C]):
    """Progress bar, epoch batches, updates, loss reads, epoch records: the loop's shared parts.

    It works on the state a :class:`~clapkit.train.recipe.TrainingRecipe` holds (declared
    below) and calls its :meth:`save_checkpoint`.
    """

    cfg: C
    accelerator: Any
    model: Any
    optimizer: Any
    train_loader: Any
    progress: Progress
    skipped: SkippedFiles
    losses: StepLosses
    preemption: Preemption
    micro_steps: int
    last_checkpoint: tuple[Path, int] | None
    out: Path

    @property
    def log(self) -> logging.Logger:
        """The recipe's logger."""
        raise NotImplementedError

    def save_checkpoint(self, name: str) -> Path:
        """Save ``checkpoints/NAME`` (the recipe's)."""
        raise NotImplementedError

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
        entry is empty (every clip of it was bad) is counted and not yielded. Each batch is
        given back to its worker's buffer (``clapkit.data.give_back``) before it is yielded.

        Args:
            dataset: the training dataset (``set_epoch``).
            loader: the prepared training loader (``set_epoch``).
            needs: a batch key that must be non-empty (``"captions"``, ``"labels"``).
        """
        from clapkit.data import give_back
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
            give_back(batch)  # the worker's buffer (clapkit.data.BatchBuffers) is its again
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
        to ``cfg.max_grad_norm`` when it is set, the optimizer step.

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
        """Clip to ``cfg.max_grad_norm`` (when set), step, drop the gradients."""
        optimizer_step(
            self.accelerator, self.model, self.optimizer, max_grad_norm=self.cfg.max_grad_norm
        )

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
