"""Streaming clips from WebDataset tar shards with the ``webdataset`` library.

Shard specs and sources: :mod:`clapkit.data.shard_sources` (brace ranges, ``pipe:``, URLs,
``NAME=SPEC:WEIGHT`` mixes). The stream of one DataLoader worker is, in order:

1. shard URLs: in one pass, the epoch's seeded permutation (the same on every rank), split by
   node (``rank``) then by worker (``webdataset.split_by_worker``), global worker ``g`` reading
   shards ``g, g + G, ...``; with ``resampled``,
   ``webdataset.ResampledShards`` draws shards with replacement, seeded per worker and epoch;
2. samples: each shard opened by ``webdataset.gopen`` and read member by member (a shard cut off
   is noticed, even at a member boundary where ``tarfile`` stops without a word); the audio of
   a local shard is not read here but referenced (:class:`TarMember`) and decoded where it lies,
   so only a crop's frames are ever read;
3. a shuffle of the *compressed* samples (``webdataset.shuffle``, ``shuffle_buffer`` of them;
   of a local shard, references to them);
4. with several sources, a seeded draw of the source of each next sample by weight;
5. decoding: only the crop's frames (``clapkit.audio.load_crop``); captions from the LAION-CLAP
   / open_clip conventions (``.json`` ``text`` or ``caption``, a string or a list, or ``.txt``).
   A sample without caption is skipped by name in training, never trained on as ``''``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from clapkit.audio import FrontendConfig
from clapkit.data.dataset import ClapExample, ClipLoader, OnError, SkippedItem, item_generator
from clapkit.data.epoch import SharedEpoch, SharedEpochMixin
from clapkit.data.manifest import AUDIO_SUFFIXES
from clapkit.data.shard_sources import SCHEME as _SCHEME
from clapkit.data.shard_sources import ShardSource, ShardSpec, parse_sources

__all__ = ["ShardDataset", "TarMember", "shard_samples"]

logger = logging.getLogger(__name__)
Sample = dict[str, Any]
"""``{"__key__": key, "__url__": shard, ".flac": bytes, ".json": bytes, ...}``"""
# Generator streams apart from the per-clip ones (keyed by crc32 < 2**32).
_SHARD_ORDER_STREAM = 2**40
_BUFFER_STREAM = 2**41
_MIX_STREAM = 2**42
_CROP_STREAM = 2**43
_READ_BUFFER = 1 << 20  # tarfile reads a stream in RECORDSIZE (10 KiB) pieces by default
WHOLE_MEMBER_BYTES = 1 << 20
"""A local shard's audio member up to this size is read whole when decoded (one system call; a
10 s 44.1 kHz FLAC is about 1 MB); a larger one is read where it lies, only the crop's part."""


class TarMember:
    """Where a member of a local tar file lies: its bytes are read in place when opened.

    A shard's audio is read through this instead of being copied out of the tar: decoding a 7 s
    crop of a 300 s member then reads the crop's frames, not the member's 26 MB, and a shuffle
    buffer holds references, not compressed clips.

    Args:
        path: the tar file.
        offset: where the member's data starts (bytes).
        size: the member's size (bytes).
    """

    __slots__ = ("offset", "path", "size")

    def __init__(self, path: str, offset: int, size: int) -> None:
        self.path, self.offset, self.size = path, offset, size

    def open(self) -> BinaryIO:
        """A seekable binary file of the member alone (close it, or use ``with``).

        A member of up to :data:`WHOLE_MEMBER_BYTES` is read in one call into memory (a
        decoder's many small reads then cost no system call); a larger one is read where it
        lies, 64 KiB at a time, so that a crop reads only its own part.
        """
        if self.size <= WHOLE_MEMBER_BYTES:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                data = os.pread(fd, self.size, self.offset)
            finally:
                os.close(fd)
            if len(data) < self.size:
                raise tarfile.ReadError(
                    f"{self.path}: cut off inside the member at byte {self.offset} "
                    f"({len(data)} of its {self.size} bytes)"
                )
            member = io.BytesIO(data)
            member.name = f"{self.path}@{self.offset}"
            return member
        return io.BufferedReader(_MemberReader(self), buffer_size=1 << 16)

    def read(self) -> bytes:
        """The member's bytes."""
        with self.open() as member:
            return member.read()

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"TarMember({self.path!r}, offset={self.offset}, size={self.size})"


