"""Inference kernels against plain torch ops."""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clapkit.audio import kernels as K


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize(
    ("batch", "c_in", "c_out", "height", "width"),
    [(2, 3, 5, 7, 5), (1, 4, 4, 1, 1), (3, 8, 6, 2, 9), (2, 16, 32, 31, 2), (1, 2, 3, 6, 1)],
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_winograd_equals_conv2d(
    batch: int, c_in: int, c_out: int, height: int, width: int, with_bias: bool
) -> None:
    x = _randn(batch, c_in, height, width)
    weight = _randn(c_out, c_in, 3, 3, seed=1)
    bias = _randn(c_out, seed=2) if with_bias else None
    expected = F.conv2d(x, weight, bias, padding=1)
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    ours = K.winograd_conv3x3(nhwc, K.winograd_filter(weight), bias)
    assert ours.shape == (batch, height, width, c_out)
    assert ours.is_contiguous()
    torch.testing.assert_close(ours.permute(0, 3, 1, 2), expected, rtol=0, atol=1e-12)


def test_winograd_bands_cover_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny band buffers: many bands and a shorter last band give the same result."""
    monkeypatch.setattr(K, "WINOGRAD_CHUNK_BYTES", 1)
    monkeypatch.setattr(K, "WINOGRAD_MIN_ROWS", 3)  # 2 tile rows per band (3 tiles per row)
    x = _randn(1, 23, 6, 4)  # 12 x 3 tiles: 6 bands of 2 rows... with 23 rows -> 12 tile rows
    weight = _randn(7, 4, 3, 3, seed=1)
    ours = K.winograd_conv3x3(x, K.winograd_filter(weight))
    expected = F.conv2d(x.permute(0, 3, 1, 2), weight, padding=1).permute(0, 2, 3, 1)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


def test_winograd_float32_error_is_rounding_level() -> None:
    x = _randn(2, 20, 10, 64, dtype=torch.float32)
    weight = _randn(96, 64, 3, 3, seed=1, dtype=torch.float32) / 24
    ours = K.winograd_conv3x3(x, K.winograd_filter(weight))
    exact = F.conv2d(x.permute(0, 3, 1, 2).double(), weight.double(), padding=1)
    error = (ours.permute(0, 3, 1, 2).double() - exact).abs().max() / exact.abs().max()
    assert error < 2e-6


def test_winograd_filter_is_g_g_gt() -> None:
    weight = _randn(5, 3, 3, 3)
    g = torch.tensor(
        [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    expected = torch.einsum("ij,ocjk,lk->ilco", g, weight, g).reshape(16, 3, 5)
    torch.testing.assert_close(K.winograd_filter(weight), expected, rtol=0, atol=1e-14)


def test_winograd_rejects_mismatched_shapes() -> None:
    filters = K.winograd_filter(_randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="input channels"):
        K.winograd_conv3x3(_randn(1, 5, 5, 2), filters)
    with pytest.raises(ValueError, match=r"\[b, h, w, c\]"):
        K.winograd_conv3x3(_randn(5, 5, 3), filters)
    with pytest.raises(ValueError, match="3, 3"):
        K.winograd_filter(_randn(4, 3, 5, 5))


def test_single_channel_conv_equals_conv2d() -> None:
    x = _randn(3, 1, 11, 6)
    weight, bias = _randn(7, 1, 3, 3, seed=1), _randn(7, seed=2)
    ours = K.conv3x3_single_channel(x[:, 0], weight, bias)
    torch.testing.assert_close(
        ours.permute(0, 3, 1, 2), F.conv2d(x, weight, bias, padding=1), rtol=0, atol=1e-12
    )
    no_bias = K.conv3x3_single_channel(x[:, 0], weight)
    torch.testing.assert_close(no_bias.permute(0, 3, 1, 2), F.conv2d(x, weight, padding=1))
    with pytest.raises(ValueError, match="c_out, 1, 3, 3"):
        K.conv3x3_single_channel(x[:, 0], _randn(7, 2, 3, 3))


@pytest.mark.parametrize("affine", [True, False])
def test_fold_batch_norm(affine: bool) -> None:
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False).double()
    norm = nn.BatchNorm2d(5, affine=affine).double().eval()
    with torch.no_grad():
        norm.running_mean.normal_(0, 1)  # type: ignore[union-attr]
        norm.running_var.uniform_(0.2, 3)  # type: ignore[union-attr]
        if affine:
            norm.weight.normal_(1, 0.3)
            norm.bias.normal_(0, 0.3)
    x = _randn(2, 3, 6, 7)
    weight, bias = K.fold_batch_norm(conv.weight, norm)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, weight, bias, padding=1), norm(conv(x)))
    with pytest.raises(ValueError, match="running statistics"):
        K.fold_batch_norm(conv.weight, nn.BatchNorm2d(5, track_running_stats=False))


@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_linear_equals_plain(gelu: bool, bias: bool) -> None:
    layer = nn.Linear(24, 40, bias=bias)
    x = _randn(3, 17, 24, dtype=torch.float32).transpose(0, 1)  # non-contiguous input
    with torch.no_grad():
        plain = F.linear(x, layer.weight, layer.bias)
        plain = F.gelu(plain) if gelu else plain
        fused = K.linear(x, layer.weight, layer.bias, gelu=gelu)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_adds_a_residual(dtype: torch.dtype) -> None:
    layer = nn.Linear(24, 40).to(dtype)
    x = _randn(3, 17, 24, dtype=dtype)
    residual = _randn(3, 17, 40, seed=3, dtype=dtype)
    with torch.no_grad():
        out = K.linear(x, layer.weight, layer.bias, residual=residual)
        expected = residual + F.linear(x, layer.weight, layer.bias)
        with pytest.raises(ValueError, match="not both"):
            K.linear(x, layer.weight, gelu=True, residual=residual)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64")
    or not torch.backends.mkldnn.is_available(),
    reason="the fused oneDNN linear is only required to work on x86-64 builds with oneDNN",
)
def test_fused_onednn_linear_is_available_on_x86() -> None:
    assert K._mkldnn_linear_works()


def test_fused_linear_only_where_allowed() -> None:
    layer = nn.Linear(8, 4)
    x = _randn(5, 8, dtype=torch.float32)
    assert K.linear(x, layer.weight, layer.bias).grad_fn is not None  # autograd: differentiable
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert K.linear(x, layer.weight, layer.bias).dtype == torch.bfloat16  # autocast honoured


def test_inference_kernel_conditions() -> None:
    x = torch.zeros(1, 2)
    with torch.no_grad():
        assert K.use_inference_kernels(x)
        assert K.use_inference_kernels(x.double())
        assert not K.use_inference_kernels(x.half())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not K.use_inference_kernels(x)
    assert not K.use_inference_kernels(x)  # autograd on


def test_batch_norm_affine_is_the_eval_batch_norm() -> None:
    norm = nn.BatchNorm1d(6).double().eval()
    with torch.no_grad():
        norm.running_mean.normal_(0, 1)  # type: ignore[union-attr]
        norm.running_var.uniform_(0.2, 3)  # type: ignore[union-attr]
        norm.weight.normal_(1, 0.3)
        norm.bias.normal_(0, 0.3)
        scale, shift = K.batch_norm_affine(norm)
        x = _randn(4, 6, 9)
        torch.testing.assert_close(x * scale[:, None] + shift[:, None], norm(x), rtol=0, atol=1e-12)
