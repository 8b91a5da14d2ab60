"""Preemption under ``accelerate launch`` on 2 processes: SIGTERM to one process mid-epoch makes
both finish the update, save the same step and exit with 143; the resumed run ends on the
weights of an unbroken one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from safetensors.torch import load_file

from clapkit.train.checkpointing import find_checkpoint
from clapkit.train.demo import fsdd_manifests

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from recipe_runner import ACCELERATE, INSTRUMENTED, RECIPES, launch  # noqa: E402

FSDD = RECIPES.parent / "data" / "fsdd"
TWO_PROCESSES = [
    "--multi_gpu", "--num_machines", "1", "--num_processes", "2", "--mixed_precision", "no",
    "--dynamo_backend", "no", "--main_process_port", "0", "--num_cpu_threads_per_process", "1",
]  # fmt: skip


def worker_of_rank(launcher: int, rank: int) -> int:
    """The process id of the launcher's worker of local rank ``rank`` (from its environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if parent == launcher and f"LOCAL_RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under process {launcher}")


def test_sigterm_to_one_process_saves_the_agreed_step_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    train, heldout = fsdd_manifests(FSDD, tmp_path / "data", "theo", clips_per_digit=2)
    lines = Path(train).read_text().splitlines()[:48]  # 3 updates of 16 per epoch
    train48 = tmp_path / "train48.jsonl"
    train48.write_text("\n".join(lines) + "\n")
    common = ["--preset", "smoke", "--log-with", "none", "--save-every-steps", "1000",
              "--train-manifest", str(train48), "--eval-manifest", heldout]  # fmt: skip
    whole, parts, keys = tmp_path / "whole", tmp_path / "parts", tmp_path / "keys"
    keys.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}  # fmt: skip
    command = [*ACCELERATE, *TWO_PROCESSES, str(INSTRUMENTED), "--record-keys", str(keys),
               str(RECIPES / "pretrain_clap.py"), *common, "--output-dir", str(parts)]  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        unbroken = pool.submit(launch, "pretrain_clap.py", *common, "--output-dir", str(whole),
                               processes=2)  # fmt: skip
        launcher = subprocess.Popen(command, cwd=RECIPES.parent, env=env, text=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 300
        while not (keys / "keys.rank1.tsv").exists():  # rank 1 is training its first update
            if launcher.poll() is not None or time.monotonic() > deadline:
                launcher.kill()
                pytest.fail(f"no batch before the end ({launcher.returncode})")
            time.sleep(0.01)
        os.kill(worker_of_rank(launcher.pid, 1), signal.SIGTERM)  # rank 0 gets no signal
        _, stderr = launcher.communicate(timeout=300)
        unbroken.result()
    # both processes stopped at one step, mid-epoch, after saving it; each exited with 143
    assert launcher.returncode != 0, stderr
    assert stderr.count("exitcode  : 143") >= 1, stderr[-3000:]
    saved = find_checkpoint(parts / "checkpoints")
    assert saved.name in ("step_00000001", "step_00000002"), stderr[-3000:]
    assert not list((parts / "checkpoints").glob("*_end"))
    assert f"stopped by SIGTERM after saving {saved}" in stderr  # rank 0's log: it agreed
    assert json.loads((parts / "PREEMPTED.json").read_text())["checkpoint"] == str(saved)
    done = launch("pretrain_clap.py", *common, "--output-dir", str(parts), "--resume", "latest",
                  processes=2)  # fmt: skip
    assert f"resumed from {saved}" in done.stderr
    final = "checkpoints/step_00000006_end/model.safetensors"
    expected, got = load_file(whole / final), load_file(parts / final)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert got[name].equal(tensor), name
