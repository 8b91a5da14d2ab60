"""Inference kernels against plain ops; the encoders' fast paths against their plain paths."""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clapkit.audio import HTSAT, Cnn14, FrontendConfig, cnn14_encoder, htsat_encoder
from clapkit.audio import kernels as K
from clapkit.audio.htsat.swin import PatchMerging, SwinBlock
from clapkit.audio.htsat.windows import inverse_order, shifted_window_mask, window_order

from .conftest import tiny

SMALL_FRONTEND = FrontendConfig(sample_rate=16000, fmax=8000.0, n_mels=32)


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
        with K.fused_linear():
            fused = K.linear(x, layer, gelu=gelu)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_linear_adds_a_residual(fused: bool) -> None:
    layer = nn.Linear(24, 40)
    x = _randn(3, 17, 24, dtype=torch.float32)
    residual = _randn(3, 17, 40, seed=3, dtype=torch.float32)
    with torch.no_grad(), K.fused_linear(fused):
        out = K.linear(x, layer, residual=residual)
        expected = residual + F.linear(x, layer.weight, layer.bias)
        with pytest.raises(ValueError, match="not both"):
            K.linear(x, layer, gelu=True, residual=residual)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


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
    with K.fused_linear():
        assert K.linear(x, layer).grad_fn is not None  # autograd on: plain, differentiable
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            assert K.linear(x, layer).dtype == torch.bfloat16  # autocast honoured
    with torch.no_grad():
        with K.fused_linear():
            with K.fused_linear(False):  # nested switch-off, restored on exit
                assert not K._FUSED_LINEAR.get()
            assert K._FUSED_LINEAR.get()
        assert not K._FUSED_LINEAR.get()


def test_inference_kernel_conditions() -> None:
    module = nn.Linear(2, 2).eval()
    x = torch.zeros(1, 2)
    with torch.no_grad():
        assert K.use_inference_kernels(module, x)
        assert not K.use_inference_kernels(module, x.half())
        assert not K.use_inference_kernels(module.train(), x)
        module.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not K.use_inference_kernels(module, x)
    assert not K.use_inference_kernels(module, x)  # autograd on


def _cnn14_with_stats(seed: int = 0) -> Cnn14:
    torch.manual_seed(seed)
    model = cnn14_encoder(
        frontend=SMALL_FRONTEND, channels=(4, 8, 16, 16), out_dim=12, num_classes=3
    )
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5, generator=generator)  # type: ignore[union-attr]
                module.running_var.uniform_(0.5, 2, generator=generator)  # type: ignore[union-attr]
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.2, generator=generator)
    assert isinstance(model, Cnn14)
    return model.eval()


