"""Fine-tuning: the classifier (modes, folder, strict load), folds, targets, scores, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from clapkit.audio import FrontendConfig, cnn14_encoder
from clapkit.data import ManifestRecord
from clapkit.train.finetune_report import fold_summary, write_finetune_report
from clapkit.train.finetuning import AudioClassifier, build_encoder
from clapkit.train.folds import (
    CrossValidation,
    classification_scores,
    cross_validation_folds,
    fold_of,
    load_classification_data,
    target_tensor,
)

FRONTEND = FrontendConfig(sample_rate=8000, n_fft=256, win_length=256, hop_length=80, n_mels=16,
                          fmin=20.0, fmax=4000.0, clip_seconds=0.5)  # fmt: skip


def tiny(**knobs: Any) -> Any:
    torch.manual_seed(0)
    return cnn14_encoder(frontend=FRONTEND, channels=(4, 8), out_dim=8, num_classes=3, **knobs)


def test_linear_probe_freezes_the_encoder_and_its_batchnorm_statistics() -> None:
    model = AudioClassifier(tiny(), class_names=["a", "b"], mode="linear-probe")
    assert model.encoder.num_classes == 0  # its own head removed
    assert model.encoder.head is None
    model.train()
    assert not model.encoder.training
    assert model.head.training
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    groups = model.parameter_groups(1e-3, 0.1)
    assert [g["name"] for g in groups] == ["head"]
    optimizer = torch.optim.SGD(groups, lr=1e-3)
    logits = model(torch.randn(4, 4000))
    assert logits.shape == (4, 2)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).backward()
    optimizer.step()
    assert all(p.grad is None for p in model.encoder.parameters())
    after = model.encoder.state_dict()
    assert all(after[k].equal(v) for k, v in before.items())  # running stats too


def test_full_mode_trains_the_encoder_at_a_smaller_rate() -> None:
    model = AudioClassifier(tiny(), class_names=["a", "b", "c"], mode="full")
    model.train()
    assert model.encoder.training
    head, encoder = model.parameter_groups(1e-3, 0.1)
    assert (head["lr"], encoder["lr"]) == (1e-3, pytest.approx(1e-4))
    torch.nn.functional.cross_entropy(
        model(torch.randn(4, 4000)), torch.tensor([0, 1, 2, 0])
    ).backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)


def test_classifier_folder_round_trip_and_strict_load(tmp_path: Path) -> None:
    model = AudioClassifier(tiny(), class_names=["dog", "cat"], mode="full", dropout=0.1).eval()
    folder = model.save_pretrained(tmp_path / "clf")
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "clapkit-audio-classifier"
    assert config["class_names"] == ["dog", "cat"]
    loaded = AudioClassifier.from_pretrained(folder)
    wave = torch.randn(2, 4000)
    with torch.no_grad():
        assert loaded(wave).equal(model(wave))
    assert (loaded.class_names, loaded.dropout.p, loaded.training) == (("dog", "cat"), 0.1, False)
    weights = load_file(folder / "model.safetensors")
    weights.pop("head.bias")
    weights["extra.weight"] = torch.zeros(1)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(Exception, match=r"head\.bias") as error:
        AudioClassifier.from_pretrained(folder)
    assert "extra.weight" in str(error.value)
    (folder / "config.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not an audio classifier's config"):
        AudioClassifier.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        AudioClassifier.from_pretrained(tmp_path / "absent")


def test_classifier_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="mode"):
        AudioClassifier(tiny(), class_names=["a", "b"], mode="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 2 classes"):
        AudioClassifier(tiny(), class_names=["a"])


def test_build_encoder_drops_the_head_and_loads_weights(tmp_path: Path) -> None:
    from clapkit.audio import save_weights

    encoder = build_encoder("cnn14", frontend=FRONTEND, channels=(4, 8), out_dim=8)
    assert encoder.num_classes == 0
    assert encoder.training
    path = tmp_path / "enc.safetensors"
    save_weights(encoder, path)
    again = build_encoder("cnn14", weights=str(path), frontend=FRONTEND, channels=(4, 8), out_dim=8,
                          num_classes=0)  # fmt: skip
    assert all(again.state_dict()[k].equal(v) for k, v in encoder.state_dict().items())
    with pytest.raises(ValueError, match="either weights"):
        build_encoder("cnn14", weights=str(path), clap="x")


def record(name: str, **extra: object) -> ManifestRecord:
    return ManifestRecord(
        audio=Path(f"/d/{name}.wav"), labels=("dog",), key=name, extra=dict(extra)
    )


def test_folds_from_a_field_or_the_esc50_file_name() -> None:
    assert fold_of(record("a", fold=3), "fold") == "3"
    assert (
        fold_of(record("4-100032-A-0"), "fold") == "4"
    )  # ESC-50 name: {fold}-{src}-{take}-{target}
    with pytest.raises(ValueError, match="clip x has no 'speaker' field"):
        fold_of(record("x"), "speaker")
    records = [record(f"{f}-1-A-{i}", fold=f) for f in (1, 2, 3, 10) for i in range(2)]
    folds = cross_validation_folds(records, "fold")
    assert [f.name for f in folds] == ["1", "2", "3", "10"]  # numbers in numeric order
    for fold in folds:
        assert (len(fold.test), len(fold.train)) == (2, 6)
        assert {fold_of(r, "fold") for r in fold.test} == {fold.name}
        assert fold.name not in {fold_of(r, "fold") for r in fold.train}
    assert [f.name for f in cross_validation_folds(records, "fold", ["3"])] == ["3"]
    with pytest.raises(ValueError, match=r"test folds \['7'\] not found"):
        cross_validation_folds(records, "fold", ["7"])
    with pytest.raises(ValueError, match=">= 2 folds"):
        cross_validation_folds(records[:2], "fold")


def test_targets_and_scores() -> None:
    index = {"cat": 0, "dog": 1, "owl": 2}
    targets = target_tensor([("dog",), ("owl",)], index, multilabel=False)
    assert targets.tolist() == [[0, 1, 0], [0, 0, 1]]
    assert target_tensor([("dog", "cat")], index, multilabel=True).tolist() == [[1, 1, 0]]
    with pytest.raises(ValueError, match="exactly one label"):
        target_tensor([("dog", "cat")], index, multilabel=False)
    with pytest.raises(ValueError, match="'emu' is not one of the classes"):
        target_tensor([("emu",)], index, multilabel=False)
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert classification_scores(logits, targets, multilabel=False) == {
        "accuracy": 0.5, "score": 0.5, "n_clips": 2
    }  # fmt: skip
    multi = classification_scores(logits, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
                                  multilabel=True)  # fmt: skip
    assert multi["mAP"] == pytest.approx(1.0)


def test_classification_data_from_a_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "a.wav", "labels": ["dog"], "speaker": "x"}\n'
                        '{"audio": "b.wav", "labels": ["cat"], "speaker": "y"}\n')  # fmt: skip
    data = load_classification_data(str(manifest), ["a {} barks"])
    assert (data.class_names, data.task.kind) == (("cat", "dog"), "multiclass")
    assert [fold_of(r, "speaker") for r in data.records] == ["x", "y"]
    with pytest.raises(SystemExit, match="no such manifest"):
        load_classification_data(str(tmp_path / "none.jsonl"))
    with pytest.raises(SystemExit, match="not a classification task"):
        load_classification_data(f"clotho={tmp_path}")


def test_cross_validation_state_round_trip() -> None:
    state = CrossValidation(fold=2, fold_start_step=40, results=[{"fold": "1", "score": 0.5}])
    other = CrossValidation()
    other.load_state_dict(state.state_dict())
    assert other == state


def test_report_has_the_per_fold_table_and_the_paper(tmp_path: Path) -> None:
    folds = [
        {"fold": "1", "epoch": 9, "accuracy": 0.9, "score": 0.9, "n_clips": 400, "zero_shot": 0.8},
        {"fold": "2", "epoch": 9, "accuracy": 0.8, "score": 0.8, "n_clips": 400, "zero_shot": 0.7},
    ]
    test = {"accuracy": 0.5, "score": 0.5}
    history = [
        {"fold": f, "epoch": e, "step": e, "train_loss": 1.0 / (e + 1), "lr": 1e-3, "test": test}
        for f in ("1", "2")
        for e in range(2)
    ]
    paper = (96.70, 98.25)
    write_finetune_report(
        tmp_path, title="t", summary=["s"], folds=folds, history=history, paper=paper
    )
    report = (tmp_path / "report.md").read_text()
    assert "| 1 | 9 | 400 | 80.00 | 90.00 |" in report
    assert "| mean +- std | | | 75.00 | 85.00 +- 7.07 |" in report
    assert "on ESC-50 (5 folds): accuracy 96.70% -> 98.25%." in report
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["paper"] == [96.70, 98.25]
    assert metrics["summary"]["mean"] == pytest.approx(0.85)
    assert metrics["summary"]["std"] == pytest.approx(0.0707, abs=1e-4)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "history.csv").read_text().startswith("epoch,step,train_loss")
    assert fold_summary([]) == {"folds": 0, "mean": None, "std": None, "zero_shot_mean": None}
