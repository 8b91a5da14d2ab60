"""Chaos resume: SIGKILL at 5 random moments (seeded), resuming each time, ends on the weights
of an unbroken run, for the pretraining and the captioning recipes' smoke presets.

Each kill waits until the run begins or finishes the checkpoint of a random step past the one
it resumed from, then a few random milliseconds: the kills land in saves and in training steps.
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


def reached(checkpoints: Path, step: int, launched: float, *, saved: bool) -> bool:
    """Whether this launch has begun (``saved``: finished) a checkpoint of ``step`` or later."""
    for folder in checkpoints.glob(".step_*.partial" if not saved else "step_*"):
        try:
            fresh = folder.stat().st_ctime >= launched  # made or renamed by this launch
        except FileNotFoundError:  # renamed between the listing and now
            continue
        if (
            fresh
            and not folder.name.endswith(".old")
            and int(folder.name.lstrip(".")[5:13]) >= step
        ):
            return True
    return False


def kill_at(
    command: list[str], checkpoints: Path, step: int, *, saved: bool, delay: float
) -> int | None:
    """Run ``command``; SIGKILL it ``delay`` s after it begins (``saved``: finishes) the
    checkpoint of ``step`` (or a later one).

    Returns:
        The exit status (None: killed).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    launched = time.time() - 0.01
    child = subprocess.Popen(command, cwd=RECIPES.parent, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (checkpoints.is_dir() and reached(checkpoints, step, launched, saved=saved)):
        if child.poll() is not None:
            assert child.stderr is not None
            pytest.fail(f"ended before step {step} ({child.returncode}):\n{child.stderr.read()}")
        assert time.monotonic() < deadline, f"step {step} never came"
        time.sleep(0.005)
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

    Each launch is killed a few milliseconds (seeded) after it begins (a kill mid-save) or
    finishes (a kill in the next update) the checkpoint of a step 1 to ``reach`` steps (seeded)
    past the one it resumed from, in the first half of the run (a tiny model's updates take
    milliseconds: a longer wait could let it finish the run).
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
            saved = chooser.random() < 0.5  # in the next update, or in the save
            delay = chooser.uniform(0.0, 0.05 if saved else 0.02)
            status = kill_at([*script, "--save-every-steps", "1", *start], checkpoints, step,
                             saved=saved, delay=delay)  # fmt: skip
            assert status is None, f"the run ended ({status}) before its kill"
            kills.append((done, step, saved, round(delay, 3)))
        python(recipe, *quiet, "--output-dir", str(parts), "--resume", "latest")
        unbroken.result()
    expected, got = load_file(whole / final), load_file(parts / final)
    assert expected.keys() == got.keys(), kills
    for name, tensor in expected.items():
        assert got[name].equal(tensor), (name, kills)


@pytest.mark.slow  # 7 launches of one smoke epoch (4 updates): about 1.5 min on 2 cores
def test_pretraining_killed_five_times_ends_on_the_unbroken_weights(tmp_path: Path) -> None:
    final = "checkpoints/step_00000004_end/model.safetensors"
    chaos("pretrain_clap.py", 4, final, tmp_path, reach=1, args=("--epochs", "1"))


@pytest.mark.slow  # 7 launches of one smoke epoch (8 updates): about 1 min on 2 cores
def test_captioner_killed_five_times_ends_on_the_unbroken_weights(tmp_path: Path) -> None:
    final = "checkpoints/step_00000008_end/model.safetensors"
    chaos("train_captioner.py", 8, final, tmp_path, reach=2, args=("--epochs", "1"))
