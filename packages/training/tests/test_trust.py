"""Trust: nothing in a checkpoint folder runs, altered files are named, RNG restores are exact,
write errors are named, and a signal saves and stops a run (the toy recipe of test_recipe.py,
in this process)."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import clapkit.train.state as state
from clapkit.train.checkpointing import (
    COMPLETE_MARKER,
    CheckpointError,
    CheckpointWriteError,
    UnsafeCheckpointError,
    find_checkpoint,
    verify_checkpoint,
    written_aside,
)
from clapkit.train.integrity import is_pickle, sha256_of
from clapkit.train.write_errors import error_number, write_failure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_recipe import ToyRecipe, run


class CodeRunning:
    """A pickle that creates ``marker`` when it is unpickled (what an attacker would plant)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def rehash(folder: Path) -> None:
    """Make ``COMPLETE`` agree with every file now in ``folder`` (an attacker who rewrites it)."""
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    marker["files"] = {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }
    (folder / COMPLETE_MARKER).write_text(json.dumps(marker))


def assert_same_weights(a: Path, b: Path) -> None:
    expected, got = load_file(a), load_file(b)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert got[name].equal(tensor), name


def test_a_planted_pickle_runs_nothing_and_stops_the_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(out, "--epochs", "1")
    latest = find_checkpoint(out / "checkpoints")
    assert not [p.name for p in latest.iterdir() if is_pickle(p)]  # clapkit writes none
    ran = tmp_path / "payload-ran"
    payload = io.BytesIO()
    torch.save(CodeRunning(ran), payload)  # torch.save's format (a zip), as accelerate writes
    zipped, payload = payload.getvalue(), pickle.dumps(CodeRunning(ran))
    # accelerate's names, and one of clapkit's own files swapped for a pickle of its size
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl",
                 "optimizer.bin", "scheduler.bin"):  # fmt: skip
        (latest / name).write_bytes(zipped)
    own = latest / "object_0.json"
    size = own.stat().st_size
    assert size > len(payload)
    own.write_bytes(payload + b" " * (size - len(payload)))
    rehash(latest)  # only the loader's refusal stands in the way
    for resume in ("latest", str(latest)):
        with pytest.raises(SystemExit) as stop:
            run(out, "--resume", resume, "--resume-force", "--epochs", "2")
        message = str(stop.value)
        assert "a pickle: clapkit never loads pickles" in message
        assert str(latest / "custom_checkpoint_0.pkl") in message
    assert not ran.exists()


