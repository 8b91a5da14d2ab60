"""embed_audio runs the audio encoder's fast CPU inference form by default, kept current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from clapkit.audio import FrontendConfig
from clapkit.core import ContrastiveLoss, build_clap

TINY_FRONTEND = FrontendConfig(
    sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=32,
    fmin=0.0, fmax=4000.0, clip_seconds=1.0, fill="repeat",
)  # fmt: skip
# small but real encoders: CNN14 wide enough for the Winograd kernels, a two-stage HTSAT
REAL_AUDIO = {
    "cnn14": {"channels": (8, 16, 32, 64, 64, 64), "out_dim": 32, "num_classes": 0},
    "htsat": {"spec_size": 64, "patch_size": 2, "patch_stride": 2, "embed_dim": 16,
              "depths": (2, 2), "num_heads": (2, 4), "window_size": 4, "num_classes": 0},
}  # fmt: skip


def _model(name: str, tiny_text: Any) -> Any:
    torch.manual_seed(0)
    model = build_clap(
        name,
        tiny_text,
        projection_dim=8,
        audio_kwargs={"frontend": TINY_FRONTEND, **REAL_AUDIO[name]},
    )
    with torch.no_grad():  # trained-looking batch-norm statistics, so folding them matters
        for module in model.audio_encoder.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-2, 2)
                module.running_var.uniform_(0.5, 3)
    return model.eval()


@pytest.mark.parametrize("name", sorted(REAL_AUDIO))
def test_fast_and_plain_embeddings_agree(name: str, tiny_text: Any, fsdd_files: list[Path]) -> None:
    model = _model(name, tiny_text)
    fast = model.embed_audio(fsdd_files, normalize=False, num_workers=0)
    with torch.no_grad():
        assert model.inference_audio_encoder() is not model.audio_encoder  # a fast form exists
    plain = model.embed_audio(fsdd_files, normalize=False, num_workers=0, fast=False)
    model.fast_audio = False
    off = model.embed_audio(fsdd_files, normalize=False, num_workers=0)
    torch.testing.assert_close(off, plain, rtol=0, atol=0)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert not torch.equal(fast, plain)  # the two paths really differ in rounding


def test_the_fast_form_is_rebuilt_after_an_optimiser_step(
    tiny_text: Any, fsdd_files: list[Path]
) -> None:
    model = _model("cnn14", tiny_text)
    before = model.embed_audio(fsdd_files, num_workers=0)
    cache = model.audio_inference_cache()
    assert cache.builds == 1
    model.embed_audio(fsdd_files, num_workers=0)
    assert cache.builds == 1  # reused while nothing changed

    optimiser = torch.optim.SGD(model.audio_encoder.parameters(), lr=0.05)
    model.train()
    out = model(torch.randn(3, 8000), ["a dog", "rain falls", "zero"])
    ContrastiveLoss()(out.audio_embeds, out.text_embeds, out.logit_scale_exp).backward()
    optimiser.step()
    model.eval()

    after = model.embed_audio(fsdd_files, num_workers=0)
    assert cache.builds == 2
    plain = model.embed_audio(fsdd_files, num_workers=0, fast=False)
    torch.testing.assert_close(after, plain, rtol=1e-5, atol=1e-5)
    assert (after - before).abs().max() > 1e-3  # the step changed the embeddings


def test_zero_shot_uses_the_fast_path_and_matches(tiny_text: Any, fsdd_files: list[Path]) -> None:
    model = _model("htsat", tiny_text)
    labels = ["zero", "one", "two"]
    fast = model.zero_shot(fsdd_files, labels)
    assert model.audio_inference_cache().builds == 1
    torch.testing.assert_close(
        fast, model.zero_shot(fsdd_files, labels, fast=False), atol=1e-5, rtol=0
    )
