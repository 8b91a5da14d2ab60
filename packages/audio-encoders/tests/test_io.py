"""load_audio on real and broken files; fit_length and windows."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from clapkit.audio import AudioLoadError, fit_length, load_audio, load_crop, windows
from clapkit.audio import io as io_module


def _sine(rate: int, seconds: float, hz: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * hz * t).astype(np.float32)
    return np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)


def _peak_hz(wave: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(wave.double()).abs()
    return float(spectrum.argmax()) * rate / wave.shape[0]


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"),
    [
        (".wav", "WAV", "PCM_16"),
        (".wav", "WAV", "FLOAT"),
        (".flac", "FLAC", "PCM_16"),
        (".ogg", "OGG", "VORBIS"),
        (".mp3", "MP3", "MPEG_LAYER_III"),
    ],
)
def test_formats_decode_and_resample(tmp_path: Path, suffix: str, fmt: str, subtype: str) -> None:
    path = tmp_path / f"tone{suffix}"
    sf.write(path, _sine(16000, 1.0, 440.0), 16000, format=fmt, subtype=subtype)
    wave = load_audio(path, 32000)
    assert wave.dtype == torch.float32
    assert wave.ndim == 1
    # Lossy codecs may add encoder delay; the length stays about one second at the new rate.
    assert abs(wave.shape[0] - 32000) < 32000 * 0.1
    assert abs(_peak_hz(wave, 32000) - 440.0) < 3.0


def test_real_clip_path_bytes_and_file_object_agree(fsdd_files: list[Path]) -> None:
    path = fsdd_files[0]
    from_path = load_audio(path, 8000)
    from_bytes = load_audio(path.read_bytes(), 8000)
    with path.open("rb") as handle:
        from_handle = load_audio(handle, 8000)
    reference, rate = sf.read(path, dtype="float32")
    assert rate == 8000
    torch.testing.assert_close(from_path, torch.from_numpy(reference))
    torch.testing.assert_close(from_bytes, from_path)
    torch.testing.assert_close(from_handle, from_path)


def test_resampling_matches_torchaudio_length(fsdd_files: list[Path]) -> None:
    native = load_audio(fsdd_files[1], 8000)
    resampled = load_audio(fsdd_files[1], 44100)
    assert resampled.shape[0] == int(np.ceil(native.shape[0] * 44100 / 8000))
    # Same energy (no gain change) within the resampler's pass band.
    assert abs(resampled.square().mean() / native.square().mean() - 1.0) < 0.05


def test_multichannel_is_averaged_not_concatenated(tmp_path: Path) -> None:
    stereo = _sine(16000, 0.5, 300.0, channels=2)
    stereo[:, 1] = -0.25 * stereo[:, 0]
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    wave = load_audio(path, 16000)
    assert wave.shape[0] == stereo.shape[0]
    torch.testing.assert_close(wave, torch.from_numpy(stereo.mean(axis=1)))


def test_silence_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros((8000, 1), np.float32), 8000)
    wave = load_audio(path, 8000)
    assert wave.shape == (8000,)
    assert wave.abs().max() == 0


def _error(source: object, sample_rate: int = 16000) -> AudioLoadError:
    with pytest.raises(AudioLoadError) as info:
        load_audio(source, sample_rate)  # type: ignore[arg-type]
    return info.value


def test_missing_file_is_named(tmp_path: Path) -> None:
    error = _error(tmp_path / "nope.wav")
    assert str(tmp_path / "nope.wav") in str(error)
    assert "not found" in error.cause


def test_directory_and_empty_file(tmp_path: Path) -> None:
    assert "directory" in _error(tmp_path).cause
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert "empty" in _error(empty).cause
    assert "no bytes" in _error(b"").cause


def test_text_file_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio at all, just some text\n" * 20)
    error = _error(path)
    assert str(path) in str(error)
    assert "not an audio file" in error.cause


def test_corrupt_file_is_reported(tmp_path: Path, fsdd_files: list[Path]) -> None:
    data = fsdd_files[0].read_bytes()
    path = tmp_path / "truncated.flac"
    path.write_bytes(data[:60])  # header cut mid-way
    error = _error(path)
    assert str(path) in str(error)
    assert "corrupt" in error.cause or "not an audio file" in error.cause
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    assert str(garbage) in str(_error(garbage))


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_a_wav_cut_short_is_an_error_that_names_the_frames(tmp_path: Path, subtype: str) -> None:
    wave = np.random.default_rng(0).normal(0, 0.1, (16000, 2)).astype("float32")
    full = tmp_path / "full.wav"
    sf.write(full, wave, 16000, subtype=subtype)
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    message = r"cut.wav: truncated: its header promises 16000 frames, the file holds (\d+) "
    with pytest.raises(AudioLoadError, match=message + r"\(0\.50 s of 1\.00 s\)") as error:
        load_audio(cut, 16000)
    held = int(re.search(message, str(error.value))[1])  # type: ignore[index]
    assert 7900 < held < 8000  # half the bytes, less the header
    with pytest.raises(AudioLoadError, match="truncated"):
        load_audio(io.BytesIO(data[: len(data) // 2]), 16000)
    assert load_audio(full, 16000).shape == (16000,)  # whole files and their bytes still load
    assert load_audio(data, 16000).shape == (16000,)


def test_a_flac_cut_short_is_an_error(tmp_path: Path) -> None:
    full = tmp_path / "full.flac"
    sf.write(full, np.random.default_rng(0).normal(0, 0.1, 16000).astype("float32"), 16000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioLoadError, match=r"cut.flac: unreadable or corrupt audio"):
        load_audio(cut, 16000)


def test_zero_samples(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)
    assert "zero samples" in _error(path).cause


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    wave = _sine(16000, 0.1, 440.0)
    wave[10, 0] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    error = _error(path)
    assert "non-finite" in error.cause
    assert "1 " in error.cause


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_a_crop_of_float_samples_is_checked_for_nan(tmp_path: Path, subtype: str) -> None:
    wave = _sine(16000, 1.0, 440.0)
    wave[9000, 0] = np.nan
    path = tmp_path / "bad.wav"
    sf.write(path, wave, 16000, subtype=subtype)
    with pytest.raises(AudioLoadError, match=r"bad.wav: contains 1 non-finite"):
        load_crop(path, 16000, 8000, lambda length: 8000)  # the crop holds the NaN


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"),
     ("WAV", "ULAW"), ("WAV", "ALAW"), ("FLAC", "PCM_S8"), ("FLAC", "PCM_16"),
     ("FLAC", "PCM_24"), ("AIFF", "PCM_S8")],
)  # fmt: skip
def test_integer_subtypes_decode_to_finite_samples_unchecked(
    tmp_path: Path, fmt: str, subtype: str
) -> None:
    """The NaN/inf pass is skipped where the file holds integers: every extreme code decodes
    finite, so nothing a check would catch can come from these subtypes."""
    path = tmp_path / f"extremes.{fmt.lower()}"
    # full scale both ways, the codes next to them, zero (ULAW/ALAW map onto their own codes)
    extremes = np.array([1.0, -1.0, 0.99999, -0.99999, 0.0, 2.0**-20] * 50, np.float64)
    sf.write(path, extremes[:, None], 16000, format=fmt, subtype=subtype)
    assert io_module._integer_samples(sf.info(str(path)).subtype)
    samples = load_audio(path, 16000)
    assert torch.isfinite(samples).all()
    assert samples.abs().max() <= 1.0


def test_file_object_name_in_error() -> None:
    handle = io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEjunk")
    handle.name = "upload.wav"
    assert "upload.wav" in str(_error(handle))


def test_huge_file_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros((8000 * 600, 1), np.float32), 8000)  # ten minutes
    with pytest.raises(AudioLoadError, match=r"too long: 600\.0 s"):
        load_audio(path, 8000, max_seconds=60)
    wave = load_audio(path, 8000)
    assert wave.shape == (8000 * 600,)
    assert windows(wave, 8000 * 10, 8000 * 10).shape == (60, 80000)


def test_bad_sample_rate_argument(fsdd_files: list[Path]) -> None:
    with pytest.raises(ValueError, match="positive int"):
        load_audio(fsdd_files[0], 0)


def test_fit_length_repeat_is_msclap_tiling() -> None:
    wave = torch.arange(1.0, 4.0)
    torch.testing.assert_close(
        fit_length(wave, 8, "repeat"), torch.tensor([1.0, 2, 3, 1, 2, 3, 1, 2])
    )
    torch.testing.assert_close(
        fit_length(wave, 8, "repeatpad"), torch.tensor([1.0, 2, 3, 1, 2, 3, 0, 0])
    )
    torch.testing.assert_close(fit_length(wave, 5, "pad"), torch.tensor([1.0, 2, 3, 0, 0]))
    torch.testing.assert_close(fit_length(wave, 2, "repeat"), torch.tensor([1.0, 2]))


@pytest.mark.parametrize("length", [1, 2, 3, 7, 100, 299, 300])
def test_fills_equal_whole_tilings_and_hold_only_the_clip(length: int) -> None:
    """Fills are copied into one clip-long buffer; the samples equal tiling whole copies."""
    wave = torch.randn(2, length, generator=torch.Generator().manual_seed(length))
    n = 300
    tiled = wave.repeat(1, -(-n // length))
    whole = n // length * length
    expected = {
        "repeat": tiled[:, :n],
        "repeatpad": torch.cat([tiled[:, :whole], torch.zeros(2, n - whole)], dim=1),
    }
    for mode, want in expected.items():
        got = fit_length(wave, n, mode)
        assert torch.equal(got, want), mode
        assert got.untyped_storage().nbytes() == 4 * 2 * n, mode
        assert torch.equal(fit_length(wave[0], n, mode), want[0]), mode


def test_fit_length_crops() -> None:
    wave = torch.arange(10.0)
    torch.testing.assert_close(fit_length(wave, 4, "center_crop"), torch.tensor([3.0, 4, 5, 6]))
    first = fit_length(wave, 4, "random_crop", torch.Generator().manual_seed(3))
    again = fit_length(wave, 4, "random_crop", torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)
    assert torch.equal(first, torch.arange(first[0].item(), first[0].item() + 4))
    starts = {
        int(fit_length(wave, 4, "random_crop", torch.Generator().manual_seed(s))[0])
        for s in range(40)
    }
    assert starts == set(range(7))  # every start position reachable, none beyond the end
    short = fit_length(torch.ones(3), 5, "random_crop", fill="repeat")
    torch.testing.assert_close(short, torch.ones(5))


def test_fit_length_batched_and_errors() -> None:
    batch = torch.randn(2, 3)
    assert fit_length(batch, 7, "repeat").shape == (2, 7)
    torch.testing.assert_close(fit_length(batch, 7, "repeat")[:, 3:6], batch)
    with pytest.raises(ValueError, match="unknown fit mode"):
        fit_length(batch, 7, "loop")
    with pytest.raises(ValueError, match="empty"):
        fit_length(torch.zeros(0), 7)


def test_windows_cover_everything() -> None:
    wave = torch.arange(10.0)
    cut = windows(wave, 4, 3)
    assert cut.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    cut = windows(wave, 4, 4)
    assert cut.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert windows(wave, 10, 5).shape == (1, 10)
    with pytest.raises(ValueError, match="fit_length"):
        windows(wave, 11, 5)
