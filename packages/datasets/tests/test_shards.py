from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from clapkit.audio import FrontendConfig, fit_length, load_audio
from clapkit.data import (
    ClapCollator,
    ShardDataset,
    SkippedItem,
    read_manifest,
    records_from_folder,
    resolve_shards,
    write_shards,
)
from clapkit.data.make_shards import main as make_shards

FRONTEND = FrontendConfig(
    sample_rate=8000,
    n_fft=256,
    win_length=256,
    hop_length=80,
    fmax=4000.0,
    clip_seconds=0.5,
    fill="repeat",
)


def keys_of(dataset: ShardDataset, workers: int = 0) -> list[str]:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [item.key if isinstance(item, SkippedItem) else item["key"] for item in loader]


def test_write_shards_packs_pairs(tmp_path: Path, manifest: Path) -> None:
    shards = write_shards(read_manifest(manifest), tmp_path / "shards", samples_per_shard=5)
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
        meta = json.load(tar.extractfile("clips/0_jackson_0.json"))  # type: ignore[arg-type]
        audio = tar.extractfile("clips/0_jackson_0.flac").read()  # type: ignore[union-attr]
    assert names[:2] == ["clips/0_jackson_0.flac", "clips/0_jackson_0.json"]
    assert len(names) == 10
    assert meta == {
        "key": "clips/0_jackson_0",
        "caption": ["a man says zero", "the digit zero", "zero"],
        "labels": ["zero"],
    }
    assert audio == (manifest.parent / "clips" / "0_jackson_0.flac").read_bytes()
    assert resolve_shards(tmp_path / "shards") == [str(s) for s in shards]
    assert resolve_shards(str(tmp_path / "shards" / "*-00000[01].tar")) == [
        str(s) for s in shards[:2]
    ]


def test_stream_decodes_like_the_files(tmp_path: Path, manifest: Path) -> None:
    records = read_manifest(manifest)
    write_shards(records, tmp_path / "shards", samples_per_shard=4)
    items = list(ShardDataset(tmp_path / "shards", FRONTEND, train=False))
    assert [i["key"] for i in items] == [r.key for r in records]  # type: ignore[index]
    first = items[0]
    assert not isinstance(first, SkippedItem)
    full = load_audio(records[0].audio, 8000)
    assert torch.equal(
        first["waveform"], fit_length(full, FRONTEND.clip_samples, "center_crop", fill="repeat")
    )
    assert first["caption"] == "a man says zero"
    assert first["labels"] == ("zero",)


@pytest.mark.parametrize(("world_size", "workers"), [(1, 2), (2, 1), (2, 2)])
def test_ranks_and_workers_split_the_clips(
    tmp_path: Path, manifest: Path, world_size: int, workers: int
) -> None:
    write_shards(read_manifest(manifest), tmp_path / "shards", samples_per_shard=3)
    seen: list[str] = []
    for rank in range(world_size):
        dataset = ShardDataset(
            tmp_path / "shards",
            FRONTEND,
            train=True,
            seed=4,
            shuffle_buffer=3,
            rank=rank,
            world_size=world_size,
        )
        dataset.set_epoch(1)
        seen += keys_of(dataset, workers)
    assert sorted(seen) == sorted(r.key for r in read_manifest(manifest))


def test_training_order_depends_on_epoch_and_is_reproducible(
    tmp_path: Path, manifest: Path
) -> None:
    write_shards(read_manifest(manifest), tmp_path / "shards", samples_per_shard=3)
    dataset = ShardDataset(tmp_path / "shards", FRONTEND, train=True, seed=0, shuffle_buffer=4)
    orders = []
    for epoch in (0, 0, 1):
        dataset.set_epoch(epoch)
        orders.append(keys_of(dataset))
    assert orders[0] == orders[1] != orders[2]
    assert sorted(orders[0]) == sorted(orders[2])


def test_samples_per_epoch_gives_every_worker_the_same_count(
    tmp_path: Path, manifest: Path
) -> None:
    write_shards(read_manifest(manifest), tmp_path / "shards", samples_per_shard=5)  # 5, 5, 2
    counts = []
    for rank in range(3):
        dataset = ShardDataset(
            tmp_path / "shards",
            FRONTEND,
            train=True,
            shuffle_buffer=0,
            samples_per_epoch=12,
            rank=rank,
            world_size=3,
        )
        counts.append(len(keys_of(dataset)))
    assert counts == [4, 4, 4]


def test_bad_sample_is_skipped_and_the_rest_kept(tmp_path: Path, corrupt_manifest: Path) -> None:
    write_shards(read_manifest(corrupt_manifest), tmp_path / "shards", samples_per_shard=100)
    dataset = ShardDataset(tmp_path / "shards", FRONTEND, train=True, shuffle_buffer=0)
    batches = list(DataLoader(dataset, batch_size=13, collate_fn=ClapCollator()))
    assert len(batches) == 1
    assert batches[0]["waveform"].shape == (12, FRONTEND.clip_samples)
    (skipped,) = batches[0]["skipped"]
    assert skipped.source.endswith("shard-000000.tar:clips/broken")
    with pytest.raises(ValueError, match=r"shard-000000\.tar:clips/broken"):
        list(ShardDataset(tmp_path / "shards", FRONTEND, train=False))


def test_truncated_shard_is_skipped(tmp_path: Path, manifest: Path) -> None:
    (shard,) = write_shards(read_manifest(manifest), tmp_path / "shards", samples_per_shard=100)
    shard.write_bytes(shard.read_bytes()[:30000])
    items = list(ShardDataset(tmp_path / "shards", FRONTEND, train=True, shuffle_buffer=0))
    assert isinstance(items[-1], SkippedItem)
    assert items[-1].source == str(shard)
    assert 0 < len(items) - 1 < 12
    with pytest.raises(ValueError, match="unreadable shard"):
        list(ShardDataset(tmp_path / "shards", FRONTEND, train=False))


def test_command_writes_shards_from_a_folder(
    tmp_path: Path, clip_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clip_folder / "0_theo_0.txt").write_text("zero\n")
    status = make_shards(
        [
            "--folder",
            str(clip_folder),
            "--output-dir",
            str(tmp_path / "out"),
            "--samples-per-shard",
            "7",
        ]
    )
    assert status == 0
    assert "wrote 12 clips into 2 shards" in capsys.readouterr().out
    items = list(ShardDataset(tmp_path / "out", FRONTEND, train=False))
    assert len(items) == len(records_from_folder(clip_folder)) == 12
    assert Counter(i["caption"] for i in items)["zero"] == 1  # type: ignore[index]
