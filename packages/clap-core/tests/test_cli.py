"""The clapkit command, run in-process on tiny models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clapkit.core import ClapModel
from clapkit.core.cli import main


@pytest.fixture
def saved(tiny_model: Any, tmp_path: Path) -> Path:
    tiny_model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_embed_audio_to_npy_and_safetensors(
    saved: Path, tmp_path: Path, fsdd_files: list[Path], tiny_model: Any
) -> None:
    files = [str(f) for f in fsdd_files[:3]]
    assert main(["embed", str(saved), *files, "-o", str(tmp_path / "e.npy"), "--quiet"]) == 0
    expected = tiny_model.embed_audio(files)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert main(["embed", str(saved), *files, "-o", str(tmp_path / "e.safetensors")]) == 0
    torch.testing.assert_close(load_file(tmp_path / "e.safetensors")["embeddings"], expected)


def test_embed_texts(saved: Path, tmp_path: Path, tiny_model: Any) -> None:
    assert (
        main(["embed", str(saved), "--text", "a dog", "rain", "-o", str(tmp_path / "t.npy")]) == 0
    )
    expected = tiny_model.embed_text(["a dog", "rain"]).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), expected, rtol=1e-5, atol=1e-6)


def test_zero_shot_table_and_json(
    saved: Path, fsdd_files: list[Path], tiny_model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(f) for f in fsdd_files[:2]]
    labels = ["zero", "one", "dog"]
    assert main(["zero-shot", str(saved), *files, "--labels", *labels, "--format", "json"]) == 0
    table = json.loads(capsys.readouterr().out)
    expected = tiny_model.zero_shot(files, labels)
    for row, probs in zip(table, expected, strict=False):
        assert row["file"] in files
        assert [row[label] for label in labels] == pytest.approx(probs.tolist(), rel=1e-5)
    assert main(["zero-shot", str(saved), *files, "--labels", *labels, "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    best = labels[int(expected[0].argmax())]
    assert lines[0].startswith("file")
    assert f"{best}:" in lines[1]
    assert files[0] in lines[1]


def test_errors_are_one_line_and_exit_1(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.wav"
    assert main(["embed", str(saved), str(missing), "-o", str(tmp_path / "x.npy")]) == 1
    assert "missing.wav" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", str(saved), "a.wav", "-o", str(tmp_path / "x.txt")])


def test_convert_transformers_folder(tiny_hf_folder: Path, tmp_path: Path) -> None:
    assert main(["convert", "transformers", str(tiny_hf_folder), str(tmp_path / "out")]) == 0
    converted = ClapModel.from_pretrained(tmp_path / "out")
    assert converted.config.projection == "mlp"
    assert converted.frontend.sample_rate == 48000
    assert converted.frontend.n_mels == 16
