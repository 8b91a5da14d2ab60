"""The pieces of a training step that every recipe writes the same way, with explicit arguments.

::

    for group in update_groups(batches, micro_steps):          # micro-batches of one update
        loss = accumulate(accelerator, model, group, loss_step)  # forward + backward of each
        optimizer_step(accelerator, model, optimizer, max_grad_norm=1.0)
        losses.add(loss)                                        # stays on the device
        if step % log_every == 0:
            window = losses.read(accelerator)                   # the one host read of N steps

Accumulation is the recipe's, not the accelerator's (which keeps ``gradient_accumulation_steps``
at 1): :func:`update_groups` cuts the epoch's micro-batches into updates (the last may be
shorter), :func:`accumulate` runs each micro-batch's forward and backward with the gradient
all-reduce suspended for all but the last, the losses scaled by the group's size so that the
update's gradient is the mean over its micro-batches. Contrastive full-batch negatives are
``clapkit.core.accumulated_contrastive_step`` instead, called the same way.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["LossWindow", "StepLosses", "accumulate", "optimizer_step", "update_groups"]

T = TypeVar("T")


def update_groups(batches: Iterable[T], micro_steps: int) -> Iterator[list[T]]:
    """The micro-batches of each optimizer update, in order; the last group may be shorter.

    Args:
        batches: the epoch's micro-batches.
        micro_steps: micro-batches per update.

    Yields:
        Lists of ``micro_steps`` micro-batches (fewer for the epoch's last update).

    Raises:
        ValueError: ``micro_steps`` below 1.
    """
    if micro_steps < 1:
        raise ValueError(f"micro_steps must be >= 1, got {micro_steps}")
    group: list[T] = []
    for batch in batches:
        group.append(batch)
        if len(group) == micro_steps:
            yield group
            group = []
    if group:
        yield group


def accumulate(
    accelerator: Any, model: Any, group: Sequence[T], loss_step: Callable[[T], Tensor]
) -> Tensor:
    """Forward and backward of every micro-batch of one update; the gradients sum to the mean.

    The gradient all-reduce runs once, with the last micro-batch's backward
    (``accelerator.no_sync`` around the others); each loss is computed under the accelerator's
    autocast and divided by the group's size.

    Args:
        accelerator: the run's accelerator (``gradient_accumulation_steps`` 1).
        model: the prepared model.
        group: the update's micro-batches.
        loss_step: a micro-batch's loss (forward and loss, no backward).

    Returns:
        The update's loss: the mean of its micro-batches' (a detached device scalar).
    """
    total: Tensor | None = None
    for index, micro_batch in enumerate(group):
        last = index == len(group) - 1
        sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
        with sync, accelerator.autocast():
            loss = loss_step(micro_batch) / len(group)
            accelerator.backward(loss)
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None, "an update needs at least one micro-batch"
    return total


def optimizer_step(
    accelerator: Any, model: Any, optimizer: Any, *, max_grad_norm: float | None
) -> None:
    """Clip the gradient norm (if asked), step, and drop the gradients.

    Args:
        accelerator: the run's accelerator.
        model: the prepared model.
        optimizer: the prepared optimizer.
        max_grad_norm: the norm to clip to; None or 0 = no clipping.
    """
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class LossWindow:
    """The updates' losses read back at one log step.

    Attributes:
        first_step: the first update of the window.
        losses: each update's loss on this process, in order.
        bad_processes: how many processes saw a NaN or infinite loss in the window.
    """

    first_step: int
    losses: tuple[float, ...]
    bad_processes: int

    @property
    def last_step(self) -> int:
        """The window's last update."""
        return self.first_step + len(self.losses) - 1

    @property
    def first_bad_step(self) -> int | None:
        """The first update of the window whose loss is not finite here (None: all are)."""
        for offset, value in enumerate(self.losses):
            if not math.isfinite(value):
                return self.first_step + offset
        return None


class StepLosses:
    """The updates' losses kept on the device between log steps, read back in one go.

    Reading a loss (``loss.item()``) waits for the device to finish everything queued before
    it; one read every ``log_every`` updates lets the host queue the steps in between.
    """

    def __init__(self) -> None:
        self._losses: list[Tensor] = []
        self._first_step = 0

    def __len__(self) -> int:
        return len(self._losses)

    def add(self, step: int, loss: Tensor) -> None:
        """An update's loss (a device scalar, not read).

        Args:
            step: the update's number (the first one added opens the window).
            loss: its loss.
        """
        if not self._losses:
            self._first_step = step
        self._losses.append(loss.detach().float().reshape(()))

    def read(self, accelerator: Any) -> LossWindow | None:
        """Read the window back (one host read; a sum over processes of the NaN flag).

        Call on every process at the same steps.

        Args:
            accelerator: the run's accelerator.

        Returns:
            The window, or None when no loss was added since the last read.
        """
        if not self._losses:
            return None
        values = torch.stack(self._losses)
        bad = (~torch.isfinite(values)).any().float().reshape(1)
        bad = accelerator.reduce(bad, "sum")
        numbers = torch.cat([values, bad.reshape(1).to(values.device)]).tolist()
        window = LossWindow(self._first_step, tuple(numbers[:-1]), int(numbers[-1]))
        self._losses = []
        return window
