"""Accumulation arithmetic, gradient checkpointing switch, the FSDD demo data and encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clapkit.train.demo import build_encoders, fsdd_manifests
from clapkit.train.setup import accumulation_steps, enable_grad_checkpointing, linear_warmup
from clapkit.train.small import build_word_tokenizer, speech_frontend

FSDD = Path(__file__).resolve().parents[3] / "data" / "fsdd"


def test_accumulation_steps() -> None:
    assert accumulation_steps(1536, 64, 8) == 3
    assert accumulation_steps(16, 8, 2) == 1
    with pytest.raises(
        SystemExit, match="1536 is not a multiple of batch_size x processes = 50 x 2 = 100"
    ):
        accumulation_steps(1536, 50, 2)
    with pytest.raises(SystemExit):
        accumulation_steps(8, 16, 1)


class Checkpointable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enabled = False
        self.inner = torch.nn.Linear(2, 2)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.enabled = enable


def test_linear_warmup() -> None:
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    scheduler = linear_warmup(optimizer, 4)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5])
    constant = linear_warmup(torch.optim.SGD([weight], lr=0.5), 0)
    assert constant.get_last_lr() == [0.5]


def test_grad_checkpointing_reaches_every_encoder() -> None:
    model = torch.nn.Module()
    model.audio_encoder, model.text_encoder = Checkpointable(), Checkpointable()
    model.head = torch.nn.Linear(2, 2)
    assert enable_grad_checkpointing(model) == ["audio_encoder", "text_encoder"]
    assert model.audio_encoder.enabled
    assert model.text_encoder.enabled
    assert enable_grad_checkpointing(torch.nn.Linear(2, 2)) == []


def test_fsdd_manifests(tmp_path: Path) -> None:
    train, heldout = fsdd_manifests(FSDD, tmp_path, "theo", clips_per_digit=2)
    train_lines = [json.loads(line) for line in Path(train).read_text().splitlines()]
    held_lines = [json.loads(line) for line in Path(heldout).read_text().splitlines()]
    assert len(held_lines) == 20  # 10 digits x 2 clips
    assert len(train_lines) == 60  # 3 other speakers
    assert {line["speaker"] for line in held_lines} == {"theo"}
    assert "theo" not in {line["speaker"] for line in train_lines}
    assert held_lines[0]["caption"] == f"a man says the digit {held_lines[0]['labels'][0]}"
    assert len(train_lines[0]["caption"]) == 8
    with pytest.raises(ValueError, match="'nobody' has no recording"):
        fsdd_manifests(FSDD, tmp_path, "nobody")
    with pytest.raises(FileNotFoundError):
        fsdd_manifests(tmp_path, tmp_path, "theo")


def test_word_tokenizer_and_tiny_encoders() -> None:
    tokenizer = build_word_tokenizer(["a man says the digit one", "Two!"])
    ids = tokenizer("a man says two")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["a", "man", "says", "two"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("seven")["input_ids"]) == ["<unk>"]
    frontend = speech_frontend(0.8)
    assert (frontend.sample_rate, frontend.n_mels, frontend.fmax) == (8000, 40, 4000.0)
    texts = ["a man says the digit {}", "one"]
    audio, text = build_encoders("cnn14", "gpt2-eot", "tiny", texts, clip_seconds=0.8)
    assert audio(torch.zeros(2, 6400)).embedding.shape == (2, 16)
    assert text(["a man says the digit one"]).embedding.shape == (1, 16)
    assert text.tokenizer.pad_token == "<pad>"
    assert text.max_length == 32
    with pytest.raises(ValueError, match="defined for audio"):
        build_encoders("htsat", "gpt2-eot", "tiny", [], clip_seconds=0.8)
    with pytest.raises(ValueError, match="defined for text"):
        build_encoders("cnn14", "bert", "small", [], clip_seconds=0.8)


def test_every_small_model_is_defined_in_one_table() -> None:
    from clapkit.train.small import small_audio_encoder, small_gpt2_config

    frontend = speech_frontend(0.8, hop_length=160, fill="repeat")
    htsat = small_audio_encoder("htsat", "tiny", frontend, spec_augment=False)
    assert htsat.num_classes == 0
    assert htsat.get_config()["spec_augment"] is False
    assert htsat(torch.zeros(2, 6400)).embedding.shape == (2, 64)  # 32 x 2 stages
    classifier = small_audio_encoder("cnn14", "classifier", speech_frontend(0.8, n_mels=32))
    assert classifier.get_config()["out_dim"] == 64
    assert classifier.frontend.n_mels == 32
    with pytest.raises(ValueError, match=r"no small audio encoder htsat/small; defined: \['cnn14/"):
        small_audio_encoder("htsat", "small", frontend)
    tokenizer = build_word_tokenizer(["one two"])
    lm = small_gpt2_config("tiny", tokenizer, initializer_range=0.2)
    assert (lm.n_layer, lm.n_embd, lm.vocab_size, lm.initializer_range) == (1, 16, 5, 0.2)
    assert lm.bos_token_id == lm.eos_token_id == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="no small GPT-2 'huge'"):
        small_gpt2_config("huge", tokenizer)
