"""The report of a cross-validated fine-tuning run: per-fold table, mean +- std, the paper, curves.

::

    write_finetune_report(out, title="finetune_audio report", summary=[...], folds=results,
                          history=history, paper=(96.70, 98.25))

writes ``metrics.json``, ``report.md``, ``history.csv`` and ``curves.png`` into ``out``. A fold
result is ``{"fold", "epoch", "accuracy" | "mAP", "score", "n_clips", "zero_shot"}``; a history
row ``{"fold", "epoch", "step", "train_loss", "lr", "seconds", "test": {...}}``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clapkit.train.plots import pyplot
from clapkit.train.reporting import write_history_csv

__all__ = ["fold_summary", "plot_fold_curves", "write_finetune_report"]


def fold_summary(folds: Sequence[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation of the folds' scores (and of their zero-shot scores).

    Args:
        folds: the finished folds' results.

    Returns:
        ``{"folds", "mean", "std", "zero_shot_mean"}``; ``std`` is 0 for one fold, the means
        None without folds (or without zero-shot scores).
    """
    scores = [float(f["score"]) for f in folds if f.get("score") is not None]
    zero = [float(f["zero_shot"]) for f in folds if f.get("zero_shot") is not None]
    return {
        "folds": len(scores),
        "mean": statistics.fmean(scores) if scores else None,
        "std": statistics.stdev(scores) if len(scores) > 1 else (0.0 if scores else None),
        "zero_shot_mean": statistics.fmean(zero) if zero else None,
    }


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}"


def write_finetune_report(
    out: str | Path,
    *,
    title: str,
    summary: Sequence[str],
    folds: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    paper: tuple[float, float] | None = None,
    skipped: Any = None,
    metric: str = "accuracy",
    mode: str = "full",
) -> None:
    """Write ``metrics.json``, ``report.md``, ``history.csv`` and ``curves.png`` into ``out``.

    Args:
        out: the run folder.
        title: the report's heading.
        summary: lines under the heading (model, data, the command).
        folds: the finished folds' results.
        history: every epoch row of every fold.
        paper: the paper's two figures in percent, ``(from, to)``, shown under the table
            (ESC-50 fine-tuning: 96.70 -> 98.25).
        skipped: a ``clapkit.data.SkippedFiles``.
        metric: the headline metric's name (``accuracy`` or ``mAP``).
        mode: ``full`` or ``linear-probe`` (the column's name).
    """
    out = Path(out)
    stats = fold_summary(folds)
    skipped_state = skipped.state_dict() if skipped is not None else {"count": 0, "reasons": {}}
    metrics = {
        "folds": list(folds),
        "summary": {**stats, "metric": metric, "mode": mode},
        "paper": list(paper) if paper else None,
        "epochs": list(history),
        "skipped_files": skipped_state,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    lines = [f"# {title}", "", *summary, ""]
    lines += [f"| fold | epoch kept | test clips | zero-shot {metric} % | {mode} {metric} % |"]
    lines += ["|---|---|---|---|---|"]
    for f in folds:
        lines.append(
            f"| {f['fold']} | {f.get('epoch', '-')} | {f.get('n_clips', '-')} | "
            f"{_percent(f.get('zero_shot'))} | {_percent(f.get('score'))} |"
        )
    if stats["mean"] is not None:
        std = float(stats["std"] or 0.0)
        lines.append(
            f"| mean +- std | | | {_percent(stats['zero_shot_mean'])} | "
            f"{_percent(stats['mean'])} +- {100 * std:.2f} |"
        )
    if paper:
        lines += [
            "",
            f"The paper (arXiv 2309.05767), fine-tuning the audio encoder on ESC-50 (5 folds): "
            f"accuracy {paper[0]:.2f}% -> {paper[1]:.2f}%.",
        ]
    if skipped is not None and skipped.count:
        lines += ["", f"Skipped {skipped.count} bad clips:"]
        lines += [f"- `{name}`: {reason}" for name, reason in sorted(skipped.reasons.items())]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    write_history_csv(out / "history.csv", history)
    plot_fold_curves(out / "curves.png", history)


def plot_fold_curves(path: str | Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Training loss and test score per epoch, one line per fold, as a PNG.

    Args:
        path: the image file.
        history: the epoch rows.
    """
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(dict.fromkeys(str(r["fold"]) for r in history))
    for name in names:
        rows = [r for r in history if str(r["fold"]) == name]
        epochs = [r["epoch"] for r in rows]
        left.plot(epochs, [r.get("train_loss", math.nan) for r in rows], marker="o", label=name)
        scores = [r["test"]["score"] if "test" in r else math.nan for r in rows]
        right.plot(epochs, scores, marker="o", label=name)
    left.set(xlabel="epoch", ylabel="train loss", title="training loss per fold")
    right.set(xlabel="epoch", ylabel="test score", title="held-out fold", ylim=(0, 1))
    if names:
        left.legend(title="fold", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
