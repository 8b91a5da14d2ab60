"""The pretraining recipe on its smoke preset: outputs, resume, DDP, bad files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import load_file

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from pretrain_support import fsdd_manifests  # noqa: E402
from recipe_runner import RECIPES, launch, python  # noqa: E402

FSDD = RECIPES.parent / "data" / "fsdd"


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_smoke_preset_under_accelerate_launch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = launch("pretrain_clap.py", "--preset", "smoke", "--output-dir", str(out))
    metrics = metrics_of(out)
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(0.0 <= e["heldout_theo"]["accuracy"] <= 1.0 for e in epochs)
    assert metrics["best"]["score"] == max(e["zero_shot_score"] for e in epochs)
    # the contrastive loss goes down (fixed seed, CPU: deterministic)
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    config = json.loads((out / "config.json").read_text())
    assert config["size"] == "tiny"
    assert config["gradient_accumulation_steps"] == 2
    for name in ("report.md", "curves.png", "best/config.json", "best/model.safetensors"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| epoch | train loss | heldout_theo |" in (out / "report.md").read_text()
    assert any((out / "logs").rglob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "step_00000004_end" / "config.json").is_file()
    assert "100%" in done.stderr  # the progress bar

    evaluation = tmp_path / "eval"
    launch(
        "evaluate.py",
        "--checkpoint",
        str(out / "best"),
        "--manifest",
        str(out / "data" / "heldout_theo.jsonl"),
        "--template",
        "a man says the digit {}",
        "--output-dir",
        str(evaluation),
    )
    result = json.loads((evaluation / "metrics.json").read_text())["heldout_theo"]
    assert result["n_clips"] == 20
    # the evaluation recipe and the training run's own evaluation give one number
    assert abs(result["accuracy"] - metrics["best"]["heldout_theo"]["accuracy"]) < 1e-6
    assert (evaluation / "confusion" / "heldout_theo.png").read_bytes()[:4] == b"\x89PNG"


def test_resumed_run_ends_with_identical_weights(tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    python(
        "pretrain_clap.py", "--preset", "smoke", "--output-dir", str(whole), "--log-with", "none"
    )
    # interrupted after step 3 of 8 (mid-epoch 0; last checkpoint at step 2), then resumed
    python(
        "pretrain_clap.py",
        "--preset",
        "smoke",
        "--output-dir",
        str(parts),
        "--log-with",
        "none",
        "--max-steps",
        "3",
    )
    assert not (parts / "metrics.json").exists()
    python(
        "pretrain_clap.py",
        "--preset",
        "smoke",
        "--output-dir",
        str(parts),
        "--log-with",
        "none",
        "--resume",
        "latest",
    )
    final = "checkpoints/step_00000008_end/model.safetensors"
    expected, resumed = load_file(whole / final), load_file(parts / final)
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert resumed[name].equal(tensor), name
    strip = lambda epochs: [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]  # noqa: E731
    assert strip(metrics_of(whole)["epochs"]) == strip(metrics_of(parts)["epochs"])


def test_two_processes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    launch(
        "pretrain_clap.py",
        "--preset",
        "smoke",
        "--output-dir",
        str(out),
        "--log-with",
        "none",
        processes=2,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["num_processes"] == 2
    assert config["gradient_accumulation_steps"] == 1
    epochs = metrics_of(out)["epochs"]
    assert len(epochs) == 2
    assert (out / "best" / "model.safetensors").is_file()


def test_corrupt_file_is_skipped_and_reported(tmp_path: Path) -> None:
    train, heldout = fsdd_manifests(FSDD, tmp_path / "data", "theo", clips_per_digit=2)
    broken = tmp_path / "data" / "broken.flac"
    broken.write_bytes(b"this is not a flac file" * 20)
    lines = Path(train).read_text().splitlines()
    lines.insert(5, json.dumps({"audio": "broken.flac", "caption": "a man says the digit one"}))
    Path(train).write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    done = python(
        "pretrain_clap.py",
        "--preset",
        "smoke",
        "--output-dir",
        str(out),
        "--log-with",
        "none",
        "--train-manifest",
        train,
        "--eval-manifest",
        heldout,
    )
    skipped = metrics_of(out)["skipped_files"]
    assert list(skipped["reasons"]) == [str(broken)]
    assert skipped["count"] == 2  # once per epoch
    assert "broken.flac" in (out / "report.md").read_text()
    assert "skipping bad audio" in done.stderr
    assert "broken.flac" in done.stderr
