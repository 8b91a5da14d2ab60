"""Swin parts: the plain blocks against explicit roll/partition math, window order against plain."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clapkit.audio.fast.htsat import WindowOrderBlock, WindowOrderMerging
from clapkit.audio.htsat.swin import PatchMerging, SwinBlock
from clapkit.audio.htsat.windows import inverse_order, shifted_window_mask, window_order


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


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


def _explicit_block(block: SwinBlock, grid: torch.Tensor) -> torch.Tensor:
    """A Swin block written out: roll, partition, softmax attention, merge, roll back."""
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
def test_plain_and_window_order_blocks_equal_the_explicit_block(shift: int) -> None:
    torch.manual_seed(0)
    block = SwinBlock(12, (8, 12), 3, window=4, shift=shift).eval()
    nn.init.normal_(block.attn.relative_position_bias_table, std=1.0)
    grid = _randn(2, 8, 12, 12)
    order = window_order(8, 12, 4)
    with torch.no_grad():
        expected = _explicit_block(block, grid).flatten(1, 2)
        plain = block(grid.flatten(1, 2))
        fast = WindowOrderBlock(block)(grid.flatten(1, 2)[:, order])[:, inverse_order(order)]
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_patch_merging_concatenates_swin_neighbourhoods() -> None:
    merging = PatchMerging(3, (8, 8))
    grid = _randn(2, 8, 8, 3)
    with torch.no_grad():
        plain = merging(grid.flatten(1, 2)).view(2, 4, 4, 6)
        concatenated = torch.cat(
            [grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]],
            dim=-1,
        )
        expected = merging.reduction(merging.norm(concatenated))
        sequence = grid.flatten(1, 2)[:, window_order(8, 8, 4)]
        fast = WindowOrderMerging(merging, window=4, next_window=2)(sequence)
        fast = fast[:, inverse_order(window_order(4, 4, 2))].view(2, 4, 4, 6)
    torch.testing.assert_close(plain, expected)
    torch.testing.assert_close(fast, plain)
    with pytest.raises(ValueError, match="even grid"):
        PatchMerging(3, (7, 8))
