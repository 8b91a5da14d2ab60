"""The captioner's language-model tokenizer: GPT-2's bare vocabulary folder, EOS as padding,
clear refusals, and the deprecated old name."""

from __future__ import annotations

from pathlib import Path

import pytest

from clapkit.caption import load_lm_tokenizer, load_tokenizer


def test_a_bare_gpt2_folder_loads_with_eos_as_padding(tokenizer_folder: Path) -> None:
    tokenizer = load_lm_tokenizer(tokenizer_folder)
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 50256
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]  # GPT-2's own ids
    assert load_lm_tokenizer(tokenizer) is tokenizer  # an object is used as it is


def test_a_file_or_a_tokenizer_without_eos_is_refused(
    tmp_path: Path, tokenizer_folder: Path
) -> None:
    with pytest.raises(ValueError, match=r"vocab.json is a file; give its folder"):
        load_lm_tokenizer(tokenizer_folder / "vocab.json")
    tokenizer = load_lm_tokenizer(tokenizer_folder)
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="has no EOS token; captions must end with one"):
        load_lm_tokenizer(tokenizer)


def test_the_old_name_warns_and_loads_the_same(tokenizer_folder: Path) -> None:
    with pytest.warns(DeprecationWarning, match="load_tokenizer is now load_lm_tokenizer"):
        old = load_tokenizer(tokenizer_folder)
    assert old.get_vocab() == load_lm_tokenizer(tokenizer_folder).get_vocab()
