"""Projections from an encoder's embedding into the joint audio-text space."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PROJECTIONS",
    "LinearProjection",
    "MlpProjection",
    "MsclapProjection",
    "build_projection",
]

PROJECTIONS = ("msclap", "mlp", "linear")


class MsclapProjection(nn.Module):
    """The paper's projection (and msclap's ``Projection``): a residual two-layer block.

    ``h = linear1(x)``; ``out = LayerNorm(h + dropout(linear2(gelu(h))))``, both linears
    without bias. Parameter names match msclap's, so its weights load one to one.

    Args:
        in_dim: encoder embedding size.
        out_dim: joint-space size (1024 in the paper).
        dropout: dropout on the second branch (0.5 in msclap).
    """

    def __init__(self, in_dim: int, out_dim: int, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim, bias=False)
        self.linear2 = nn.Linear(out_dim, out_dim, bias=False)
        self.layer_norm = nn.LayerNorm(out_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Project.

        Args:
            x: encoder embeddings. Shape ``[b, in_dim]``.

        Returns:
            Joint-space embeddings (not normalised). Shape ``[b, out_dim]``.
        """
        hidden = self.linear1(x)
        return self.layer_norm(hidden + self.drop(self.linear2(F.gelu(hidden))))


class MlpProjection(nn.Module):
    """LAION-CLAP / transformers ``ClapModel`` projection: Linear -> ReLU -> Linear (with bias).

    Args:
        in_dim: encoder embedding size.
        out_dim: joint-space size (512 in LAION-CLAP).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim)
        self.linear2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Project.

        Args:
            x: encoder embeddings. Shape ``[b, in_dim]``.

        Returns:
            Joint-space embeddings. Shape ``[b, out_dim]``.
        """
        return self.linear2(F.relu(self.linear1(x)))


class LinearProjection(nn.Module):
    """A single bias-free linear map (CLIP-style).

    Args:
        in_dim: encoder embedding size.
        out_dim: joint-space size.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Project.

        Args:
            x: encoder embeddings. Shape ``[b, in_dim]``.

        Returns:
            Joint-space embeddings. Shape ``[b, out_dim]``.
        """
        return self.linear(x)


def build_projection(kind: str, in_dim: int, out_dim: int, *, dropout: float = 0.5) -> nn.Module:
    """Build a projection by name.

    Args:
        kind: ``"msclap"`` (paper), ``"mlp"`` (LAION / transformers) or ``"linear"``.
        in_dim: encoder embedding size.
        out_dim: joint-space size.
        dropout: dropout of the ``"msclap"`` projection (ignored by the others).

    Returns:
        The projection module.

    Raises:
        ValueError: for an unknown kind or non-positive sizes.
    """
    if in_dim <= 0 or out_dim <= 0:
        raise ValueError(f"projection sizes must be positive, got {in_dim} -> {out_dim}")
    if kind == "msclap":
        return MsclapProjection(in_dim, out_dim, dropout=dropout)
    if kind == "mlp":
        return MlpProjection(in_dim, out_dim)
    if kind == "linear":
        return LinearProjection(in_dim, out_dim)
    raise ValueError(f"unknown projection {kind!r}; choose one of {PROJECTIONS}")
