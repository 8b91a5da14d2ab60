"""Training behaviour, config round trips, loading from folders, and misuse errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, GPT2TokenizerFast

from clapkit.text import (
    NAMED_ENCODERS,
    TextEncoder,
    bert,
    build_text_encoder,
    gpt2_eot,
    load_tokenizer,
)

BUILDERS = NAMED_ENCODERS
NAMES = list(BUILDERS)
TEXTS = ["a dog barks", "rain on a tin roof, then thunder!", "", "日本語 🐶"]
DROPOUT_FIELDS = (
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "attention_dropout",
    "dropout",
)


def _build(name: str, tiny_parts, *, no_dropout: bool = False) -> TextEncoder:
    config, tokenizer = tiny_parts(name)
    if no_dropout:
        for field in DROPOUT_FIELDS:
            if hasattr(config, field):
                setattr(config, field, 0.0)
    torch.manual_seed(0)
    return BUILDERS[name](config=config, tokenizer=tokenizer)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_reaches_every_used_weight(name: str, tiny_parts) -> None:
    encoder = _build(name, tiny_parts).train()
    out = encoder(TEXTS)
    assert out.embedding.shape == (len(TEXTS), encoder.out_dim)
    assert out.last_hidden_state.shape[0] == len(TEXTS)
    assert torch.isfinite(out.embedding).all()
    out.embedding.square().sum().backward()
    grads = {n: p.grad for n, p in encoder.model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    # the last layer's weights get a gradient in every architecture
    last_layer = [n for n, g in grads.items() if ".1." in n and g is not None]
    assert last_layer
    assert all(grads[n].abs().sum() > 0 for n in last_layer if n.endswith("weight"))


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_gives_the_same_gradients(name: str, tiny_parts) -> None:
    reference = _build(name, tiny_parts, no_dropout=True).train()
    checkpointed = _build(name, tiny_parts, no_dropout=True).train()
    checkpointed.model.load_state_dict(reference.model.state_dict())
    checkpointed.set_grad_checkpointing(True)

    layer = [m for m in checkpointed.model.modules() if hasattr(m, "gradient_checkpointing")]
    assert layer
    assert all(m.gradient_checkpointing for m in layer)
    calls = []
    block = next(m for n, m in checkpointed.model.named_modules() if n.endswith(".0"))
    inner = next(block.children())  # inside the checkpointed forward, so it runs again
    inner.register_forward_hook(lambda *_: calls.append(1))

    for encoder in (reference, checkpointed):
        encoder(TEXTS).embedding.square().sum().backward()
    assert len(calls) == 2  # forward, then recomputed in the backward pass
    for (n, p), q in zip(
        reference.model.named_parameters(), checkpointed.model.parameters(), strict=True
    ):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=n)

    checkpointed.set_grad_checkpointing(False)
    assert not any(m.gradient_checkpointing for m in layer)


def test_grad_checkpointing_keeps_a_frozen_tower_out_of_autograd(tiny_parts) -> None:
    encoder = _build("gpt2-eot", tiny_parts).train().freeze()
    encoder.set_grad_checkpointing(True)
    assert not encoder(TEXTS).embedding.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_freeze_and_unfreeze(name: str, tiny_parts) -> None:
    encoder = _build(name, tiny_parts)
    assert encoder.freeze() is encoder
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder(TEXTS).embedding.requires_grad
    encoder.unfreeze()
    assert encoder(TEXTS).embedding.requires_grad
    # every weight that reaches the embedding trains, and only those (a pooler layer does with
    # pooling="pooler" alone); a frozen one would get no gradient, which DDP refuses
    encoder(TEXTS).embedding.sum().backward()
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    reached = {n for n, p in encoder.named_parameters() if p.grad is not None}
    assert trainable == reached
    assert all(
        n.startswith("model.pooler.") for n, _ in encoder.named_parameters() if n not in trainable
    )


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip_through_json(name: str, tiny_parts, tmp_path: Path) -> None:
    original = _build(name, tiny_parts).eval()
    config = json.loads(json.dumps(original.get_config()))
    assert config["architecture"] == name
    assert config["max_length"] == original.max_length
    assert config["pooling"] == original.pooling
    original.save_tokenizer(tmp_path / "tok")
    rebuilt = build_text_encoder(config, tmp_path / "tok").eval()
    assert type(rebuilt.model) is type(original.model)
    assert rebuilt.get_config() == original.get_config()
    original_shapes = {k: v.shape for k, v in original.model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.model.state_dict().items()} == original_shapes
    rebuilt.model.load_state_dict(original.model.state_dict())
    assert rebuilt.tokenize(TEXTS)["input_ids"].equal(original.tokenize(TEXTS)["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(TEXTS).embedding, original(TEXTS).embedding)


def test_rebuilt_gpt2_keeps_suffix_and_pooling(tiny_parts) -> None:
    config, tokenizer = tiny_parts("gpt2-eot")
    encoder = gpt2_eot(config=config, tokenizer=tokenizer, eot_suffix="<|endoftext|>")
    rebuilt = build_text_encoder(encoder.get_config(), encoder.tokenizer)
    assert rebuilt.eot_suffix == "<|endoftext|>"
    pooled = bert(config=tiny_parts("bert")[0], tokenizer=tiny_parts("bert")[1], pooling="pooler")
    assert build_text_encoder(pooled.get_config(), pooled.tokenizer).pooling == "pooler"


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_local_folder(name: str, tiny_parts, tmp_path: Path) -> None:
    original = _build(name, tiny_parts).eval()
    original.model.save_pretrained(tmp_path)
    original.save_tokenizer(tmp_path)
    loaded = BUILDERS[name](pretrained=tmp_path).eval()
    assert loaded.tokenizer.pad_token_id == original.tokenizer.pad_token_id
    with torch.no_grad():
        torch.testing.assert_close(loaded(TEXTS).embedding, original(TEXTS).embedding)


def test_dict_config_accepted(tiny_parts) -> None:
    config, tokenizer = tiny_parts("bert")
    encoder = bert(config=config.to_dict(), tokenizer=tokenizer)
    assert isinstance(encoder.model.config, BertConfig)


def test_vocabulary_only_folder_loads_as_gpt2_tokenizer(
    real_gpt2_tokenizer: GPT2TokenizerFast,
) -> None:
    tokenizer = load_tokenizer(real_gpt2_tokenizer.name_or_path, "gpt2-eot")
    assert tokenizer("a dog barks <|endoftext|>")["input_ids"] == [64, 3290, 2318, 591, 220, 50256]


def test_missing_tokenizer_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="cannot load a bert tokenizer from"):
        load_tokenizer(tmp_path / "nowhere", "bert")


def test_builder_argument_errors(tiny_parts) -> None:
    config, tokenizer = tiny_parts("gpt2-eot")
    with pytest.raises(ValueError, match="not both"):
        gpt2_eot("gpt2", config=config, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="config= needs tokenizer="):
        gpt2_eot(config=config)
    with pytest.raises(TypeError, match="needs a GPT2Config, got BertConfig"):
        gpt2_eot(config=BertConfig(), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="supports pooling 'cls', 'pooler'; got 'eot'"):
        bert(config=tiny_parts("bert")[0], tokenizer=tiny_parts("bert")[1], pooling="eot")
    with pytest.raises(KeyError, match="known: bert, roberta, clip, gpt2-eot"):
        build_text_encoder({"architecture": "t5", "model_config": {}}, tokenizer)


def test_constructor_type_errors(tiny_parts) -> None:
    config, tokenizer = tiny_parts("gpt2-eot")
    with pytest.raises(TypeError, match="bert needs a BertModel, got GPT2Model"):
        TextEncoder(model=GPT2Model(config), tokenizer=tokenizer, architecture="bert")
    with pytest.raises(TypeError, match="must be a transformers tokenizer"):
        TextEncoder(model=GPT2Model(config), tokenizer="gpt2", architecture="gpt2-eot")  # type: ignore[arg-type]
    bert_config, bert_tokenizer = tiny_parts("bert")
    with pytest.raises(ValueError, match="eot_suffix is for gpt2-eot only"):
        TextEncoder(
            model=BertModel(bert_config),
            tokenizer=bert_tokenizer,
            architecture="bert",
            eot_suffix="<|endoftext|>",
        )


def test_forward_argument_errors(tiny_parts) -> None:
    encoder = _build("gpt2-eot", tiny_parts)
    batch = encoder.tokenize(TEXTS)
    with pytest.raises(ValueError, match="not both"):
        encoder(TEXTS, input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="give texts or input_ids"):
        encoder()
    with pytest.raises(ValueError, match=r"input_ids must be \[b, s\]"):
        encoder(input_ids=batch["input_ids"][0])
    with pytest.raises(ValueError, match="differs from input_ids shape"):
        encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"][:, :2])
    empty = batch["attention_mask"].clone()
    empty[1] = 0
    with pytest.raises(ValueError, match=r"rows \[1\] have no real token"):
        encoder(input_ids=batch["input_ids"], attention_mask=empty)
    with pytest.raises(TypeError, match=r"texts\[1\] is a float"):
        encoder(["a", 1.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="texts is empty"):
        encoder([])


def test_missing_mask_means_no_padding(tiny_parts) -> None:
    encoder = _build("gpt2-eot", tiny_parts).eval()
    ids = encoder.tokenize(["a dog barks"])["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(input_ids=ids).embedding, encoder(["a dog barks"]).embedding
        )


def test_very_long_and_non_ascii_text(real_gpt2_tokenizer: GPT2TokenizerFast) -> None:
    config = GPT2Config(vocab_size=50257, n_positions=128, n_embd=16, n_layer=1, n_head=2)
    encoder = gpt2_eot(config=config, tokenizer=real_gpt2_tokenizer).eval()
    texts = ["ß∂ƒ©˙∆ 雨の音 🐕‍🦺 мурлыканье", "the sound of " * 20_000]
    with pytest.warns(UserWarning, match="longer than max_length=77"), torch.no_grad():
        out = encoder(texts)
    assert out.last_hidden_state.shape[1] == 77
    assert torch.isfinite(out.embedding).all()
    assert encoder.tokenize(texts)["input_ids"][1, -2:].tolist() == [220, 50256]
