"""Swin Transformer parts of HTS-AT (Liu et al., 2021, arXiv 2103.14030), as the reference has them.

Tokens travel as ``[b, h * w, d]`` sequences in grid (row-major) order. A block normalises,
cyclically shifts the grid (every other block), partitions it into windows, attends inside each
window, merges the windows and shifts back; patch merging concatenates each 2x2 neighbourhood.
Window attention runs through ``torch.nn.functional.scaled_dot_product_attention`` with the
relative position bias and the shifted-window mask folded into one additive mask.
:mod:`clapkit.audio.fast` keeps the tokens in window order instead for CPU inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from clapkit.audio.htsat.windows import relative_position_index, shifted_window_mask


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``rate``.

    Args:
        x: ``[b, ...]`` branch output.
        rate: Drop probability.
        training: Only active in training.

    Returns:
        ``x`` with dropped samples zeroed and kept ones scaled by ``1 / (1 - rate)``.
    """
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
    return x * mask.bernoulli_(keep).div_(keep)


def window_attention_mask(bias: Tensor, shift_mask: Tensor | None) -> Tensor:
    """One additive SDPA mask from a position bias and an optional shifted-window mask.

    Args:
        bias: ``[heads, n, n]`` relative position bias.
        shift_mask: ``[n_windows, n, n]`` or ``None``.

    Returns:
        ``[1, heads, n, n]`` for plain windows (queries ``[b * n_windows, heads, n, d]``);
        ``[1, n_windows * heads, n, n]`` with a shift mask (queries regrouped to
        ``[b, n_windows * heads, n, d]``, since windows share the mask per position, not per
        image). Masks go in 4-D: the fused CPU kernel takes them, a 3-D mask falls back to the
        math path.
    """
    if shift_mask is None:
        return bias[None]
    n = bias.shape[-1]
    return (shift_mask.to(bias.dtype)[:, None] + bias[None]).reshape(1, -1, n, n)


