from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from clapkit.audio import AudioLoadError, FrontendConfig, fit_length, load_audio
from clapkit.data import (
    ClapCollator,
    ManifestDataset,
    SkippedFiles,
    SkippedItem,
    item_generator,
    read_manifest,
)

# 16 kHz (the FLACs are 8 kHz: every load resamples), 0.25 s crops: shorter than every clip.
SHORT = FrontendConfig(
    sample_rate=16000,
    n_fft=512,
    win_length=512,
    hop_length=160,
    fmax=8000.0,
    clip_seconds=0.25,
    fill="repeat",
)
# 1.5 s crops: longer than most clips, so they are filled.
LONG = FrontendConfig(
    sample_rate=8000,
    n_fft=256,
    win_length=256,
    hop_length=80,
    fmax=4000.0,
    clip_seconds=1.5,
    fill="pad",
)


def toy_tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
    """Character codes, right-padded: enough to check collation calls the tokenizer."""
    width = max(len(t) for t in texts)
    ids = torch.zeros(len(texts), width, dtype=torch.long)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for row, text in enumerate(texts):
        ids[row, : len(text)] = torch.tensor([ord(c) for c in text])
        mask[row, : len(text)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_item_generator_is_a_function_of_seed_epoch_index() -> None:
    draw = lambda *a: torch.rand(3, generator=item_generator(*a))  # noqa: E731
    assert torch.equal(draw(0, 1, 2), draw(0, 1, 2))
    assert not torch.equal(draw(0, 1, 2), draw(0, 2, 1))
    assert not torch.equal(draw(0, 1, 2), draw(1, 1, 2))


def test_training_items_are_random_crops_at_the_frontend_rate(manifest: Path) -> None:
    dataset = ManifestDataset(manifest, SHORT, train=True, seed=3)
    full = load_audio(dataset.records[0].audio, 16000)
    item = dataset[0]
    assert not isinstance(item, SkippedItem)
    wave = item["waveform"]
    assert wave.shape == (SHORT.clip_samples,)
    assert wave.dtype == torch.float32
    starts = [
        s for s in range(full.shape[0] - wave.shape[0] + 1) if torch.equal(full[s : s + 4000], wave)
    ]
    assert len(starts) == 1
    assert item["caption"] in dataset.records[0].captions
    assert item["labels"] == ("zero",)
    # Same epoch: same crop; other epochs: other crops and captions.
    assert torch.equal(dataset[0]["waveform"], wave)  # type: ignore[index]
    crops, captions = set(), set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        item = dataset[0]
        assert not isinstance(item, SkippedItem)
        crops.add(tuple(item["waveform"][:5].tolist()))
        captions.add(item["caption"])
    assert len(crops) > 4
    assert captions == set(dataset.records[0].captions)


def test_evaluation_items_are_deterministic_centre_crops(manifest: Path) -> None:
    dataset = ManifestDataset(manifest, SHORT, train=False)
    full = load_audio(dataset.records[5].audio, 16000)
    for epoch in (0, 7):
        dataset.set_epoch(epoch)
        item = dataset[5]
        assert not isinstance(item, SkippedItem)
        assert torch.equal(
            item["waveform"], fit_length(full, SHORT.clip_samples, "center_crop", fill=SHORT.fill)
        )
        assert item["caption"] == dataset.records[5].captions[0]


def test_short_clips_are_filled_or_shifted(manifest: Path) -> None:
    filled = ManifestDataset(manifest, LONG, train=True)[0]
    full = load_audio(read_manifest(manifest)[0].audio, 8000)
    assert not isinstance(filled, SkippedItem)
    assert torch.equal(filled["waveform"], fit_length(full, LONG.clip_samples, "pad"))
    shifted = ManifestDataset(manifest, LONG, train=True, shift_short_clips=True)
    offsets = set()
    for epoch in range(6):
        shifted.set_epoch(epoch)
        item = shifted[0]
        assert not isinstance(item, SkippedItem)
        offset = int(item["waveform"].ne(0).nonzero()[0]) - int(full.ne(0).nonzero()[0])
        assert torch.equal(item["waveform"][offset : offset + full.shape[0]], full)
        assert item["waveform"].abs().sum() == full.abs().sum()
        offsets.add(offset)
    assert len(offsets) > 3


def test_training_requires_captions(tmp_path: Path, clip_folder: Path) -> None:
    path = tmp_path / "nocap.jsonl"
    path.write_text('{"audio": "clips/0_theo_0.flac", "labels": ["zero"]}\n')
    with pytest.raises(ValueError, match=r"1 clips have no caption, e.g. \['clips/0_theo_0'\]"):
        ManifestDataset(path, SHORT, train=True)
    assert len(ManifestDataset(path, SHORT, train=False)) == 1


def test_bad_file_is_skipped_and_logged_by_name(
    corrupt_manifest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = ManifestDataset(corrupt_manifest, SHORT, train=True)
    with caplog.at_level(logging.WARNING):
        item = dataset[3]
    assert isinstance(item, SkippedItem)
    assert item.key == "clips/broken"
    assert item.source.endswith("broken.flac")
    assert "corrupt" in item.reason or "not an audio file" in item.reason
    assert "broken.flac" in caplog.text
    batch = ClapCollator(toy_tokenize)([dataset[i] for i in range(6)])
    assert batch["waveform"].shape == (5, SHORT.clip_samples)
    assert batch["keys"] == [dataset.records[i].key for i in (0, 1, 2, 4, 5)]
    assert batch["skipped"] == [item]
    assert batch["input_ids"].shape[0] == 5
    tally = SkippedFiles()
    tally.update(batch["skipped"])
    tally.update(batch["skipped"])
    assert tally.count == 2
    assert list(tally.reasons) == [item.source]


def test_bad_file_raises_when_asked(corrupt_manifest: Path) -> None:
    dataset = ManifestDataset(corrupt_manifest, SHORT, train=True, on_error="raise")
    with pytest.raises(AudioLoadError, match=r"broken\.flac"):
        dataset[3]
    with pytest.raises(AudioLoadError, match=r"broken\.flac"):
        ManifestDataset(corrupt_manifest, SHORT, train=False)[3]  # raise by default in eval
    with pytest.raises(ValueError, match="on_error must be"):
        ManifestDataset(corrupt_manifest, SHORT, train=True, on_error="ignore")  # type: ignore[arg-type]


def test_cache_returns_the_decoded_clip_without_reading_again(manifest: Path) -> None:
    dataset = ManifestDataset(manifest, SHORT, train=True, cache_audio=True)
    first = dataset[2]
    dataset.records[2].audio.unlink()
    second = dataset[2]
    assert not isinstance(first, SkippedItem)
    assert not isinstance(second, SkippedItem)
    assert torch.equal(first["waveform"], second["waveform"])


def test_collator_with_all_items_skipped() -> None:
    skipped = SkippedItem(key="a", source="a.wav", reason="bad")
    batch = ClapCollator(toy_tokenize)([skipped])
    assert batch["waveform"].shape[0] == 0
    assert "input_ids" not in batch
    assert batch["skipped"] == [skipped]


def test_worker_processes_give_the_same_batches(corrupt_manifest: Path) -> None:
    dataset = ManifestDataset(corrupt_manifest, SHORT, train=True, seed=1)
    dataset.set_epoch(2)
    loaders = [
        DataLoader(dataset, batch_size=4, collate_fn=ClapCollator(toy_tokenize), num_workers=w)
        for w in (0, 2)
    ]
    serial, parallel = (list(loader) for loader in loaders)
    assert len(serial) == len(parallel) == 4
    for a, b in zip(serial, parallel, strict=True):
        assert a["keys"] == b["keys"]
        assert torch.equal(a["waveform"], b["waveform"])
        assert torch.equal(a["input_ids"], b["input_ids"])
    assert [s.key for batch in parallel for s in batch["skipped"]] == ["clips/broken"]
