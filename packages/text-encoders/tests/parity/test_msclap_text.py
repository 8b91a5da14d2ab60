"""msclap 1.3.4's text towers and text path against clapkit, with random weights.

msclap builds its towers with ``AutoModel.from_pretrained``; here that call is patched to build
a small random model from a config, so nothing is downloaded. msclap's own
``CLAPWrapper.preprocess_text`` tokenises (padding every text to ``text_len``) and its
``TextEncoder.forward`` pools; only its projection is replaced by an identity so the pooled
vectors are compared. Run: ``HF_HUB_OFFLINE=1 python -m pytest <this dir> -m parity``.
"""

from __future__ import annotations

import argparse
import copy
import random
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPModel,
    GPT2Config,
    GPT2Model,
    GPT2TokenizerFast,
    PreTrainedTokenizerBase,
)

from clapkit.text import TextEncoder, bert, clip_text, gpt2_eot

pytestmark = pytest.mark.parity

# Measured on 2 CPU cores, 1 and 2 threads: GPT2 and BERT agree bit for bit, the CLIP path and
# the "!" re-computations to 5.7e-7 (absolute, rtol 0); 1e-6 leaves under 2x of headroom.
ATOL = 1e-6
HANDWRITTEN = [
    "this is a sound of dog barking",
    "A car horn honks twice, then silence.",
    "rain falls on a tin roof while thunder rumbles in the distance",
    "",
    "   leading and trailing spaces   ",
    "dog ",
    "question? answer: yes; (maybe) [not] {sure} #1 @home $5 %2 &c *x +y =z ~w",
    "Ünïcödé, 日本語の雨音, and an emoji 🐶",
    "numbers 0 1 2 3 4 5 6 7 8 9 and 3.14",
    "tabs\tand\nnewlines",
    "a man speaks; a woman laughs - birds chirp (far away)",
    "the quick brown fox jumps over the lazy dog " * 5,
]


def _random_texts(tokenizer: PreTrainedTokenizerBase, count: int, seed: int) -> list[str]:
    """Texts decoded from random token ids: odd words, pieces of words, any script."""
    rng = random.Random(seed)
    vocab_ids = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    texts = []
    for _ in range(count):
        ids = [rng.choice(vocab_ids) for _ in range(rng.randint(1, 40))]
        texts.append(tokenizer.decode(ids))
    return texts


def _msclap_text_path(
    tower: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    text_model: str,
    text_len: int,
) -> Callable[[list[str]], torch.Tensor]:
    """msclap's own ``get_text_embeddings`` on a wrapper holding just the text parts."""
    from msclap.CLAPWrapper import CLAPWrapper

    tokenizer = copy.deepcopy(tokenizer)  # the fixtures are shared: patch a copy
    if not hasattr(tokenizer, "encode_plus"):  # removed in transformers 5: same call
        tokenizer.encode_plus = tokenizer.__call__
    wrapper = object.__new__(CLAPWrapper)
    wrapper.args = argparse.Namespace(text_model=text_model, text_len=text_len)
    wrapper.tokenizer = tokenizer
    keys = ["input_ids", "attention_mask"]
    wrapper.token_keys = keys if "bert" not in text_model else [keys[0], "token_type_ids", keys[1]]
    wrapper.use_cuda = False
    wrapper.clap = SimpleNamespace(caption_encoder=tower)
    return wrapper.get_text_embeddings


def _msclap_tower(
    monkeypatch: pytest.MonkeyPatch, base: nn.Module, text_model: str, width: int
) -> nn.Module:
    from msclap.models import clap as msclap_clap

    monkeypatch.setattr(msclap_clap.AutoModel, "from_pretrained", lambda *a, **k: base)
    tower = msclap_clap.TextEncoder(d_out=16, text_model=text_model, transformer_embed_dim=width)
    tower.projection = nn.Identity()
    return tower.eval()


