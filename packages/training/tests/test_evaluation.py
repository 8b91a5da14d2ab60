"""Per-epoch zero-shot evaluation agrees with ClapModel.zero_shot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from clapkit.core import build_clap
from clapkit.core.metrics import mean_average_precision
from clapkit.train.demo import DIGITS, build_encoders, fsdd_manifests
from clapkit.train.evaluation import load_zero_shot_tasks, zero_shot_evaluate

FSDD = Path(__file__).resolve().parents[3] / "data" / "fsdd"
TEMPLATE = "a man says the digit {}"


def test_scores_match_model_zero_shot(prepared: Any, tmp_path: Path) -> None:
    accelerator = prepared[0]
    _, heldout = fsdd_manifests(FSDD, tmp_path, "theo", clips_per_digit=2)
    # two labels a clip (its digit and the next): a multilabel task scored by mAP, which ranks
    # the continuous scores (an untrained model's argmax is one class for every clip)
    records = [json.loads(line) for line in Path(heldout).read_text().splitlines()]
    for r in records:
        r["labels"].append(DIGITS[(DIGITS.index(r["labels"][0]) + 1) % 10])
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    torch.manual_seed(0)
    audio, text = build_encoders("cnn14", "gpt2-eot", "tiny", [TEMPLATE, *DIGITS], clip_seconds=0.8)
    model = build_clap(audio=audio, text=text, projection="linear", projection_dim=16)
    model.train()
    tasks = load_zero_shot_tasks([str(manifest)], [], template=TEMPLATE)
    results = zero_shot_evaluate(accelerator, model, tasks)
    assert model.training  # put back
    labels = sorted(DIGITS)
    model.eval()
    scores = model.zero_shot(
        [r["audio"] for r in records], labels, template=TEMPLATE, multilabel=True
    )
    targets = torch.tensor([[float(c in r["labels"]) for c in labels] for r in records])
    expected = mean_average_precision(scores, targets)
    assert 0.1 < expected < 0.9
    assert results["pairs"]["mAP"] == pytest.approx(expected, abs=1e-6)
    assert results["zero_shot_score"] == results["pairs"]["score"]


def test_bad_task_specs() -> None:
    with pytest.raises(SystemExit, match="NAME=PATH"):
        load_zero_shot_tasks([], ["esc50"], template="{}")
    with pytest.raises(SystemExit, match="not a zero-shot task"):
        load_zero_shot_tasks([], ["clotho=/nowhere"], template="{}")


def test_skip_scores_the_good_clips_and_names_the_rest(prepared: Any, tmp_path: Path) -> None:
    from clapkit.audio import AudioLoadError
    from clapkit.core.metrics import accuracy

    accelerator = prepared[0]
    _, heldout = fsdd_manifests(FSDD, tmp_path, "theo", clips_per_digit=2)
    lines = Path(heldout).read_text().splitlines()
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wave file")
    broken = [
        *lines[:7],
        json.dumps({"audio": str(corrupt), "labels": ["one"]}),
        json.dumps({"audio": lines and json.loads(lines[0])["audio"], "key": "nolabel"}),
        *lines[7:],
    ]
    manifest = tmp_path / "broken.jsonl"
    manifest.write_text("\n".join(broken) + "\n")
    torch.manual_seed(0)
    audio, text = build_encoders("cnn14", "gpt2-eot", "tiny", [TEMPLATE, *DIGITS], clip_seconds=0.8)
    model = build_clap(audio=audio, text=text, projection="linear", projection_dim=16).eval()

    with pytest.raises(Exception, match="no labels"):
        load_zero_shot_tasks([str(manifest)], [], template=TEMPLATE)
    tasks = load_zero_shot_tasks([str(manifest)], [], template=TEMPLATE, on_error="skip")
    with pytest.raises(AudioLoadError, match=r"corrupt\.wav"):
        zero_shot_evaluate(accelerator, model, tasks)
    results = zero_shot_evaluate(accelerator, model, tasks, on_error="skip")["broken"]
    assert set(results["skipped"]) == {str(corrupt), str(tmp_path / json.loads(lines[0])["audio"])}
    assert results["n_clips"] == len(lines)

    good = [json.loads(line) for line in lines]
    labels = sorted(DIGITS)
    scores = model.zero_shot([tmp_path / r["audio"] for r in good], labels, template=TEMPLATE)
    targets = torch.tensor([labels.index(r["labels"][0]) for r in good])
    assert results["accuracy"] == pytest.approx(accuracy(scores, targets), abs=1e-6)