def _plain_and_fast(model: nn.Module, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():  # autograd on: the plain path
        plain = model(wave).embedding.detach()
    with torch.no_grad():
        fast = model(wave).embedding
    return plain, fast


@pytest.mark.parametrize("winograd_min_channels", [1, 8, 10_000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cnn14_fast_path_equals_plain_path(winograd_min_channels: int, dtype: torch.dtype) -> None:
    model = _cnn14_with_stats().to(dtype)
    model.winograd_min_channels = winograd_min_channels
    wave = 0.1 * _randn(3, 16000, dtype=dtype)
    plain, fast = _plain_and_fast(model, wave)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert (fast - plain).abs().max() / plain.abs().max() < tolerance
    kinds = [conv.kernel for block in model.blocks for conv in block._folded]  # type: ignore[union-attr]
    expected = "winograd" if winograd_min_channels == 8 else None
    assert kinds[0] == "single"
    if expected:
        assert kinds == [
            "single",
            "direct",
            "direct",
            "winograd",
            "winograd",
            "winograd",
            "winograd",
            "winograd",
        ]


def test_cnn14_fast_path_follows_weight_changes() -> None:
    """The folded-weight cache is rebuilt after loading weights or an in-place update."""
    model = _cnn14_with_stats()
    model.winograd_min_channels = 8
    wave = 0.1 * _randn(2, 16000, dtype=torch.float32)
    with torch.no_grad():
        before = model(wave).embedding
        model.load_state_dict(_cnn14_with_stats(seed=5).state_dict())
        after_load = model(wave).embedding
        model.blocks[3].bn2.running_var.mul_(2.0)  # type: ignore[union-attr]
        after_update = model(wave).embedding
    plain, _ = _plain_and_fast(model, wave)
    assert not torch.allclose(before, after_load)
    assert not torch.allclose(after_load, after_update)
    torch.testing.assert_close(after_update, plain, rtol=1e-5, atol=1e-6)


def test_cnn14_training_mode_drops_the_folded_cache() -> None:
    model = _cnn14_with_stats()
    with torch.no_grad():
        model(0.1 * _randn(1, 16000, dtype=torch.float32))
    assert all(block._folded is not None for block in model.blocks)  # type: ignore[union-attr]
    model.train()
    assert all(block._folded is None for block in model.blocks)  # type: ignore[union-attr]


def test_cnn14_fast_path_can_be_switched_off_and_skips_inference_tensors() -> None:
    model = _cnn14_with_stats()
    model.fast_inference = False
    with torch.no_grad():
        model(0.1 * _randn(1, 16000, dtype=torch.float32))
    assert all(block._folded is None for block in model.blocks)  # type: ignore[union-attr]
    with torch.inference_mode():
        made_in_inference_mode = _cnn14_with_stats()
        wave = 0.1 * _randn(1, 16000, dtype=torch.float32)
        out = made_in_inference_mode(wave).embedding
    assert all(block._folded is None for block in made_in_inference_mode.blocks)  # type: ignore[union-attr]
    reference = _cnn14_with_stats()
    with torch.enable_grad():
        torch.testing.assert_close(out, reference(wave).embedding.detach())


def test_htsat_fast_path_equals_plain_path() -> None:
    torch.manual_seed(0)
    model = tiny("htsat").eval()
    assert isinstance(model, HTSAT)
    wave = 0.1 * _randn(2, model.frontend.sample_rate * 2, dtype=torch.float32)
    plain, fast = _plain_and_fast(model, wave)
    assert (fast - plain).abs().max() / plain.abs().max() < 1e-5


def test_window_order_is_swin_partition_of_the_rolled_grid() -> None:
    height, width, window, shift = 8, 12, 4, 2
    grid = torch.arange(height * width).view(height, width)
    rolled = torch.roll(grid, shifts=(-shift, -shift), dims=(0, 1))
    windows = rolled.view(height // window, window, width // window, window).permute(0, 2, 1, 3)
    torch.testing.assert_close(window_order(height, width, window, shift), windows.flatten())
    order = window_order(height, width, window)
    torch.testing.assert_close(order[inverse_order(order)], torch.arange(height * width))
    with pytest.raises(ValueError, match="whole number"):
        window_order(10, 8, 4)


def _textbook_block(block: SwinBlock, grid: torch.Tensor) -> torch.Tensor:
    """A Swin block the way the reference computes it: roll, partition, attend, merge, roll."""
    b, h, w, d = grid.shape
    win, shift = block.window, block.shift
    y = block.norm1(grid)
    if shift:
        y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
    windows = y.view(b, h // win, win, w // win, win, d).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(-1, win * win, d)
    attn = block.attn
    qkv = attn.qkv(windows).view(windows.shape[0], win * win, 3, attn.num_heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + attn.position_bias()
    if shift:
        mask = shifted_window_mask(h, w, win, shift)
        scores = scores.view(b, -1, attn.num_heads, win * win, win * win) + mask[:, None]
        scores = scores.view(-1, attn.num_heads, win * win, win * win)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(-1, win * win, d)
    out = attn.proj(out).view(b, h // win, w // win, win, win, d).permute(0, 1, 3, 2, 4, 5)
    y = out.reshape(b, h, w, d)
    if shift:
        y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
    x = grid + y
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_in_window_order_equals_textbook_block(shift: int) -> None:
    torch.manual_seed(0)
    block = SwinBlock(12, (8, 12), 3, window=4, shift=shift).eval()
    nn.init.normal_(block.attn.relative_position_bias_table, std=1.0)
    grid = _randn(2, 8, 12, 12, dtype=torch.float32)
    order = window_order(8, 12, 4)
    for autograd in (True, False):  # plain and fused linear layers
        with torch.set_grad_enabled(autograd), K.fused_linear():
            ours = block(grid.flatten(1, 2)[:, order])[:, inverse_order(order)]
            expected = _textbook_block(block, grid).flatten(1, 2)
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_patch_merging_gathers_swin_neighbourhoods_into_next_window_order() -> None:
    merging = PatchMerging(3, (8, 8), window=4, next_window=2)
    grid = _randn(2, 8, 8, 3, dtype=torch.float32)
    sequence = grid.flatten(1, 2)[:, window_order(8, 8, 4)]
    with torch.no_grad():
        ours = merging(sequence)[:, inverse_order(window_order(4, 4, 2))].view(2, 4, 4, 6)
        concatenated = torch.cat(
            [grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]],
            dim=-1,
        )
        expected = merging.reduction(merging.norm(concatenated))
    torch.testing.assert_close(ours, expected)


def test_htsat_encoder_with_window_larger_than_late_grids() -> None:
    """Late stages clip the window to the grid; window orders still chain through merging."""
    torch.manual_seed(0)
    model = htsat_encoder(
        frontend=SMALL_FRONTEND, spec_size=64, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 2),
        window_size=8, num_classes=3,
    )  # fmt: skip
    wave = 0.1 * _randn(2, 16000, dtype=torch.float32)
    plain, fast = _plain_and_fast(model.eval(), wave)
    assert (fast - plain).abs().max() / plain.abs().max() < 1e-5
