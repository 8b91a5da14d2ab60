"""WebDataset shards: LAION-CLAP samples, specs (braces, pipe:, sources files), mixing by weight,
the shuffle buffer, caption-less samples, and shards resampled once by the command."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from clapkit.audio import FrontendConfig, load_audio
from clapkit.data import (
    ShardDataset,
    SkippedItem,
    TarMember,
    parse_sources,
    read_manifest,
    shard_samples,
)
from clapkit.data.make_shards import main as make_shards
from clapkit.data.shards import WHOLE_MEMBER_BYTES

RATE = 8000
FRONTEND = FrontendConfig(
    sample_rate=RATE, n_fft=64, win_length=64, hop_length=32, fmax=4000.0, clip_seconds=0.05
)
TOLERANCE = 0.03
"""Largest gap between a source's share of 2,000 mixed samples and its weight's share: about
3 standard deviations of a binomial share at p = 0.75 (0.0097); the draw is seeded, so the test
is deterministic, and a mix that ignores the weights (0.5) is far outside it."""


def _audio(index: int, suffix: str) -> bytes:
    """0.1 s of a tone, encoded as ``suffix`` says."""
    t = np.arange(RATE // 10) / RATE
    tone = (0.1 * np.sin(2 * np.pi * (200 + 10 * index) * t)).astype(np.float32)
    buffer = io.BytesIO()
    formats = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}
    sf.write(buffer, tone, RATE, format=formats[suffix])
    return buffer.getvalue()


def _shard(path: Path, samples: list[dict[str, bytes]]) -> Path:
    """A tar of ``{key}{suffix}`` members, each sample's members in the order given."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            key = sample["__key__"].decode()
            for suffix, payload in sample.items():
                if suffix == "__key__":
                    continue
                info = tarfile.TarInfo(f"{key}{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def _laion(key: str, index: int, suffix: str = ".flac", text: object = None) -> dict[str, bytes]:
    meta = {"text": text if text is not None else f"sound {key}", "original_data": {"id": 1}}
    return {
        "__key__": key.encode(),
        suffix: _audio(index, suffix),
        ".json": json.dumps(meta).encode(),
    }


def _keys(dataset: ShardDataset, workers: int = 0) -> list[str]:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [i.source if isinstance(i, SkippedItem) else i["key"] for i in loader]


def _first_keys(dataset: ShardDataset, count: int) -> list[str]:
    return [item["key"] for item in islice(iter(dataset), count)]  # type: ignore[index]


def _numbered(folder: Path, source: str, shards: int, per_shard: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        samples = [_laion(f"{source}{s:02d}{k:03d}", k, ".wav") for k in range(per_shard)]
        _shard(folder / f"{source}-{s:06d}.tar", samples)
    return folder


def test_laion_clap_samples_read_as_they_are(tmp_path: Path) -> None:
    samples = [
        _laion("a/0", 0, ".flac"),
        _laion("a/1", 1, ".wav", text=["first caption", "second caption"]),
        _laion("a/2", 2, ".ogg"),
        _laion("a/3", 3, ".mp3"),
        {"__key__": b"a/4", ".flac": _audio(4, ".flac"), ".txt": b"a caption in a txt\n"},
    ]
    shard = _shard(tmp_path / "laion-000000.tar", samples)
    items = list(ShardDataset(shard, FRONTEND, train=False))
    assert [i["key"] for i in items] == ["a/0", "a/1", "a/2", "a/3", "a/4"]  # type: ignore[index]
    captions = [i["caption"] for i in items]  # type: ignore[index]
    assert captions == [
        "sound a/0",
        "first caption",
        "sound a/2",
        "sound a/3",
        "a caption in a txt",
    ]
    assert all(i["waveform"].shape == (FRONTEND.clip_samples,) for i in items)  # type: ignore[index]
    # the flac's crop is the centre of the whole clip, as the manifest path takes it
    whole = load_audio(samples[0][".flac"], RATE)
    start = (whole.shape[0] - FRONTEND.clip_samples) // 2
    assert torch.equal(items[0]["waveform"], whole[start : start + FRONTEND.clip_samples])  # type: ignore[index]
    # in training a caption of the list is drawn per epoch
    train = ShardDataset(shard, FRONTEND, train=True, shuffle_buffer=0)
    drawn = set()
    for epoch in range(8):
        train.set_epoch(epoch)
        drawn.add(next(i["caption"] for i in train if i["key"] == "a/1"))  # type: ignore[index]
    assert drawn == {"first caption", "second caption"}


@pytest.mark.parametrize("on_error", ["skip", "raise"])
def test_a_sample_without_caption_is_skipped_by_name(tmp_path: Path, on_error: str) -> None:
    samples = [
        _laion("k/good", 0),
        {"__key__": b"k/bare", ".flac": _audio(1, ".flac"), ".json": b'{"tags": ["dog"]}'},
        _laion("k/blank", 2, text=["", "  "]),
        _laion("k/also_good", 3),
    ]
    shard = _shard(tmp_path / "s.tar", samples)
    dataset = ShardDataset(shard, FRONTEND, train=True, shuffle_buffer=0, on_error=on_error)  # type: ignore[arg-type]
    if on_error == "raise":
        with pytest.raises(ValueError, match=rf"^{shard}:k/bare: no caption"):
            list(dataset)
        return
    items = list(dataset)
    assert [i["key"] for i in items if isinstance(i, dict)] == ["k/good", "k/also_good"]
    skipped = [(i.source, i.reason) for i in items if isinstance(i, SkippedItem)]
    reason = "no caption (no .json 'text' or 'caption', no .txt)"
    assert skipped == [(f"{shard}:k/bare", reason), (f"{shard}:k/blank", reason)]
    # evaluation may read labelled clips without captions
    assert len(list(ShardDataset(shard, FRONTEND, train=False))) == 4


def test_brace_ranges_pipes_and_sources_files_read_the_same_clips(tmp_path: Path) -> None:
    folder = _numbered(tmp_path / "shards", "x", shards=3, per_shard=4)
    expected = _keys(ShardDataset(folder, FRONTEND, train=False))
    assert len(expected) == 12
    brace = f"{folder}/x-{{000000..000002}}.tar"
    assert _keys(ShardDataset(brace, FRONTEND, train=False)) == expected
    pipe = f"pipe:cat {folder}/x-{{000000..000002}}.tar"
    assert parse_sources(pipe)[0].urls[1] == f"pipe:cat {folder}/x-000001.tar"
    assert _keys(ShardDataset(pipe, FRONTEND, train=False)) == expected
    joined = f"{folder}/x-000000.tar::pipe:cat {folder}/x-00000{{1,2}}.tar"
    assert _keys(ShardDataset(joined, FRONTEND, train=False)) == expected
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  - {name: x, shards: 'shards/x-{000000..000002}.tar', weight: 2.5}\n"
    )
    (source,) = parse_sources(tmp_path / "sources.yaml")
    assert (source.name, len(source.urls), source.weight) == ("x", 3, 2.5)
    named = parse_sources(
        [f"big={folder}/x-00000{{0,1}}.tar:3", f"small=pipe:cat {folder}/x-000002.tar"]
    )
    assert [(s.name, len(s.urls), s.weight) for s in named] == [("big", 2, 3.0), ("small", 1, 1.0)]
    with pytest.raises(FileNotFoundError, match=r"no shard found for .*x-000008\.tar"):
        parse_sources(f"{folder}/x-{{000008..000009}}.tar")
    with pytest.raises(ValueError, match="unreadable shard"):
        list(ShardDataset(f"pipe:cat {folder}/nothing.tar", FRONTEND, train=False))


def test_resampled_sources_mix_by_weight(tmp_path: Path) -> None:
    _numbered(tmp_path / "big", "big", shards=2, per_shard=5)
    _numbered(tmp_path / "small", "small", shards=3, per_shard=5)
    sources = tmp_path / "mix.json"
    sources.write_text(
        json.dumps({"sources": [
            {"name": "big", "shards": "big", "weight": 3},
            {"name": "small", "shards": "small", "weight": 1},
        ]})
    )  # fmt: skip
    dataset = ShardDataset(sources, FRONTEND, train=True, shuffle_buffer=0, samples_per_epoch=2000)
    assert dataset.resampled
    keys = _keys(dataset)
    assert len(keys) == 2000
    share = sum(k.startswith("big") for k in keys) / len(keys)
    assert abs(share - 0.75) <= TOLERANCE, share
    # sampled with replacement: the small source's 15 clips are all seen, many times over
    assert len({k for k in keys if k.startswith("small")}) == 15
    # seeded: the same epoch gives the same stream, the next another
    assert _first_keys(dataset, 50) == keys[:50]
    dataset.set_epoch(1)
    assert _first_keys(dataset, 50) != keys[:50]
    with pytest.raises(ValueError, match="need samples_per_epoch"):
        ShardDataset(sources, FRONTEND, train=True)


def test_resampled_workers_take_their_share_and_differ(tmp_path: Path) -> None:
    folder = _numbered(tmp_path / "s", "s", shards=4, per_shard=5)
    dataset = ShardDataset(
        folder, FRONTEND, train=True, shuffle_buffer=0, samples_per_epoch=40, resampled=True
    )
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    keys = [item["key"] for item in loader]  # type: ignore[index]
    assert len(keys) == 40
    assert keys[0::2] != keys[1::2]  # each worker draws its own shards


def test_a_clip_drawn_again_gets_another_crop(tmp_path: Path) -> None:
    """Resampled, the one clip of a shard comes back every time, each time with its own crop."""
    noise = io.BytesIO()  # not a tone: crops at different starts differ
    sf.write(
        noise,
        np.random.default_rng(0).uniform(-0.5, 0.5, RATE).astype(np.float32),
        RATE,
        format="WAV",
    )
    long = {"__key__": b"only", ".wav": noise.getvalue(), ".txt": b"noise"}
    shard = _shard(tmp_path / "one.tar", [long])
    dataset = ShardDataset(
        shard, FRONTEND, train=True, shuffle_buffer=0, samples_per_epoch=6, resampled=True
    )
    crops = [item["waveform"] for item in dataset]  # type: ignore[index]
    assert len({tuple(crop.tolist()) for crop in crops}) == 6
    again = [item["waveform"] for item in dataset]  # type: ignore[index]
    assert all(torch.equal(a, b) for a, b in zip(crops, again, strict=True))  # seeded


def test_the_shuffle_buffer_size_is_honoured(tmp_path: Path) -> None:
    folder = _numbered(tmp_path / "s", "s", shards=1, per_shard=60)
    order = _keys(ShardDataset(folder, FRONTEND, train=False))
    for size in (1, 8, 20):
        dataset = ShardDataset(folder, FRONTEND, train=True, shuffle_buffer=size)
        furthest = 0
        for epoch in range(5):
            dataset.set_epoch(epoch)
            shuffled = _keys(dataset)
            assert sorted(shuffled) == sorted(order)
            # a sample leaves the buffer at the earliest when it is full: none comes out more
            # than size - 1 places ahead of where it went in (and over 5 epochs some do)
            furthest = max(
                furthest, *(order.index(key) - position for position, key in enumerate(shuffled))
            )
        assert furthest == size - 1, (size, furthest)


def test_the_command_resamples_once_to_flac(tmp_path: Path, manifest: Path) -> None:
    status = make_shards(
        ["--manifest", str(manifest), "--output-dir", str(tmp_path / "out"),
         "--samples-per-shard", "5", "--resample-to", "16000"]
    )  # fmt: skip
    assert status == 0
    records = read_manifest(manifest)
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tar:
        names = tar.getnames()
        stored = tar.extractfile("clips/0_jackson_0.flac").read()  # type: ignore[union-attr]
    assert names[:2] == ["clips/0_jackson_0.flac", "clips/0_jackson_0.json"]
    assert sf.info(io.BytesIO(stored)).samplerate == 16000
    assert sf.info(io.BytesIO(stored)).subtype == "PCM_24"
    # 24-bit FLAC of the resampled clip: the same samples within its quantisation step
    original = load_audio(records[0].audio, 16000)
    torch.testing.assert_close(load_audio(stored, 16000), original, rtol=0, atol=2.0**-23)
    counts = Counter(
        i["caption"] in r.captions
        for i, r in zip(ShardDataset(tmp_path / "out", FRONTEND, train=False), records, strict=True)
    )
    assert counts == {True: 12}


def test_a_shard_cut_at_a_member_boundary_is_noticed_through_a_pipe(tmp_path: Path) -> None:
    """Read as a stream (``pipe:``), a shard cut where a member's header should start still
    ends in the skip of its rest, as a local shard read in place does."""
    shard = _numbered(tmp_path / "s", "s", shards=1, per_shard=3) / "s-000000.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    cut = members[4].offset  # where the third sample starts
    shard.write_bytes(shard.read_bytes()[:cut])
    for spec in (str(shard), f"pipe:cat {shard}"):
        items = list(ShardDataset(spec, FRONTEND, train=True, shuffle_buffer=0))
        # the second sample is whole but cannot be told whole (a member of it may follow the cut)
        assert [i["key"] for i in items[:-1]] == ["s00000"], spec  # type: ignore[index]
        assert isinstance(items[-1], SkippedItem)
        assert items[-1].source == spec
        assert items[-1].reason.startswith(
            f"cut off or corrupt after byte {cut}: no end-of-archive"
        )


@pytest.mark.parametrize("suffix", [".flac", ".wav", ".ogg"])
def test_a_small_member_is_read_whole_in_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """A member up to WHOLE_MEMBER_BYTES is read with one pread of exactly its bytes (no
    window reader): the same crop as from the streamed bytes; cut short, a ReadError."""
    shard = _shard(tmp_path / "short.tar", [_laion("a", 1, suffix), _laion("b", 2, suffix)])
    member = next(iter(shard_samples(str(shard), in_place=True)))[suffix]
    assert isinstance(member, TarMember)
    assert member.size <= WHOLE_MEMBER_BYTES
    calls: list[tuple[int, int]] = []
    pread, preadv = os.pread, os.preadv

    def counted(fd: int, size: int, offset: int) -> bytes:
        calls.append((size, offset))
        return pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", counted)
    monkeypatch.setattr(os, "preadv", lambda *a: pytest.fail("window reader used"))
    here = list(ShardDataset(str(shard), FRONTEND, train=True, shuffle_buffer=0))
    monkeypatch.setattr(os, "preadv", preadv)
    there = list(ShardDataset(f"pipe:cat {shard}", FRONTEND, train=True, shuffle_buffer=0))
    assert [size for size, _ in calls] == [member.size, len(_audio(2, suffix))]
    assert calls[0][1] == member.offset
    for mine, theirs in zip(here, there, strict=True):
        assert torch.equal(mine["waveform"], theirs["waveform"])  # type: ignore[index]
    past_the_end = TarMember(str(shard), shard.stat().st_size - 100, 1000)
    with pytest.raises(tarfile.ReadError, match=r"short.tar: cut off inside the member"):
        past_the_end.open()


@pytest.mark.parametrize("suffix", [".flac", ".wav", ".ogg"])
def test_a_local_shards_audio_is_decoded_where_it_lies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """A local shard's audio member is referenced, not copied out: a 0.05 s crop of a 120 s
    member reads a small part of its bytes (WAV, FLAC: a seek; an Ogg stream is searched page by
    page), and equals the crop decoded from the bytes."""
    noise = 0.1 * np.random.default_rng(0).standard_normal(120 * RATE).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, noise, RATE, format=suffix[1:].upper())
    sample = {"__key__": b"long", suffix: buffer.getvalue(), ".txt": b"noise"}
    shard = _shard(tmp_path / "long.tar", [_laion("short", 1), sample])
    streamed, local = (
        list(shard_samples(str(shard))),
        list(shard_samples(str(shard), in_place=True)),
    )
    member = local[1][suffix]
    assert isinstance(member, TarMember)
    assert member.read() == streamed[1][suffix] == buffer.getvalue()
    assert local[1][".txt"] == b"noise"
    read: list[int] = []
    pread = os.preadv

    def counted(fd: int, buffers: list[memoryview], offset: int) -> int:
        read.append(pread(fd, buffers, offset))
        return read[-1]

    monkeypatch.setattr(os, "preadv", counted)
    (_, here), (_, there) = (
        list(ShardDataset(spec, FRONTEND, train=True, shuffle_buffer=0))
        for spec in (str(shard), f"pipe:cat {shard}")
    )
    assert torch.equal(here["waveform"], there["waveform"])  # type: ignore[index]
    if suffix != ".ogg":
        assert 0 < sum(read) < member.size // 4, f"{sum(read)} of {member.size} bytes read"
