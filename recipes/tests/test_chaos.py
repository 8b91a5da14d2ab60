"""Chaos resume: SIGKILL at 5 random moments (seeded), resuming each time, ends on the weights
of an unbroken run, for the pretraining and the captioning recipes' smoke presets.

Each kill waits until the run begins the checkpoint of a random step past the one it resumed
from, then a random fraction of a second: the kills land in saves, in training steps and in
evaluations.
Every step is saved (``--save-every-steps 1``, which a resume may change), so that every kill
has a checkpoint before it to go on from.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from safetensors.torch import load_file

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from recipe_runner import RECIPES, python  # noqa: E402

KILLS, SEED = 5, 21


def complete_step(checkpoints: Path) -> int | None:
    """The step of the newest complete checkpoint (None: none yet)."""
    steps = [int(m.parent.name[5:13]) for m in checkpoints.glob("step_*/COMPLETE")]
    return max(steps, default=None)


def begun_since(checkpoints: Path, step: int, launched: float) -> bool:
    """Whether this launch has begun saving a checkpoint of ``step`` or later."""
    for folder in checkpoints.glob("*step_*"):
        number = int(folder.name.lstrip(".")[5:13])
        if number >= step and folder.stat().st_ctime >= launched:
            return True
    return False


def kill_at(command: list[str], checkpoints: Path, step: int, delay: float) -> int | None:
    """Run ``command``; SIGKILL it ``delay`` s after it begins the checkpoint of ``step`` (or a
    later one).

    Returns:
        The exit status (None: killed).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    launched = time.time() - 0.01
    child = subprocess.Popen(command, cwd=RECIPES.parent, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (checkpoints.is_dir() and begun_since(checkpoints, step, launched)):
        if child.poll() is not None:
            assert child.stderr is not None
            pytest.fail(f"ended before step {step} ({child.returncode}):\n{child.stderr.read()}")
        assert time.monotonic() < deadline, f"step {step} never came"
        time.sleep(0.01)
    time.sleep(delay)
    if child.poll() is not None:  # it finished within the delay
        return child.returncode
    child.send_signal(signal.SIGKILL)
    child.communicate()
    return None


def chaos(
    recipe: str, steps: int, final: str, tmp_path: Path, *, reach: int, args: tuple[str, ...] = ()
) -> None:
    """The unbroken run beside 5 killed and resumed ones; the final weights must be equal.

    Each launch is killed ``delay`` seconds (0 to 0.3, seeded) after it begins the checkpoint
    of a step 1 to ``reach`` steps (seeded) past the one it resumed from, in the first half of
    the run (so that, however loaded the machine, it cannot finish the run before its kill).
    """
    quiet = ["--preset", "smoke", "--log-with", "none", *args]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    checkpoints = parts / "checkpoints"
    chooser = random.Random(SEED)
    script = [sys.executable, str(RECIPES / recipe), *quiet, "--output-dir", str(parts)]
    kills = []
    with ThreadPoolExecutor(1) as pool:
        unbroken = pool.submit(python, recipe, *quiet, "--output-dir", str(whole))
        for _ in range(KILLS):
            done = complete_step(checkpoints) if checkpoints.is_dir() else None
            start = ["--resume", "latest"] if done is not None else ["--overwrite"]
            step = min((done or 0) + chooser.randint(1, reach), steps // 2)
            delay = chooser.uniform(0.0, 0.3)
            status = kill_at([*script, "--save-every-steps", "1", *start], checkpoints, step,
                             delay)  # fmt: skip
            assert status is None, f"the run ended ({status}) before its kill"
            kills.append((done, step, round(delay, 2)))
        python(recipe, *quiet, "--output-dir", str(parts), "--resume", "latest")
        unbroken.result()
    expected, got = load_file(whole / final), load_file(parts / final)
    assert expected.keys() == got.keys(), kills
    for name, tensor in expected.items():
        assert got[name].equal(tensor), (name, kills)


@pytest.mark.slow  # 7 launches of the smoke preset (2 epochs of 4 updates): 1-2 min on 2 cores
def test_pretraining_killed_five_times_ends_on_the_unbroken_weights(tmp_path: Path) -> None:
    final = "checkpoints/step_00000008_end/model.safetensors"
    chaos("pretrain_clap.py", 8, final, tmp_path, reach=1)


@pytest.mark.slow  # 7 launches of one smoke epoch (8 updates): 1-2 min on 2 cores
def test_captioner_killed_five_times_ends_on_the_unbroken_weights(tmp_path: Path) -> None:
    final = "checkpoints/step_00000008_end/model.safetensors"
    chaos("train_captioner.py", 8, final, tmp_path, reach=2, args=("--epochs", "1"))
