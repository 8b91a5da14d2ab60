"""Crop-only decoding (load_crop), the resampling kernel cache, and FFmpeg's formats."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

import clapkit.audio.io as audio_io
import clapkit.audio.resampling as resample_module
from clapkit.audio import AudioLoadError, load_audio, load_crop
from clapkit.audio.resampling import resample, resampled_length, resampler

FORMATS = [
    (".wav", "WAV", "PCM_16"),
    (".flac", "FLAC", "PCM_24"),
    (".ogg", "OGG", "VORBIS"),
    (".mp3", "MP3", "MPEG_LAYER_III"),
]


def _noise(rate: int, seconds: float, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(rate)
    return (0.2 * rng.standard_normal((int(rate * seconds), channels))).astype(np.float32)


@pytest.mark.parametrize(("suffix", "fmt", "subtype"), FORMATS)
@pytest.mark.parametrize(("rate", "target"), [(16000, 16000), (44100, 48000), (16000, 44100)])
def test_a_crop_equals_the_same_samples_of_a_whole_decode(
    tmp_path: Path, suffix: str, fmt: str, subtype: str, rate: int, target: int
) -> None:
    path = tmp_path / f"noise{suffix}"
    sf.write(path, _noise(rate, 3.0), rate, format=fmt, subtype=subtype)
    whole = load_audio(path, target)
    n = target // 8
    # the start, inside, and the very end (a Vorbis stream's last page seeks wrong in libsndfile)
    for first in (0, 12345, whole.shape[0] - n):
        crop = load_crop(path, target, n, lambda length, first=first: first)
        assert crop.shape == (n,)
        if rate == target:  # the same frames of the same decoder: bit-identical
            assert torch.equal(crop, whole[first : first + n]), first
        else:  # resampling a window, not the whole: float32 sums in another order
            torch.testing.assert_close(crop, whole[first : first + n], rtol=0, atol=3e-7)


def test_start_is_asked_with_the_length_at_the_target_rate(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    sf.write(path, _noise(16000, 2.0, channels=1), 16000)
    lengths: list[int] = []
    load_crop(path, 44100, 1000, lambda length: lengths.append(length) or 0)
    assert lengths == [resampled_length(32000, 16000, 44100)] == [88200]
    with pytest.raises(ValueError, match=r"crop start 87201 outside \[0, 87200\] for .*a\.flac"):
        load_crop(path, 44100, 1000, lambda length: length - 999)


def test_a_clip_not_longer_than_the_crop_comes_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, _noise(8000, 0.5), 8000)
    asked: list[int] = []
    wave = load_crop(path, 8000, 4000, lambda length: asked.append(length) or 0)
    assert asked == []  # nothing to choose
    assert torch.equal(wave, load_audio(path, 8000))


@pytest.mark.parametrize(("fmt", "subtype"), [("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_a_crop_at_the_files_rate_keeps_no_more_than_its_samples(
    tmp_path: Path, fmt: str, subtype: str
) -> None:
    """At the file's rate the decoded frames are the crop: kept without a copy, unless the
    decoder read more (Vorbis reads from up to 2 s earlier): then only the crop is kept."""
    import tracemalloc

    path = tmp_path / f"mono.{fmt.lower()}"
    sf.write(path, _noise(16000, 6.0, channels=1), 16000, format=fmt, subtype=subtype)
    n = 16000
    tracemalloc.start()  # sees numpy's buffers (what soundfile decodes into), not torch's
    crop = load_crop(path, 16000, n, lambda length: length - n)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert torch.equal(crop, load_audio(path, 16000)[-n:])
    if fmt == "FLAC":  # numpy's buffer of exactly the crop, not copied
        assert 4 * n <= held < 4 * n + 4096
    else:  # the 2 s lead dropped: the crop is a copy in torch's memory, numpy's buffer freed
        assert held < 4096
    assert crop.untyped_storage().nbytes() == 4 * n


def test_a_crop_of_a_long_file_holds_only_its_own_samples(tmp_path: Path) -> None:
    """60 s at 44.1 kHz, a 7 s crop: 1.2 MB kept (a view into the whole file kept 10.6 MB)."""
    path = tmp_path / "minute.flac"
    sf.write(path, _noise(44100, 60.0), 44100, subtype="PCM_16")
    n = 7 * 44100
    crop = load_crop(path, 44100, n, lambda length: length // 3)
    assert crop.untyped_storage().nbytes() == 4 * n
    data = path.read_bytes()  # bytes (a shard member) too, and a 48 kHz target
    crop = load_crop(data, 48000, 7 * 48000, lambda length: length - 7 * 48000)
    assert crop.untyped_storage().nbytes() == 4 * 7 * 48000


def test_a_file_cut_short_inside_the_crop_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    sf.write(path, _noise(8000, 4.0, channels=1), 8000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioLoadError, match=r"cut\.flac: (truncated|unreadable or corrupt)"):
        load_crop(path, 8000, 8000, lambda length: length - 8000)


def test_the_cached_kernel_gives_torchaudio_s_samples_and_is_built_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: list[tuple[int, int]] = []
    real = resample_module.Resample

    def counting(source: int, target: int, **kwargs: object) -> torch.nn.Module:
        built.append((source, target))
        return real(source, target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(resample_module, "Resample", counting)
    resampler.cache_clear()
    wave = torch.from_numpy(_noise(16000, 1.0, channels=1)[:, 0])
    for _ in range(3):
        assert torch.equal(resample(wave, 16000, 48000), AF.resample(wave, 16000, 48000))
    path = tmp_path / "clip.wav"
    sf.write(path, wave.numpy(), 16000)
    load_audio(path, 48000)  # the decoding path uses the same cache
    load_crop(path, 48000, 4800, lambda length: 100)
    assert built == [(16000, 48000)]
    assert resample(wave, 16000, 16000) is wave
    torch.testing.assert_close(
        resample(wave, 44100, 32000), AF.resample(wave, 44100, 32000), rtol=0, atol=0
    )
    assert built == [(16000, 48000), (44100, 32000)]


M4A_HEAD = b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00M4A isomiso2"
"""The ``ftyp`` box an M4A file opens with (brand ``M4A ``)."""


def _m4a(seconds: float, rate: int) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"  # type: ignore[union-attr]
        samples = _noise(rate, seconds, channels=1)[:, 0] * 0.5
        for i in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, i : i + 1024], "fltp", "mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):  # type: ignore[union-attr]
                out.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            out.mux(packet)
    return buffer.getvalue()


def test_m4a_is_decoded_through_ffmpeg_and_cropped(tmp_path: Path) -> None:
    path = tmp_path / "clip.m4a"
    path.write_bytes(_m4a(2.0, 44100))
    whole = load_audio(path, 44100)
    assert 88200 <= whole.shape[0] <= 88200 + 4096  # AAC adds its priming frames
    assert 0.05 < whole.abs().max() < 1.5
    crop = load_crop(path.read_bytes(), 16000, 8000, lambda length: 3000)
    assert torch.equal(crop, load_audio(path, 16000)[3000:11000])
    assert crop.untyped_storage().nbytes() == 4 * 8000


def test_without_ffmpeg_an_m4a_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio_io, "ffmpeg_available", lambda: False)
    path = tmp_path / "podcast.m4a"
    path.write_bytes(M4A_HEAD + bytes(2000))  # what an M4A starts with is enough to name it
    with pytest.raises(AudioLoadError) as caught:
        load_audio(path, 16000)
    assert str(caught.value) == (
        f"{path}: M4A (AAC/ALAC in MP4) is a format libsndfile cannot decode; to read it: "
        "pip install 'clapkit-audio-encoders[ffmpeg]' (PyAV, with FFmpeg in its wheels)"
    )
    # recognised by its bytes whatever its name; garbage named .m4a is still refused by name
    with pytest.raises(AudioLoadError, match=r"<\d+ bytes>: M4A .* cannot decode"):
        load_audio(path.read_bytes(), 16000)


def test_a_corrupt_m4a_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.m4a"
    path.write_bytes(_m4a(1.0, 16000)[:300])
    with pytest.raises(AudioLoadError, match=r"broken\.m4a: .*M4A"):
        load_audio(path, 16000)
