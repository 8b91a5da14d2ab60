"""The captioner recipe on its smoke preset: outputs, learning, the saved model, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from recipe_runner import launch, python  # noqa: E402

from clapkit.caption import ClapCaptioner  # noqa: E402


def test_smoke_preset_trains_evaluates_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "run"
    launch("train_captioner.py", "--preset", "smoke", "--output-dir", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    for name in ("bleu_1", "bleu_4", "rouge_l", "cider_d"):
        assert all(e[name] >= 0.0 for e in epochs), name
    assert set(epochs[-1]["missing_metrics"]) >= {"spider"} or "spider" in epochs[-1]
    assert metrics["best"]["score"] == max(e["score"] for e in epochs)
    config = json.loads((out / "config.json").read_text())
    assert config["gradient_accumulation_steps"] == 2
    examples = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == 4
    assert examples[0]["references"] == ["a man says the digit zero"]
    captioner = ClapCaptioner.from_pretrained(out / "best")
    clip = examples[0]["key"] + ".flac"
    assert len(captioner.generate([clip], beam_size=2, max_new_tokens=5)) == 1
    assert any((out / "logs").rglob("events.out.tfevents.*"))


def test_resume_continues_from_the_last_epoch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    python("train_captioner.py", "--preset", "smoke", "--output-dir", str(out), "--epochs", "1")
    first = json.loads((out / "metrics.json").read_text())["epochs"]
    python(
        "train_captioner.py",
        "--preset",
        "smoke",
        "--output-dir",
        str(out),
        "--epochs",
        "2",
        "--resume",
        "latest",
    )
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert epochs[0] == first[0]
    assert len(list((out / "checkpoints").glob("step_*_end"))) == 2
