"""Nothing lost, nothing mixed, through the training recipe as a user runs it.

One smoke run of ``recipes/pretrain_clap.py`` (2 epochs, a checkpoint every 2 steps), then what
a user gets wrong: a new run into its folder, a resume with other settings, a checkpoint cut
off mid-save, an evaluation of a folder that does not exist. Each is refused or handled with a
message that names the folder or field, and the run's files stay as they were.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "recipes" / "tests"))
from recipe_runner import python, run_failing  # noqa: E402

PRETRAIN = [sys.executable, str(REPO / "recipes" / "pretrain_clap.py"), "--preset", "smoke"]


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative path -> digest)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "smoke"
    python("pretrain_clap.py", "--preset", "smoke", "--output-dir", str(out))
    return out


def test_a_new_run_into_a_used_folder_is_refused_and_touches_nothing(finished_run: Path) -> None:
    before = digests(finished_run)
    refused = run_failing([*PRETRAIN, "--output-dir", str(finished_run), "--seed", "1"])
    assert f"{finished_run} already holds a run" in refused.stderr
    assert "--resume latest" in refused.stderr
    assert "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    refused = run_failing(
        [*PRETRAIN, "--output-dir", str(finished_run), "--resume", "latest", "--seed", "1"]
    )
    assert "seed: 0 in the checkpoint, 1 now" in refused.stderr  # the field, both values
    assert "--resume-force" in refused.stderr
    refused = run_failing(
        [*PRETRAIN, "--output-dir", str(finished_run), "--resume", "latest", "--overwrite"]
    )
    assert "exclude each other" in refused.stderr
    assert digests(finished_run) == before  # nothing written, nothing removed


def test_a_checkpoint_cut_off_mid_save_is_named_and_passed_over(
    finished_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "smoke"
    shutil.copytree(finished_run, out)
    newest = sorted((out / "checkpoints").iterdir())[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut off, its completion marker kept
    done = python("pretrain_clap.py", "--preset", "smoke", "--output-dir", str(out),
                  "--resume", "latest")  # fmt: skip
    assert f"resume: passed over checkpoint {newest} is corrupt" in done.stderr
    assert "model.safetensors" in done.stderr
    # resumed from the previous complete checkpoint: the same run, to the same weights
    original = load_file(finished_run / "best" / "model.safetensors")
    resumed = load_file(out / "best" / "model.safetensors")
    assert original.keys() == resumed.keys()
    assert all(bool((original[k] == resumed[k]).all()) for k in original)


def test_resume_from_a_corrupt_checkpoint_given_by_path_names_it(
    finished_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "smoke"
    shutil.copytree(finished_run, out)
    first = sorted((out / "checkpoints").iterdir())[0]
    (first / "model.safetensors").write_bytes(b"")
    refused = run_failing([*PRETRAIN, "--output-dir", str(out), "--resume", str(first)])
    assert f"cannot resume: checkpoint {first} is corrupt" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_evaluating_a_folder_that_does_not_exist(finished_run: Path, tmp_path: Path) -> None:
    manifest = finished_run / "data" / "heldout_theo.jsonl"
    for checkpoint, problem in [
        (tmp_path / "runs" / "bestt", f"no folder {tmp_path / 'runs' / 'bestt'}"),
        (manifest, "is a file, not a clapkit model folder"),
    ]:
        refused = run_failing([sys.executable, str(REPO / "recipes" / "evaluate.py"),
                               "--checkpoint", str(checkpoint), "--manifest", str(manifest),
                               "--output-dir", str(tmp_path / "eval")])  # fmt: skip
        assert problem in refused.stderr
        assert "Traceback" not in refused.stderr
