"""HTSAT-22 pretraining's pieces: presets, task weights, the FSDD multi-task data (its model:
``recipes/tests/test_pretrain_htsat22.py``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clapkit.data import read_multitask_manifest
from clapkit.train.demo import DIGITS, DemoSettings, fsdd_multitask_manifests
from clapkit.train.presets.htsat22 import (
    NOTES,
    PAPER,
    PENGI_TASK_FAMILIES,
    SMOKE,
    Config,
    htsat22_presets,
    parse_weights,
)

FSDD = Path(__file__).resolve().parents[3] / "data" / "fsdd"


def test_presets_the_paper_and_the_smoke() -> None:
    presets = htsat22_presets(fsdd_root="somewhere/fsdd")
    assert set(presets) == set(NOTES) == {"pengi-22", "smoke"}
    assert presets["pengi-22"] == PAPER == Config(output_dir="runs/htsat22")
    assert (PAPER.freeze_language_model, PAPER.mapper, PAPER.prefix_length) == (
        True, "transformer", 40,
    )  # fmt: skip
    smoke = presets["smoke"]
    assert smoke == dataclasses.replace(
        SMOKE, demo=dataclasses.replace(SMOKE.demo, fsdd_root="somewhere/fsdd")
    )
    assert PAPER.demo == DemoSettings()  # the paper's run: full size, no demo data
    assert (smoke.demo.size, smoke.mixed_precision, smoke.num_workers) == ("tiny", "auto", 0)
    assert len({name for name, *_ in PENGI_TASK_FAMILIES}) == len(PENGI_TASK_FAMILIES) == 22


def test_parse_weights() -> None:
    assert parse_weights(()) is None
    assert parse_weights(("esc50=1", "clotho=2.5")) == {"esc50": 1.0, "clotho": 2.5}
    with pytest.raises(SystemExit, match="'clotho:2' is not NAME=NUMBER"):
        parse_weights(("esc50=1", "clotho:2"))


def test_fsdd_multitask_manifests(tmp_path: Path) -> None:
    train, heldout = fsdd_multitask_manifests(FSDD, tmp_path, "theo", clips_per_digit=2)
    pairs, test = read_multitask_manifest(train), read_multitask_manifest(heldout)
    digit = [r for r in pairs if r.task == "digit"]
    speaker = [r for r in pairs if r.task == "speaker"]
    assert len(digit) == len(speaker) == 3 * 10 * 2  # three speakers, ten digits, two takes
    assert {r.prompt for r in digit} == {r.prompt for r in test} == {"which digit"}
    assert {r.prompt for r in speaker} == {"which speaker"}
    assert {r.answer for r in digit} == {r.answer for r in test} == set(DIGITS)
    assert {r.answer for r in speaker} == {"jackson", "nicolas", "yweweler"}
    assert len(test) == 20
    assert all(Path(r.audio).stem.split("_")[1] == "theo" for r in test)
    assert all(Path(r.audio).stem.split("_")[1] == r.answer for r in speaker)
