"""Fast inference forms against the plain encoders; the form cache; window-order Swin parts."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from clapkit.audio import (
    HTSAT,
    AudioEncoderOutput,
    Cnn14,
    FrontendConfig,
    InferenceFormCache,
    cnn14_encoder,
    htsat_encoder,
    inference_form,
    load_weights,
)
from clapkit.audio.fast import FastCnn14, FastHTSAT
from clapkit.audio.fast.cnn14 import FoldedConvBlock

SMALL_FRONTEND = FrontendConfig(sample_rate=16000, fmax=8000.0, n_mels=32)


def _wave(seconds: float, batch: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return 0.1 * torch.randn(batch, round(16000 * seconds), generator=generator, dtype=dtype)


def _randomise(model: nn.Module, seed: int) -> None:
    """Non-trivial norms, BatchNorm statistics and position biases (init leaves them 1/0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.5, generator=generator)  # type: ignore[union-attr]
                module.running_var.uniform_(0.5, 2, generator=generator)  # type: ignore[union-attr]
                if name.endswith("bn0"):  # dB input: centre and scale it
                    module.running_mean.add_(-40.0)  # type: ignore[union-attr]
                    module.running_var.mul_(100.0)  # type: ignore[union-attr]
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.2, generator=generator)
        for name, parameter in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                parameter.normal_(0.0, 1.0, generator=generator)


def small_cnn14(seed: int = 0) -> Cnn14:
    torch.manual_seed(seed)
    model = cnn14_encoder(
        frontend=SMALL_FRONTEND, channels=(4, 8, 16, 16), out_dim=12, num_classes=3
    )
    _randomise(model, seed + 1)
    return model.eval()


def small_htsat(seed: int = 0, **knobs: object) -> HTSAT:
    torch.manual_seed(seed)
    settings: dict[str, object] = {
        "spec_size": 64, "embed_dim": 8, "depths": (2, 2, 2), "num_heads": (1, 2, 2),
        "window_size": 4, "num_classes": 3,
    }  # fmt: skip
    model = htsat_encoder(frontend=SMALL_FRONTEND, **{**settings, **knobs})  # type: ignore[arg-type]
    _randomise(model, seed + 1)
    return model.eval()


def _error(plain: torch.Tensor | None, fast: torch.Tensor | None) -> float:
    assert plain is not None
    assert fast is not None
    assert plain.shape == fast.shape
    assert plain.dtype == fast.dtype
    return float((fast.double() - plain.double()).abs().max() / plain.abs().max())


def _compare(model: nn.Module, fast: nn.Module, wave: torch.Tensor, tolerance: float) -> None:
    with torch.no_grad():
        plain_out, fast_out = model(wave), fast(wave)
    assert isinstance(fast_out, AudioEncoderOutput)
    assert _error(plain_out.embedding, fast_out.embedding) < tolerance
    assert _error(plain_out.clipwise_logits, fast_out.clipwise_logits) < tolerance
    if plain_out.framewise_logits is not None:
        assert _error(plain_out.framewise_logits, fast_out.framewise_logits) < tolerance


TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("winograd_min_channels", [1, 8, 10_000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cnn14_fast_form_equals_plain(winograd_min_channels: int, dtype: torch.dtype) -> None:
    model = small_cnn14().to(dtype)
    fast = inference_form(model, winograd_min_channels=winograd_min_channels)
    assert isinstance(fast, FastCnn14)
    assert fast.frontend == model.frontend
    assert fast.out_dim == model.out_dim
    _compare(model, fast, _wave(1.0, dtype=dtype), TOLERANCE[dtype])
    kinds = [
        conv.kernel
        for block in fast.blocks
        if isinstance(block, FoldedConvBlock)
        for conv in (block.conv1, block.conv2)
    ]
    assert kinds[0] == "single"
    if winograd_min_channels == 8:
        assert kinds[1:] == ["direct", "direct"] + ["winograd"] * 5
    elif winograd_min_channels == 10_000:
        assert kinds[1:] == ["direct"] * 7


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seconds", [1.0, 8.0])  # stretched to the image; long-clip windows
def test_htsat_fast_form_equals_plain(dtype: torch.dtype, seconds: float) -> None:
    model = small_htsat().to(dtype)
    fast = inference_form(model)
    assert isinstance(fast, FastHTSAT)
    _compare(model, fast, _wave(seconds, batch=2, dtype=dtype), TOLERANCE[dtype])


def test_htsat_fast_form_with_window_larger_than_late_grids() -> None:
    """Late stages clip the window to the grid; window orders still chain through merging."""
    model = small_htsat(window_size=8)
    _compare(model, inference_form(model), _wave(1.0, batch=2), 1e-5)


def test_fast_forms_run_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunks (one clip each) for the STFT, the conv blocks and the Swin images."""
    from clapkit.audio import kernels

    cnn, transformer = small_cnn14(), small_htsat()
    wave = _wave(1.0, batch=3)
    with torch.no_grad():
        expected = [
            inference_form(cnn)(wave).embedding,
            inference_form(transformer)(wave).embedding,
        ]
    monkeypatch.setattr(kernels, "INFERENCE_CHUNK_BYTES", 1)
    monkeypatch.setattr("clapkit.audio.fast.cnn14.INFERENCE_CHUNK_BYTES", 1)
    assert kernels.inference_chunk(10) == 1
    for model, before in zip((cnn, transformer), expected, strict=True):
        with torch.no_grad():
            torch.testing.assert_close(inference_form(model)(wave).embedding, before)


def test_fast_form_is_a_snapshot_and_falls_back_outside_inference() -> None:
    model = small_cnn14()
    fast = inference_form(model)
    wave = _wave(1.0)
    with torch.no_grad():
        before = fast(wave).embedding
        model.log_mel.bn0.running_var.mul_(3.0)  # type: ignore[union-attr]
        assert torch.equal(fast(wave).embedding, before)  # own copies of the weights
        assert not torch.allclose(model(wave).embedding, before)
    out = fast(wave)  # autograd on: the encoder itself runs, differentiably
    assert out.embedding.grad_fn is not None
    with torch.no_grad():
        torch.testing.assert_close(out.embedding.detach(), model(wave).embedding)
    assert not any(p.requires_grad for p in fast.parameters())
    assert fast.state_dict() == {}  # no tensor of the form is a checkpoint tensor
    with pytest.raises(ValueError, match=r"\[batch, samples\]"), torch.no_grad():
        fast(wave[0])


class _Subclass(Cnn14):
    pass


def test_identity_where_there_is_no_fast_form() -> None:
    model = small_cnn14()
    assert inference_form(model.train()) is model
    assert inference_form(model.eval().to(torch.bfloat16)) is model
    layer = nn.Linear(3, 3)
    assert inference_form(layer) is layer
    fast = inference_form(small_htsat())
    assert inference_form(fast) is fast
    subclass = _Subclass(frontend=SMALL_FRONTEND, channels=(4, 8), out_dim=4).eval()
    assert inference_form(subclass) is subclass  # its forward may differ from Cnn14's


def test_encoder_made_under_inference_mode() -> None:
    with torch.inference_mode():
        model = small_cnn14()
    reference = small_cnn14()
    with torch.no_grad():
        torch.testing.assert_close(
            inference_form(model)(_wave(1.0)).embedding, reference(_wave(1.0)).embedding
        )


def _cache_matches_plain(cache: InferenceFormCache, wave: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        fast = cache.get()(wave).embedding
        plain = cache.encoder(wave).embedding
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    return fast


def test_cache_rebuilds_on_load_state_dict_and_load_weights() -> None:
    model = small_cnn14()
    cache = InferenceFormCache(model)
    wave = _wave(1.0)
    first = _cache_matches_plain(cache, wave)
    assert cache.get() is cache.get()
    assert cache.builds == 1
    model.load_state_dict(small_cnn14(seed=5).state_dict())
    second = _cache_matches_plain(cache, wave)
    assert cache.builds == 2
    assert not torch.allclose(first, second)
    load_weights(model, small_cnn14(seed=6).state_dict())
    third = _cache_matches_plain(cache, wave)
    assert cache.builds == 3
    assert not torch.allclose(second, third)
    parent = nn.ModuleDict({"audio": model})
    parent.load_state_dict({f"audio.{k}": v for k, v in small_cnn14(seed=7).state_dict().items()})
    _cache_matches_plain(cache, wave)
    assert cache.builds == 4


def test_cache_rebuilds_after_an_optimiser_step_only_of_its_encoder() -> None:
    model = small_htsat()
    cache = InferenceFormCache(model)
    wave = _wave(1.0, batch=2)
    before = _cache_matches_plain(cache, wave)
    other = nn.Linear(2, 2)
    unrelated = torch.optim.SGD(other.parameters(), lr=0.1)
    other(torch.ones(1, 2)).sum().backward()
    unrelated.step()
    cache.get()
    assert cache.builds == 1
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    model(wave).embedding.sum().backward()  # in eval mode: only the step can tell the cache
    optimiser.step()
    after = _cache_matches_plain(cache, wave)
    assert cache.builds == 2
    assert not torch.allclose(before, after)
    model.train()  # train() and back with no step in between: the flag is compared on get()
    assert cache.get() is model
    model.eval()
    assert isinstance(cache.get(), FastHTSAT)
    assert cache.builds == 4


def test_cache_rebuilds_after_a_training_forward_and_on_dtype() -> None:
    model = small_cnn14()
    cache = InferenceFormCache(model)
    wave = _wave(1.0)
    before = _cache_matches_plain(cache, wave)
    model.train()
    with torch.no_grad():
        model(wave)  # moves the BatchNorm running statistics
    model.eval()
    after = _cache_matches_plain(cache, wave)
    assert not torch.allclose(before, after)
    model.to(torch.float64)
    assert cache.get().log_mel.scale.dtype == torch.float64  # type: ignore[union-attr]
    _cache_matches_plain(cache, wave.double())


def test_invalidate_covers_edits_the_hooks_cannot_see() -> None:
    model = small_cnn14()
    cache = InferenceFormCache(model)
    wave = _wave(1.0)
    _cache_matches_plain(cache, wave)
    with torch.no_grad():
        model.embed.weight.mul_(2.0)  # no hook fires for an in-place edit
    cache.invalidate()
    _cache_matches_plain(cache, wave)
    assert cache.builds == 2


def test_cache_is_not_kept_alive_by_its_hooks() -> None:
    model = small_cnn14()
    cache = InferenceFormCache(model)
    cache.get()
    ref = weakref.ref(cache)
    del cache
    gc.collect()
    assert ref() is None
    model.load_state_dict(model.state_dict())  # the hooks of a dropped cache are gone
    assert not model._load_state_dict_post_hooks
