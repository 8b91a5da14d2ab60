"""ClapModel: building, projections, embedding, zero-shot, retrieval, training forward."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from clapkit.core import (
    ClapConfig,
    ContrastiveLoss,
    MsclapProjection,
    build_projection,
    ensemble_class_embeddings,
    format_prompts,
)


def test_msclap_projection_is_the_papers_block() -> None:
    torch.manual_seed(0)
    projection = build_projection("msclap", 6, 4).eval()
    assert isinstance(projection, MsclapProjection)
    assert projection.linear1.bias is None
    assert projection.linear2.bias is None
    x = torch.randn(3, 6)
    hidden = x @ projection.linear1.weight.T
    expected = F.layer_norm(
        hidden + F.gelu(hidden) @ projection.linear2.weight.T,
        (4,),
        projection.layer_norm.weight,
        projection.layer_norm.bias,
    )
    torch.testing.assert_close(projection(x), expected)
    projection.train()
    assert not torch.allclose(projection(x), expected)  # dropout 0.5 acts in training


def test_mlp_and_linear_projections() -> None:
    torch.manual_seed(0)
    mlp = build_projection("mlp", 6, 4)
    x = torch.randn(3, 6)
    torch.testing.assert_close(mlp(x), mlp.linear2(torch.relu(mlp.linear1(x))))
    linear = build_projection("linear", 6, 4)
    torch.testing.assert_close(linear(x), x @ linear.linear.weight.T)
    with pytest.raises(ValueError, match="unknown projection 'conv'"):
        build_projection("conv", 6, 4)


def test_logit_scale_convention_and_clamp(tiny_model: Any) -> None:
    assert tiny_model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert tiny_model.logit_scale_exp.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        tiny_model.logit_scale.fill_(10.0)
    assert tiny_model.logit_scale_exp.item() == pytest.approx(100.0)
    paper = ClapConfig(audio={}, text={})  # the paper's 0.007 = 142.9, starts at the clamp
    assert paper.init_temperature == 0.007
    assert paper.initial_logit_scale == pytest.approx(math.log(100.0))
    unclamped = ClapConfig(audio={}, text={}, init_temperature=0.007, max_logit_scale=None)
    assert unclamped.initial_logit_scale == pytest.approx(math.log(1 / 0.007))
    with pytest.raises(ValueError, match="max_logit_scale must be positive"):
        ClapConfig(audio={}, text={}, max_logit_scale=0.0)


def test_logit_scale_learns_down_from_the_clamp(tiny_model: Any) -> None:
    with torch.no_grad():
        tiny_model.logit_scale.fill_(math.log(100.0))
    tiny_model.logit_scale_exp.backward()
    assert tiny_model.logit_scale.grad is not None
    assert tiny_model.logit_scale.grad.item() == pytest.approx(100.0, rel=1e-5)


def test_training_forward_gives_gradients_everywhere(
    tiny_model: Any, fsdd_files: list[Path]
) -> None:
    tiny_model.train()
    waveform = torch.randn(4, tiny_model.frontend.clip_samples)
    out = tiny_model(waveform, ["a dog", "a cat barks", "rain", "a siren wails"])
    assert out.audio_embeds.shape == out.text_embeds.shape == (4, 8)
    torch.testing.assert_close(out.audio_embeds.norm(dim=-1), torch.ones(4))
    ContrastiveLoss()(out.audio_embeds, out.text_embeds, out.logit_scale_exp).backward()
    for name in (
        "logit_scale",
        "audio_projection.linear1.weight",
        "text_projection.linear2.weight",
    ):
        assert tiny_model.get_parameter(name).grad.abs().sum() > 0, name
    assert tiny_model.text_encoder.model.wte.weight.grad.abs().sum() > 0


def test_embed_audio_files_equal_waveforms_and_ignore_batching(
    tiny_model: Any, fsdd_files: list[Path]
) -> None:
    from clapkit.audio import fit_length, load_audio

    from_files = tiny_model.embed_audio(fsdd_files, batch_size=4)
    again = tiny_model.embed_audio([str(f) for f in fsdd_files], batch_size=1, num_workers=0)
    torch.testing.assert_close(from_files, again, rtol=1e-5, atol=1e-6)
    clip = tiny_model.frontend.clip_samples
    short = [load_audio(f, 8000) for f in fsdd_files if load_audio(f, 8000).shape[0] <= clip]
    assert short, "need FSDD clips shorter than the tiny clip"
    batch = torch.stack([fit_length(w, clip, "repeat") for w in short])
    direct = F.normalize(tiny_model.encode_audio(batch), dim=-1)
    torch.testing.assert_close(tiny_model.embed_audio(short), direct, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(from_files.norm(dim=-1), torch.ones(len(fsdd_files)))


def test_long_audio_is_the_mean_of_its_windows(tiny_model: Any) -> None:
    clip = tiny_model.frontend.clip_samples
    g = torch.Generator().manual_seed(0)
    long_wave = torch.randn(int(2.5 * clip), generator=g)
    windows = torch.stack([long_wave[:clip], long_wave[clip : 2 * clip], long_wave[-clip:]])
    expected = tiny_model.encode_audio(windows).mean(dim=0, keepdim=True)
    got = tiny_model.embed_audio(long_wave, normalize=False)
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-6)
    start = (long_wave.shape[0] - clip) // 2
    centre = tiny_model.encode_audio(long_wave[start : start + clip][None])
    got_centre = tiny_model.embed_audio(long_wave, normalize=False, long_audio="center")
    torch.testing.assert_close(got_centre, centre.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="long_audio must be one of"):
        tiny_model.embed_audio(long_wave, long_audio="random")


def test_embed_audio_names_a_bad_file(tiny_model: Any, tmp_path: Path) -> None:
    from clapkit.audio import AudioLoadError

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AudioLoadError, match=r"broken\.wav"):
        tiny_model.embed_audio([bad])


def test_embed_text_keeps_order_and_ignores_batching(tiny_model: Any) -> None:
    texts = ["a very long description of a dog barking in the rain", "rain", "a car horn"]
    together = tiny_model.embed_text(texts, batch_size=8)
    one_by_one = torch.cat([tiny_model.embed_text(t) for t in texts])
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(together[0], together[1])


def test_zero_shot_softmax_sigmoid_and_template_ensembling(
    tiny_model: Any, fsdd_files: list[Path]
) -> None:
    labels = ["zero", "one", "two"]
    probs = tiny_model.zero_shot(fsdd_files, labels)
    assert probs.shape == (len(fsdd_files), 3)
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(len(fsdd_files)))
    audio = tiny_model.embed_audio(fsdd_files)
    text = tiny_model.embed_text([f"this is a sound of {label}" for label in labels])
    expected = (tiny_model.logit_scale_exp * audio @ text.T).softmax(dim=-1)
    torch.testing.assert_close(probs, expected)

    templates = ["a sound of {}", "someone says {}"]
    per_template = [
        F.normalize(tiny_model.embed_text([t.format(x) for x in labels])) for t in templates
    ]
    ensembled = F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)
    multi = tiny_model.zero_shot(fsdd_files, labels, template=templates, multilabel=True)
    torch.testing.assert_close(
        multi, torch.sigmoid(tiny_model.logit_scale_exp * audio @ ensembled.T)
    )
    with pytest.raises(ValueError, match=r"has no '\{\}'"):
        tiny_model.zero_shot(fsdd_files, labels, template="a sound")

    # the public pieces (for evaluation code that caches prompt embeddings) give the same classes
    prompts = format_prompts(labels, templates)
    assert prompts[1] == ["someone says zero", "someone says one", "someone says two"]
    flat = tiny_model.embed_text([p for row in prompts for p in row])
    classes = ensemble_class_embeddings(flat.reshape(len(templates), len(labels), -1))
    torch.testing.assert_close(classes, tiny_model.class_embeddings(labels, templates))
    torch.testing.assert_close(classes, ensembled)
    with pytest.raises(ValueError, match=r"\[templates, classes, dim\]"):
        ensemble_class_embeddings(flat)


def test_retrieve_returns_best_bank_items(tiny_model: Any, fsdd_files: list[Path]) -> None:
    bank = tiny_model.embed_audio(fsdd_files)
    hits = tiny_model.retrieve(["zero", "a dog"], fsdd_files, k=3)
    queries = tiny_model.embed_text(["zero", "a dog"])
    scores = queries @ bank.T
    torch.testing.assert_close(hits.scores, scores.topk(3).values)
    torch.testing.assert_close(hits.indices, scores.topk(3).indices)
    assert tiny_model.retrieve(queries, bank, k=100).indices.shape == (2, len(fsdd_files))
