"""``clapkit-train``: the recipes from an install (ls, cp, run through accelerate)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from clapkit.train import cli


def test_ls_names_every_recipe_with_its_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ls"]) == 0
    out = capsys.readouterr().out
    for recipe in ("pretrain_clap", "evaluate", "train_captioner", "finetune_audio"):
        assert f"{recipe}\n" in out
    assert "presets: table1-cnn14-bert, table1-htsat-clip" in out
    assert "presets: audiocaps, clotho, smoke" in out


def test_cp_copies_a_recipe_out_and_keeps_an_edited_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["cp", "train_captioner", str(tmp_path / "mine")]) == 0
    copy = tmp_path / "mine" / "train_captioner.py"
    assert copy.read_text() == cli.list_recipes()["train_captioner"].read_text()
    copy.write_text("# my edits\n")
    capsys.readouterr()
    assert cli.main(["cp", "train_captioner.py", str(tmp_path / "mine")]) == 1
    assert capsys.readouterr().err == (
        f"clapkit-train cp: error: {copy} exists (--force replaces it)\n"
    )
    assert copy.read_text() == "# my edits\n"
    assert cli.main(["cp", "train_captioner", str(tmp_path / "mine"), "--force"]) == 0
    assert copy.read_text() != "# my edits\n"


def test_run_launches_through_accelerate(monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[list[str]] = []

    def call(command: list[str]) -> int:
        launched.append(command)
        return 3

    monkeypatch.setattr(cli.subprocess, "call", call)
    argv = ["run", "pretrain_clap", "--num_processes", "2", "--", "--preset", "smoke"]
    assert cli.main(argv) == 3  # the recipe's exit status
    recipe = str(cli.list_recipes()["pretrain_clap"])
    assert launched == [[sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
                         "2", recipe, "--preset", "smoke"]]  # fmt: skip


def test_unknown_recipes_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "pretrain_clip"]) == 1
    names = sorted(cli.list_recipes())
    assert capsys.readouterr().err == (
        f"clapkit-train run: error: no recipe 'pretrain_clip'; the recipes are {names}\n"
    )


def test_a_real_launch_reaches_the_recipe(capfd: Any) -> None:
    status = cli.main(["run", "train_captioner", "--num_processes", "1", "--", "--help"])
    assert status == 0
    assert "--preset" in capfd.readouterr().out
