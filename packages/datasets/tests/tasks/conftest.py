"""Helpers that build a dataset's official layout in a temporary folder from FSDD audio."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

FSDD = Path(__file__).resolve().parents[4] / "data" / "fsdd" / "recordings"
RATE = 8000


@cache
def _fsdd(index: int) -> np.ndarray:
    """The first 0.05 s of one of a few real FSDD recordings (8 kHz, float32)."""
    names = sorted(FSDD.glob("*_jackson_*.flac"))[:8]
    wave, rate = sf.read(names[index % len(names)], dtype="float32")
    assert rate == RATE
    return wave[:400]


@pytest.fixture
def write_clip() -> Callable[..., Path]:
    """``write_clip(path, n=0, format=None)``: a tiny real clip at ``path`` (folders made)."""
    counter = iter(range(10**6))

    def write(path: Path, format: str | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _fsdd(next(counter)), RATE, format=format)
        return path

    return write


def _write_table(
    path: Path, rows: Iterable[Sequence[object]], header: Sequence[str] | None = None,
    delimiter: str = ",",
) -> Path:  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def write_table() -> Callable[..., Path]:
    """``write_table(path, rows, header=None, delimiter=",")``: a CSV/TSV as ``csv`` quotes it
    (a field holding the delimiter gets quotes), folders made."""
    return _write_table