class _MemberReader(io.RawIOBase):
    """A read-only, seekable window ``[offset, offset + size)`` on a file (``os.pread``)."""

    def __init__(self, member: TarMember) -> None:
        super().__init__()
        self._fd = os.open(member.path, os.O_RDONLY)
        self._start, self._size, self._position = member.offset, member.size, 0
        self.name = f"{member.path}@{member.offset}"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._size - self._position))
        if not count:
            return 0
        read = os.preadv(self._fd, [view[:count]], self._start + self._position)
        self._position += read
        return read

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def shard_samples(url: str, *, in_place: bool = False) -> Iterator[Sample]:
    """The samples of one shard, members grouped by the name before the first dot.

    Args:
        url: A local path or anything ``webdataset.gopen`` opens (``pipe:...``, ``https://``).
        in_place: for a local shard, give audio members as :class:`TarMember` references
            (read where they lie when decoded) instead of their bytes.

    Yields:
        One dict per sample: ``__key__``, ``__url__`` and a lower-case ``.suffix`` -> bytes
        (or a ``TarMember`` for an audio member with ``in_place``).

    Raises:
        tarfile.ReadError: The shard is cut off or corrupt (named by its byte offset).
        OSError: It cannot be opened (or its ``pipe:`` command fails).
    """
    from webdataset import gopen

    class _LastHeader(tarfile.TarInfo):
        """Remembers the last header block read: an archive ends with a zero block."""

        block = b""

        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _LastHeader:
            _LastHeader.block = bytes(buf)
            return super().frombuf(buf, encoding, errors)

    sample: Sample = {}
    # a local file is read in place (random access); a pipe or URL as a stream
    local = not _SCHEME.match(url) and os.path.isfile(url)
    length = os.path.getsize(url) if local else 0
    with (
        gopen(url, "rb", bufsize=_READ_BUFFER) as stream,
        tarfile.open(
            fileobj=stream,
            mode=_local_mode(stream) if local else "r|*",
            tarinfo=_LastHeader,
            bufsize=_READ_BUFFER,
        ) as tar,
    ):
        for member in tar:
            if not member.isfile():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, suffix = base.partition(".")
            key = f"{directory}/{stem}" if directory else stem
            if sample and key != sample["__key__"]:
                yield sample
                sample = {}
            sample.setdefault("__key__", key)
            sample["__url__"] = url
            if not dot:
                continue
            suffix = "." + suffix.lower()
            if in_place and local and tar.fileobj is stream and suffix in AUDIO_SUFFIXES:
                if member.offset_data + member.size > length:
                    raise tarfile.ReadError(
                        f"cut off inside member {member.name}: its data ends at byte "
                        f"{member.offset_data + member.size}, the file at {length}"
                    )
                sample[suffix] = TarMember(url, member.offset_data, member.size)
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                sample[suffix] = handle.read()
        block = _LastHeader.block
        if len(block) != tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError(
                f"cut off or corrupt after byte {tar.offset}: no end-of-archive block where the "
                f"next member's header should be ({len(block)} bytes left there)"
            )
    if sample:  # only now: a cut may have taken the last clip's other members
        yield sample


def _local_mode(stream: Any) -> Literal["r:", "r:*"]:
    """``"r:"`` for an uncompressed tar (tarfile's ``"r:*"`` first tries three decompressors)."""
    head = stream.peek(tarfile.BLOCKSIZE)[: tarfile.BLOCKSIZE]
    return "r:" if head[257:262] == b"ustar" else "r:*"


