"""Dynamic padding, truncation that keeps the end token, GPT2 suffixes and pad tokens."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from transformers import GPT2Config, GPT2TokenizerFast, PreTrainedTokenizerFast

from clapkit.text import (
    EOT_SUFFIX_MSCLAP,
    EOT_SUFFIX_PLAIN,
    TextTruncationWarning,
    bert,
    clip_text,
    gpt2_eot,
    roberta,
)

BUILDERS = {"gpt2-eot": gpt2_eot, "bert": bert, "roberta": roberta, "clip": clip_text}
LONG_TEXT = "a dog barks loudly in the distance " * 40


def _tiny_gpt2(real_tokenizer: GPT2TokenizerFast, **kwargs: object) -> object:
    config = GPT2Config(vocab_size=50257, n_positions=128, n_embd=8, n_layer=1, n_head=2)
    return gpt2_eot(config=config, tokenizer=real_tokenizer, **kwargs)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_padding_is_to_the_longest_text(name: str, tiny_parts) -> None:
    config, tokenizer = tiny_parts(name)
    encoder = BUILDERS[name](config=config, tokenizer=tokenizer)
    texts = ["a dog", "birds chirp and sing in the early morning forest", ""]
    batch = encoder.tokenize(texts)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["input_ids"].shape[1] < encoder.max_length
    for row, text in enumerate(texts):
        expected = tokenizer(text + encoder.eot_suffix)["input_ids"]
        assert batch["input_ids"][row, : lengths[row]].tolist() == expected
        pads = batch["input_ids"][row, lengths[row] :]
        assert (pads == encoder.tokenizer.pad_token_id).all()
        # right padding: mask is ones then zeros
        assert batch["attention_mask"][row, : lengths[row]].all()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_truncation_keeps_final_special_token_and_warns_once(name: str, tiny_parts) -> None:
    config, tokenizer = tiny_parts(name)
    encoder = BUILDERS[name](config=config, tokenizer=tokenizer, max_length=20)
    full = tokenizer(LONG_TEXT + encoder.eot_suffix)["input_ids"]
    tail = 2 if name == "gpt2-eot" else 1
    marker = re.escape(repr(tokenizer.decode(full[-tail:])))
    message = r"texts\[1\], '.*\) are longer than max_length=20 tokens: each keeps its first "
    message += rf"{20 - tail} tokens and its end marker {marker} \(what the '.+' pooling reads\)"
    with pytest.warns(TextTruncationWarning, match=message):
        batch = encoder.tokenize(["a dog", LONG_TEXT])
    assert batch["input_ids"].shape == (2, 20)
    assert batch["input_ids"][1].tolist() == full[: 20 - tail] + full[-tail:]
    end_id = tokenizer.eos_token_id if name != "bert" else tokenizer.sep_token_id
    assert batch["input_ids"][1, -1].item() == end_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.tokenize([LONG_TEXT])


def test_msclap_suffix_gives_ids_220_50256(real_gpt2_tokenizer: GPT2TokenizerFast) -> None:
    encoder = _tiny_gpt2(real_gpt2_tokenizer)
    assert encoder.eot_suffix == EOT_SUFFIX_MSCLAP
    batch = encoder.tokenize(["a dog barks", ""])
    assert batch["input_ids"][0].tolist() == [64, 3290, 2318, 591, 220, 50256]
    assert batch["input_ids"][1, :2].tolist() == [220, 50256]
    assert batch["attention_mask"][1].tolist() == [1, 1, 0, 0, 0, 0]


def test_plain_suffix_appends_the_token_alone(real_gpt2_tokenizer: GPT2TokenizerFast) -> None:
    encoder = _tiny_gpt2(real_gpt2_tokenizer, eot_suffix=EOT_SUFFIX_PLAIN)
    batch = encoder.tokenize(["a dog barks"])
    assert batch["input_ids"][0].tolist() == [64, 3290, 2318, 591, 50256]


def test_text_with_trailing_space_tokenises_like_msclap(
    real_gpt2_tokenizer: GPT2TokenizerFast,
) -> None:
    encoder = _tiny_gpt2(real_gpt2_tokenizer)
    batch = encoder.tokenize(["dog "])
    expected = real_gpt2_tokenizer("dog " + " <|endoftext|>")["input_ids"]
    assert batch["input_ids"][0].tolist() == expected


def test_gpt2_pad_token_is_end_of_text_not_bang(real_gpt2_tokenizer: GPT2TokenizerFast) -> None:
    msclap_style = GPT2TokenizerFast.from_pretrained(real_gpt2_tokenizer.name_or_path)
    msclap_style.add_special_tokens({"pad_token": "!"})
    encoder = _tiny_gpt2(msclap_style)
    assert encoder.tokenizer.pad_token_id == 50256
    assert msclap_style.pad_token == "!"  # the caller's tokenizer is left alone
    batch = encoder.tokenize(["wow!", "a much longer text about a dog"])
    assert batch["input_ids"][0].tolist()[:4] == [42773, 0, 220, 50256]
    assert batch["input_ids"][0, 4:].eq(50256).all()


def test_tokenizer_without_pad_token_gets_one(gpt2_tokenizer: PreTrainedTokenizerFast) -> None:
    assert gpt2_tokenizer.pad_token is None
    config = GPT2Config(vocab_size=len(gpt2_tokenizer), n_embd=8, n_layer=1, n_head=2)
    encoder = gpt2_eot(config=config, tokenizer=gpt2_tokenizer)
    assert encoder.tokenizer.pad_token == "<|endoftext|>"
    assert gpt2_tokenizer.pad_token is None


def test_suffix_without_end_of_text_is_refused(gpt2_tokenizer: PreTrainedTokenizerFast) -> None:
    config = GPT2Config(vocab_size=len(gpt2_tokenizer), n_embd=8, n_layer=1, n_head=2)
    with pytest.raises(ValueError, match="must end with the end-of-text token"):
        gpt2_eot(config=config, tokenizer=gpt2_tokenizer, eot_suffix=" the end")


@pytest.mark.parametrize("max_length", [1, 129, 77.0])
def test_max_length_out_of_range_is_refused(max_length: object, tiny_parts) -> None:
    config, tokenizer = tiny_parts("bert")
    with pytest.raises(ValueError, match=r"max_length must be an int in \[2, 128\]"):
        bert(config=config, tokenizer=tokenizer, max_length=max_length)  # type: ignore[arg-type]


def test_max_length_leaving_no_room_is_refused(tiny_parts) -> None:
    config, tokenizer = tiny_parts("gpt2-eot")
    with pytest.raises(ValueError, match="no room beside 2 end ids"):
        gpt2_eot(config=config, tokenizer=tokenizer, max_length=2)


def test_roberta_pad_id_must_match_config(tiny_parts) -> None:
    config, tokenizer = tiny_parts("roberta")
    config.pad_token_id = 0
    with pytest.raises(ValueError, match=r"pads with id 1 but config\.pad_token_id is 0"):
        roberta(config=config, tokenizer=tokenizer)


def test_roberta_max_length_counts_the_position_offset(tiny_parts) -> None:
    config, tokenizer = tiny_parts("roberta")  # 130 positions, 2 taken by the pad offset
    assert roberta(config=config, tokenizer=tokenizer, max_length=128).max_length == 128
    with pytest.raises(ValueError, match=r"\[2, 128\]"):
        roberta(config=config, tokenizer=tokenizer, max_length=129)


def test_clip_eos_id_must_match_tokenizer(tiny_parts) -> None:
    config, tokenizer = tiny_parts("clip")
    config.eos_token_id = 5
    with pytest.raises(ValueError, match=r"pools at config\.eos_token_id=5"):
        clip_text(config=config, tokenizer=tokenizer)


def test_clip_legacy_eos_id_needs_largest_end_id(tiny_parts) -> None:
    config, tokenizer = tiny_parts("clip")
    config.eos_token_id = 2
    with pytest.raises(ValueError, match="is not its largest id"):
        clip_text(config=config, tokenizer=tokenizer)


def test_vocabulary_smaller_than_tokenizer_is_refused(tiny_parts) -> None:
    config, tokenizer = tiny_parts("bert")
    config.vocab_size = len(tokenizer) - 1
    with pytest.raises(ValueError, match=f"knows {len(tokenizer)} tokens"):
        bert(config=config, tokenizer=tokenizer)


def test_tokenize_returns_cpu_long_tensors(tiny_parts) -> None:
    config, tokenizer = tiny_parts("clip")
    batch = clip_text(config=config, tokenizer=tokenizer).tokenize(["rain"])
    assert set(batch) == {"input_ids", "attention_mask"}
    assert all(t.dtype == torch.long and t.device.type == "cpu" for t in batch.values())
