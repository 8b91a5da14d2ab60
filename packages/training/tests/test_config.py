"""Presets with typed overrides."""

from __future__ import annotations

import dataclasses

import pytest

from clapkit.train.config import jsonable, parse_config, preset_docs


@dataclasses.dataclass(frozen=True)
class Cfg:
    epochs: int = 40
    lr: float = 1e-3
    tasks: tuple[str, ...] = ()


PRESETS = {"paper": Cfg(), "demo": Cfg(epochs=2)}


def test_preset_then_overrides() -> None:
    assert parse_config(Cfg, PRESETS, [], default="paper") == ("paper", Cfg())
    name, cfg = parse_config(
        Cfg, PRESETS, ["--preset", "demo", "--lr", "0.5", "--tasks", "a", "b"], default="paper"
    )
    assert name == "demo"
    assert cfg == Cfg(epochs=2, lr=0.5, tasks=("a", "b"))


def test_bad_values_exit() -> None:
    with pytest.raises(SystemExit):
        parse_config(Cfg, PRESETS, ["--preset", "nope"], default="paper")
    with pytest.raises(SystemExit):
        parse_config(Cfg, PRESETS, ["--epochs", "many"], default="paper")
    with pytest.raises(ValueError, match="default preset 'x'"):
        parse_config(Cfg, PRESETS, [], default="x")


def test_preset_docs_and_jsonable() -> None:
    assert preset_docs(PRESETS, {"demo": "FSDD"}) == "  demo: FSDD\n  paper"
    assert jsonable(Cfg(tasks=("a",))) == {"epochs": 40, "lr": 1e-3, "tasks": ["a"]}
