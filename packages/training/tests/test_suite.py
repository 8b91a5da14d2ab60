"""The evaluation suite's decisions: which tasks run, cache keys, the paper's row, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clapkit.train.suite import (
    TABLE2_ROW,
    clip_list,
    paper_row,
    report_markdown,
    report_rows,
    resolve_tasks,
)


def test_resolve_tasks_finds_folders_and_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "esc50").mkdir()
    (tmp_path / "clotho").mkdir()
    runs, missing = resolve_tasks(suite="table2", data_root=str(tmp_path))
    names = [r.name for r in runs]
    assert "esc50" in names
    assert "clotho" in names
    assert "clotho-caption" not in names  # no captioner
    assert missing["clotho-caption"].startswith("captioning needs --captioner")
    assert missing["fsd50k"].startswith(f"no folder {tmp_path / 'fsd50k'}")
    runs, _ = resolve_tasks(suite="table2", data_root=str(tmp_path), captioner=True)
    caption = next(r for r in runs if r.name == "clotho-caption")
    assert caption.root == tmp_path / "clotho"  # the retrieval task's folder
    runs, _ = resolve_tasks(task_specs=[f"esc50={tmp_path}"], templates=["{}"])
    assert runs[0].task.templates == ("{}",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "nothing to evaluate"),
        ({"suite": "table1"}, "--suite needs --data-root"),
        ({"task_specs": ["esc50"]}, "expected NAME=PATH"),
        ({"task_specs": ["nope=/x"]}, "nope"),
        ({"manifests": ["/nowhere/m.jsonl"]}, "--manifest: manifest /nowhere/m.jsonl does not"),
    ],
)
def test_resolve_tasks_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        resolve_tasks(**kwargs)


def test_a_malformed_manifest_is_named_with_its_line(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "a.wav", "labels": ["x"]}) + "\n{oops\n")
    with pytest.raises(SystemExit, match=r"m\.jsonl:2: not valid JSON"):
        resolve_tasks(manifests=[str(manifest)])


def test_clip_list_tells_replaced_and_missing_files(tmp_path: Path) -> None:
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"1234")
    (listed,) = clip_list([clip])
    assert listed[:2] == (str(clip.resolve()), 4)
    assert clip_list([tmp_path / "gone.wav"]) == [(str(tmp_path / "gone.wav"), -1, -1)]


def test_paper_row_of_an_encoder_pair() -> None:
    htsat22 = {"architecture": "htsat", "frontend": {"sample_rate": 44100}}
    assert paper_row(htsat22, {"architecture": "gpt2-eot"}) == "table1/HTSAT-22+GPT2"
    assert paper_row(htsat22, {"architecture": "gpt2-eot"}, "table2") == TABLE2_ROW
    cnn_gpt2 = ({"architecture": "cnn14"}, {"architecture": "gpt2-eot"})
    assert paper_row(*cnn_gpt2) == TABLE2_ROW  # no such Table 1 row
    assert paper_row(*cnn_gpt2, "table1") == "table1/CNN14+GPT2"


def test_report_lists_skipped_clips_and_leaves_counts_out_of_the_table() -> None:
    from clapkit.data.tasks import get_task

    results = {"esc50": {"accuracy": 0.5, "n_clips": 3, "skipped": {"x.wav": "corrupt"}}}
    rows = report_rows(results, {"esc50": get_task("esc50")}, {"esc50": 0.02}, TABLE2_ROW)
    assert rows == [("esc50", "accuracy", 0.5, 0.939, 0.02)]
    text = report_markdown(rows, title="best", paper_column=TABLE2_ROW, command="cmd",
                           not_evaluated={"us8k": "FAILED: x"},
                           skipped={"esc50": {"x.wav": "corrupt"}, "other": {}},
                           warnings={})  # fmt: skip
    assert "| esc50 | accuracy | 0.500 | 0.939 | 0.020 |" in text
    assert "## Clips left out of the metrics (1)\n\n- esc50: `x.wav`: corrupt" in text
    assert "- us8k: FAILED: x" in text
    assert "Dataset warnings" not in text