def test_an_altered_file_of_the_same_size_is_named_and_passed_over(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run(whole)
    with pytest.raises(RuntimeError):
        run(parts, "--stop-at-step", "9")
    checkpoints = parts / "checkpoints"
    latest = find_checkpoint(checkpoints)
    assert latest.name == "step_00000008"
    weights = latest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight: still a valid safetensors file of the same size
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match the sha256"):
        verify_checkpoint(latest)
    capfd.readouterr()
    run(parts, "--resume", "latest")
    logged = capfd.readouterr().err
    assert f"passed over checkpoint {latest} is corrupt: {weights} does not match" in logged
    assert f"resumed from {checkpoints / 'step_00000006'}" in logged
    final = "checkpoints/step_00000015_end/model.safetensors"
    assert_same_weights(whole / final, parts / final)  # resumed from step 6, exactly


def test_a_failed_rng_restore_stops_the_resume_unless_forced(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        run(out, "--stop-at-step", "7")
    latest = find_checkpoint(out / "checkpoints")
    rng = latest / "rng_0.safetensors"
    tensors = load_file(rng)
    tensors["torch"] = tensors["torch"][:100]  # a generator state torch refuses
    from safetensors.torch import save_file

    save_file(tensors, str(rng), metadata={"scalars": "{}"})
    rehash(latest)
    with pytest.raises(state.RandomStateError) as failed:
        run(out, "--resume", "latest")
    assert f"process 0's random generators could not be restored from {rng}" in str(failed.value)
    assert "Add --resume-force to go on anyway" in str(failed.value)
    capfd.readouterr()
    history = run(out, "--resume", "latest", "--resume-force")
    logged = capfd.readouterr().err
    assert "--resume-force: process 0's random generators could not be restored" in logged
    assert [e["step"] for e in history] == [5, 10, 15]


def test_a_safetensors_header_that_looks_like_a_pickle_is_not_one(tmp_path: Path) -> None:
    import struct

    from safetensors import safe_open

    header = json.dumps({"__metadata__": {"scalars": "{}"}}).ljust(640).encode()
    file = tmp_path / "rng_0.safetensors"
    file.write_bytes(struct.pack("<Q", len(header)) + header)
    assert file.read_bytes()[:2] == b"\x80\x02"  # a pickle's protocol-2 opening
    with safe_open(str(file), framework="pt") as handle:
        assert handle.metadata() == {"scalars": "{}"}
    assert not is_pickle(file)
    renamed = file.with_name("object_0.json")
    renamed.write_bytes(file.read_bytes())
    assert is_pickle(renamed)  # any other file with that opening is refused


def test_checkpoints_of_older_clapkit_are_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "step_00000001"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    (folder / COMPLETE_MARKER).write_text(json.dumps({"files": {"run.json": 2}, "saved": 0}))
    with pytest.raises(UnsafeCheckpointError, match=r"clapkit-training 0\.2 or older"):
        verify_checkpoint(folder)


def test_the_state_codec_round_trips_what_state_dicts_hold() -> None:
    value = {"betas": (0.9, 0.999), 3: {"step": torch.tensor(4.0)}, "best": float("inf"),
             "groups": [{"params": [0, 1], "lr": 1e-3, "fused": None}], "__odd": "x"}  # fmt: skip
    tensors: dict[str, Any] = {}
    data = json.loads(json.dumps(state.encode(value, tensors, "optimizer")))
    back = state.decode(data, tensors)
    assert back["betas"] == (0.9, 0.999)
    assert back[3]["step"].equal(torch.tensor(4.0))
    assert back["best"] == float("inf")
    assert back["groups"] == value["groups"]
    assert back["__odd"] == "x"
    with pytest.raises(TypeError, match=r"optimizer\.fn is a function: .* \(no pickle\)"):
        state.encode({"fn": lambda: 0}, {}, "optimizer")


class Signalled(ToyRecipe):
    """The toy recipe that receives a signal during one optimizer step (from the outside, as
    a scheduler would send it: the handler runs between two Python instructions)."""

    at_step, send = 0, signal.SIGTERM

    def step_done(self, bar: Any, loss: Any, *args: Any, **shown: Any) -> bool:
        if self.progress.step + 1 == self.at_step:  # the update step_done is about to count
            os.kill(os.getpid(), self.send)
        return super().step_done(bar, loss, *args, **shown)


@pytest.mark.parametrize(
    ("sent", "args", "status"),
    [
        (signal.SIGTERM, (), 143),
        (signal.SIGINT, (), 130),
        (signal.SIGUSR1, (), 75),
        (signal.SIGUSR1, ("--requeue-exit-code", "99"), 99),
    ],
)
def test_a_signal_saves_the_step_and_exits_with_its_status(
    tmp_path: Path, sent: signal.Signals, args: tuple[str, ...], status: int
) -> None:
    out = tmp_path / "run"
    Signalled.at_step, Signalled.send = 7, sent
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    with pytest.raises(SystemExit) as stop:
        Signalled.main(["--output-dir", str(out), *args])
    assert stop.value.code == status
    # main put the handlers of before back (pytest's own Ctrl-C, here)
    assert {s: signal.getsignal(s) for s in previous} == previous
    # step 7 (mid-epoch 1; saves every 2 steps) was saved, nothing after it
    assert find_checkpoint(out / "checkpoints").name == "step_00000007"
    assert not (out / "checkpoints" / "step_00000008").exists()
    record = json.loads((out / "PREEMPTED.json").read_text())
    assert record == {"signal": sent.name, "step": 7, "exit_code": status,
                      "checkpoint": str(out / "checkpoints" / "step_00000007")}  # fmt: skip
    if sent == signal.SIGTERM:  # and it goes on to the weights of an unbroken run
        run(out, "--resume", "latest")
        assert not (out / "PREEMPTED.json").exists()  # it went on
        run(tmp_path / "whole")
        final = "checkpoints/step_00000015_end/model.safetensors"
        assert_same_weights(tmp_path / "whole" / final, out / final)


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_write_error_is_named_and_the_previous_checkpoint_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, number: int
) -> None:
    out = tmp_path / "run"
    write = state._write_value

    def failing(folder: Path, stem: str, value: Any) -> None:
        if "step_00000004" in folder.name:  # the second checkpoint's first file
            raise OSError(number, os.strerror(number), str(folder / f"{stem}.json"))
        write(folder, stem, value)

    monkeypatch.setattr(state, "_write_value", failing)
    with pytest.raises(SystemExit) as stop:
        run(out)
    message = str(stop.value)
    checkpoints = out / "checkpoints"
    assert message.startswith(
        f"toy: could not write checkpoint step_00000004 to {checkpoints / 'step_00000004'}: "
    )
    assert f"({errno.errorcode[number]}); " in message
    assert "free on that file system" in message
    assert f"{checkpoints / 'step_00000002'} is intact" in message
    assert message.endswith("and go on with --resume latest")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_00000002"]  # partial removed
    verify_checkpoint(checkpoints / "step_00000002")
    monkeypatch.setattr(state, "_write_value", write)
    assert [e["step"] for e in run(out, "--resume", "latest")] == [5, 10, 15]


def test_a_failed_best_write_is_named_and_the_old_folder_kept(tmp_path: Path) -> None:
    best = tmp_path / "best"
    with written_aside(best) as staged:
        staged.mkdir()
        (staged / "model.safetensors").write_text("first")

    def read_only(staged: Path) -> None:
        staged.mkdir()
        raise OSError(errno.EROFS, "Read-only file system", str(staged / "model.safetensors"))

    with pytest.raises(CheckpointWriteError) as failed, written_aside(best) as staged:
        read_only(staged)
    message = str(failed.value)
    assert message.startswith(f"could not write best/ to {best}: the file system is read-only")
    assert "(EROFS)" in message
    assert f"the previous {best} is intact" in message
    assert failed.value.errno == errno.EROFS
    assert (best / "model.safetensors").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_safetensors_and_torch_write_errors_are_recognised(tmp_path: Path) -> None:
    rust = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert error_number(rust) == errno.ENOSPC
    failure = write_failure(rust, "checkpoint x", tmp_path, kept="y is intact")
    assert failure is not None
    assert "no space left on the device (ENOSPC)" in str(failure)
    torch_error = RuntimeError("basic_ios::clear: iostream error")
    failure = write_failure(torch_error, "checkpoint x", tmp_path, kept="y is intact")
    assert failure is not None
    assert "a write error (basic_ios::clear: iostream error)" in str(failure)
    assert write_failure(ValueError("a bug"), "checkpoint x", tmp_path, kept="") is None


SECOND_SIGNAL = """
import os, signal, sys, time
from clapkit.train.preemption import Preemption
preemption = Preemption().install()
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGTERM)  # a duplicate (scheduler + launcher): the same request
time.sleep(0.1)
print("asked", preemption.agreed(1), flush=True)
time.sleep(1.1)
os.kill(os.getpid(), signal.SIGINT)  # a second signal: out at once, with the first's status
time.sleep(30)
print("not reached", flush=True)
"""


def test_a_second_signal_exits_at_once() -> None:
    import subprocess
    import time

    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 143
    assert done.stdout == f"asked {int(signal.SIGTERM)}\n"
    assert "SIGINT received again: stopping at once (exit status 143)" in done.stderr
    assert time.monotonic() - started < 20
