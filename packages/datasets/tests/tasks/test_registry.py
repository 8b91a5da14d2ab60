"""The registry, the paper's task lists and the Task / TaskData contract."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from clapkit.data.manifest import ManifestRecord, read_manifest
from clapkit.data.tasks import (
    TABLE1_TASKS,
    TABLE2_TASKS,
    TASKS,
    Task,
    TaskData,
    TaskFileNotFoundError,
    get_task,
    humanize,
    list_tasks,
)


def test_registry_holds_every_task_of_the_paper() -> None:
    assert len(TABLE1_TASKS) == 16
    assert len(set(TABLE2_TASKS)) == len(TABLE2_TASKS) == 24
    assert set(TABLE1_TASKS) <= set(TABLE2_TASKS)
    assert list_tasks() == sorted(TABLE2_TASKS)
    # Table 2 has 26 rows: each retrieval task fills an audio->text and a text->audio row.
    rows = {row.split(" ")[-1].split("/")[0] for t in TASKS.values() for row, _ in t.paper}
    table2_rows = sum(2 if TASKS[n].kind == "retrieval" else 1 for n in TABLE2_TASKS)
    assert table2_rows == 26
    assert {"a2t", "t2a"} <= rows


def test_every_task_is_described() -> None:
    for name, task in TASKS.items():
        assert task.name == name
        assert all((task.download, task.license, task.layout, task.checked)), name
        assert task.expected_clips > 0
        assert any(row.startswith("table2/") for row, _ in task.paper), name
        if name in TABLE1_TASKS:
            assert any(row == "table1/HTSAT-22+GPT2" for row, _ in task.paper), name


def test_paper_figures_and_metrics() -> None:
    esc50 = dict(get_task("esc50").paper)
    assert esc50["table1/HTSAT-22+GPT2"] == 0.882
    assert esc50["table2/CLAP 2023"] == 0.939
    assert get_task("fsd50k").metrics == ("mAP",)
    # F1 over each clip's top-k classes, k its label count; the top-1 rule by name
    assert get_task("dcase17-t4").metrics == ("F1", "F1@top1")
    assert get_task("clotho").metrics[:1] == ("t2a/R@1",)
    assert "a2t/mAP@10" in get_task("audiocaps").metrics
    assert get_task("clotho-caption").metrics[0] == "SPIDEr"
    assert dict(get_task("audiocaps").paper)["table2/CLAP 2023 t2a/R@1"] == 0.356


def test_chance_level() -> None:
    assert get_task("esc50").chance_level == pytest.approx(1 / 50)
    assert get_task("sesa").chance_level == 0.25
    assert get_task("esc50-actions").chance_level == 0.045
    assert get_task("fsd50k").chance_level is None
    assert get_task("nsynth-pitch").chance_level == 0.015


def test_prompt_families() -> None:
    assert get_task("esc50").prompts(["sea_waves"]) == [["this is a sound of sea waves"]]
    assert get_task("crema-d").prompts(["ANG"]) == [["this person is feeling angry"]]
    assert get_task("ravdess").prompts(["disgust"]) == [["this person is feeling disgusted"]]
    assert get_task("speech-commands").prompts(["marvin", "_unknown_"]) == [
        ["marvin"],
        ["unknown"],
    ]
    assert get_task("libricount").prompts(["3"]) == [["3 persons speaking"]]
    assert get_task("tut2017").prompts(["cafe/restaurant"]) == [
        ["this is a sound of cafe or restaurant"]
    ]
    assert humanize("Accelerating_and_revving_and_vroom") == "accelerating and revving and vroom"
    with pytest.raises(ValueError, match="has no classes"):
        get_task("clotho").prompts()


def test_get_task_unknown_name_lists_the_known() -> None:
    with pytest.raises(KeyError, match=r"unknown task 'esc-50'.*'esc50'"):
        get_task("esc-50")


def _reader(root: Path, split: str) -> tuple[list[ManifestRecord], tuple[str, ...], list[str]]:
    clip = root / "a.wav"
    return [ManifestRecord(clip, labels=("b",), key="a")], ("a", "b"), []


def test_task_checks_its_definition() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Task("x", "X", "multiclass", _reader, (("test", 1),), ("a",), templates=("{} {}",))
    with pytest.raises(ValueError, match="kind must be one of"):
        Task("x", "X", "regression", _reader, (("test", 1),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one split"):
        Task("x", "X", "multiclass", _reader, ())
    with pytest.raises(ValueError, match="train_split 'train' not in splits"):
        Task("x", "X", "multiclass", _reader, (("test", 1),), train_split="train")


def test_load_reports_count_mismatch_and_checks_split(tmp_path: Path) -> None:
    task = Task("x", "X", "multiclass", _reader, (("test", 3), ("dev", 1)), ("a", "b"))
    data = task.load(tmp_path)
    assert data.warnings == ("X test: 1 clips found, 3 published",)
    assert task.load(tmp_path, split="dev").warnings == ()
    assert data.targets().tolist() == [1]
    with pytest.raises(KeyError, match="splits \\['test', 'dev'\\], not 'eval'"):
        task.load(tmp_path, split="eval")
    with pytest.raises(TaskFileNotFoundError, match="is not a folder"):
        task.load(tmp_path / "absent")


def test_targets_multilabel_and_manifest_round_trip(tmp_path: Path) -> None:
    task = Task("y", "Y", "multilabel", _reader, (("test", 2),), ("a", "b", "c"))
    records = (
        ManifestRecord(tmp_path / "1.wav", labels=("a", "c"), key="1"),
        ManifestRecord(tmp_path / "2.wav", labels=(), key="2"),
    )
    data = TaskData(task, "test", tmp_path, records, ("a", "b", "c"))
    assert torch.equal(data.targets(), torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    back = read_manifest(data.write_manifest(tmp_path / "m.jsonl"))
    assert [(r.audio, r.labels) for r in back] == [(r.audio, r.labels) for r in records]


def test_readme_table_matches_the_registry() -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    rows = {
        line.split("|")[1].strip(" `"): line
        for line in readme.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `")
    }
    assert sorted(rows) == list_tasks()
    for name, task in TASKS.items():
        for split, count in task.splits:
            assert f"{count:,} ({split})" in rows[name], name
        assert task.layout in rows[name]
        assert task.license in rows[name]
        assert task.checked in rows[name], name


def test_table1_rows_average_to_the_printed_averages() -> None:
    from clapkit.data.tasks.registry import TABLE1_ROWS

    # Table 1's "avg" column (cells and averages rounded to 3 places, so within 1e-3); HTSAT-22+CLIP
    # prints .469 while its cells average .465
    printed = {
        "CNN14+BERT": 0.428,
        "HTSAT+CLIP": 0.430,
        "HTSAT+RoBERTa": 0.431,
        "HTSAT+GPT2": 0.435,
        "HTSAT-22+RoBERTa": 0.454,
        "HTSAT-22+CLIP": 0.465,
    }
    for pair, values in TABLE1_ROWS.items():
        assert len(values) == len(TABLE1_TASKS)
        assert sum(values) / len(values) == pytest.approx(printed[pair], abs=1e-3), pair
    seven = {row for task in TASKS.values() for row, _ in task.paper if row.startswith("table1/")}
    assert seven == {f"table1/{pair}" for pair in printed} | {"table1/HTSAT-22+GPT2"}
    esc50 = dict(TASKS["esc50"].paper)
    assert esc50["table1/CNN14+BERT"] == 0.826
    assert esc50["table1/HTSAT-22+GPT2"] == 0.882
    assert dict(TASKS["libricount"].paper)["table1/HTSAT-22+CLIP"] == 0.094


def test_a_labelled_manifest_as_a_task(tmp_path: Path) -> None:
    from clapkit.data import ManifestError, write_manifest
    from clapkit.data.tasks import manifest_task

    path = tmp_path / "digits.jsonl"
    write_manifest(
        [
            ManifestRecord(audio=tmp_path / "a.flac", labels=("seven",), key="a"),
            ManifestRecord(audio=tmp_path / "b.flac", labels=("one",), key="b"),
        ],
        path,
    )
    task = manifest_task(path, ["a man says {}"])
    assert (task.name, task.kind, task.class_names) == ("digits", "multiclass", ("one", "seven"))
    data = task.load(tmp_path)
    assert data.targets().tolist() == [1, 0]
    assert task.prompts() == [["a man says one"], ["a man says seven"]]
    assert manifest_task(path).templates == ("this is a sound of {}",)

    write_manifest(
        [*read_manifest(path), ManifestRecord(audio=tmp_path / "c.flac", labels=(), key="c")],
        path,
    )
    with pytest.raises(ManifestError, match=r"digits.jsonl: 1 clips have no labels.*c\.flac"):
        manifest_task(path)

    skipping = manifest_task(path, on_error="skip")
    data = skipping.load(tmp_path)
    assert [r.key for r in data.records] == ["a", "b"]
    assert data.targets().tolist() == [1, 0]
    assert data.skipped == ((str(tmp_path / "c.flac"), f"{path}: no labels"),)
    assert any("1 clips without labels left out" in w for w in data.warnings)
    # the template override of evaluate.py keeps what was skipped
    assert dataclasses.replace(skipping, templates=("{}",)).load(tmp_path).skipped == data.skipped
    with pytest.raises(ValueError, match="on_error must be"):
        manifest_task(path, on_error="ignore")  # type: ignore[arg-type]
