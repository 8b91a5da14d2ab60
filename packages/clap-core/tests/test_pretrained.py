"""save_pretrained / from_pretrained round trips, strict loading and refusing unsafe pickles."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from clapkit.core import CheckpointError, ClapModel
from clapkit.core.state_dict import load_checkpoint

MARKER = "clapkit-pickle-payload-ran"


def test_round_trip_gives_identical_embeddings(
    tiny_model: Any, tmp_path: Path, fsdd_files: list[Path]
) -> None:
    with torch.no_grad():
        tiny_model.logit_scale.fill_(3.0)
    tiny_model.save_pretrained(tmp_path / "saved")
    assert {"config.json", "model.safetensors", "tokenizer"} <= set(os.listdir(tmp_path / "saved"))
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["projection"] == "msclap"
    assert config["projection_dim"] == 8
    assert config["audio"]["architecture"] == "tiny-conv"

    loaded = ClapModel.from_pretrained(tmp_path / "saved")
    assert isinstance(loaded.config, type(tiny_model.config))  # the mixin's dict turned typed
    assert not loaded.training
    torch.testing.assert_close(loaded.embed_audio(fsdd_files), tiny_model.embed_audio(fsdd_files))
    texts = ["a dog barks", "zero"]
    torch.testing.assert_close(loaded.embed_text(texts), tiny_model.embed_text(texts))
    assert loaded.logit_scale.item() == pytest.approx(3.0)


def _corrupt(folder: Path, edit: Any) -> None:
    weights = folder / "model.safetensors"
    state = load_file(weights)
    edit(state)
    save_file(state, weights)


def test_loading_is_strict_and_names_keys(tiny_model: Any, tmp_path: Path) -> None:
    tiny_model.save_pretrained(tmp_path / "a")
    _corrupt(tmp_path / "a", lambda s: s.pop("audio_projection.linear1.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys: audio_projection\.linear1\.weight"):
        ClapModel.from_pretrained(tmp_path / "a")

    tiny_model.save_pretrained(tmp_path / "b")
    _corrupt(tmp_path / "b", lambda s: s.update(extra_head=torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra_head"):
        ClapModel.from_pretrained(tmp_path / "b")

    tiny_model.save_pretrained(tmp_path / "c")
    _corrupt(tmp_path / "c", lambda s: s.update(logit_scale=torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"logit_scale \(checkpoint \(3,\), model \(\)\)"):
        ClapModel.from_pretrained(tmp_path / "c")


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path) -> Path:
    state = {"model": {"logit_scale": torch.tensor(1.0), "payload": _RunsCode(marker)}}
    torch.save(state, path)
    return path


def test_plain_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / MARKER
    path = tmp_path / "legacy.pth"
    with open(path, "wb") as f:  # an old-style (non-zip) pickle
        pickle.dump({"model": _RunsCode(marker)}, f)
    with pytest.raises(CheckpointError, match=r"legacy\.pth: (refused|not a readable)"):
        load_checkpoint(path)
    assert not marker.exists()


def test_every_loader_refuses_code_in_pickles(tiny_model: Any, tmp_path: Path) -> None:
    marker = tmp_path / MARKER
    bad = _malicious(tmp_path / "evil.pth", marker)
    tokenizer = tmp_path / "tok"
    tiny_model.text_encoder.save_tokenizer(tokenizer)
    loaders = {
        "checkpoint": lambda: load_checkpoint(bad),
        "msclap": lambda: ClapModel.from_msclap(bad, version="2023", tokenizer=tokenizer),
        "laion": lambda: ClapModel.from_laion(bad, tokenizer=tokenizer),
        "transformers": lambda: ClapModel.from_transformers(bad, tokenizer=tokenizer),
    }
    for name, load in loaders.items():
        with pytest.raises(CheckpointError, match=r"evil\.pth: refused"):
            load()
        assert not marker.exists(), name
    # a clapkit folder whose weights are a pickle instead of safetensors
    tiny_model.save_pretrained(tmp_path / "folder")
    (tmp_path / "folder" / "model.safetensors").unlink()
    _malicious(tmp_path / "folder" / "pytorch_model.bin", marker)
    with pytest.raises(FileNotFoundError, match="reads only safetensors"):
        ClapModel.from_pretrained(tmp_path / "folder")
    assert not marker.exists()
