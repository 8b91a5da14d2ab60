"""Arrays in: numpy arrays, tensors at another rate, HF datasets audio dicts, ragged lists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from clapkit.audio import AudioLoadError


def _speech(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A deterministic noisy chirp (float64, as HF datasets and librosa hand out)."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0.0, 0.05, t.shape)
    return 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + noise


def test_a_numpy_array_equals_the_same_tensor(tiny_model: Any) -> None:
    wave = _speech(0.8, 8000, 0)
    expected = tiny_model.embed_audio(torch.from_numpy(wave).float())
    assert torch.equal(tiny_model.embed_audio(wave), expected)
    assert torch.equal(tiny_model.embed_audio(wave.astype(np.float32)), expected)
    batch = np.stack([wave, wave[::-1].copy()])
    assert torch.allclose(tiny_model.embed_audio(batch)[0], expected[0], atol=1e-6)


def test_sample_rate_resamples_as_load_audio_does(tiny_model: Any, tmp_path: Path) -> None:
    """An array at 16 kHz gives the embedding of the same samples written to a file and loaded."""
    wave = _speech(1.7, 16000, 1).astype(np.float32)  # longer than the 1 s clip: windows
    path = tmp_path / "at16k.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    from_file = tiny_model.embed_audio([path])
    assert torch.equal(tiny_model.embed_audio([wave], sample_rate=16000), from_file)
    as_tensor = tiny_model.embed_audio(torch.from_numpy(wave), sample_rate=16000)
    assert torch.equal(as_tensor, from_file)
    resampled = AF.resample(torch.from_numpy(wave), 16000, 8000)
    assert torch.equal(tiny_model.embed_audio(resampled), from_file)
    # without sample_rate the array is taken at the model's rate: a different embedding
    assert not torch.allclose(tiny_model.embed_audio([wave]), from_file)


def test_hf_datasets_audio_dicts_use_their_own_rate(tiny_model: Any) -> None:
    slow, fast = _speech(0.6, 16000, 2), _speech(2.5, 8000, 3)
    items = [
        {"path": None, "array": slow, "sampling_rate": 16000},  # datasets' Audio feature
        {"array": fast.tolist(), "sampling_rate": np.int64(8000)},
    ]
    embeds = tiny_model.embed_audio(items, batch_size=1)  # batch of 1: bit-identical
    assert torch.equal(embeds[0], tiny_model.embed_audio(slow, sample_rate=16000)[0])
    alone = tiny_model.embed_audio(torch.tensor(fast).float(), batch_size=1)
    assert torch.equal(embeds[1], alone[0])


def test_ragged_lists_mix_lengths_rates_and_kinds(tiny_model: Any, fsdd_files: list[Path]) -> None:
    """Short (filled), long (mean of windows) and files together: each as if embedded alone."""
    short, long = _speech(0.3, 8000, 4), _speech(3.4, 8000, 5)
    mixed = [short, torch.from_numpy(long).float(), fsdd_files[0]]
    embeds = tiny_model.embed_audio(mixed, batch_size=2)
    for index, item in enumerate(mixed):
        assert torch.allclose(embeds[index], tiny_model.embed_audio([item])[0], atol=1e-6)
    center = tiny_model.embed_audio([long], long_audio="center")
    assert not torch.allclose(center, embeds[1:2])


def test_zero_shot_and_retrieve_take_arrays_at_a_rate(tiny_model: Any) -> None:
    waves = [_speech(1.2, 22050, 6), _speech(0.5, 22050, 7)]
    at_model_rate = [AF.resample(torch.from_numpy(w).float(), 22050, 8000) for w in waves]
    labels = ["one", "two", "three"]
    probs = tiny_model.zero_shot(waves, labels, sample_rate=22050)
    assert torch.equal(probs, tiny_model.zero_shot(at_model_rate, labels))
    hits = tiny_model.retrieve(["a man says one"], waves, k=2, sample_rate=22050)
    expected = tiny_model.retrieve(["a man says one"], at_model_rate, k=2)
    assert torch.equal(hits.indices, expected.indices)
    assert torch.equal(hits.scores, expected.scores)


@pytest.mark.parametrize(
    ("audio", "kwargs", "error", "message"),
    [
        ([np.zeros(800), np.zeros(800, dtype=np.int16)], {}, TypeError,
         "audio item 1 is a numpy array of int16, not of floats: scale integer PCM to [-1, 1] "
         "first (e.g. x / 32768 for int16)"),
        ([{"array": np.zeros(800)}], {}, ValueError,
         "audio item 0 is a dict without ['sampling_rate']: an audio dict holds 'array' and "
         "'sampling_rate' (HF datasets' Audio feature); it has ['array']"),
        ([{"array": np.zeros(800), "sampling_rate": 0}], {}, ValueError,
         "audio item 0: the sample rate must be a positive int, got 0"),
        (np.zeros(800), {"sample_rate": 16000.0}, ValueError,
         "sample_rate: the sample rate must be a positive int, got 16000.0"),
        ([np.zeros(800), np.zeros((2, 800))], {}, ValueError,
         "audio item 1 must be a [t] waveform, got shape (2, 800)"),
        (np.zeros((1, 2, 800)), {}, ValueError,
         "an audio ndarray must be [t] or [b, t], got shape (1, 2, 800)"),
        ([np.zeros(800), np.array([0.0, np.nan])], {}, AudioLoadError,
         "audio item 1 ([2] array): contains 1 non-finite samples (NaN or inf), the first at "
         "sample 1"),
        ([{"array": np.zeros(0), "sampling_rate": 8000}], {}, ValueError,
         "audio item 0['array'] is an empty waveform (0 samples)"),
        ([np.zeros(800), 3], {}, TypeError,
         "audio item 1 is a int, not a path, bytes, waveform or audio dict"),
    ],
    ids=["int16", "no rate", "zero rate", "float rate", "2-d item", "3-d", "nan", "empty", "int"],
)  # fmt: skip
def test_bad_arrays_are_named_by_index(
    tiny_model: Any, audio: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        tiny_model.embed_audio(audio, **kwargs)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        tiny_model.zero_shot(audio, ["one", "two"], **kwargs)
