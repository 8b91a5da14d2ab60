"""Tokenizers trained from a corpus, and configs sized to them, build working encoders."""

from __future__ import annotations

import pytest
import torch

from clapkit.text import bert, clip_text, gpt2_eot, roberta
from clapkit.text.corpus import KINDS, small_config, train_tokenizer

CAPTIONS = [f"a man says the digit {d}" for d in ("zero", "one", "two", "seven")]
BUILDERS = {"gpt2-eot": gpt2_eot, "roberta": roberta, "clip": clip_text, "bert": bert}


@pytest.mark.parametrize("kind", KINDS)
def test_trained_tokenizer_drives_its_family_builder(kind: str) -> None:
    tokenizer = train_tokenizer(kind, CAPTIONS)
    config = small_config(kind, tokenizer, hidden_size=16, num_heads=2)
    encoder = BUILDERS[kind](config=config, tokenizer=tokenizer).eval()
    with torch.no_grad():
        out = encoder(["a man says the digit seven", "zero"])
    assert out.embedding.shape == (2, encoder.out_dim)
    assert torch.isfinite(out.embedding).all()
    # Round trip: every caption word survives tokenisation and decoding.
    ids = tokenizer(CAPTIONS[3], add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids).strip().lower() == CAPTIONS[3]


def test_family_special_tokens() -> None:
    assert train_tokenizer("gpt2-eot", CAPTIONS).eos_token == "<|endoftext|>"
    assert train_tokenizer("roberta", CAPTIONS).pad_token == "<pad>"
    clip = train_tokenizer("clip", CAPTIONS)
    assert clip.pad_token == clip.eos_token == "<|endoftext|>"
    assert train_tokenizer("bert", CAPTIONS)("zero")["input_ids"][0] == 2  # [CLS]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer kind 'xlnet'"):
        train_tokenizer("xlnet", CAPTIONS)
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer("bert", [])
    with pytest.raises(ValueError, match="does not divide"):
        small_config("bert", train_tokenizer("bert", CAPTIONS), hidden_size=30, num_heads=4)
