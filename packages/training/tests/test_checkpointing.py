"""Atomic checkpoints: marker, verification, fallback past interrupted and corrupt saves."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from clapkit.train.checkpointing import (
    COMPLETE_MARKER,
    CheckpointError,
    find_checkpoint,
    replace_folder,
    save_checkpoint,
    verify_checkpoint,
    written_aside,
)
from clapkit.train.integrity import sha256_of


def record_hash(folder: Path, name: str) -> None:
    """Make ``COMPLETE`` agree with the file ``name`` as it now is (size and sha256)."""
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    file = folder / name
    marker["files"][name] = {"bytes": file.stat().st_size, "sha256": sha256_of(file)}
    (folder / COMPLETE_MARKER).write_text(json.dumps(marker))


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model(torch.randn(4, 8)).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()


def test_save_is_complete_and_verifies(prepared: Any, tmp_path: Path) -> None:
    accelerator, model, optimizer = prepared
    folder = save_checkpoint(
        accelerator, tmp_path / "ckpt" / "step_1", files={"run.json": "{}", "raw.bin": b"\x00\x01"}
    )
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_1"]  # no staging left
    assert (folder / COMPLETE_MARKER).is_file()
    assert (folder / "model.safetensors").is_file()
    assert (folder / "raw.bin").read_bytes() == b"\x00\x01"
    assert verify_checkpoint(folder) == folder
    # saving again under the same name replaces it whole
    _step(model, optimizer)
    save_checkpoint(accelerator, folder)
    assert not (folder / "run.json").exists()
    assert not (tmp_path / "ckpt" / "step_1.old").exists()


def test_truncated_file_is_named_and_latest_falls_back(
    prepared: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    accelerator, model, optimizer = prepared
    root = tmp_path / "checkpoints"
    first = save_checkpoint(accelerator, root / "step_00000001")
    _step(model, optimizer)
    second = save_checkpoint(accelerator, root / "step_00000002")
    assert find_checkpoint(root) == second
    weights = second / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors has \d+ bytes, \d+ were written"
    ):
        verify_checkpoint(second)
    with caplog.at_level(logging.WARNING, logger="clapkit.train.checkpointing"):
        assert find_checkpoint(root) == first
    assert "passed over" in caplog.text
    assert str(weights) in caplog.text


def test_unreadable_safetensors_of_the_right_size_is_caught(prepared: Any, tmp_path: Path) -> None:
    accelerator, _, _ = prepared
    folder = save_checkpoint(accelerator, tmp_path / "step_1")
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\xff" * weights.stat().st_size)  # same size, garbage header
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match the sha256"):
        verify_checkpoint(folder)
    record_hash(folder, "model.safetensors")  # a marker that agrees: the header is read
    with pytest.raises(CheckpointError, match=r"model\.safetensors: "):
        verify_checkpoint(folder)


def test_folder_without_marker_is_incomplete(prepared: Any, tmp_path: Path) -> None:
    accelerator, _, _ = prepared
    root = tmp_path / "checkpoints"
    first = save_checkpoint(accelerator, root / "step_00000001")
    later = save_checkpoint(accelerator, root / "step_00000002")
    (later / COMPLETE_MARKER).unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        verify_checkpoint(later)
    assert find_checkpoint(root) == first
    (first / COMPLETE_MARKER).unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint") as error:
        find_checkpoint(root)
    assert "step_00000001" in str(error.value)
    assert "step_00000002" in str(error.value)


SAVER = textwrap.dedent(
    """
    import sys, time, torch
    from accelerate import Accelerator
    import clapkit.train.checkpointing as checkpointing
    from clapkit.train.checkpointing import save_checkpoint

    def held_open(folder, write=checkpointing.write_marker):
        time.sleep(30)  # every file written, the marker not yet: killed here
        write(folder)

    checkpointing.write_marker = held_open
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(8, 16))
    save_checkpoint(accelerator, sys.argv[1], files={"run.json": "{}"})
    """
)


def test_save_killed_before_its_marker_is_passed_over(prepared: Any, tmp_path: Path) -> None:
    accelerator, _, _ = prepared
    root = tmp_path / "checkpoints"
    good = save_checkpoint(accelerator, root / "step_00000001")
    staged = root / ".step_00000002.partial"
    child = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(root / "step_00000002")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (staged / "run.json").exists():  # every file written, the marker not yet
        assert child.poll() is None, "the saver ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (staged / "model.safetensors").is_file()
    assert not (root / "step_00000002").exists()
    assert find_checkpoint(root) == good
    # the next save under that name clears the leftover staging folder
    save_checkpoint(accelerator, root / "step_00000002")
    assert not staged.exists()
    assert find_checkpoint(root) == root / "step_00000002"


def test_replace_folder_swaps_whole_folders(tmp_path: Path) -> None:
    final, staged = tmp_path / "best", tmp_path / ".best.partial"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staged.mkdir()
    (staged / "new.txt").write_text("new")
    replace_folder(staged, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    again = tmp_path / "again"
    again.mkdir()
    replace_folder(again, tmp_path / "fresh")  # no previous folder
    assert (tmp_path / "fresh").is_dir()


def test_written_aside_replaces_only_a_finished_folder(tmp_path: Path) -> None:
    final = tmp_path / "folds" / "a"
    (tmp_path / "folds" / ".a.partial").mkdir(parents=True)  # left by a killed write
    (tmp_path / "folds" / ".a.partial" / "stale.txt").write_text("stale")
    with written_aside(final) as staged:
        assert staged == tmp_path / "folds" / ".a.partial"
        assert not staged.exists()
        staged.mkdir()
        (staged / "model.txt").write_text("first")
    assert [p.name for p in final.iterdir()] == ["model.txt"]

    # a write that fails leaves the finished folder as it was
    def fail_half_way(staged: Path) -> None:
        staged.mkdir()
        (staged / "model.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"), written_aside(final) as staged:
        fail_half_way(staged)
    assert (final / "model.txt").read_text() == "first"
    with written_aside(final) as staged:
        staged.mkdir()
        (staged / "model.txt").write_text("second")
    assert (final / "model.txt").read_text() == "second"
    assert sorted(p.name for p in final.parent.iterdir()) == ["a"]
