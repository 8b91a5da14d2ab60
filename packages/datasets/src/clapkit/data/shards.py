"""WebDataset-style tar shards: ``{key}.flac|wav`` + ``{key}.json`` pairs, written and streamed.

The format is the one the ``webdataset`` library reads (members grouped by the name before the
first dot), written and read here with the standard library's ``tarfile`` so no extra dependency
is needed. Streams are split by shard, first per process (rank), then per DataLoader worker.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from clapkit.audio import FrontendConfig
from clapkit.data.dataset import ClapExample, ClipLoader, OnError, SkippedItem, item_generator
from clapkit.data.manifest import AUDIO_SUFFIXES, ManifestRecord

logger = logging.getLogger(__name__)
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-/]")
# Generator streams apart from the per-clip ones (keyed by crc32 < 2**32).
_SHARD_ORDER_STREAM = 2**40
_BUFFER_STREAM = 2**41


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

    Returns:
        The shard paths written.

    Raises:
        ValueError: ``samples_per_shard < 1`` or an audio suffix is not one of ``AUDIO_SUFFIXES``.
        FileNotFoundError: an audio file is missing (named).
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
        _add_member(tar, f"{name}{suffix}", record.audio.read_bytes())
        _add_member(tar, f"{name}.json", json.dumps(meta, ensure_ascii=False).encode())
    if tar is not None:
        tar.close()
    return shards


def resolve_shards(shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Shard paths from a folder (its ``*.tar``), a glob pattern, or a list.

    Raises:
        FileNotFoundError: nothing matches.
    """
    if isinstance(shards, (str, os.PathLike)):
        spec = Path(shards)
        found = (
            sorted(spec.glob("*.tar")) if spec.is_dir() else sorted(map(Path, glob.glob(str(spec))))
        )
    else:
        found = [Path(s) for s in shards]
    if not found:
        raise FileNotFoundError(f"no shard found for {shards!r}")
    return found


