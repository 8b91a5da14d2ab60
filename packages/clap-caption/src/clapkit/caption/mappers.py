"""Mapper networks: a CLAP audio embedding -> a prefix of language-model input embeddings.

Two families, both configurable by keyword:

- :class:`TransformerMapper`, the msclap "clapcap" mapper (itself ClipCap's transformer mapper):
  ``Linear(embed_dim -> audio_tokens * width)`` reshaped to ``audio_tokens`` tokens, concatenated
  with ``prefix_length`` learned constant tokens, a pre-LN transformer without positional
  embedding or mask, and the last ``prefix_length`` outputs are the prefix.
- :class:`MlpMapper`, ClipCap's MLP mapper: ``embed_dim -> hidden -> prefix_length * width`` with
  tanh.

Parameter names follow msclap's so that its files load by stripping the ``clap_project.`` prefix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MapperKind = Literal["transformer", "mlp"]


@dataclass(frozen=True)
class MapperConfig:
    """Everything that defines a mapper; ``build_mapper(config)`` rebuilds it.

    Attributes:
        kind: ``"transformer"`` (clapcap) or ``"mlp"`` (ClipCap MLP).
        embed_dim: Size of the audio embedding fed in (msclap: 1024, the projection output).
        prefix_length: Number of prefix embeddings handed to the language model.
        width: Language-model embedding size (GPT2 base: 768).
        audio_tokens: Transformer only: tokens the audio embedding is expanded into (msclap: 40).
        depth: Transformer only: number of layers.
        num_heads: Transformer only: attention heads.
        mlp_ratio: Transformer only: hidden size of each block's MLP as a multiple of ``width``.
        hidden_dim: MLP only: hidden size; ``None`` = ``prefix_length * width // 2`` (ClipCap).
    """

    kind: MapperKind = "transformer"
    embed_dim: int = 1024
    prefix_length: int = 40
    width: int = 768
    audio_tokens: int = 40
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 2.0
    hidden_dim: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MapperConfig:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ValueError: On a key this config does not know.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown mapper config keys {unknown}; known: {sorted(known)}")
        return cls(**values)


class MapperAttention(nn.Module):
    """Multi-head self-attention with bias-free query and key/value projections (clapcap)."""

    def __init__(self, *, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_queries = nn.Linear(width, width, bias=False)
        self.to_keys_values = nn.Linear(width, 2 * width, bias=False)
        self.project = nn.Linear(width, width)

    def forward(self, tokens: Tensor) -> Tensor:
        """Attend every token to every token (no mask, no positions).

        Shapes: ``tokens`` [b, n, d] -> [b, n, d].
        """
        b, n, d = tokens.shape
        head_dim = d // self.num_heads
        queries = self.to_queries(tokens).view(b, n, self.num_heads, head_dim).transpose(1, 2)
        keys, values = self.to_keys_values(tokens).split(d, dim=-1)
        keys = keys.reshape(b, n, self.num_heads, head_dim).transpose(1, 2)
        values = values.reshape(b, n, self.num_heads, head_dim).transpose(1, 2)
        attended = F.scaled_dot_product_attention(queries, keys, values)
        return self.project(attended.transpose(1, 2).reshape(b, n, d))


class MapperMlp(nn.Module):
    """Two linear layers with ReLU between them."""

    def __init__(self, *, width: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, width)

    def forward(self, tokens: Tensor) -> Tensor:
        """Shapes: ``tokens`` [b, n, d] -> [b, n, d]."""
        return self.fc2(F.relu(self.fc1(tokens)))


class MapperBlock(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, *, width: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = MapperAttention(width=width, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MapperMlp(width=width, hidden_dim=int(width * mlp_ratio))

    def forward(self, tokens: Tensor) -> Tensor:
        """Shapes: ``tokens`` [b, n, d] -> [b, n, d]."""
        tokens = tokens + self.attn(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class MapperTransformer(nn.Module):
    """A stack of :class:`MapperBlock` (named ``layers`` as in msclap)."""

    def __init__(self, *, width: int, depth: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MapperBlock(width=width, num_heads=num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """Shapes: ``tokens`` [b, n, d] -> [b, n, d]."""
        for layer in self.layers:
            tokens = layer(tokens)
        return tokens


class TransformerMapper(nn.Module):
    """The clapcap transformer mapper (build it with :func:`transformer_mapper`)."""

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.embed_dim, config.audio_tokens * config.width)
        self.prefix_const = nn.Parameter(torch.randn(config.prefix_length, config.width))
        self.transformer = MapperTransformer(
            width=config.width,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
        )

    @property
    def prefix_length(self) -> int:
        """Number of prefix embeddings produced per clip."""
        return self.config.prefix_length

    def forward(self, audio_embedding: Tensor) -> Tensor:
        """Map audio embeddings to language-model prefixes.

        Shapes: ``audio_embedding`` [b, d_a] -> prefix [b, prefix_length, width].
        """
        b = audio_embedding.shape[0]
        audio_tokens = self.linear(audio_embedding).view(b, self.config.audio_tokens, -1)
        constant = self.prefix_const.unsqueeze(0).expand(b, -1, -1)
        outputs = self.transformer(torch.cat((audio_tokens, constant), dim=1))
        return outputs[:, self.config.audio_tokens :]

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable config; :func:`build_mapper` rebuilds the same module."""
        return self.config.to_dict()


