"""Figures of an evaluation: the confusion matrix of a multiclass task and clapkit-vs-paper bars.

Written as PNG files with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: One bar group: (task, metric, clapkit's value, the paper's value or None, chance or None).
ReportRow = tuple[str, str, float, float | None, float | None]


def confusion_counts(scores: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """Counts of (true, predicted) class pairs of a multiclass task.

    Args:
        scores: class scores. Shape ``[n, c]``.
        targets: true class indices. Shape ``[n]``.
        num_classes: ``c``.

    Returns:
        ``[c, c]`` int64 counts: row = true class, column = predicted (highest-score) class.

    Raises:
        ValueError: if the shapes disagree.
    """
    if scores.dim() != 2 or scores.shape[1] != num_classes or targets.shape != scores.shape[:1]:
        raise ValueError(
            f"scores must be [n, {num_classes}] and targets [n], got {tuple(scores.shape)} "
            f"and {tuple(targets.shape)}"
        )
    flat = targets.long() * num_classes + scores.argmax(dim=1)
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(path: str | Path, rows: Sequence[ReportRow]) -> None:
    """Grouped bars of clapkit and the paper, one group per (task, metric), as a PNG.

    Args:
        path: the image file.
        rows: the report rows; a missing paper value draws no paper bar.
    """
    plt = pyplot()
    labels = [f"{task}\n{metric}" for task, metric, *_ in rows]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) + 2), 4))
    x = torch.arange(len(rows)).float()
    axes.bar(x - 0.2, [r[2] for r in rows], 0.4, label="clapkit")
    axes.bar(x + 0.2, [r[3] if r[3] is not None else 0.0 for r in rows], 0.4, label="paper")
    axes.set_xticks(x.tolist(), labels, rotation=90, fontsize=7)
    axes.set(ylim=(0, 1), ylabel="score", title="clapkit vs the paper")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(path: str | Path, counts: Tensor, names: Sequence[str], title: str) -> None:
    """Row-normalised confusion matrix as a PNG (its folder is created).

    Args:
        path: the image file.
        counts: ``[c, c]`` from `confusion_counts`.
        names: the class names, in index order.
        title: the figure's title (the task).
    """
    plt = pyplot()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rates = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.3 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = list(range(len(names)))
    axes.set_xticks(ticks, names, rotation=90, fontsize=6)
    axes.set_yticks(ticks, names, fontsize=6)
    axes.set(xlabel="predicted", ylabel="true", title=f"{title} (row-normalised)")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
