"""Batching: stack waveforms, tokenise captions, drop skipped clips and report them by name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from clapkit.data.buffers import BatchBuffers, stack_into
from clapkit.data.dataset import ClapExample, SkippedItem

logger = logging.getLogger(__name__)

Tokenize = Callable[[list[str]], Mapping[str, torch.Tensor]]


class ClapCollator:
    """Collates ``ClapExample`` items into a batch dictionary.

    Skipped items are removed; the rest of the batch is kept whole. The batch holds:
    ``waveform`` ``[b, t]``, the tokeniser's tensors (``input_ids``, ``attention_mask``, ``[b, s]``)
    when a tokeniser is given, ``captions`` (``list[str]``), ``labels`` (``list[tuple[str, ...]]``),
    ``keys`` and ``skipped`` (``list[SkippedItem]``, the clips dropped from this batch).

    Args:
        tokenize: the text encoder's ``tokenize`` (``TextEncoder.tokenize``), or ``None`` to
            leave captions as strings.
        buffers: shared-memory buffers the workers reuse for ``waveform``
            (:class:`~clapkit.data.BatchBuffers`; give every batch back with
            :func:`~clapkit.data.give_back`), or ``None`` for fresh memory per batch.
    """

    def __init__(
        self, tokenize: Tokenize | None = None, *, buffers: BatchBuffers | None = None
    ) -> None:
        self.tokenize = tokenize
        self.buffers = buffers

    def __call__(self, items: Sequence[ClapExample | SkippedItem]) -> dict[str, Any]:
        good = [item for item in items if not isinstance(item, SkippedItem)]
        skipped = [item for item in items if isinstance(item, SkippedItem)]
        batch: dict[str, Any] = {
            "captions": [item["caption"] for item in good],
            "labels": [item["labels"] for item in good],
            "keys": [item["key"] for item in good],
            "skipped": skipped,
        }
        stack_into(batch, [item["waveform"] for item in good], self.buffers)
        if self.tokenize is not None and good:
            batch.update(self.tokenize(batch["captions"]))
        return batch


@dataclass
class SkippedFiles:
    """Tally of the clips a run skipped, per epoch and in total, by name.

    Feed it each batch's ``skipped`` (``update``) after ``set_epoch``; a clip skipped in every
    epoch counts once per epoch. Register it with ``accelerator.register_for_checkpointing``:
    a resumed run goes on counting where the checkpoint stopped.

    Attributes:
        reasons: file -> why it was skipped (the first reason seen).
        count: skips over the whole run (every epoch).
        times: file -> how many times it was skipped over the run.
        per_epoch: epoch -> skips in that epoch (epochs without a skip are absent).
        epoch: the epoch that ``update`` counts into.
        epochs: how many epochs have been counted into (the highest ``set_epoch`` + 1).
    """

    reasons: dict[str, str] = field(default_factory=dict)
    count: int = 0
    times: dict[str, int] = field(default_factory=dict)
    per_epoch: dict[int, int] = field(default_factory=dict)
    epoch: int = 0
    epochs: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Count the next skips into ``epoch``."""
        self.epoch = epoch
        self.epochs = max(self.epochs, epoch + 1)

    def update(self, skipped: Sequence[SkippedItem]) -> None:
        """Count this batch's skipped clips into the current epoch and the total."""
        if skipped:
            self.epochs = max(self.epochs, self.epoch + 1)
        for item in skipped:
            self.count += 1
            self.reasons.setdefault(item.source, item.reason)
            self.times[item.source] = self.times.get(item.source, 0) + 1
            self.per_epoch[self.epoch] = self.per_epoch.get(self.epoch, 0) + 1

    def in_epoch(self, epoch: int) -> int:
        """Skips counted in ``epoch``."""
        return self.per_epoch.get(epoch, 0)

    def summary(self) -> list[str]:
        """What the tally counts, for a report: a heading line, then one line per file.

        ``"3 skips over 2 epochs (epoch 0: 2, epoch 1: 1) of 2 files:"``, then
        ``"`a.flac`: not audio, skipped 2 times"`` per file (sorted by name).
        """
        epochs = ", ".join(f"epoch {e}: {n}" for e, n in sorted(self.per_epoch.items()))
        over = self.epochs or len(self.per_epoch)
        head = f"{self.count} skip{'s' * (self.count != 1)} over {over} epoch{'s' * (over != 1)}"
        head += f" ({epochs})" if epochs else ""
        head += f" of {len(self.reasons)} file{'s' * (len(self.reasons) != 1)}:"
        lines = [head]
        for name, reason in sorted(self.reasons.items()):
            times = self.times.get(name)
            lines.append(
                f"`{name}`: {reason}"
                + (f", skipped {times} time{'s' * (times != 1)}" if times is not None else "")
            )
        return lines

    def state_dict(self) -> dict[str, Any]:
        """For ``accelerator.register_for_checkpointing`` and ``metrics.json`` (JSON-ready)."""
        return {
            "reasons": dict(self.reasons),
            "count": self.count,
            "times": dict(self.times),
            "per_epoch": {str(e): n for e, n in sorted(self.per_epoch.items())},
            "epoch": self.epoch,
            "epochs": self.epochs,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the tally saved by ``state_dict``.

        A state saved before per-epoch counting (only ``reasons`` and ``count``) restores the
        total and the reasons; per-file and per-epoch counts then start from the resume.
        """
        self.reasons = dict(state["reasons"])
        self.count = int(state["count"])
        self.times = {str(k): int(v) for k, v in state.get("times", {}).items()}
        self.per_epoch = {int(e): int(n) for e, n in state.get("per_epoch", {}).items()}
        self.epoch = int(state.get("epoch", 0))
        self.epochs = int(state.get("epochs", self.epoch + 1 if self.count else 0))