def window_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor, n_windows: int, dropout: float
) -> Tensor:
    """SDPA inside windows with a mask from :func:`window_attention_mask`.

    Args:
        query: ``[b * n_windows, heads, n, d_head]``; ``key`` and ``value`` alike.
        key: Keys.
        value: Values.
        mask: ``[1, heads, n, n]`` or ``[1, n_windows * heads, n, n]``.
        n_windows: Windows per image.
        dropout: Attention dropout probability.

    Returns:
        ``[b * n_windows, n, heads * d_head]``.
    """
    bw, heads, n, d_head = query.shape
    if mask.shape[1] != heads:
        images = bw // n_windows
        query, key, value = (t.reshape(images, -1, n, d_head) for t in (query, key, value))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout)
    return out.view(bw, heads, n, d_head).transpose(1, 2).reshape(bw, n, heads * d_head)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    Args:
        dim: Token width.
        window: Window side.
        num_heads: Attention heads.
        qkv_bias: Bias on the query/key/value projection.
        attn_drop: Dropout on attention weights.
        proj_drop: Dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        window: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window = window
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        nn.init.normal_(self.relative_position_bias_table, std=0.02)  # = trunc at 100 sigma
        self.relative_position_index: Tensor
        self.register_buffer(
            "relative_position_index", relative_position_index(window), persistent=False
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self) -> Tensor:
        """``[heads, n, n]`` relative position bias of one window."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, windows: Tensor, n_windows: int, shift_mask: Tensor | None) -> Tensor:
        """Attend within each window.

        Args:
            windows: ``[b * n_windows, n, d]`` tokens, windows of one image consecutive.
            n_windows: Windows per image.
            shift_mask: ``[n_windows, n, n]`` additive mask of a shifted block, or ``None``.

        Returns:
            ``[b * n_windows, n, d]``.
        """
        bw, n, d = windows.shape
        qkv = self.qkv(windows).view(bw, n, 3, self.num_heads, d // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [b * nW, heads, n, d_head]
        mask = window_attention_mask(self.position_bias().to(query.dtype), shift_mask)
        dropout = self.attn_drop if self.training else 0.0
        out = window_attention(query, key, value, mask, n_windows, dropout)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout.

    Args:
        dim: Token width.
        hidden: Hidden width.
        drop: Dropout rate.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to ``[..., dim]``."""
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, each with a residual.

    Args:
        dim: Token width.
        resolution: Grid ``(h, w)`` the block sees.
        num_heads: Attention heads.
        window: Window side; clipped to the grid when the grid is not larger (then no shift).
        shift: Cyclic shift (0 = plain windows).
        mlp_ratio: MLP hidden width over ``dim``.
        qkv_bias: Bias on the qkv projection.
        drop: Dropout after projections.
        attn_drop: Dropout on attention weights.
        drop_path_rate: Stochastic depth of both residual branches.
    """

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        num_heads: int,
        *,
        window: int,
        shift: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:
            window, shift = min(resolution), 0
        self.window = window
        self.shift = shift
        self.n_windows = (resolution[0] // window) * (resolution[1] // window)
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.shift_mask: Tensor | None
        mask = shifted_window_mask(*resolution, window, shift) if shift else None
        self.register_buffer("shift_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: ``[b, h * w, d]`` tokens in grid order.

        Returns:
            ``[b, h * w, d]``.
        """
        b, length, d = x.shape
        height, width = self.resolution
        window, shift = self.window, self.shift
        grid = self.norm1(x).view(b, height, width, d)
        if shift:
            grid = torch.roll(grid, shifts=(-shift, -shift), dims=(1, 2))
        windows = rearrange(grid, "b (y i) (x j) d -> (b y x) (i j) d", i=window, j=window)
        windows = self.attn(windows, self.n_windows, self.shift_mask)
        grid = rearrange(
            windows, "(b y x) (i j) d -> b (y i) (x j) d", b=b, y=height // window, i=window
        )
        if shift:
            grid = torch.roll(grid, shifts=(shift, shift), dims=(1, 2))
        x = x + drop_path(grid.reshape(b, length, d), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (Swin order), LayerNorm, halve the width to 2d.

    Args:
        dim: Input token width ``d``.
        resolution: Input grid ``(h, w)``, both even.
    """

    def __init__(self, dim: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        height, width = resolution
        if height % 2 or width % 2:
            raise ValueError(f"patch merging needs an even grid, got {height}x{width}")
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Merge patches.

        Args:
            x: ``[b, h * w, d]`` in grid order.

        Returns:
            ``[b, h * w / 4, 2d]`` in the merged grid's order.
        """
        # Swin concatenates (row0,col0), (row1,col0), (row0,col1), (row1,col1): column-major.
        height = self.resolution[0]
        x = rearrange(x, "b (y i x j) d -> b (y x) (j i d)", y=height // 2, i=2, j=2)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Swin blocks alternating plain and shifted windows, then optional patch merging.

    Args:
        dim: Token width.
        resolution: Grid ``(h, w)``.
        depth: Number of blocks.
        num_heads: Attention heads.
        window: Window side; odd blocks shift by ``window // 2``.
        mlp_ratio: MLP hidden width over ``dim``.
        qkv_bias: Bias on the qkv projections.
        drop: Dropout after projections.
        attn_drop: Dropout on attention weights.
        drop_path_rates: Stochastic depth of each block.
        downsample: Append :class:`PatchMerging`.

    Attributes:
        window: Window side of this stage (``window`` clipped to the grid).
    """

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        *,
        window: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path_rates: Sequence[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.resolution = resolution
        self.window = min(window, *resolution)
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                resolution,
                num_heads,
                window=window,
                shift=0 if i % 2 == 0 else window // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop,
                attn_drop=attn_drop,
                drop_path_rate=drop_path_rates[i],
            )
            for i in range(depth)
        )
        self.downsample: PatchMerging | None = None
        if downsample:
            self.downsample = PatchMerging(dim, resolution)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the stage.

        Args:
            x: ``[b, h * w, d]`` in grid order.

        Returns:
            ``[b, h * w / 4, 2d]`` when merging, else ``[b, h * w, d]``.
        """
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.downsample(x) if self.downsample is not None else x
