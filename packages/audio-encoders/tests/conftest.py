"""Shared fixtures: real FSDD clips, tiny encoder configs for every named builder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clapkit.audio import NAMED_ENCODERS, AudioEncoder

FSDD = Path(__file__).resolve().parents[3] / "data" / "fsdd" / "recordings"

TINY_KNOBS: dict[str, dict[str, Any]] = {
    "cnn14": {"channels": (4, 8, 8), "out_dim": 16, "num_classes": 5},
    "htsat": {
        "spec_size": 128,
        "embed_dim": 8,
        "depths": (2, 2),
        "num_heads": (1, 2),
        "window_size": 8,
        "num_classes": 5,
    },
}
"""Tiny architecture knobs per architecture; front ends stay those of each named preset."""


def tiny(name: str, **extra: Any) -> AudioEncoder:
    """The named builder ``name`` with tiny architecture knobs."""
    builder: Callable[..., AudioEncoder] = NAMED_ENCODERS[name]
    architecture = "cnn14" if name.startswith("cnn14") else "htsat"
    return builder(**{**TINY_KNOBS[architecture], **extra})


@pytest.fixture(scope="session")
def fsdd_files() -> list[Path]:
    """A few real recordings (8 kHz mono FLAC spoken digits)."""
    files = sorted(FSDD.glob("*.flac"))
    if not files:
        pytest.fail(f"no FSDD recordings under {FSDD}")
    return files[::400][:5]
