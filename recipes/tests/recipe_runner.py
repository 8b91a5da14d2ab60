"""Helpers to run the recipes as the user does: in a subprocess, under ``accelerate launch``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parent.parent
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
INSTRUMENTED = Path(__file__).resolve().parent / "instrumented.py"
"""Runs a recipe with test instruments attached (held checkpoint markers, recorded keys)."""
CPU_LAUNCH = ["--cpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def run(
    args: list[str], *, timeout: float = 600, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root; fail the test with its output on error."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(extra_env or {})
    done = subprocess.run(
        args,
        cwd=RECIPES.parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def launch(
    recipe: str,
    *args: str,
    processes: int = 1,
    extra_env: dict[str, str] | None = None,
    precision: str = "no",
) -> subprocess.CompletedProcess[str]:
    """``accelerate launch`` on the CPU with ``processes`` processes.

    ``extra_env`` adds environment variables; ``precision`` is the launcher's
    ``--mixed_precision``. ``recipe`` may be ``"tests/instrumented.py"`` followed (in ``args``)
    by its instruments and the recipe's path.

    One process: ``--cpu``. Several: accelerate's ``--cpu`` spawns extra processes only through
    mpirun, so they are started by torchrun (``--multi_gpu``) with no GPU visible and
    ``ACCELERATE_USE_CPU=true``: accelerate then runs DDP over gloo on the CPU (MULTI_CPU).
    """
    mode = (
        [*CPU_LAUNCH[:3], "--mixed_precision", precision, *CPU_LAUNCH[5:]]
        if processes == 1
        else [
            "--multi_gpu",
            "--num_machines",
            "1",
            "--mixed_precision",
            precision,
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "0",
        ]
    )
    return run(
        [
            *ACCELERATE,
            *mode,
            "--num_processes",
            str(processes),
            "--num_cpu_threads_per_process",
            "1",
            str(RECIPES / recipe),
            *args,
        ],
        extra_env={"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true", **(extra_env or {})},
    )


def python(recipe: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The recipe as a plain script (one process, CPU): what ``accelerate launch`` runs."""
    return run([sys.executable, str(RECIPES / recipe), *args])


def run_failing(args: list[str], *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command that must fail; fail the test (with its output) if it succeeds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        args, cwd=RECIPES.parent, capture_output=True, text=True, env=env, timeout=timeout
    )
    if done.returncode == 0:
        pytest.fail(f"{' '.join(args)} succeeded but should fail:\n{done.stdout}\n{done.stderr}")
    return done


def kill_when(
    args: list[str], appears: Path, *, extra_env: dict[str, str] | None = None, timeout: float = 300
) -> str:
    """Start a command, SIGKILL it as soon as ``appears`` exists; return its stderr.

    Fails the test if the command ends (or ``timeout`` passes) before the path appears.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(extra_env or {})
    with tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(
            args, cwd=RECIPES.parent, stdout=subprocess.DEVNULL, stderr=stderr, env=env, text=True
        )
        deadline = time.monotonic() + timeout
        while not appears.exists():
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                child.wait()
                stderr.seek(0)
                pytest.fail(f"{appears} never appeared ({child.returncode}):\n{stderr.read()}")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)  # no clean stop: no handler, no flush, no atexit
        child.wait()
        stderr.seek(0)
        return stderr.read()


def kill_during_save(recipe: str, args: list[str], step: int, *, hold: float) -> list[str]:
    """Run ``recipe`` as a plain script saving a checkpoint every step, each save held open
    ``hold`` seconds before its completion marker (``instrumented.py --hold-marker``), and
    SIGKILL it while step ``step``'s checkpoint is being written (a crash mid-epoch, mid-save).

    Args:
        recipe: the recipe's file name.
        args: its arguments, ``--output-dir OUT`` included.
        step: the optimizer step whose save is cut off.
        hold: seconds each save waits before its marker.

    Returns:
        The command (without ``--save-every-steps`` and the instrument), to run it again.
    """
    out = Path(args[args.index("--output-dir") + 1])
    partial = out / "checkpoints" / f".step_{step:08d}.partial" / "model.safetensors"
    held = [sys.executable, str(INSTRUMENTED), "--hold-marker", str(hold), str(RECIPES / recipe)]
    kill_when([*held, *args, "--save-every-steps", "1"], partial)
    return [sys.executable, str(RECIPES / recipe), *args]
