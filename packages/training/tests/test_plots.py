"""Evaluation figures: confusion counts are exact; the PNGs are written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clapkit.train.plots import confusion_counts, plot_bars, plot_confusion


def test_confusion_counts_rows_are_truth_columns_predictions() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1], [0.0, 0.1, 0.9]])
    targets = torch.tensor([0, 1, 1, 2])
    counts = confusion_counts(scores, targets, 3)
    assert counts.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert int(counts.sum()) == 4
    with pytest.raises(ValueError, match=r"scores must be \[n, 4\]"):
        confusion_counts(scores, targets, 4)


def test_figures_are_pngs(tmp_path: Path) -> None:
    counts = torch.tensor([[3, 1], [0, 4]])
    plot_confusion(tmp_path / "confusion" / "esc50.png", counts, ["dog", "rain"], "esc50")
    plot_bars(tmp_path / "report.png", [("esc50", "accuracy", 0.8, 0.939, 0.02)])
    plot_bars(tmp_path / "no_paper.png", [("mine", "accuracy", 0.5, None, None)])
    for name in ("confusion/esc50.png", "report.png", "no_paper.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
