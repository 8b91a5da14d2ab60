"""Tiny tokenizers (trained here with the `tokenizers` library) and tiny model configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import GPT2TokenizerFast, PretrainedConfig, PreTrainedTokenizerFast

from clapkit.text.corpus import small_config, train_tokenizer

CORPUS = [
    "a dog barks loudly in the distance while rain falls on a tin roof",
    "this is a sound of a car horn honking twice on a busy street",
    "birds chirp and sing in the early morning forest",
    "someone types quickly on a mechanical keyboard!",
    "a baby cries, then laughs; water runs from a tap.",
    "the engine of an airplane roars as it takes off",
    "church bells ring while people talk and footsteps pass by",
    "wow! thunder rumbles, glass breaks and a siren wails",
    "zero one two three four five six seven eight nine",
    "music with piano, drums and a singing voice",
]


@pytest.fixture(scope="session")
def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer("gpt2-eot", CORPUS)


@pytest.fixture(scope="session")
def roberta_tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer("roberta", CORPUS)


@pytest.fixture(scope="session")
def clip_tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer("clip", CORPUS)


@pytest.fixture(scope="session")
def bert_tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer("bert", CORPUS)


@pytest.fixture(scope="session")
def tiny_tokenizers(
    gpt2_tokenizer: PreTrainedTokenizerFast,
    bert_tokenizer: PreTrainedTokenizerFast,
    roberta_tokenizer: PreTrainedTokenizerFast,
    clip_tokenizer: PreTrainedTokenizerFast,
) -> dict[str, PreTrainedTokenizerFast]:
    return {
        "gpt2-eot": gpt2_tokenizer,
        "bert": bert_tokenizer,
        "roberta": roberta_tokenizer,
        "clip": clip_tokenizer,
    }


TinyFactory = Callable[..., tuple[PretrainedConfig, PreTrainedTokenizerFast]]


@pytest.fixture(scope="session")
def tiny_parts(tiny_tokenizers: dict[str, PreTrainedTokenizerFast]) -> TinyFactory:
    """``tiny_parts(name)`` -> (fresh tiny config, tokenizer) for "bert", "roberta", ..."""

    def make(name: str) -> tuple[PretrainedConfig, PreTrainedTokenizerFast]:
        tokenizer = tiny_tokenizers[name]
        return small_config(name, tokenizer), tokenizer

    return make


#: GPT-2's real vocabulary, shipped in the repository (see data/reference/README.md).
GPT2_FOLDER = Path(__file__).resolve().parents[3] / "data" / "reference" / "tokenizers" / "gpt2"


@pytest.fixture(scope="session")
def real_gpt2_tokenizer() -> GPT2TokenizerFast:
    for name in ("vocab.json", "merges.txt"):
        assert (GPT2_FOLDER / name).is_file(), f"the repository lacks {GPT2_FOLDER / name}"
    return GPT2TokenizerFast.from_pretrained(str(GPT2_FOLDER))
