"""Swin Transformer parts of HTS-AT (Liu et al., 2021, arXiv 2103.14030), channels-last.

Tokens travel as ``[b, h, w, d]`` grids; window attention runs through
``torch.nn.functional.scaled_dot_product_attention`` with the relative position bias and the
shifted-window mask folded into one additive mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

SHIFT_MASK_VALUE = -100.0
"""Additive score between tokens of different shifted regions (Swin's value, not -inf)."""


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


def relative_position_index(window: int) -> Tensor:
    """Index into the ``(2w-1)^2`` bias table for every query/key pair of a window.

    Args:
        window: Window side ``w``.

    Returns:
        ``[w*w, w*w]`` long tensor.
    """
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # [2, n]
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return delta[0] * (2 * window - 1) + delta[1]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """Additive mask keeping attention inside the regions a cyclic shift brings together.

    Args:
        height: Grid rows.
        width: Grid columns.
        window: Window side.
        shift: Cyclic shift.

    Returns:
        ``[n_windows, w*w, w*w]`` of 0 and :data:`SHIFT_MASK_VALUE`.
    """
    region = torch.zeros(height, width)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            region[rows, cols] = label
            label += 1
    region = partition_windows(region[None, :, :, None], window).squeeze(-1)  # [nW, n]
    different = region[:, None, :] != region[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, SHIFT_MASK_VALUE)


def partition_windows(x: Tensor, window: int) -> Tensor:
    """``[b, h, w, d]`` -> ``[b * n_windows, window * window, d]`` (windows row-major)."""
    b, h, w, d = x.shape
    x = x.view(b, h // window, window, w // window, window, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, d)


def merge_windows(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`partition_windows`: ``[b * n_windows, n, d]`` -> ``[b, h, w, d]``."""
    d = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, d)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, d)


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
        heads = self.num_heads
        qkv = self.qkv(windows).view(bw, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # [b * nW, heads, n, d_head]
        # Masks go in 4-D: the fused CPU kernel takes them, a 3-D mask falls back to the math path.
        bias = self.position_bias().to(query.dtype)
        if shift_mask is None:
            out = F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=bias[None],
                dropout_p=self.attn_drop if self.training else 0.0,
            )
        else:
            # Windows share a mask per position, not per image: fold windows into the head axis
            # so one [nW * heads, n, n] mask broadcasts over the batch.
            mask = (shift_mask.to(query.dtype)[:, None] + bias[None]).reshape(1, -1, n, n)
            images = bw // n_windows
            out = F.scaled_dot_product_attention(
                query.reshape(images, n_windows * heads, n, -1),
                key.reshape(images, n_windows * heads, n, -1),
                value.reshape(images, n_windows * heads, n, -1),
                attn_mask=mask,
                dropout_p=self.attn_drop if self.training else 0.0,
            )
            out = out.view(bw, heads, n, -1)
        out = out.transpose(1, 2).reshape(bw, n, d)
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
            x: ``[b, h, w, d]``.

        Returns:
            ``[b, h, w, d]``.
        """
        _, height, width, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        n_windows = (height // self.window) * (width // self.window)
        y = self.attn(partition_windows(y, self.window), n_windows, self.shift_mask)
        y = merge_windows(y, self.window, height, width)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + drop_path(y, self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (Swin order), LayerNorm, halve the width to 2d.

    Args:
        dim: Input token width ``d``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Merge patches.

        Args:
            x: ``[b, h, w, d]`` with even ``h`` and ``w``.

        Returns:
            ``[b, h/2, w/2, 2d]``.
        """
        b, h, w, d = x.shape
        # Swin concatenates (row0,col0), (row1,col0), (row0,col1), (row1,col1): column-major.
        x = (
            x.view(b, h // 2, 2, w // 2, 2, d)
            .permute(0, 1, 3, 4, 2, 5)
            .reshape(b, h // 2, w // 2, 4 * d)
        )
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
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        """Apply the stage to ``[b, h, w, d]``; returns ``[b, h/2, w/2, 2d]`` when merging."""
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.downsample(x) if self.downsample is not None else x
