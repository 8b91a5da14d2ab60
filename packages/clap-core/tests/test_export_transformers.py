"""``ClapModel.to_transformers``: the inverse of ``from_transformers``, run by transformers' own
zero-shot pipeline."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from clapkit.core import ClapModel, transformers_blockers


def test_round_trip_gives_back_every_transformers_weight(
    tiny_hf_clap: Any, tiny_hf_folder: Path
) -> None:
    exported = ClapModel.from_transformers(tiny_hf_folder).to_transformers()
    original, back = tiny_hf_clap.state_dict(), exported.state_dict()
    assert sorted(back) == sorted(original)
    for key, value in original.items():
        if key == "logit_scale_t":  # clapkit keeps one scale: the audio side's
            assert torch.equal(back[key], original["logit_scale_a"])
        else:
            assert torch.equal(back[key], value), key


def test_transformers_pipeline_on_the_exported_folder_gives_clapkits_scores(
    tiny_hf_folder: Path, tmp_path: Path
) -> None:
    from transformers import pipeline

    from clapkit.audio import LAION_FRONTEND

    # 2 s clips: what the tiny HTSAT's 64 x 64 spectrogram image holds at 48 kHz, hop 480
    frontend = dataclasses.replace(LAION_FRONTEND, n_mels=16, clip_seconds=2.0)
    model = ClapModel.from_transformers(tiny_hf_folder, frontend=frontend)
    with torch.no_grad():  # trained-looking weights: random projections, a distinct scale
        for parameter in model.audio_projection.parameters():
            parameter.normal_(0.0, 0.2)
        model.logit_scale.fill_(3.0)
    folder = tmp_path / "exported"
    model.to_transformers(folder)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (folder / name).is_file()
    rate = model.sample_rate
    rng = np.random.default_rng(0)
    clips = [rng.normal(0.0, 0.1, rate // 2), rng.normal(0.0, 0.1, rate * 2)]  # filled, whole
    labels = ["a dog barking", "rain", "a siren"]
    template = "This is a sound of {}."
    pipe = pipeline("zero-shot-audio-classification", model=str(folder))
    expected = model.zero_shot(clips, labels, template=template)
    for clip, probs in zip(clips, expected, strict=True):
        answer = pipe(clip, candidate_labels=labels, hypothesis_template=template)
        scores = {a["label"]: a["score"] for a in answer}
        assert [scores[label] for label in labels] == pytest.approx(probs.tolist(), abs=2e-4)


def test_what_transformers_cannot_hold_is_named(tiny_model: Any) -> None:
    blockers = transformers_blockers(tiny_model)
    assert blockers == [
        "audio encoder 'tiny-conv' (transformers holds HTSAT)",
        "text encoder 'gpt2-eot' pooled by 'eot' (transformers holds RoBERTa pooled by its pooler)",
        "projection 'msclap' (transformers holds 'mlp': Linear-ReLU-Linear)",
    ]
    message = "transformers' ClapModel cannot hold this model: " + "; ".join(blockers)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        tiny_model.to_transformers()


def test_convert_command_writes_a_transformers_folder(
    tiny_hf_clap: Any, tiny_hf_folder: Path, tmp_path: Path, tiny_model: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from transformers import ClapModel as HfClapModel

    from clapkit.core.cli import main

    out = tmp_path / "hf"
    assert (
        main(["convert", "transformers", str(tiny_hf_folder), str(out), "--to", "transformers"])
        == 0
    )
    reloaded = HfClapModel.from_pretrained(out)
    for key, value in tiny_hf_clap.state_dict().items():
        if key != "logit_scale_t":
            assert torch.equal(reloaded.state_dict()[key], value), key
    tiny_model.save_pretrained(tmp_path / "tiny")
    capsys.readouterr()
    assert (
        main(
            [
                "convert",
                "clapkit",
                str(tmp_path / "tiny"),
                str(tmp_path / "no"),
                "--to",
                "transformers",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith(
        "clapkit convert: error: transformers' ClapModel cannot hold this model: "
    )
    assert not (tmp_path / "no").exists()
