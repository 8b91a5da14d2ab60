"""The paper's seven Table 1 encoder pairs, each composed by clapkit.core from the real encoder
packages at tiny sizes: a training step reaches every tower, save/load gives identical embeddings
on real audio, and zero-shot/retrieval answer in the documented shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clapkit.audio import FrontendConfig
from clapkit.core import ClapModel, ContrastiveLoss, build_clap
from clapkit.text.corpus import small_config, train_tokenizer

FSDD = Path(__file__).resolve().parents[2] / "data" / "fsdd" / "recordings"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CAPTIONS = [f"a man says the digit {d}" for d in DIGITS] + ["this is a sound of a dog"]
# Table 1 rows: (audio registry name, text registry name)
PAIRS = [
    ("cnn14", "bert"),
    ("htsat", "clip"),
    ("htsat", "roberta"),
    ("htsat", "gpt2-eot"),
    ("htsat-22", "roberta"),
    ("htsat-22", "clip"),
    ("htsat-22", "gpt2-eot"),
]
FRONTEND = FrontendConfig(
    sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=32,
    fmin=0.0, fmax=4000.0, clip_seconds=1.0, fill="repeat",
)  # fmt: skip
SMALL_SWIN = {
    "spec_size": 64, "patch_size": 2, "patch_stride": 2, "embed_dim": 8,
    "depths": (1, 1), "num_heads": (1, 2), "window_size": 4,
}  # fmt: skip
AUDIO_KWARGS = {
    "cnn14": {"channels": (4, 4, 8, 8, 8, 16), "out_dim": 16, "num_classes": 5},
    "htsat": {**SMALL_SWIN, "num_classes": 5},
    "htsat-22": {**SMALL_SWIN, "num_classes": 0},
}


def _model(audio: str, text: str) -> ClapModel:
    tokenizer = train_tokenizer(text, CAPTIONS)
    config = small_config(text, tokenizer, hidden_size=16, num_heads=2)
    return build_clap(
        audio,
        text,
        projection_dim=12,
        audio_kwargs={"frontend": FRONTEND, **AUDIO_KWARGS[audio]},
        text_kwargs={"config": config, "tokenizer": tokenizer},
    )


@pytest.fixture(scope="module")
def clips() -> list[Path]:
    files = [FSDD / f"{d}_theo_3.flac" for d in range(4)] + [FSDD / "9_nicolas_41.flac"]
    assert all(f.is_file() for f in files), "the shipped FSDD subset is missing"
    return files


@pytest.mark.parametrize(("audio", "text"), PAIRS, ids=[f"{a}+{t}" for a, t in PAIRS])
def test_pair_trains_and_round_trips(audio: str, text: str, clips: list[Path], tmp_path: Path):
    torch.manual_seed(0)
    model = _model(audio, text).train()
    out = model(torch.randn(4, FRONTEND.clip_samples), CAPTIONS[:4])
    assert out.audio_embeds.shape == out.text_embeds.shape == (4, 12)
    loss = ContrastiveLoss()(out.audio_embeds, out.text_embeds, out.logit_scale_exp)
    loss.backward()
    for name, tower in (("audio", model.audio_encoder), ("text", model.text_encoder)):
        grads = [p.grad for p in tower.parameters() if p.requires_grad]
        assert grads, name
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    assert model.logit_scale.grad is not None

    model.eval()
    model.save_pretrained(tmp_path / "model")
    loaded = ClapModel.from_pretrained(tmp_path / "model").eval()
    torch.testing.assert_close(loaded.embed_audio(clips), model.embed_audio(clips))
    torch.testing.assert_close(loaded.embed_text(CAPTIONS), model.embed_text(CAPTIONS))

    template = "a man says the digit {}"
    probs = loaded.zero_shot(clips, DIGITS, template=template)
    tags = loaded.zero_shot(clips, DIGITS, template=template, multilabel=True)
    with torch.no_grad():
        logits = (
            loaded.logit_scale_exp
            * loaded.embed_audio(clips)
            @ loaded.class_embeddings(DIGITS, template).T
        )
    assert probs.shape == tags.shape == (len(clips), len(DIGITS))
    torch.testing.assert_close(probs, logits.softmax(dim=-1))
    torch.testing.assert_close(tags, logits.sigmoid())

    hits = loaded.retrieve(CAPTIONS[:3], clips, k=2)
    assert hits.indices.shape == hits.scores.shape == (3, 2)
    similarities = loaded.embed_text(CAPTIONS[:3]) @ loaded.embed_audio(clips).T
    torch.testing.assert_close(hits.scores, similarities.topk(2, dim=-1).values)
