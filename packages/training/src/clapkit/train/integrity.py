"""A checkpoint's completion marker: every file's size and sha256, and no pickle anywhere.

``COMPLETE`` is written last, after every file of the checkpoint has been written and flushed
to disk; it records each file's size and sha256. :func:`check_files` reads it back and checks
each file against it, so that a cut, truncated or altered file (of the same size too) is named.
It also refuses any file that is a pickle, whatever its name, or that has a pickle's name:
clapkit's checkpoints hold JSON and safetensors only, and a pickle in one was put there by
something else (an older clapkit that wrote accelerate's pickles, or someone who wants code to
run when the run resumes).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

__all__ = [
    "COMPLETE_MARKER",
    "MARKER_FORMAT",
    "CheckpointError",
    "UnsafeCheckpointError",
    "check_files",
    "is_pickle",
    "sha256_of",
    "write_marker",
]

COMPLETE_MARKER = "COMPLETE"
"""File name of the completion marker: JSON ``{"format": 2, "files": {name: {"bytes": n,
"sha256": hex}}, "saved": unix time}``."""
MARKER_FORMAT = 2
"""Format 1 (sizes only) was written by clapkit-training <= 0.2, whose checkpoints held
accelerate's pickles."""
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt")
_ZIP, _PICKLE_PROTOCOLS = b"PK\x03\x04", range(2, 6)


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete or corrupt; the message names the folder and the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds a file that clapkit does not load because it could run code."""


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_pickle(path: Path) -> bool:
    """Whether a file is (or is named like) a pickle: a pickle's name, a pickle's protocol
    header (``0x80`` and protocol 2-5), or a zip archive (``torch.save``'s format).

    A ``.safetensors`` file is not sniffed: it is only ever read by safetensors (which unpickles
    nothing and checks its header), and its first bytes are a header length, which can look
    like a pickle's (640 bytes: ``80 02``).

    Args:
        path: the file.
    """
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return True
    if suffix == ".safetensors":
        return False
    with path.open("rb") as handle:
        head = handle.read(4)
    return head == _ZIP or (len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS)


def _files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != COMPLETE_MARKER]


def write_marker(folder: Path) -> None:
    """Flush every file of ``folder`` to disk, then write ``COMPLETE`` (sizes and sha256s) and
    flush it too.

    Args:
        folder: the checkpoint's staging folder, every file written.
    """
    files = {}
    for path in _files(folder):
        with path.open("rb") as handle:  # rename is atomic, but without fsync a power cut can
            os.fsync(handle.fileno())  # leave renamed-but-empty files
        files[str(path.relative_to(folder))] = {
            "bytes": path.stat().st_size,
            "sha256": sha256_of(path),
        }
    marker = folder / COMPLETE_MARKER
    marker.write_text(json.dumps({"format": MARKER_FORMAT, "files": files, "saved": time.time()}))
    with marker.open("rb") as handle:
        os.fsync(handle.fileno())


def check_files(folder: Path) -> list[Path]:
    """Check a checkpoint's files against its marker.

    Args:
        folder: an existing checkpoint folder.

    Returns:
        Its files (the marker left out).

    Raises:
        CheckpointError: no marker (an interrupted save), an unreadable marker, a file not
            recorded in it, a recorded file missing, or of another size or sha256 than recorded
            (named).
        UnsafeCheckpointError: a pickle among the files, or a marker of clapkit-training
            <= 0.2 (whose checkpoints hold pickles).
    """
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        raise CheckpointError(
            f"checkpoint {folder} is incomplete (no {COMPLETE_MARKER} marker: its save was "
            "interrupted)"
        )
    files = _files(folder)
    for file in files:
        if is_pickle(file):
            raise UnsafeCheckpointError(
                f"checkpoint {folder} holds {file}, a pickle: clapkit never loads pickles from "
                "a checkpoint (they can run code) and writes none. It was put there by an older "
                "clapkit or by someone else; resume from a checkpoint clapkit wrote, or start "
                "afresh"
            )
    try:
        content = json.loads(marker.read_text())
        recorded: dict[str, dict[str, object]] = content["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {folder}: unreadable marker {marker}: {error}"
        ) from error
    if content.get("format") != MARKER_FORMAT:
        raise UnsafeCheckpointError(
            f"checkpoint {folder} was written by clapkit-training 0.2 or older ({marker} of "
            f"format {content.get('format', 1)}): its state is pickled, which clapkit no longer "
            "loads; start afresh (or finish that run with the clapkit that wrote it)"
        )
    extra = [f for f in files if str(f.relative_to(folder)) not in recorded]
    if extra:
        raise CheckpointError(
            f"checkpoint {folder} is corrupt: {extra[0]} was not written with it (not in {marker})"
        )
    for name, entry in recorded.items():
        file = folder / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {folder} is corrupt: {file} is missing")
        actual = file.stat().st_size
        if actual != entry["bytes"]:
            raise CheckpointError(
                f"checkpoint {folder} is corrupt: {file} has {actual} bytes, {entry['bytes']} "
                "were written"
            )
        if sha256_of(file) != entry["sha256"]:
            raise CheckpointError(
                f"checkpoint {folder} is corrupt: {file} does not match the sha256 recorded in "
                f"{marker} (changed after it was written)"
            )
    return files
