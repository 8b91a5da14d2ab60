"""The run report, its CSV and curves, and the model card."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin

from clapkit.data import SkippedFiles, SkippedItem
from clapkit.train.reporting import flatten, write_model_card, write_report

HISTORY = [
    {
        "epoch": 0,
        "step": 4,
        "train_loss": 3.2,
        "lr": 1e-3,
        "seconds": 5.0,
        "samples_per_s": 13.6,
        "data_wait_s": 0.03,
        "compute_s": 1.1,
        "tflops": 1e-4,
        "esc50": {"accuracy": 0.5, "score": 0.5},
        "zero_shot_score": 0.5,
    },
    {
        "epoch": 1,
        "step": 8,
        "train_loss": 2.7,
        "lr": 1e-3,
        "seconds": 8.0,
        "esc50": {"accuracy": 0.75, "score": 0.75},
        "zero_shot_score": 0.75,
    },
]


def test_report_files(tmp_path: Path) -> None:
    skipped = SkippedFiles()
    skipped.count, skipped.reasons = 1, {"bad.flac": "not audio"}
    best = {**HISTORY[1], "score": 0.75}
    write_report(
        tmp_path,
        title="t",
        summary=["s"],
        history=HISTORY,
        best=best,
        skipped=skipped,
        extra={"flops_per_sample": 8.0},
    )
    report = (tmp_path / "report.md").read_text()
    assert "| epoch | train loss | esc50 | zero-shot score | lr | s | samples/s |" in report
    assert "| 0 | 3.2000 | 0.500 | 0.500 | 1e-03 | 5 | 13.6 | 0.030 | 1.100 | 0.0001 |" in report
    assert "| 1 | 2.7000 | 0.750 | 0.750 | 1e-03 | 8 | - | - | - | - |" in report
    assert "Best epoch: 1 (score 0.750)" in report
    assert "- `bad.flac`: not audio" in report
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["flops_per_sample"] == 8.0
    assert metrics["skipped_files"]["count"] == 1
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [r["esc50/accuracy"] for r in rows] == ["0.5", "0.75"]
    assert rows[1]["samples_per_s"] == ""
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_flatten() -> None:
    assert flatten({"a": 1, "b": {"c": 2.5, "d": "x"}, "e": True}) == {"a": 1.0, "b/c": 2.5}


class Tiny(torch.nn.Module, PyTorchModelHubMixin):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)


def test_model_card_describes_the_run_and_survives_save_pretrained(tmp_path: Path) -> None:
    # huggingface_hub's own card claims a push to the Hub
    Tiny().save_pretrained(tmp_path / "mixin")
    assert "pushed to the Hub" in (tmp_path / "mixin" / "README.md").read_text()
    folder = tmp_path / "best"
    write_model_card(
        folder,
        recipe="recipes/pretrain_clap.py",
        preset="demo",
        model="audio `cnn14` + text `gpt2-eot`",
        data=["training: `train.jsonl`"],
        metrics={**HISTORY[1], "score": 0.75},
        command="accelerate launch x",
    )
    Tiny().save_pretrained(folder)
    card = (folder / "README.md").read_text()
    assert "preset `demo`" in card
    assert "| esc50/accuracy | 0.75 |" in card
    assert "- training: `train.jsonl`" in card
    assert "Hub" not in card


def test_report_of_a_recipe_without_a_zero_shot_score(tmp_path: Path) -> None:
    """The captioner's report: its task's SPIDEr is the score; no zero-shot column, per-epoch
    and total skips counted as such."""
    history = [
        {"epoch": 0, "step": 8, "train_loss": 5.1, "lr": 1e-2, "seconds": 3.0,
         "clotho": {"cider_d": 1.4, "score": 1.4}},
        {"epoch": 1, "step": 16, "train_loss": 4.0, "lr": 1e-2, "seconds": 3.0,
         "clotho": {"cider_d": 2.1, "score": 2.1}},
    ]  # fmt: skip
    skipped = SkippedFiles()
    for epoch in (0, 1):
        skipped.set_epoch(epoch)
        skipped.update([SkippedItem(key="bad", source="bad.flac", reason="not audio")])
    write_report(
        tmp_path, title="train_captioner report", summary=["s"], history=history,
        best={**history[1], "score": 2.1}, skipped=skipped, score_column=None,
        loss_title="captioning loss", score_title="clotho: SPIDEr", score_range=None,
    )  # fmt: skip
    report = (tmp_path / "report.md").read_text()
    assert "| epoch | train loss | clotho | lr | s |" in report
    assert "zero-shot" not in report
    assert "| 1 | 4.0000 | 2.100 | 1e-02 | 3 |" in report
    assert "2 skips over 2 epochs (epoch 0: 1, epoch 1: 1) of 1 file:" in report
    assert "- `bad.flac`: not audio, skipped 2 times" in report
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["skipped_files"]["per_epoch"] == {"0": 1, "1": 1}