def _samples(shard: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {suffix: bytes})`` for consecutive members sharing a key.

    Raises:
        tarfile.ReadError: the shard is cut off or corrupt (also where ``tarfile`` itself would
            just stop: a cut at a member boundary or inside a header).
    """
    key: str | None = None
    parts: dict[str, bytes] = {}
    with tarfile.open(shard, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, suffix = base.partition(".")
            name = f"{directory}/{stem}" if directory else stem
            if name != key and key is not None:
                yield key, parts
                parts = {}
            key = name
            handle = tar.extractfile(member)
            if dot and handle is not None:
                parts["." + suffix.lower()] = handle.read()
        _check_end_of_archive(tar)
    if key is not None:  # only now: a cut may have taken the last clip's other members
        yield key, parts


def _check_end_of_archive(tar: tarfile.TarFile) -> None:
    """Refuse a tar whose members stop without the zero block that ends an archive.

    ``tarfile`` ends iteration quietly at a truncated or unreadable header, so a shard cut at a
    member boundary would lose its last clips without a word.
    """
    assert tar.fileobj is not None  # opened from a file
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        raise tarfile.ReadError(
            f"cut off or corrupt after byte {tar.offset}: no end-of-archive block where the "
            f"next member's header should be ({len(block)} bytes left there)"
        )


class ShardDataset(IterableDataset):
    """Streams clips from tar shards, split per rank and per DataLoader worker.

    Global worker ``g = rank * num_workers + worker_id`` reads shards ``g, g + G, g + 2G, ...``
    with ``G = world_size * num_workers`` (in training the shard order is first shuffled with the
    epoch's seed, identically on every rank). Use at least ``G`` shards. With
    ``samples_per_epoch`` every global worker yields exactly ``samples_per_epoch // G`` clips,
    cycling its shards if needed, so all ranks take the same number of steps.

    Args:
        shards: folder, glob pattern or list of tar files.
        frontend: the audio encoder's ``FrontendConfig``.
        train: random crops, caption sampling, shard and buffer shuffling.
        seed: seeds every random choice with the epoch.
        on_error: ``"skip"`` (default in training) logs and yields a ``SkippedItem``; ``"raise"``.
        shuffle_buffer: training-time shuffle buffer size in clips (0 disables).
        samples_per_epoch: clips per epoch over all ranks and workers (``None``: one pass).
        rank: this process's rank (default: from ``torch.distributed``, else 0).
        world_size: number of processes (default: from ``torch.distributed``, else 1).
    """

    def __init__(
        self,
        shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        frontend: FrontendConfig,
        *,
        train: bool,
        seed: int = 0,
        on_error: OnError | None = None,
        shuffle_buffer: int = 1000,
        samples_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.shards = resolve_shards(shards)
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world_size = (
            world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        )
        self.loader = ClipLoader(
            frontend, train=train, on_error=on_error or ("skip" if train else "raise")
        )
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer if train else 0
        self.samples_per_epoch = samples_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shard order, crops and captions are drawn."""
        self.epoch = epoch

    def _worker_shards(self) -> tuple[list[Path], int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        total = self.world_size * workers
        index = self.rank * workers + worker
        order = list(range(len(self.shards)))
        if self.loader.train:
            permutation = torch.randperm(
                len(order), generator=item_generator(self.seed, self.epoch, _SHARD_ORDER_STREAM)
            )
            order = permutation.tolist()
        if len(self.shards) < total:
            logger.warning("%d shards for %d workers: some read nothing", len(self.shards), total)
        return [self.shards[i] for i in order[index::total]], index, total

    def _decode(self, shard: Path, key: str, parts: dict[str, bytes]) -> ClapExample | SkippedItem:
        name = f"{shard}:{key}"
        audio = next((parts[s] for s in AUDIO_SUFFIXES if s in parts), None)
        meta: dict[str, Any] = {}
        problem = None
        if audio is None:
            problem = f"no audio member ({', '.join(AUDIO_SUFFIXES)})"
        elif ".json" in parts:
            try:
                meta = json.loads(parts[".json"])
            except json.JSONDecodeError as error:
                problem = f"bad JSON ({error.msg})"
        if problem is not None or audio is None:
            if self.loader.on_error == "raise":
                raise ValueError(f"{name}: {problem}")
            logger.warning("skipping bad sample %s: %s", name, problem)
            return SkippedItem(key=key, source=name, reason=str(problem))
        wave = self.loader.decode(audio, name)
        if isinstance(wave, SkippedItem):
            return wave
        generator = item_generator(self.seed, self.epoch, zlib.crc32(key.encode()))
        captions = meta.get("caption", [])
        captions = [captions] if isinstance(captions, str) else list(captions)
        pick = 0
        if self.loader.train and len(captions) > 1:
            pick = int(torch.randint(0, len(captions), (1,), generator=generator))
        labels = meta.get("labels", [])
        return ClapExample(
            waveform=self.loader.crop(wave, generator),
            caption=captions[pick] if captions else "",
            labels=tuple([labels] if isinstance(labels, str) else labels),
            key=str(meta.get("key", key)),
        )

    def _stream(self, shards: list[Path]) -> Iterator[ClapExample | SkippedItem]:
        for shard in shards:
            try:
                for key, parts in _samples(shard):
                    yield self._decode(shard, key, parts)
            except (tarfile.TarError, OSError) as error:
                if self.loader.on_error == "raise":
                    raise ValueError(f"{shard}: unreadable shard ({error})") from error
                logger.warning("skipping the rest of bad shard %s: %s", shard, error)
                yield SkippedItem(key=shard.name, source=str(shard), reason=str(error))

    def __iter__(self) -> Iterator[ClapExample | SkippedItem]:
        shards, index, total = self._worker_shards()
        quota = None if self.samples_per_epoch is None else self.samples_per_epoch // total
        generator = item_generator(self.seed, self.epoch, _BUFFER_STREAM + index)
        buffer: list[ClapExample | SkippedItem] = []
        produced = 0
        while quota is None or produced < quota:
            before = produced
            for item in self._stream(shards):
                if quota is not None and produced >= quota:
                    break
                produced += 1
                if self.shuffle_buffer <= 1:
                    yield item
                    continue
                buffer.append(item)
                if len(buffer) >= self.shuffle_buffer:
                    pick = int(torch.randint(0, len(buffer), (1,), generator=generator))
                    buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                    yield buffer.pop()
            if quota is None or produced == before:
                break
        while buffer:
            pick = int(torch.randint(0, len(buffer), (1,), generator=generator))
            buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
            yield buffer.pop()
