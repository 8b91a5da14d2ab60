"""Each pooling checked against transformers' own outputs, computed here one text at a time."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2TokenizerFast

from clapkit.text import (
    EOT_SUFFIX_PLAIN,
    TextEncoder,
    bert,
    clip_text,
    gpt2_eot,
    last_real_token_index,
    pool_last_real_token,
    roberta,
)

TEXTS = [
    "a dog barks loudly in the distance",
    "wow! thunder rumbles! glass breaks",
    "rain",
    "",
    "Ünïcödé 🐶 日本語 — ça marche",
    "birds chirp and sing " * 30,  # over-long: truncated
]
ATOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore::clapkit.text.TextTruncationWarning")


def _reference_ids(encoder: TextEncoder, text: str) -> list[int]:
    """The ids the encoder should see for one text, built from the tokenizer alone."""
    ids = encoder.tokenizer((text if text.strip() else "") + encoder.eot_suffix)["input_ids"]
    tail = 2 if encoder.eot_suffix.startswith(" ") else 1
    if len(ids) > encoder.max_length:
        ids = ids[: encoder.max_length - tail] + ids[-tail:]
    return ids


def _single(encoder: TextEncoder, ids: list[int]) -> object:
    """transformers' own output for one unpadded sequence."""
    with torch.no_grad():
        return encoder.model(input_ids=torch.tensor([ids]))


def _build(name: str, tiny_parts, **kwargs: object) -> TextEncoder:
    builders = {"gpt2-eot": gpt2_eot, "bert": bert, "roberta": roberta, "clip": clip_text}
    config, tokenizer = tiny_parts(name)
    torch.manual_seed(0)
    encoder = builders[name](config=config, tokenizer=tokenizer, max_length=24, **kwargs)
    return encoder.eval()


