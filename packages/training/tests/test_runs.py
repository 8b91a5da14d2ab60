"""Run folders: refuse to mix runs, --overwrite moves aside, --resume checks the config."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from clapkit.train.config import config_diff, config_hash
from clapkit.train.integrity import write_marker
from clapkit.train.runs import RUN_FILE, RunError, plan_run

CONFIG = {"lr": 1e-3, "epochs": 2, "eval_task": ("esc50=/d",), "output_dir": "a", "max_steps": None}
IGNORE = ("output_dir", "max_steps")


def fake_checkpoint(folder: Path, config: dict[str, Any], seed: int = 0) -> Path:
    """A complete checkpoint folder holding a run.json (what save_checkpoint leaves)."""
    plan = plan_run(folder.parent / "unused", config, seed=seed, ignore=IGNORE, now=0.0)
    folder.mkdir(parents=True)
    (folder / RUN_FILE).write_text(plan.run_json)
    write_marker(folder)
    return folder


def test_fresh_run_writes_its_identity(tmp_path: Path) -> None:
    out = tmp_path / "run"
    plan = plan_run(out, CONFIG, seed=3, ignore=IGNORE, now=0.0)
    assert plan.resume_from is None
    assert plan.move_aside is None
    plan.apply()
    run = json.loads((out / RUN_FILE).read_text())
    assert run["seed"] == 3
    assert run["config"]["eval_task"] == ["esc50=/d"]
    assert run["config_hash"] == config_hash(CONFIG, IGNORE)
    assert run["started"].startswith("1970-01-0")


def test_non_empty_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("an older run")
    with pytest.raises(RunError, match="already holds a run") as error:
        plan_run(out, CONFIG, seed=0)
    assert "--resume latest" in str(error.value)
    assert "--overwrite" in str(error.value)
    assert isinstance(error.value, SystemExit)
    # an empty existing folder is fine
    (out / "report.md").unlink()
    assert plan_run(out, CONFIG, seed=0).move_aside is None


def test_overwrite_moves_the_old_run_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("an older run")
    plan = plan_run(out, CONFIG, seed=0, overwrite=True, now=86400.0 * 365)
    assert plan.move_aside is not None
    assert plan.move_aside.name.startswith("run.old-1971")
    with caplog.at_level(logging.WARNING, logger="clapkit.train.runs"):
        plan.apply()
    assert (plan.move_aside / "report.md").read_text() == "an older run"
    assert sorted(p.name for p in out.iterdir()) == [RUN_FILE]
    assert str(plan.move_aside) in caplog.text
    with pytest.raises(RunError, match="exclude each other"):
        plan_run(out, CONFIG, seed=0, overwrite=True, resume="latest")


def test_overwrite_twice_in_one_second_keeps_both_old_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    names = []
    for n in range(3):
        out.mkdir(exist_ok=True)
        (out / "report.md").write_text(f"run {n}")
        plan = plan_run(out, CONFIG, seed=0, overwrite=True, now=1000.0)
        plan.apply()
        assert plan.move_aside is not None
        names.append(plan.move_aside.name)
    stamp = names[0].removeprefix("run.old-")
    assert names == [f"run.old-{stamp}", f"run.old-{stamp}-2", f"run.old-{stamp}-3"]
    for n, name in enumerate(names):
        assert (tmp_path / name / "report.md").read_text() == f"run {n}"


def test_resume_checks_the_checkpoint_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fake_checkpoint(out / "checkpoints" / "step_00000004", CONFIG)
    # fields in `ignore` may change (another output folder, a stopping point)
    same = {**CONFIG, "output_dir": "b", "max_steps": 3}
    plan = plan_run(out, same, seed=0, resume="latest", ignore=IGNORE)
    assert plan.resume_from == out / "checkpoints" / "step_00000004"
    assert plan.differences == {}
    assert plan.identity["resumed"] == [str(plan.resume_from)]
    other = {**CONFIG, "lr": 1e-4, "epochs": 3}
    with pytest.raises(RunError, match="another config") as error:
        plan_run(out, other, seed=0, resume="latest", ignore=IGNORE)
    assert "epochs: 2 in the checkpoint, 3 now" in str(error.value)
    assert "lr: 0.001 in the checkpoint, 0.0001 now" in str(error.value)
    assert "--resume-force" in str(error.value)
    forced = plan_run(out, other, seed=0, resume="latest", ignore=IGNORE, force=True)
    assert sorted(forced.differences) == ["epochs", "lr"]


def test_resume_without_checkpoint_or_from_a_corrupt_one(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no complete checkpoint"):
        plan_run(tmp_path / "none", CONFIG, seed=0, resume="latest")
    folder = fake_checkpoint(tmp_path / "ckpt" / "step_1", CONFIG)
    (folder / RUN_FILE).write_text("{}")  # another size than the marker recorded
    with pytest.raises(RunError, match=r"corrupt: .*run\.json has 2 bytes"):
        plan_run(tmp_path / "elsewhere", CONFIG, seed=0, resume=str(folder))


def test_config_hash_and_diff() -> None:
    assert config_hash(CONFIG) == config_hash(dict(reversed(list(CONFIG.items()))))
    assert config_hash(CONFIG) != config_hash({**CONFIG, "lr": 2e-3})
    assert config_hash(CONFIG, IGNORE) == config_hash({**CONFIG, "output_dir": "x"}, IGNORE)
    assert config_diff({"a": 1, "b": (1, 2)}, {"a": 1, "b": [1, 2], "c": 0}) == {
        "c": ("<missing>", 0)
    }
