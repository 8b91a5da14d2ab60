"""`NAMED_ENCODERS`: the package's one table of named builders, and what it is consistent with."""

from __future__ import annotations

import pytest
import torch

from clapkit.text import (
    ARCHITECTURES,
    NAMED_ENCODERS,
    TextEncoder,
    bert,
    build_text_encoder,
    clip_text,
    gpt2_eot,
    roberta,
)

TEXTS = ["a dog barks", "rain on a tin roof, then thunder", ""]


def test_table_names_the_four_towers_of_the_ablation() -> None:
    assert {
        "bert": bert,
        "roberta": roberta,
        "clip": clip_text,
        "gpt2-eot": gpt2_eot,
    } == NAMED_ENCODERS
    assert list(NAMED_ENCODERS) == list(ARCHITECTURES)


@pytest.mark.parametrize("name", list(NAMED_ENCODERS))
def test_every_name_builds_a_working_tiny_encoder(name: str, tiny_parts) -> None:
    config, tokenizer = tiny_parts(name)
    torch.manual_seed(0)
    encoder = NAMED_ENCODERS[name](config=config, tokenizer=tokenizer).eval()
    spec = ARCHITECTURES[name]
    assert isinstance(encoder, TextEncoder)
    assert isinstance(encoder.model, spec.model_class)
    assert encoder.architecture == name
    assert encoder.pooling == spec.poolings[0]
    assert encoder.max_length == spec.default_max_length
    assert encoder.out_dim == spec.embedding_dim(config)
    with torch.no_grad():
        embedding = encoder(TEXTS).embedding
    assert embedding.shape == (len(TEXTS), encoder.out_dim)
    assert torch.isfinite(embedding).all()
    assert not torch.allclose(embedding[0], embedding[1])


@pytest.mark.parametrize("name", list(NAMED_ENCODERS))
def test_every_builder_takes_the_shared_keywords(name: str, tiny_parts) -> None:
    config, tokenizer = tiny_parts(name)
    pooling = ARCHITECTURES[name].poolings[-1]
    encoder = NAMED_ENCODERS[name](
        config=config, tokenizer=tokenizer, pooling=pooling, max_length=12
    )
    assert (encoder.pooling, encoder.max_length) == (pooling, 12)
    with pytest.raises(ValueError, match="supports pooling"):
        NAMED_ENCODERS[name](config=config, tokenizer=tokenizer, pooling="mean")


@pytest.mark.parametrize("name", list(NAMED_ENCODERS))
def test_rebuild_goes_through_the_named_builder(
    name: str, tiny_parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, tokenizer = tiny_parts(name)
    original = NAMED_ENCODERS[name](config=config, tokenizer=tokenizer, max_length=20).eval()
    calls: list[dict[str, object]] = []
    builder = NAMED_ENCODERS[name]

    def spy(**kwargs: object) -> TextEncoder:
        calls.append(kwargs)
        return builder(**kwargs)

    monkeypatch.setitem(NAMED_ENCODERS, name, spy)
    rebuilt = build_text_encoder(original.get_config(), original.tokenizer).eval()
    assert len(calls) == 1
    assert calls[0]["max_length"] == 20
    rebuilt.model.load_state_dict(original.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(TEXTS).embedding, original(TEXTS).embedding)


def test_rebuild_errors_name_the_table(tiny_parts) -> None:
    config, tokenizer = tiny_parts("bert")
    with pytest.raises(KeyError, match=r"'t5'; known: bert, roberta, clip, gpt2-eot"):
        build_text_encoder({"architecture": "t5", "model_config": {}}, tokenizer)
    spec = {"architecture": "bert", "model_config": config.to_dict(), "eot_suffix": "<|x|>"}
    with pytest.raises(ValueError, match="eot_suffix is for gpt2-eot only, not bert"):
        build_text_encoder(spec, tokenizer)
