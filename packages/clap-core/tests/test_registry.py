"""One registry: the encoder packages' NAMED_ENCODERS tables plus the user's own names."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2TokenizerFast

import clapkit.audio
import clapkit.text
from clapkit.core import (
    ContrastiveLoss,
    build_clap,
    create_audio_encoder,
    create_text_encoder,
    list_audio_encoders,
    list_text_encoders,
    register_audio_encoder,
    register_text_encoder,
)
from clapkit.text.corpus import small_config, train_tokenizer

from .conftest import CORPUS

GPT2_FILES = Path(__file__).resolve().parents[3] / "data" / "reference" / "tokenizers" / "gpt2"
AUDIO_NAMES = sorted(clapkit.audio.NAMED_ENCODERS)
TEXT_NAMES = sorted(clapkit.text.NAMED_ENCODERS)
TINY_FRONTEND = {
    "sample_rate": 8000, "n_fft": 256, "win_length": 256, "hop_length": 64, "n_mels": 32,
    "fmin": 0.0, "fmax": 4000.0, "clip_seconds": 1.0, "fill": "repeat",
}  # fmt: skip
# tiny sizes by family; every named builder takes its component builder's knobs
TINY_AUDIO = {
    "cnn14": {"channels": (4, 4, 8, 8, 8, 16), "out_dim": 16, "num_classes": 3},
    "htsat": {"spec_size": 64, "patch_size": 2, "patch_stride": 2, "embed_dim": 8,
              "depths": (1, 1), "num_heads": (1, 2), "window_size": 4, "num_classes": 0},
}  # fmt: skip


def _tiny_audio_kwargs(name: str) -> dict[str, Any]:
    family = "cnn14" if name.startswith("cnn14") else "htsat"
    return {"frontend": clapkit.audio.FrontendConfig(**TINY_FRONTEND), **TINY_AUDIO[family]}


def _tiny_text_kwargs(name: str) -> dict[str, Any]:
    """A tiny config and an offline tokenizer: GPT-2's real files, else one trained here."""
    if name == "gpt2-eot":
        tokenizer = GPT2TokenizerFast.from_pretrained(str(GPT2_FILES))
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        return {"config": config, "tokenizer": tokenizer, "max_length": 32}
    tokenizer = train_tokenizer(name, CORPUS)
    config = small_config(name, tokenizer, hidden_size=16, num_layers=1, num_heads=2)
    return {"config": config, "tokenizer": tokenizer, "max_length": 32}


def test_builtin_names_are_the_encoder_packages_tables() -> None:
    assert {"cnn14", "htsat", "htsat-22", "cnn14-msclap-2022", "htsat-msclap-2023"} <= set(
        AUDIO_NAMES
    )
    assert set(AUDIO_NAMES) <= set(list_audio_encoders())
    assert set(TEXT_NAMES) == {"bert", "roberta", "clip", "gpt2-eot"}
    assert set(TEXT_NAMES) <= set(list_text_encoders())


@pytest.mark.parametrize("name", AUDIO_NAMES)
def test_every_audio_name_builds_through_create_and_build_clap(name: str) -> None:
    torch.manual_seed(0)
    direct = create_audio_encoder(name, **_tiny_audio_kwargs(name))
    assert isinstance(
        direct, clapkit.audio.NAMED_ENCODERS[name](**_tiny_audio_kwargs(name)).__class__
    )
    model = build_clap(
        name,
        "gpt2-eot",
        projection_dim=8,
        audio_kwargs=_tiny_audio_kwargs(name),
        text_kwargs=_tiny_text_kwargs("gpt2-eot"),
    ).eval()
    # CLAP's audio tower has no classifier head, whatever the builder's knobs said
    assert model.config.audio == {**direct.get_config(), "num_classes": 0}
    assert not [k for k in model.state_dict() if k.startswith("audio_encoder.head.")]
    out = model.train()(torch.randn(2, 8000), ["a dog barks", "rain"])
    assert out.audio_embeds.shape == out.text_embeds.shape == (2, 8)
    assert torch.isfinite(out.audio_embeds).all()
    ContrastiveLoss()(out.audio_embeds, out.text_embeds, out.logit_scale_exp).backward()
    no_gradient = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_gradient == []


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_every_text_name_builds_through_create_and_build_clap(name: str) -> None:
    torch.manual_seed(0)
    direct = create_text_encoder(name, **_tiny_text_kwargs(name))
    assert direct.get_config()["architecture"] == name
    model = build_clap(
        "cnn14",
        name,
        projection_dim=8,
        audio_kwargs=_tiny_audio_kwargs("cnn14"),
        text_kwargs=_tiny_text_kwargs(name),
    ).eval()
    with torch.no_grad():
        embeds = model.embed_text(["a dog barks", "birds sing in the morning forest"])
    assert embeds.shape == (2, 8)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(2))


def test_unknown_name_lists_every_registered_name() -> None:
    listed = ", ".join(list_audio_encoders())
    with pytest.raises(KeyError, match=rf"unknown audio encoder 'htsat-99'; registered: {listed}"):
        create_audio_encoder("htsat-99")
    assert "htsat-msclap-2023" in listed
    with pytest.raises(KeyError, match=r"registered: bert, clip, gpt2-eot, roberta"):
        create_text_encoder("t5")


@pytest.mark.parametrize(
    ("name", "module", "dist"),
    [
        ("htsat-msclap-2023", "clapkit.audio", "clapkit-audio-encoders"),
        ("bert", "clapkit.text", "clapkit-text-encoders"),
    ],
)
def test_missing_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str, dist: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    create = create_audio_encoder if module == "clapkit.audio" else create_text_encoder
    with pytest.raises(ImportError, match=rf"{name}.*pip install {dist}"):
        create(name)
    # without the package only the user's own names are known
    listing = list_audio_encoders if module == "clapkit.audio" else list_text_encoders
    assert name not in listing()


def test_user_names_sit_beside_the_builtin_ones() -> None:
    register_text_encoder("my-gpt2", clapkit.text.gpt2_eot, overwrite=True)
    assert "my-gpt2" in list_text_encoders()
    encoder = create_text_encoder("my-gpt2", **_tiny_text_kwargs("gpt2-eot"))
    assert encoder.get_config()["architecture"] == "gpt2-eot"
    with pytest.raises(ValueError, match="'htsat-msclap-2023' is already registered"):
        register_audio_encoder("htsat-msclap-2023", lambda: None)
    with pytest.raises(TypeError, match="module:function"):
        register_audio_encoder("new-one", "not a reference")
