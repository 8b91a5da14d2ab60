"""Swin Transformer parts of HTS-AT (Liu et al., 2021, arXiv 2103.14030), in window order.

Inside a stage the tokens travel as ``[b, h * w, d]`` sequences in *window order*: the tokens of
each (unshifted) window consecutive, windows row-major. Plain blocks then attend without moving a
token; a shifted block gathers its shifted windows with one index (cyclic shift and partition in
one copy) and scatter-adds its output back into the residual stream with one ``index_add``, where
the reference rolls, partitions, merges and rolls back. Patch merging gathers straight into the
next stage's window order. Window attention runs through
``torch.nn.functional.scaled_dot_product_attention`` with the relative position bias and the
shifted-window mask folded into one additive mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from clapkit.audio.htsat.windows import (
    inverse_order,
    relative_position_index,
    shifted_window_mask,
    window_order,
)
from clapkit.audio.kernels import linear


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

    def forward(
        self,
        windows: Tensor,
        n_windows: int,
        shift_mask: Tensor | None,
        residual: Tensor | None = None,
    ) -> Tensor:
        """Attend within each window.

        Args:
            windows: ``[b * n_windows, n, d]`` tokens, windows of one image consecutive.
            n_windows: Windows per image.
            shift_mask: ``[n_windows, n, n]`` additive mask of a shifted block, or ``None``.
            residual: ``[b * n_windows, n, d]`` added to the output (in the projection's
                epilogue where the fused kernel runs); only without output dropout.

        Returns:
            ``[b * n_windows, n, d]``.
        """
        bw, n, d = windows.shape
        heads = self.num_heads
        qkv = linear(windows, self.qkv).view(bw, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
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
        if residual is not None:
            return linear(out, self.proj, residual=residual)
        return self.proj_drop(linear(out, self.proj))


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

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """Apply the MLP to ``[..., dim]``, adding ``residual`` (only without dropout) if given."""
        hidden = self.drop(linear(x, self.fc1, gelu=True))
        if residual is not None:
            return linear(hidden, self.fc2, residual=residual)
        return self.drop(linear(hidden, self.fc2))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, each with a residual, on window-order tokens.

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
        self.shift_order: Tensor | None
        mask = order = None
        if shift:
            mask = shifted_window_mask(*resolution, window, shift)
            # Sequence position (plain window order) of every token of the shifted windows.
            plain = inverse_order(window_order(*resolution, window))
            order = plain[window_order(*resolution, window, shift)]
        self.register_buffer("shift_mask", mask, persistent=False)
        self.register_buffer("shift_order", order, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: ``[b, h * w, d]`` tokens in plain window order (see :func:`window_order`).

        Returns:
            ``[b, h * w, d]`` in the same order.
        """
        b, length, d = x.shape
        tokens = self.window**2
        if not self.training:  # no dropout or drop path: residuals join the projections
            if self.shift_order is None:
                windows = x.view(-1, tokens, d)
                x = self.attn(self.norm1(windows), self.n_windows, None, residual=windows)
                x = x.view(b, length, d)
            else:
                windows = self.norm1(x.index_select(1, self.shift_order)).view(-1, tokens, d)
                y = self.attn(windows, self.n_windows, self.shift_mask)
                x = x.index_add(1, self.shift_order, y.view(b, length, d))
            return self.mlp(self.norm2(x), residual=x)
        windows = x if self.shift_order is None else x.index_select(1, self.shift_order)
        y = self.attn(self.norm1(windows).view(-1, tokens, d), self.n_windows, self.shift_mask)
        y = drop_path(y.view(b, length, d), self.drop_path_rate, self.training)
        x = x + y if self.shift_order is None else x.index_add(1, self.shift_order, y)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (Swin order), LayerNorm, halve the width to 2d.

    Tokens come in the window order of this grid and leave in the window order of the merged
    grid, gathered by one index.

    Args:
        dim: Input token width ``d``.
        resolution: Input grid ``(h, w)``, both even.
        window: Window side of the input sequence's order.
        next_window: Window side of the output sequence's order.
    """

    def __init__(
        self, dim: int, resolution: tuple[int, int], window: int, next_window: int
    ) -> None:
        super().__init__()
        height, width = resolution
        if height % 2 or width % 2:
            raise ValueError(f"patch merging needs an even grid, got {height}x{width}")
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        position = inverse_order(
            window_order(height, width, window)
        )  # grid index -> sequence index
        merged = window_order(height // 2, width // 2, next_window)
        rows, cols = 2 * (merged // (width // 2)), 2 * (merged % (width // 2))
        # Swin concatenates (row0,col0), (row1,col0), (row0,col1), (row1,col1): column-major.
        sources = torch.stack(
            (rows * width + cols, (rows + 1) * width + cols, rows * width + cols + 1,
             (rows + 1) * width + cols + 1),
            dim=1,
        )  # fmt: skip
        self.gather_index: Tensor
        self.register_buffer("gather_index", position[sources].flatten(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Merge patches.

        Args:
            x: ``[b, h * w, d]`` in this grid's window order.

        Returns:
            ``[b, h * w / 4, 2d]`` in the merged grid's window order.
        """
        b, length, d = x.shape
        x = x.index_select(1, self.gather_index).view(b, length // 4, 4 * d)
        return linear(self.norm(x), self.reduction)


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
        next_window: Window side of the next stage (the order merging writes); defaults to
            ``window``.

    Attributes:
        window: Window side of this stage's token order (``window`` clipped to the grid).
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
        next_window: int | None = None,
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
            merged = (resolution[0] // 2, resolution[1] // 2)
            following = min(next_window if next_window is not None else window, *merged)
            self.downsample = PatchMerging(dim, resolution, self.window, following)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the stage.

        Args:
            x: ``[b, h * w, d]`` in this stage's window order.

        Returns:
            ``[b, h * w / 4, 2d]`` in the next stage's window order when merging, else
            ``[b, h * w, d]`` in this stage's order.
        """
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.downsample(x) if self.downsample is not None else x
