from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clapkit.caption import (
    MapperConfig,
    build_mapper,
    clapcap_mapper,
    mlp_mapper,
    transformer_mapper,
)

MANIFEST = (
    Path(__file__).resolve().parents[3]
    / "data"
    / "reference"
    / "checkpoints"
    / "msclap_clapcap.json"
)


def _manifest() -> dict[str, list[int]]:
    return json.loads(MANIFEST.read_text())  # type: ignore[no-any-return]


def test_clapcap_mapper_has_msclap_keys_shapes_and_size() -> None:
    expected = {
        k.removeprefix("clap_project."): v
        for k, v in _manifest().items()
        if k.startswith("clap_project.")
    }
    mapper = clapcap_mapper()
    actual = {k: list(v.shape) for k, v in mapper.state_dict().items()}
    assert actual == expected
    assert sum(p.numel() for p in mapper.parameters()) == 69_316_608


def test_transformer_mapper_shapes_and_gradient() -> None:
    mapper = transformer_mapper(
        embed_dim=12, prefix_length=3, width=16, audio_tokens=5, depth=2, num_heads=4
    )
    embedding = torch.randn(2, 12, requires_grad=True)
    prefix = mapper(embedding)
    assert prefix.shape == (2, 3, 16)
    prefix.sum().backward()
    assert embedding.grad is not None
    assert embedding.grad.abs().sum() > 0
    assert all(p.grad is not None for p in mapper.parameters())


def test_transformer_mapper_is_permutation_free_of_batch() -> None:
    mapper = transformer_mapper(embed_dim=8, prefix_length=2, width=8, depth=1, num_heads=2).eval()
    x = torch.randn(3, 8)
    assert torch.allclose(mapper(x)[1], mapper(x[1:2])[0], atol=1e-6)


def test_attention_matches_a_plain_softmax_implementation() -> None:
    mapper = transformer_mapper(embed_dim=8, prefix_length=2, width=8, depth=1, num_heads=2)
    attn = mapper.transformer.layers[0].attn
    x = torch.randn(2, 5, 8)
    q = attn.to_queries(x).view(2, 5, 2, 4)
    kv = attn.to_keys_values(x).view(2, 5, 2, 2, 4)  # msclap's layout: (b, m, 2, heads, dh)
    k, v = kv[:, :, 0], kv[:, :, 1]
    weights = (torch.einsum("bnhd,bmhd->bnmh", q, k) * 4**-0.5).softmax(dim=2)
    expected = attn.project(torch.einsum("bnmh,bmhd->bnhd", weights, v).reshape(2, 5, 8))
    assert torch.allclose(attn(x), expected, atol=1e-6)


def test_mlp_mapper_shapes_and_names() -> None:
    mapper = mlp_mapper(embed_dim=10, prefix_length=3, width=8)
    assert mapper(torch.randn(4, 10)).shape == (4, 3, 8)
    assert mapper.model[0].out_features == 12  # ClipCap: prefix_length * width // 2
    assert set(mapper.state_dict()) == {
        "model.0.weight",
        "model.0.bias",
        "model.2.weight",
        "model.2.bias",
    }


@pytest.mark.parametrize(
    "mapper",
    [
        transformer_mapper(
            embed_dim=6, prefix_length=2, width=8, depth=1, num_heads=2, mlp_ratio=3.0
        ),
        mlp_mapper(embed_dim=6, prefix_length=2, width=8, hidden_dim=5),
    ],
)
def test_build_mapper_rebuilds_from_config(mapper: torch.nn.Module) -> None:
    config = json.loads(json.dumps(mapper.get_config()))  # type: ignore[operator]
    rebuilt = build_mapper(config)
    assert type(rebuilt) is type(mapper)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in mapper.state_dict().items()
    }


def test_bad_mapper_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        transformer_mapper(width=10, num_heads=3)
    with pytest.raises(ValueError, match="depth must be positive"):
        transformer_mapper(depth=0)
    with pytest.raises(ValueError, match="unknown mapper config keys"):
        MapperConfig.from_dict({"kind": "mlp", "colour": 1})
    with pytest.raises(ValueError, match="unknown mapper kind"):
        build_mapper({"kind": "lstm"})
