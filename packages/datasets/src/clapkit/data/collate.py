"""Batching: stack waveforms, tokenise captions, drop skipped clips and report them by name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

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
    """

    def __init__(self, tokenize: Tokenize | None = None) -> None:
        self.tokenize = tokenize

    def __call__(self, items: Sequence[ClapExample | SkippedItem]) -> dict[str, Any]:
        good = [item for item in items if not isinstance(item, SkippedItem)]
        skipped = [item for item in items if isinstance(item, SkippedItem)]
        batch: dict[str, Any] = {
            "captions": [item["caption"] for item in good],
            "labels": [item["labels"] for item in good],
            "keys": [item["key"] for item in good],
            "skipped": skipped,
        }
        if good:
            batch["waveform"] = torch.stack([item["waveform"] for item in good])
        else:
            batch["waveform"] = torch.zeros(0, 0)
        if self.tokenize is not None and good:
            batch.update(self.tokenize(batch["captions"]))
        return batch


@dataclass
class SkippedFiles:
    """Running tally of the clips a run skipped, by name (fed with each batch's ``skipped``)."""

    reasons: dict[str, str] = field(default_factory=dict)
    count: int = 0

    def update(self, skipped: Sequence[SkippedItem]) -> None:
        """Count this batch's skipped clips (a clip skipped every epoch is counted every time)."""
        for item in skipped:
            self.count += 1
            self.reasons.setdefault(item.source, item.reason)

    def state_dict(self) -> dict[str, Any]:
        """For ``accelerator.register_for_checkpointing``."""
        return {"reasons": dict(self.reasons), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the tally saved by ``state_dict``."""
        self.reasons = dict(state["reasons"])
        self.count = int(state["count"])