def _captions(sample: Sample) -> tuple[list[str], str | None, dict[str, Any]]:
    """``(captions, problem, meta)`` from a ``.json`` (``text`` or ``caption``) or a ``.txt``."""
    meta: dict[str, Any] = {}
    if ".json" in sample:
        try:
            meta = json.loads(sample[".json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return [], f"bad JSON ({error})", {}
        if not isinstance(meta, dict):
            return [], "bad JSON (not an object)", {}
    found = meta.get("text", meta.get("caption"))
    if found is None and ".txt" in sample:
        found = sample[".txt"].decode("utf-8", errors="replace").strip()
    texts = [found] if isinstance(found, str) else list(found or [])
    return [t for t in texts if isinstance(t, str) and t.strip()], None, meta


class ShardDataset(SharedEpochMixin, IterableDataset):
    """Streams clips from WebDataset shards, split per rank and per DataLoader worker.

    In one pass (default), global worker ``g = rank * num_workers + worker_id`` reads shards
    ``g, g + G, ...`` of the epoch's order, ``G = world_size * num_workers``: every clip once
    per epoch; use at least ``G`` shards. With ``samples_per_epoch`` every global worker yields
    exactly ``samples_per_epoch // G`` clips (cycling its shards if needed), so all ranks take
    the same number of steps. With ``resampled`` (implied by several sources) shards are drawn
    with replacement (``webdataset.ResampledShards``) and ``samples_per_epoch`` sets the epoch.
    The epoch (``set_epoch``) is shared with the DataLoader's workers, persistent ones included
    (:class:`clapkit.data.SharedEpoch`); each pass reads it once, when it starts.

    Args:
        shards: a spec, a sources file, or entries (:func:`clapkit.data.parse_sources`).
        frontend: the audio encoder's ``FrontendConfig``.
        train: random crops, caption sampling, shard and sample shuffling.
        seed: seeds every random choice with the epoch.
        on_error: ``"skip"`` (default in training) logs and yields a ``SkippedItem``; ``"raise"``.
        shuffle_buffer: compressed samples held by the training shuffle (0 or 1: none).
        samples_per_epoch: clips per epoch over all ranks and workers (``None``: one pass).
        rank: this process's rank (default: from ``torch.distributed``, else 0).
        world_size: number of processes (default: from ``torch.distributed``, else 1).
        resampled: draw shards with replacement (epoch-less training).
        require_captions: skip a sample without caption by name (default: ``train``).

    Raises:
        FileNotFoundError: a local spec matches nothing.
        ValueError: ``resampled`` (or several sources) without ``samples_per_epoch``.
    """

    def __init__(
        self,
        shards: ShardSpec,
        frontend: FrontendConfig,
        *,
        train: bool,
        seed: int = 0,
        on_error: OnError | None = None,
        shuffle_buffer: int = 2000,
        samples_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        resampled: bool = False,
        require_captions: bool | None = None,
    ) -> None:
        self.sources: list[ShardSource] = parse_sources(shards)
        self.resampled = resampled or len(self.sources) > 1
        if self.resampled and samples_per_epoch is None:
            raise ValueError(
                "resampled shards (or several sources) need samples_per_epoch: the stream has "
                "no end of its own"
            )
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
        self.require_captions = train if require_captions is None else require_captions
        self.shared_epoch = SharedEpoch()

    @property
    def shards(self) -> list[str]:
        """Every shard URL of every source."""
        return [url for source in self.sources for url in source.urls]

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def _rng(self, epoch: int, stream: int) -> random.Random:
        """A Python generator of an epoch's draws in one stream (webdataset takes those)."""
        return random.Random(item_generator(self.seed, epoch, stream).initial_seed())

    def _urls(self, epoch: int, source: int, index: int) -> Iterator[str]:
        """This worker's shard URLs of one source (finite in one pass, endless resampled)."""
        from webdataset import ResampledShards, split_by_worker

        urls = list(self.sources[source].urls)
        if self.resampled:
            shards = ResampledShards(
                urls,
                seed=self._rng(epoch, _SHARD_ORDER_STREAM + (source << 20)).getrandbits(31),
                worker_seed=lambda: index,
                deterministic=True,
            )
            return (shard["url"] for shard in shards)
        if self.loader.train:
            generator = item_generator(self.seed, epoch, _SHARD_ORDER_STREAM)
            urls = [urls[i] for i in torch.randperm(len(urls), generator=generator).tolist()]
        # split by node (this rank's blocks of one shard per worker), then webdataset's
        # split_by_worker: global worker g = rank * workers + worker reads shards g, g + G, ...
        workers = self._worker()[1] // self.world_size
        by_node = (u for i, u in enumerate(urls) if (i // workers) % self.world_size == self.rank)
        return iter(split_by_worker(by_node))

    def _samples(self, urls: Iterator[str]) -> Iterator[Sample | SkippedItem]:
        for url in urls:
            try:
                yield from shard_samples(url, in_place=True)
            except (tarfile.TarError, OSError, ValueError) as error:
                if self.loader.on_error == "raise":
                    raise ValueError(f"{url}: unreadable shard ({error})") from error
                logger.warning("skipping the rest of bad shard %s: %s", url, error)
                yield SkippedItem(key=url.rsplit("/", 1)[-1], source=url, reason=str(error))

    def _source_stream(self, epoch: int, source: int, index: int) -> Iterator[Sample | SkippedItem]:
        from webdataset import shuffle

        samples = self._samples(self._urls(epoch, source, index))
        if self.shuffle_buffer > 1:
            rng = self._rng(epoch, _BUFFER_STREAM + (source << 20) + index)
            samples = shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=rng)(samples)
        return samples

    def _mixed(self, epoch: int, index: int) -> Iterator[Sample | SkippedItem]:
        """One source's stream, or the sources drawn by weight for every sample."""
        if len(self.sources) == 1:
            yield from self._source_stream(epoch, 0, index)
            return
        streams = [self._source_stream(epoch, i, index) for i in range(len(self.sources))]
        weights = [s.weight for s in self.sources]
        rng = self._rng(epoch, _MIX_STREAM + index)
        while True:
            (stream,) = rng.choices(streams, weights)
            yield next(stream)

    def _decode(
        self, sample: Sample, epoch: int, draws: torch.Generator | None
    ) -> ClapExample | SkippedItem:
        """The sample's clip and caption; crops drawn from ``draws`` or the key's own generator."""
        key, url = sample["__key__"], sample["__url__"]
        name = f"{url}:{key}"
        audio = next((sample[s] for s in AUDIO_SUFFIXES if s in sample), None)
        captions, problem, meta = _captions(sample)
        if problem is None and audio is None:
            problem = f"no audio member ({', '.join(AUDIO_SUFFIXES)})"
        if problem is None and not captions and self.require_captions:
            problem = "no caption (no .json 'text' or 'caption', no .txt)"
        if problem is not None or audio is None:  # (audio is None only with a problem)
            problem = str(problem)
            if self.loader.on_error == "raise":
                raise ValueError(f"{name}: {problem}")
            logger.warning("skipping sample %s: %s", name, problem)
            return SkippedItem(key=key, source=name, reason=problem)
        generator = draws or item_generator(self.seed, epoch, zlib.crc32(key.encode()))
        if isinstance(audio, TarMember):  # a local shard's member, read where it lies
            with audio.open() as member:
                wave = self.loader.load(member, name, generator)
        else:
            wave = self.loader.load(audio, name, generator)
        if isinstance(wave, SkippedItem):
            return wave
        pick = 0
        if self.loader.train and len(captions) > 1:
            pick = int(torch.randint(0, len(captions), (1,), generator=generator))
        labels = meta.get("labels", [])
        return ClapExample(
            waveform=wave,
            caption=captions[pick] if captions else "",
            labels=tuple([labels] if isinstance(labels, str) else labels),
            key=str(meta.get("key", key)),
        )

    def __iter__(self) -> Iterator[ClapExample | SkippedItem]:
        epoch = self.epoch  # once: a pass is one epoch's even if set_epoch comes meanwhile
        index, total = self._worker()
        if not self.resampled and len(self.shards) < total:
            logger.warning("%d shards for %d workers: some read nothing", len(self.shards), total)
        quota = None if self.samples_per_epoch is None else self.samples_per_epoch // total
        # resampled, a clip may come back in the same epoch: it gets a new crop from the worker's
        # (seeded, ordered) stream; in one pass each clip's draws depend on its key alone
        draws = item_generator(self.seed, epoch, _CROP_STREAM + index) if self.resampled else None
        produced = 0
        while quota is None or produced < quota:
            before = produced
            for sample in self._mixed(epoch, index):
                if quota is not None and produced >= quota:
                    break
                produced += 1
                yield (
                    sample
                    if isinstance(sample, SkippedItem)
                    else self._decode(sample, epoch, draws)
                )
            if quota is None or produced == before:
                break
