"""``clapkit-make-manifest``: a task's training or test split written as a manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from clapkit.audio import FrontendConfig
from clapkit.data import ManifestDataset, read_manifest
from clapkit.data.tasks import get_task
from clapkit.data.tasks.make_manifest import main, resolve_split, split_manifests

Writer = Callable[..., Path]

# Clotho v2.1 (Zenodo 4783391): the captions CSV header and two development clip names as
# published; the captions are placeholders.
CLOTHO_HEADER = ["file_name", *(f"caption_{i}" for i in range(1, 6))]


def _clotho(root: Path, write_clip: Writer, write_table: Writer) -> Path:
    for split, names in (("development", ["Distorted AM Radio noise.wav", "Pipe hit.wav"]),
                         ("evaluation", ["Santa Motor.wav"])):  # fmt: skip
        rows = [[name, *(f"{name[:-4].lower()} {i}" for i in range(1, 6))] for name in names]
        for name in names:
            write_clip(root / split / name)
        write_table(root / f"clotho_captions_{split}.csv", rows, CLOTHO_HEADER)
    return root


def test_clotho_training_split_as_a_manifest(
    tmp_path: Path, write_clip: Writer, write_table: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _clotho(tmp_path / "clotho", write_clip, write_table)
    out = tmp_path / "manifests" / "clotho-train.jsonl"
    assert main([f"clotho={root}", "--split", "train", "-o", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {
        "audio": "../clotho/development/Distorted AM Radio noise.wav",
        "caption": [f"distorted am radio noise {i}" for i in range(1, 6)],
    }
    records = read_manifest(out)  # what pretrain_clap.py --train-manifest reads
    assert [r.audio.resolve() for r in records] == [
        (root / "development" / "Distorted AM Radio noise.wav").resolve(),
        (root / "development" / "Pipe hit.wav").resolve(),
    ]
    # the dataset pretrain_clap.py builds from a manifest decodes it (one caption drawn)
    frontend = FrontendConfig(sample_rate=16000, fmax=8000.0, clip_seconds=0.1)
    item = ManifestDataset(records, frontend, train=True, seed=0)[0]
    assert isinstance(item, dict)
    assert item["waveform"].shape == (1600,)
    printed = capsys.readouterr()
    assert f"{out}: 2 clips of clotho development" in printed.out
    assert "warning: Clotho development: 2 clips found, 3839 published" in printed.err
    assert not list(out.parent.glob(".*.tmp"))  # written aside, then renamed


def test_split_names_and_errors(
    tmp_path: Path, write_clip: Writer, write_table: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert resolve_split(get_task("audiocaps"), "train") == "train"
    assert resolve_split(get_task("clotho"), "test") == "evaluation"
    assert resolve_split(get_task("clotho"), "validation") == "validation"
    assert main([f"esc50={tmp_path}", "--split", "train"]) == 2
    assert (
        "task 'esc50' has no training split (its splits: ['all-folds'])" in capsys.readouterr().err
    )
    assert main(["clotho", "--split", "train"]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err
    assert main([f"clotho={tmp_path}", "--split", "dev"]) == 2
    assert "not 'dev'" in capsys.readouterr().err
    assert main([f"clotho={tmp_path}", "--split", "train"]) == 2
    assert "clotho_captions_development.csv not found" in capsys.readouterr().err


def test_split_manifests_for_the_captioner(
    tmp_path: Path, write_clip: Writer, write_table: Writer
) -> None:
    root = _clotho(tmp_path / "clotho", write_clip, write_table)
    train, test = split_manifests(f"clotho-caption={root}", tmp_path / "run" / "data")
    assert Path(train).name == "clotho-caption-development.jsonl"
    assert Path(test).name == "clotho-caption-evaluation.jsonl"
    assert [len(r.captions) for r in read_manifest(test)] == [5]
    with pytest.raises(KeyError, match="no training split"):
        split_manifests(f"esc50={root}", tmp_path)


def test_audiocaps_train_and_test_manifests(
    tmp_path: Path, write_clip: Writer, write_table: Writer
) -> None:
    # github.com/cdjkim/audiocaps dataset/train.csv and test.csv: header and rows as published
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    write_table(tmp_path / "train.csv", [[91139, "r1nicOVtvkQ", 130,
                "A woman talks nearby as water pours"]], header)  # fmt: skip
    write_table(tmp_path / "test.csv", [[103549, "7fmOlUlwoNg", 20,
                "Constant rattling noise and sharp vibrations"]], header)  # fmt: skip
    write_clip(tmp_path / "train" / "Yr1nicOVtvkQ.wav")
    write_clip(tmp_path / "test" / "7fmOlUlwoNg_20_30.wav")
    train, test = split_manifests(f"audiocaps={tmp_path}", tmp_path / "out")
    assert [r.captions for r in read_manifest(train)] == [("A woman talks nearby as water pours",)]
    assert read_manifest(train)[0].extra["youtube_id"] == "r1nicOVtvkQ"
    assert read_manifest(test)[0].audio.name == "7fmOlUlwoNg_20_30.wav"


def test_console_command_is_installed() -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["clapkit-make-manifest"] == "clapkit.data.tasks.make_manifest:main"
