"""Writing WebDataset tar shards: ``{key}.{audio}`` + ``{key}.json`` pairs, optionally resampled.

Members are grouped by the name before the first dot, as ``webdataset`` groups them. Written with
the standard library's ``tarfile``, reproducibly (no timestamps). With ``sample_rate`` each clip
is decoded once, resampled to the encoder's rate and stored as 24-bit FLAC, so that training
epochs decode only their crop and never resample.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import soundfile as sf

from clapkit.audio import load_audio
from clapkit.data.manifest import AUDIO_SUFFIXES, ManifestRecord

__all__ = ["write_shards"]

_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-/]")


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0  # reproducible shards
    tar.addfile(info, io.BytesIO(payload))


def write_shards(
    records: Iterable[ManifestRecord],
    output_dir: str | os.PathLike[str],
    *,
    samples_per_shard: int = 1000,
    prefix: str = "shard",
    sample_rate: int | None = None,
) -> list[Path]:
    """Pack clips into tar shards of at most ``samples_per_shard`` pairs.

    Each clip becomes ``{key}.{suffix}`` (the audio file's bytes, unchanged) and ``{key}.json``
    (``caption``, ``labels``, the original ``key`` and any extra manifest fields). Keys are made
    tar-safe (characters other than letters, digits, ``_ - /`` become ``_``).

    Args:
        records: the clips, e.g. ``read_manifest(path)`` or ``records_from_folder(folder)``.
        output_dir: created if missing; shards are ``{prefix}-000000.tar``, ...
        samples_per_shard: clips per shard.
        prefix: shard file name prefix.
        sample_rate: decode each clip and store it resampled to this rate as FLAC (24-bit),
            instead of the file's own bytes.

    Returns:
        The shard paths written.

    Raises:
        ValueError: ``samples_per_shard < 1`` or an audio suffix is not one of ``AUDIO_SUFFIXES``.
        FileNotFoundError: an audio file is missing (named).
        clapkit.audio.AudioLoadError: with ``sample_rate``, a clip cannot be decoded (named).
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    tar: tarfile.TarFile | None = None
    used: set[str] = set()
    for index, record in enumerate(records):
        suffix = record.audio.suffix.lower()
        if suffix not in AUDIO_SUFFIXES:
            raise ValueError(f"{record.audio}: unsupported audio suffix {suffix!r}")
        if not record.audio.is_file():
            raise FileNotFoundError(f"{record.audio} (key {record.key!r}) does not exist")
        if index % samples_per_shard == 0:
            if tar is not None:
                tar.close()
            shards.append(folder / f"{prefix}-{len(shards):06d}.tar")
            tar = tarfile.open(shards[-1], "w")  # noqa: SIM115  (closed when the shard is full)
        assert tar is not None
        name = _UNSAFE_KEY.sub("_", record.key).strip("/") or f"clip{index:09d}"
        if name in used:
            name = f"{name}_{index}"
        used.add(name)
        meta: dict[str, Any] = {"key": record.key, **record.extra}
        if record.captions:
            meta["caption"] = list(record.captions)
        if record.labels:
            meta["labels"] = list(record.labels)
        if sample_rate is None:
            _add_member(tar, f"{name}{suffix}", record.audio.read_bytes())
        else:
            _add_member(tar, f"{name}.flac", _flac(record.audio, sample_rate))
        _add_member(tar, f"{name}.json", json.dumps(meta, ensure_ascii=False).encode())
    if tar is not None:
        tar.close()
    return shards


def _flac(path: Path, sample_rate: int) -> bytes:
    """The clip decoded, resampled to ``sample_rate`` and encoded as 24-bit FLAC."""
    buffer = io.BytesIO()
    wave = load_audio(path, sample_rate).clamp(-1.0, 1.0)
    sf.write(buffer, wave.numpy(), sample_rate, format="FLAC", subtype="PCM_24")
    return buffer.getvalue()
