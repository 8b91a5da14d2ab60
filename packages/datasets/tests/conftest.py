"""Fixtures: a small manifest of real FSDD clips (8 kHz FLAC) plus a corrupt file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

FSDD = Path(__file__).resolve().parents[3] / "data" / "fsdd" / "recordings"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture
def clip_folder(tmp_path: Path) -> Path:
    """Twelve real clips copied under ``tmp_path/clips`` (digits 0-5 of two speakers)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for digit in range(6):
        for speaker in ("jackson", "theo"):
            name = f"{digit}_{speaker}_0.flac"
            shutil.copy(FSDD / name, folder / name)
    return folder


@pytest.fixture
def manifest(tmp_path: Path, clip_folder: Path) -> Path:
    """A manifest (relative paths, caption lists, labels) of every clip in ``clip_folder``."""
    path = tmp_path / "train.jsonl"
    with path.open("w") as out:
        for clip in sorted(clip_folder.glob("*.flac")):
            word = DIGITS[int(clip.name[0])]
            line = {
                "audio": f"clips/{clip.name}",
                "caption": [f"a man says {word}", f"the digit {word}", word],
                "labels": [word],
            }
            out.write(json.dumps(line) + "\n")
    return path


@pytest.fixture
def corrupt_manifest(tmp_path: Path, manifest: Path) -> Path:
    """``manifest`` plus one clip whose file is garbage bytes named ``broken.flac``."""
    (tmp_path / "clips" / "broken.flac").write_bytes(b"fLaC not really" * 10)
    lines = manifest.read_text().splitlines()
    broken = {"audio": "clips/broken.flac", "caption": "nothing", "labels": ["zero"]}
    lines.insert(3, json.dumps(broken))
    path = tmp_path / "with_corrupt.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
