"""The bad-audio corpus: every kind of bad file, through ``embed_audio``, ``zero_shot``, the CLI,
a training manifest and tar shards.

Each bad file must be refused with an ``AudioLoadError`` (a ``ValueError``) whose message names
the file and the problem; files that are unusual but valid (silent, another sample rate, several
channels) must embed to finite vectors equal to their well-formed equivalent. A training set
skips each bad file by name (a cut tar shard: the rest of the shard) and keeps every good clip.
"""

from __future__ import annotations

import re
import tarfile
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from clapkit.audio import AudioLoadError, load_audio
from clapkit.core import ClapModel
from clapkit.core.cli import main as clapkit_cli
from clapkit.data import (
    ClapCollator,
    ManifestDataset,
    ManifestRecord,
    ShardDataset,
    SkippedFiles,
    SkippedItem,
    write_shards,
)

RATE = 8000


def _tone(seconds: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _truncated_wav(path: Path) -> None:
    sf.write(path, _tone(1.0), RATE, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still promises every frame


def _truncated_flac(path: Path) -> None:
    sf.write(path, _tone(2.0), RATE, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _nan_wav(path: Path) -> None:
    samples = _tone()
    samples[100:110] = np.nan
    sf.write(path, samples, RATE, subtype="FLOAT")


def _zero_frames(path: Path) -> None:
    with wave.open(str(path), "wb") as out:  # a valid header and no frame
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)


# name -> (how to write it, the file's suffix, what the message must say)
BAD: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "empty": (lambda p: p.write_bytes(b""), ".wav", "file is empty (0 bytes)"),
    "text": (lambda p: p.write_text("hello, I am not audio\n" * 20), ".wav", "not an audio file"),
    "png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)), ".png", "not an audio"),
    "random bytes": (
        lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
        ".flac",
        "not an audio file",
    ),
    "corrupt header": (
        lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage"),
        ".wav",
        "corrupt",
    ),
    "truncated wav": (_truncated_wav, ".wav", "truncated: its header promises 8000 frames"),
    "truncated flac": (_truncated_flac, ".flac", "unreadable or corrupt audio"),
    "nan samples": (_nan_wav, ".wav", "non-finite samples"),
    "zero frames": (_zero_frames, ".wav", "zero samples"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_refused_by_name(case: str, tmp_path: Path, model: ClapModel) -> None:
    write, suffix, problem = BAD[case]
    bad = tmp_path / f"bad file{suffix}"  # a space: the name must come through whole
    write(bad)
    with pytest.raises(AudioLoadError) as caught:
        model.embed_audio([bad])
    message = str(caught.value)
    assert message.startswith(f"{bad}: "), message
    assert problem in message, message
    # the same error from a list of good files with the bad one among them
    good = tmp_path / "good.wav"
    sf.write(good, _tone(), RATE)
    with pytest.raises(AudioLoadError, match="bad file"):
        model.zero_shot([good, bad, good], ["one", "two"])


def test_missing_file_and_folder(tmp_path: Path, model: ClapModel) -> None:
    with pytest.raises(AudioLoadError, match=r"nowhere\.wav: file not found"):
        model.embed_audio([tmp_path / "nowhere.wav"])
    with pytest.raises(AudioLoadError, match="is a directory"):
        model.embed_audio([tmp_path])


def test_a_file_too_long_is_refused_before_decoding(tmp_path: Path) -> None:
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(RATE * 30, dtype=np.float32), RATE)
    with pytest.raises(AudioLoadError, match=r"long\.wav: .*max_seconds=10"):
        load_audio(long, RATE, max_seconds=10)


def test_valid_but_unusual_files_embed_as_their_plain_form(
    tmp_path: Path, model: ClapModel
) -> None:
    tone = _tone()
    plain = tmp_path / "plain.wav"
    sf.write(plain, tone, RATE, subtype="FLOAT")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros_like(tone), RATE)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([tone, tone], axis=1), RATE, subtype="FLOAT")
    six = tmp_path / "six.flac"
    sf.write(six, np.stack([tone] * 6, axis=1), RATE, format="FLAC", subtype="PCM_24")
    fast = tmp_path / "fast.wav"
    sf.write(fast, _tone(rate=4 * RATE), 4 * RATE, subtype="FLOAT")
    embeds = model.embed_audio([plain, silent, stereo, six, fast])
    assert torch.isfinite(embeds).all()
    assert torch.allclose(embeds[2], embeds[0], atol=1e-6)  # mix-down of equal channels
    assert torch.allclose(embeds[3], embeds[0], atol=1e-3)  # 24-bit quantisation
    # another rate is resampled to the model's (torchaudio's sinc resampler)
    resampled = torchaudio.functional.resample(
        torch.from_numpy(_tone(rate=4 * RATE)), 4 * RATE, RATE
    )
    assert torch.allclose(embeds[4], model.embed_audio(resampled)[0], atol=1e-5)


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        ([], ValueError, "no texts given"),
        ([None], TypeError, r"texts\[0\] is a NoneType, not a str: None"),
        (["fine", 123], TypeError, r"texts\[1\] is a int, not a str: 123"),
        (["fine", b"bytes"], TypeError, r"texts\[1\] is a bytes"),
    ],
)
def test_bad_texts_are_named(
    model: ClapModel, texts: list[object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        model.embed_text(texts)  # type: ignore[arg-type]


def test_empty_text_is_embedded_as_the_special_tokens_alone(model: ClapModel) -> None:
    embeds = model.embed_text(["", "   ", "one"])
    assert torch.isfinite(embeds).all()
    assert torch.allclose(embeds[0], embeds[1])


def test_cli_names_each_kind_of_bad_file(
    model_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for case, (write, suffix, problem) in sorted(BAD.items()):
        bad = tmp_path / f"{case.replace(' ', '_')}{suffix}"
        write(bad)
        status = clapkit_cli(["embed", str(model_folder), str(bad), "--output",
                              str(tmp_path / "out.safetensors")])  # fmt: skip
        err = capsys.readouterr().err
        assert status == 1, case
        assert str(bad) in err, (case, err)
        assert problem in err, (case, err)
        assert "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()  # nothing half-written


def _corpus(folder: Path) -> tuple[list[Path], dict[Path, str]]:
    """Two good clips and every bad file of ``BAD`` (in ``folder``), and each bad file's problem."""
    folder.mkdir()
    good = [folder / "good_a.wav", folder / "good_b.flac"]
    sf.write(good[0], _tone(), RATE, subtype="FLOAT")
    sf.write(good[1], _tone(2.0), RATE, format="FLAC")
    bad = {}
    for case, (write, suffix, problem) in sorted(BAD.items()):
        path = folder / f"{case.replace(' ', '_')}{'.wav' if suffix == '.png' else suffix}"
        write(path)
        bad[path] = problem
    return good, bad


def test_a_training_set_skips_each_bad_file_by_name_and_keeps_the_rest(
    tmp_path: Path, model: ClapModel
) -> None:
    frontend = model.frontend
    good, bad = _corpus(tmp_path / "clips")
    paths = [good[0], *bad, good[1]]
    records = [ManifestRecord(audio=p, captions=("a tone",), key=p.stem) for p in paths]
    train = ManifestDataset(records, frontend, train=True)  # training skips by default
    batch = ClapCollator()([train[i] for i in range(len(train))])
    assert batch["keys"] == ["good_a", "good_b"]  # nothing else lost
    assert batch["waveform"].shape == (2, frontend.clip_samples)
    assert torch.isfinite(batch["waveform"]).all()
    reasons = {item.source: item.reason for item in batch["skipped"]}
    assert set(reasons) == {str(p) for p in bad}
    for path, problem in bad.items():
        assert problem in reasons[str(path)], (path, reasons[str(path)])
    tally = SkippedFiles()
    tally.update(batch["skipped"])
    head, *lines = tally.summary()
    assert head == f"{len(bad)} skips over 1 epoch (epoch 0: {len(bad)}) of {len(bad)} files:"
    assert all(any(f"`{p}`" in line for line in lines) for p in bad)
    # asked to stop on a bad file instead, it names the file
    strict = ManifestDataset(records, frontend, train=True, on_error="raise")
    with pytest.raises(AudioLoadError, match=f"^{re.escape(str(paths[1]))}: "):
        [strict[i] for i in range(len(strict))]


def test_tar_shards_skip_a_bad_member_or_the_rest_of_a_cut_shard(
    tmp_path: Path, model: ClapModel
) -> None:
    good, bad = _corpus(tmp_path / "clips")
    records = [ManifestRecord(audio=p, captions=("a tone",), key=p.stem) for p in [*good, *bad]]
    (shard,) = write_shards(records, tmp_path / "shards", samples_per_shard=len(records))
    items = list(ShardDataset(shard, model.frontend, train=False, on_error="skip"))
    assert [i["key"] for i in items if isinstance(i, dict)] == ["good_a", "good_b"]
    skipped = {i.source: i.reason for i in items if isinstance(i, SkippedItem)}
    assert set(skipped) == {f"{shard}:{p.stem}" for p in bad}
    for path, problem in bad.items():
        if path.stem != "empty":  # a member of 0 bytes reads as "no bytes given"
            assert problem in skipped[f"{shard}:{path.stem}"], path
        assert skipped[f"{shard}:{path.stem}"].startswith(f"AudioLoadError: {shard}:{path.stem}: ")
    # a shard cut off at a member boundary (where tarfile stops without a word) or inside a
    # member: the clips before the cut are kept, the rest of the shard is skipped by name
    whole = shard.read_bytes()
    boundary = _member_offset(shard, "good_b.json")  # good_b's caption is cut off
    for cut, problem in [
        (boundary, f"cut off or corrupt after byte {boundary}: no end-of-archive block"),
        (boundary + 700, "unexpected end of data"),
    ]:
        shard.write_bytes(whole[:cut])
        items = list(ShardDataset(shard, model.frontend, train=False, on_error="skip"))
        assert [i["key"] for i in items if isinstance(i, dict)] == ["good_a"], cut
        assert isinstance(items[-1], SkippedItem)
        assert (items[-1].source, items[-1].reason[: len(problem)]) == (str(shard), problem)
        with pytest.raises(ValueError, match=re.escape(f"{shard}: unreadable shard ({problem}")):
            list(ShardDataset(shard, model.frontend, train=False))


def _member_offset(shard: Path, name: str) -> int:
    """Byte offset of member ``name``'s header in a tar file."""
    with tarfile.open(shard) as tar:
        return next(m.offset for m in tar.getmembers() if m.name == name)