def _embed(encoder: TextEncoder, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return encoder(texts).embedding


@pytest.mark.parametrize("suffix", [None, EOT_SUFFIX_PLAIN])
def test_gpt2_pools_the_end_of_text_state(suffix: str | None, tiny_parts) -> None:
    encoder = _build("gpt2-eot", tiny_parts, **({} if suffix is None else {"eot_suffix": suffix}))
    embedding = _embed(encoder, TEXTS)
    eot_id = encoder.tokenizer.eos_token_id
    for row, text in enumerate(TEXTS):
        ids = _reference_ids(encoder, text)
        assert ids[-1] == eot_id
        hidden = _single(encoder, ids).last_hidden_state[0]
        torch.testing.assert_close(embedding[row], hidden[-1], atol=ATOL, rtol=0)
        # the state at the end-of-text token, not at the token before it
        if len(ids) > 1:
            assert not torch.allclose(embedding[row], hidden[-2], atol=1e-3)


def test_gpt2_bang_inside_a_text_does_not_move_the_pooled_token(tiny_parts) -> None:
    encoder = _build("gpt2-eot", tiny_parts)
    text = "wow! thunder rumbles! glass breaks"
    ids = _reference_ids(encoder, text)
    assert ids.count(encoder.tokenizer.convert_tokens_to_ids("!")) == 2
    hidden = _single(encoder, ids).last_hidden_state[0]
    torch.testing.assert_close(_embed(encoder, [text, "a"])[0], hidden[-1], atol=ATOL, rtol=0)


@pytest.mark.parametrize(("name", "pooling"), [("bert", "cls"), ("roberta", "cls")])
def test_cls_pooling_is_the_first_state(name: str, pooling: str, tiny_parts) -> None:
    encoder = _build(name, tiny_parts, pooling=pooling)
    embedding = _embed(encoder, TEXTS)
    for row, text in enumerate(TEXTS):
        expected = _single(encoder, _reference_ids(encoder, text)).last_hidden_state[0, 0]
        torch.testing.assert_close(embedding[row], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_pooler_pooling_is_pooler_output(name: str, tiny_parts) -> None:
    encoder = _build(name, tiny_parts, pooling="pooler")
    embedding = _embed(encoder, TEXTS)
    for row, text in enumerate(TEXTS):
        output = _single(encoder, _reference_ids(encoder, text))
        torch.testing.assert_close(embedding[row], output.pooler_output[0], atol=ATOL, rtol=0)
        manual = torch.tanh(encoder.model.pooler.dense(output.last_hidden_state[0, 0]))
        torch.testing.assert_close(embedding[row], manual, atol=ATOL, rtol=0)


def test_clip_pools_end_of_text_through_the_projection(tiny_parts) -> None:
    encoder = _build("clip", tiny_parts)
    embedding = _embed(encoder, TEXTS)
    assert embedding.shape == (len(TEXTS), encoder.out_dim) == (len(TEXTS), 24)
    for row, text in enumerate(TEXTS):
        ids = _reference_ids(encoder, text)
        output = _single(encoder, ids)
        torch.testing.assert_close(embedding[row], output.text_embeds[0], atol=ATOL, rtol=0)
        at_eot = output.last_hidden_state[0, ids.index(encoder.tokenizer.eos_token_id)]
        manual = encoder.model.text_projection(at_eot)
        torch.testing.assert_close(embedding[row], manual, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["gpt2-eot", "bert", "roberta", "clip"])
def test_padding_and_batch_composition_do_not_change_embeddings(name: str, tiny_parts) -> None:
    encoder = _build(name, tiny_parts)
    texts = TEXTS[:5]
    alone = torch.cat([_embed(encoder, [text]) for text in texts])
    together = _embed(encoder, texts)
    reordered = _embed(encoder, [*texts[::-1], "a very long companion text " * 3])
    torch.testing.assert_close(together, alone, atol=ATOL, rtol=0)
    torch.testing.assert_close(reordered[:5].flip(0), alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["gpt2-eot", "bert", "roberta", "clip"])
def test_token_batch_call_matches_text_call(name: str, tiny_parts) -> None:
    encoder = _build(name, tiny_parts)
    texts = TEXTS[:3]
    with torch.no_grad():
        from_texts = encoder(texts)
        from_batch = encoder(**encoder.tokenize(texts))
    torch.testing.assert_close(from_batch.embedding, from_texts.embedding, atol=0, rtol=0)
    assert from_texts.last_hidden_state.shape[:2] == from_texts.attention_mask.shape


@pytest.mark.parametrize("name", ["gpt2-eot", "bert", "roberta", "clip"])
def test_blank_texts_embed_as_the_special_tokens_alone(name: str, tiny_parts) -> None:
    encoder = _build(name, tiny_parts)
    embedding = _embed(encoder, ["", "   ", "\n\t"])
    torch.testing.assert_close(embedding[1], embedding[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(embedding[2], embedding[0], atol=ATOL, rtol=0)
    bare = encoder.tokenizer(encoder.eot_suffix)["input_ids"]
    alone = _embed(encoder, [""])
    torch.testing.assert_close(alone[0], embedding[0], atol=ATOL, rtol=0)
    assert encoder.tokenize([" "])["input_ids"][0].tolist() == bare
    assert torch.isfinite(embedding).all()


def test_msclap_rule_agrees_without_bang_and_differs_with_it(
    real_gpt2_tokenizer: GPT2TokenizerFast,
) -> None:
    """msclap pools at count(ids != 0) - 1 over ids padded with "!" (id 0) to 77."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=128, n_embd=16, n_layer=2, n_head=2)
    encoder = gpt2_eot(config=config, tokenizer=real_gpt2_tokenizer).eval()
    texts = ["this is a sound of dog barking", "a car horn, then rain", "wow! a bell", ""]
    batch = encoder.tokenize(texts)
    msclap_ids = torch.zeros(len(texts), 77, dtype=torch.long)
    msclap_ids[:, : batch["input_ids"].shape[1]] = batch["input_ids"] * batch["attention_mask"]
    msclap_index = msclap_ids.ne(0).sum(-1) - 1
    ours = last_real_token_index(batch["attention_mask"])
    assert (batch["input_ids"][torch.arange(4), ours] == 50256).all()
    without_bang = [0, 1, 3]
    assert ours[without_bang].tolist() == msclap_index[without_bang].tolist()
    assert msclap_index[2] == ours[2] - 1  # msclap counts the "!" as padding


def test_last_real_token_index_reads_the_mask_only() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    assert last_real_token_index(mask).tolist() == [2, 0, 3, -1]
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    pooled = pool_last_real_token(hidden, mask[:2])
    torch.testing.assert_close(pooled, torch.stack([hidden[0, 2], hidden[1, 0]]))
