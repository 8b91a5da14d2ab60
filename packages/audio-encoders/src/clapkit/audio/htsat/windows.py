"""Window geometry of Swin (Liu et al., 2021, arXiv 2103.14030): token orders, masks, biases.

Swin's stages cut a token grid into square windows, every other block after a cyclic shift.
clapkit keeps the tokens of a stage in *window order* (the tokens of each window consecutive,
windows row-major), so these helpers give the permutations between grid order and window
orders, the shifted-window attention mask and the relative-position index.
"""

from __future__ import annotations

import torch
from torch import Tensor

SHIFT_MASK_VALUE = -100.0
"""Additive score between tokens of different shifted regions (Swin's value, not -inf)."""


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


def window_order(height: int, width: int, window: int, shift: int = 0) -> Tensor:
    """Grid index of every token of a window-major sequence.

    Position ``p`` of the sequence holds grid token ``order[p]`` (row-major flat index) of a
    ``height x width`` grid cyclically shifted by ``-shift`` and cut into ``window x window``
    windows, windows row-major, tokens row-major inside a window.

    Args:
        height: Grid rows (a multiple of ``window``).
        width: Grid columns (a multiple of ``window``).
        window: Window side.
        shift: Cyclic shift (Swin rolls the grid by ``-shift`` before partitioning).

    Returns:
        ``[height * width]`` long tensor, a permutation.

    Raises:
        ValueError: If the grid is not a whole number of windows.
    """
    if height % window or width % window:
        raise ValueError(
            f"grid {height}x{width} is not a whole number of {window}x{window} windows"
        )
    rows = torch.arange(height).view(height // window, 1, window, 1)
    cols = torch.arange(width).view(1, width // window, 1, window)
    rows, cols = (rows + shift) % height, (cols + shift) % width
    return (rows * width + cols).flatten()


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
    # Regions are labelled on the shifted grid, so its windows are the plain partition of it.
    region = region.flatten()[window_order(height, width, window)].view(-1, window * window)
    different = region[:, None, :] != region[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, SHIFT_MASK_VALUE)


def inverse_order(order: Tensor) -> Tensor:
    """The permutation that undoes ``order`` (``inverse[order] == arange``)."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return inverse