class MlpMapper(nn.Module):
    """ClipCap's MLP mapper (build it with :func:`mlp_mapper`); layers named ``model.0/2``."""

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.config = config
        out_dim = config.prefix_length * config.width
        hidden_dim = config.hidden_dim if config.hidden_dim is not None else out_dim // 2
        self.model = nn.Sequential(
            nn.Linear(config.embed_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, out_dim)
        )

    @property
    def prefix_length(self) -> int:
        """Number of prefix embeddings produced per clip."""
        return self.config.prefix_length

    def forward(self, audio_embedding: Tensor) -> Tensor:
        """Shapes: ``audio_embedding`` [b, d_a] -> prefix [b, prefix_length, width]."""
        flat = self.model(audio_embedding)
        return flat.view(audio_embedding.shape[0], self.config.prefix_length, self.config.width)

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable config; :func:`build_mapper` rebuilds the same module."""
        return self.config.to_dict()


Mapper = TransformerMapper | MlpMapper


def _check_positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def transformer_mapper(
    *,
    embed_dim: int = 1024,
    prefix_length: int = 40,
    width: int = 768,
    audio_tokens: int | None = None,
    depth: int = 8,
    num_heads: int = 8,
    mlp_ratio: float = 2.0,
) -> TransformerMapper:
    """Component builder of the transformer mapper, every knob a keyword.

    Args:
        embed_dim: Audio embedding size.
        prefix_length: Prefix embeddings produced (learned constant tokens).
        width: Language-model embedding size.
        audio_tokens: Tokens the audio embedding expands into; ``None`` = ``prefix_length``.
        depth: Transformer layers.
        num_heads: Attention heads; must divide ``width``.
        mlp_ratio: Block MLP hidden size over ``width``.

    Returns:
        A randomly initialised :class:`TransformerMapper`.

    Raises:
        ValueError: On a non-positive size or ``width`` not divisible by ``num_heads``.
    """
    audio_tokens = prefix_length if audio_tokens is None else audio_tokens
    _check_positive(
        embed_dim=embed_dim,
        prefix_length=prefix_length,
        width=width,
        audio_tokens=audio_tokens,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
    )
    if width % num_heads:
        raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    return TransformerMapper(
        MapperConfig(
            kind="transformer",
            embed_dim=embed_dim,
            prefix_length=prefix_length,
            width=width,
            audio_tokens=audio_tokens,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
        )
    )


def mlp_mapper(
    *,
    embed_dim: int = 1024,
    prefix_length: int = 10,
    width: int = 768,
    hidden_dim: int | None = None,
) -> MlpMapper:
    """Component builder of ClipCap's MLP mapper.

    Args:
        embed_dim: Audio embedding size.
        prefix_length: Prefix embeddings produced.
        width: Language-model embedding size.
        hidden_dim: Hidden size; ``None`` = ``prefix_length * width // 2`` (ClipCap).

    Returns:
        A randomly initialised :class:`MlpMapper`.

    Raises:
        ValueError: On a non-positive size.
    """
    _check_positive(
        embed_dim=embed_dim, prefix_length=prefix_length, width=width, hidden_dim=hidden_dim
    )
    return MlpMapper(
        MapperConfig(
            kind="mlp",
            embed_dim=embed_dim,
            prefix_length=prefix_length,
            width=width,
            hidden_dim=hidden_dim,
        )
    )


def clapcap_mapper() -> TransformerMapper:
    """The mapper of msclap's ``clapcap_weights_2023.pth`` (69.3 M parameters).

    1024-d normalised CLAP audio embedding -> 40 x 768 tokens + 40 constant tokens -> 8 pre-LN
    layers, 8 heads, MLP ratio 2 -> 40 x 768 GPT2 prefix (Elizalde et al., 2023, arXiv 2309.05767).
    """
    return transformer_mapper(
        embed_dim=1024, prefix_length=40, width=768, audio_tokens=40, depth=8, num_heads=8
    )


def build_mapper(config: MapperConfig | dict[str, Any]) -> Mapper:
    """Build a randomly initialised mapper from a config (or ``get_config()`` output).

    Raises:
        ValueError: On an unknown ``kind`` or a bad size.
    """
    if isinstance(config, dict):
        config = MapperConfig.from_dict(config)
    if config.kind == "transformer":
        return transformer_mapper(
            embed_dim=config.embed_dim,
            prefix_length=config.prefix_length,
            width=config.width,
            audio_tokens=config.audio_tokens,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
        )
    if config.kind == "mlp":
        return mlp_mapper(
            embed_dim=config.embed_dim,
            prefix_length=config.prefix_length,
            width=config.width,
            hidden_dim=config.hidden_dim,
        )
    raise ValueError(f"unknown mapper kind {config.kind!r}; known: 'transformer', 'mlp'")