def _clapkit_embed(encoder: TextEncoder, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return encoder.eval()(texts).embedding


@pytest.fixture(scope="module")
def msclap_gpt2_tokenizer(real_gpt2_tokenizer: GPT2TokenizerFast) -> GPT2TokenizerFast:
    tokenizer = GPT2TokenizerFast.from_pretrained(real_gpt2_tokenizer.name_or_path)
    tokenizer.add_special_tokens({"pad_token": "!"})  # as msclap's load_clap does
    return tokenizer


@pytest.mark.parametrize("seed", [0, 1])
def test_gpt2_eot_matches_msclap_for_texts_without_bang(
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
    real_gpt2_tokenizer: GPT2TokenizerFast,
    msclap_gpt2_tokenizer: GPT2TokenizerFast,
) -> None:
    torch.manual_seed(seed)
    config = GPT2Config(n_embd=48, n_layer=3, n_head=4)  # GPT-2's vocabulary and positions
    tower = _msclap_tower(monkeypatch, GPT2Model(config), "gpt2", 48)
    msclap_embed = _msclap_text_path(tower, msclap_gpt2_tokenizer, "gpt2", 77)

    ours = gpt2_eot(config=config, tokenizer=real_gpt2_tokenizer)
    ours.model.load_state_dict(tower.base.state_dict())

    texts = HANDWRITTEN + _random_texts(real_gpt2_tokenizer, 60, seed)
    texts = [t for t in texts if "!" not in t]
    texts = [t for t in texts if len(real_gpt2_tokenizer(t + " <|endoftext|>")["input_ids"]) <= 77]
    assert len(texts) > 50
    with torch.no_grad():
        expected = msclap_embed(texts)
    torch.testing.assert_close(_clapkit_embed(ours, texts), expected, atol=ATOL, rtol=0.0)


def test_gpt2_eot_with_bang_pools_end_of_text_where_msclap_pools_earlier(
    monkeypatch: pytest.MonkeyPatch,
    real_gpt2_tokenizer: GPT2TokenizerFast,
    msclap_gpt2_tokenizer: GPT2TokenizerFast,
) -> None:
    torch.manual_seed(2)
    config = GPT2Config(n_embd=48, n_layer=2, n_head=4)
    tower = _msclap_tower(monkeypatch, GPT2Model(config), "gpt2", 48)
    msclap_embed = _msclap_text_path(tower, msclap_gpt2_tokenizer, "gpt2", 77)
    ours = gpt2_eot(config=config, tokenizer=real_gpt2_tokenizer).eval()
    ours.model.load_state_dict(tower.base.state_dict())

    texts = ["a dog barks!", "wow!! rain! thunder!", "bang!", "!x"]
    with torch.no_grad():
        ours_out = ours(texts).embedding
        theirs = msclap_embed(texts)
    for row, text in enumerate(texts):
        plain = real_gpt2_tokenizer(text + " <|endoftext|>")["input_ids"]
        # msclap's tokenizer cuts every "!" out as its pad token, id 0 ...
        cut = msclap_gpt2_tokenizer(text + " <|endoftext|>")["input_ids"]
        assert cut.count(0) == text.count("!")
        with torch.no_grad():
            plain_hidden = ours.model(input_ids=torch.tensor([plain])).last_hidden_state[0]
            cut_hidden = ours.model(input_ids=torch.tensor([cut])).last_hidden_state[0]
        # ... and pools one token earlier per "!"; clapkit pools the end-of-text token.
        expected_theirs = cut_hidden[len(cut) - 1 - text.count("!")]
        torch.testing.assert_close(theirs[row], expected_theirs, atol=ATOL, rtol=0.0)
        torch.testing.assert_close(ours_out[row], plain_hidden[-1], atol=ATOL, rtol=0.0)
        assert not torch.allclose(theirs[row], ours_out[row], atol=1e-3)


def _bert_texts(tokenizer: PreTrainedTokenizerBase, seed: int) -> list[str]:
    texts = [*HANDWRITTEN, "wow! a bang", "a dog barks!", *_random_texts(tokenizer, 40, seed)]
    return [t for t in texts if len(tokenizer(t)["input_ids"]) <= 100]


@pytest.mark.parametrize("seed", [0, 1])
def test_bert_cls_matches_msclap(
    seed: int, monkeypatch: pytest.MonkeyPatch, bert_tokenizer: PreTrainedTokenizerBase
) -> None:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(bert_tokenizer),
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=bert_tokenizer.pad_token_id,
    )
    tower = _msclap_tower(monkeypatch, BertModel(config), "bert-base-uncased", 48)
    msclap_embed = _msclap_text_path(tower, bert_tokenizer, "bert-base-uncased", 100)
    ours = bert(config=config, tokenizer=bert_tokenizer)
    ours.model.load_state_dict(tower.base.state_dict())

    texts = _bert_texts(bert_tokenizer, seed)
    with torch.no_grad():
        expected = msclap_embed(texts)
    torch.testing.assert_close(_clapkit_embed(ours, texts), expected, atol=ATOL, rtol=0.0)


def test_clip_matches_msclap_clip_path(
    monkeypatch: pytest.MonkeyPatch, clip_tokenizer: PreTrainedTokenizerBase
) -> None:
    torch.manual_seed(3)
    text_config: dict[str, Any] = {
        "vocab_size": len(clip_tokenizer),
        "hidden_size": 48,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "eos_token_id": clip_tokenizer.eos_token_id,
        "bos_token_id": clip_tokenizer.bos_token_id,
        "pad_token_id": clip_tokenizer.pad_token_id,
    }
    vision_config = {"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1}
    vision_config |= {"num_attention_heads": 2, "image_size": 8, "patch_size": 4}
    full = CLIPModel(
        CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=24)
    )
    tower = _msclap_tower(monkeypatch, full, "openai/clip-vit-base-patch32", 48)
    msclap_embed = _msclap_text_path(tower, clip_tokenizer, "openai/clip-vit-base-patch32", 77)
    # CLIPTextConfig carries its own projection_dim; CLIPModel's lives on CLIPConfig.
    ours_config = full.config.text_config.to_dict() | {"projection_dim": 24}
    ours = clip_text(config=ours_config, tokenizer=clip_tokenizer)
    ours.model.text_model.load_state_dict(tower.base.state_dict())
    ours.model.text_projection.load_state_dict(tower.clip_text_projection.state_dict())

    texts = HANDWRITTEN[:-1] + _random_texts(clip_tokenizer, 30, 3)
    texts = [t for t in texts if len(clip_tokenizer(t)["input_ids"]) <= 77]
    with torch.no_grad():
        expected = msclap_embed(texts)
    torch.testing.assert_close(_clapkit_embed(ours, texts), expected, atol=ATOL, rtol=0.0)
