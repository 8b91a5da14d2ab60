"""The clapkit command's surface: --version, plain help, --quiet, --top-k in every format,
retrieve, JSON for every subcommand, named device errors."""

from __future__ import annotations

import csv
import io
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch

from clapkit.core import cli
from clapkit.core.cli import main


@pytest.fixture
def saved(tiny_model: Any, tmp_path: Path) -> Path:
    tiny_model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_version_names_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"clapkit-core {metadata.version('clapkit-core')}" in out
    assert f"torch {torch.__version__}" in out


@pytest.mark.parametrize("command", [[], ["embed"], ["zero-shot"], ["retrieve"], ["caption"]])
def test_help_has_no_markup(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: clapkit")
    assert "``" not in out
    assert ":class:" not in out


def test_zero_shot_top_k_holds_in_every_format(
    saved: Path, fsdd_files: list[Path], tiny_model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(f) for f in fsdd_files[:2]]
    labels = ["zero", "one", "dog", "rain"]
    probs = tiny_model.zero_shot(files, labels)
    best = [[labels[i] for i in row.argsort(descending=True)[:2].tolist()] for row in probs]
    base = ["zero-shot", str(saved), *files, "--labels", *labels, "--top-k", "2", "--quiet"]
    assert main([*base, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [list(r)[1:] for r in records] == best  # the two best labels, best first
    assert records[0][best[0][0]] == pytest.approx(float(probs[0].max()), rel=1e-5)
    assert main([*base, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["file", "rank", "label", "score"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        (f, str(rank), label) for f, top in zip(files, best, strict=True)
        for rank, label in enumerate(top, 1)
    ]  # fmt: skip
    assert main([*base, "--format", "table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "top-2 (softmax)" in lines[0]
    assert lines[1].count(":") == 2


def test_quiet_prints_nothing_on_stderr(
    saved: Path, fsdd_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(fsdd_files[0])] * 70  # above the 64 items from which a bar shows by default
    assert main(["zero-shot", str(saved), *files, "--labels", "a", "b", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    out = tmp_path / "e.npy"
    assert main(["embed", str(saved), *files, "-o", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["retrieve", str(saved), *files, "-q", "one", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["zero-shot", str(saved), *files, "--labels", "a", "b"]) == 0
    assert "embed audio" in capsys.readouterr().err  # without --quiet the bar shows


def test_retrieve_ranks_files_for_each_query(
    saved: Path, fsdd_files: list[Path], tiny_model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(f) for f in fsdd_files[:4]]
    queries = ["a man says one", "a man says seven"]
    expected = tiny_model.retrieve(queries, files, k=3)
    base = ["retrieve", str(saved), *files, "--query", *queries, "--top-k", "3"]
    assert main([*base, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["query"] for r in records] == queries
    for record, scores, indices in zip(records, expected.scores, expected.indices, strict=True):
        assert [h["rank"] for h in record["hits"]] == [1, 2, 3]
        assert [h["file"] for h in record["hits"]] == [files[i] for i in indices.tolist()]
        assert [h["score"] for h in record["hits"]] == pytest.approx(scores.tolist(), rel=1e-5)
    assert main([*base, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["query", "rank", "file", "score"]
    assert len(rows) == 1 + 2 * 3


def test_embed_and_convert_answer_in_json(
    saved: Path, fsdd_files: list[Path], tmp_path: Path, tiny_hf_folder: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "e.npy"
    assert main(["embed", str(saved), str(fsdd_files[0]), "-o", str(out), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "output": str(out), "shape": [1, 8], "inputs": [str(fsdd_files[0])]
    }  # fmt: skip
    assert captured.err == ""
    target = tmp_path / "converted"
    status = main(["convert", "transformers", str(tiny_hf_folder), str(target), "--format", "json"])
    assert status == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(target)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("gpu", "--device 'gpu' is not a device name torch knows (cpu, cuda, cuda:N, mps)"),
        ("cuda:7", "--device cuda:7: CUDA is not available here"),
    ],
)
def test_a_missing_device_is_named_and_exits_1(
    saved: Path, fsdd_files: list[Path], device: str, message: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(cli.torch.cuda, "is_available", lambda: False)
    for command in (["zero-shot", str(saved), str(fsdd_files[0]), "--labels", "a"],
                    ["retrieve", str(saved), str(fsdd_files[0]), "-q", "a"],
                    ["caption", str(saved), str(fsdd_files[0])]):  # fmt: skip
        assert main([*command, "--device", device]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"clapkit {command[0]}: error: {message}")
        assert "Traceback" not in err
        assert err.count("\n") == 1


def test_a_cuda_index_beyond_the_machine_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cli.torch.cuda, "device_count", lambda: 2)
    with pytest.raises(cli.DeviceError, match=r"^--device cuda:2: this machine has 2 CUDA"):
        cli.check_device("cuda:2")
    assert cli.check_device("cuda:1") == torch.device("cuda:1")


def test_caption_without_clapkit_caption_says_what_to_install(
    saved: Path, fsdd_files: list[Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    real_import = cli.importlib.import_module

    def without_caption(name: str) -> Any:
        if name == "clapkit.caption":
            raise ModuleNotFoundError("No module named 'clapkit.caption'", name=name)
        return real_import(name)

    monkeypatch.setattr(cli.importlib, "import_module", without_caption)
    assert main(["caption", str(saved), str(fsdd_files[0])]) == 1
    err = capsys.readouterr().err
    assert err == (
        "clapkit caption: error: clapkit caption needs clapkit-caption: "
        "pip install clapkit-caption\n"
    )


def test_pretrained_lists_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrained"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| name | kind | source | sha256 | licence | paper figures |")
    assert "| clapcap-2023 | captioner | hf://microsoft/msclap/clapcap_weights_2023.pth |" in out
    assert main(["pretrained", "--kind", "audio-encoder", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["panns-cnn14"]
    assert rows[0]["source"] == "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth"
    assert rows[0]["sha256"] is None
