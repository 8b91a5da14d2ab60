"""A captioner learns to name the spoken digit of FSDD clips from a speaker it never heard.

Setup, all tiny and on the CPU: (1) a small CNN audio encoder trained briefly as a digit
classifier on three speakers (standing in for a pretrained CLAP audio encoder); (2) a 2-layer
GPT2 trained briefly as a language model on the ten caption texts alone, after a prefix that
holds the digit word's embedding (standing in for pretrained GPT2, which knows English and reads
its context); (3) both frozen, only the mapper is trained on
(clip, "a man says the digit seven") pairs. The held-out speaker's clips are then captioned by
beam search and a caption counts as right when it names the clip's digit. Chance is 10 %.

What it shows: the mapper -> prefix -> frozen LM -> decoding path carries audio information into
the words generated. What it does not show: that the audio encoder is good (its digit accuracy
on the held-out speaker bounds the captioner's; both are printed).
"""

from __future__ import annotations

import random
import re
import time

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from clapkit.audio import cnn14_encoder, fit_length, load_audio
from clapkit.caption import CaptionerConfig, ClapCaptioner, mlp_mapper

from .conftest import FSDD, TINY_FRONTEND

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN_SPEAKERS, TEST_SPEAKER = ("jackson", "nicolas", "theo"), "yweweler"


def _clips(speakers: tuple[str, ...], takes: range) -> tuple[torch.Tensor, torch.Tensor]:
    waves, labels = [], []
    for speaker in speakers:
        for digit in range(10):
            for index in takes:
                wave = load_audio(FSDD / f"{digit}_{speaker}_{index}.flac", 8000)
                waves.append(fit_length(wave, TINY_FRONTEND.clip_samples, "pad"))
                labels.append(digit)
    return torch.stack(waves), torch.tensor(labels)


def _word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the caption words (GPT-2's 50k vocabulary would dominate
    the run time of this CPU test; the captioner code path is the same)."""
    words = ["<|endoftext|>", "a", "man", "says", "the", "digit", *DIGITS]
    model = WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>")
    backend = Tokenizer(model)
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def _caption(digit: int) -> str:
    return f"a man says the digit {DIGITS[digit]}"


def test_mapper_learns_to_name_the_digit_of_an_unseen_speaker() -> None:
    started = time.perf_counter()
    torch.manual_seed(0)
    random.seed(0)
    train_waves, train_labels = _clips(TRAIN_SPEAKERS, range(16))
    test_waves, test_labels = _clips((TEST_SPEAKER,), range(6))

    # (1) audio encoder: briefly trained digit classifier
    encoder = cnn14_encoder(
        frontend=TINY_FRONTEND,
        channels=(16, 32, 64),
        out_dim=64,
        num_classes=10,
        block_dropout=0.1,
        embed_dropout=0.2,
        spec_augment=False,
    )
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=3e-3)
    encoder.train()
    for _ in range(20):
        order = torch.randperm(len(train_labels))
        for batch in order.split(32):
            logits = encoder(train_waves[batch]).clipwise_logits
            loss = F.cross_entropy(logits, train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    encoder.eval()
    print(f"\nencoder trained at {time.perf_counter() - started:.0f} s")
    with torch.no_grad():
        encoder_digits = encoder(test_waves).clipwise_logits.argmax(-1)
    encoder_accuracy = (encoder_digits == test_labels).float().mean().item()

    # (2) language model: briefly trained on the caption texts only
    tokenizer = _word_tokenizer()
    lm = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    mapper = mlp_mapper(embed_dim=64, prefix_length=2, width=32, hidden_dim=64)
    config = CaptionerConfig(
        audio=encoder.get_config(),
        mapper=mapper.get_config(),
        language_model=lm.config.to_dict(),
        projection=None,
    )
    captioner = ClapCaptioner(
        config, tokenizer=tokenizer, audio_encoder=encoder, mapper=mapper, language_model=lm
    )
    texts = captioner.tokenize_captions([_caption(d) for d in range(10)])
    captioner.set_frozen(audio=True, language_model=False)
    lm_optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    lm.train()
    ids = texts["input_ids"]
    digit_ids = torch.tensor(tokenizer.convert_tokens_to_ids(DIGITS))
    for _ in range(300):
        # after a 2-vector context that holds the digit word's embedding and noise: as a
        # pretrained LM reads the words of its context, this one learns to read a prefix, and
        # the mapper must learn to write the digit there
        context = 0.02 * torch.randn(len(ids), 2, 32)  # the scale of GPT2 word embeddings
        context[:, 0] += lm.transformer.wte(digit_ids)
        embeds = torch.cat((context, lm.transformer.wte(ids)), dim=1)
        labels = torch.cat((torch.full((len(ids), 2), -100), ids), dim=1)
        loss = lm(inputs_embeds=embeds, labels=labels).loss
        lm_optimizer.zero_grad()
        loss.backward()
        lm_optimizer.step()

    print(f"LM trained at {time.perf_counter() - started:.0f} s, loss {loss.item():.3f}")
    # (3) only the mapper trains, on frozen audio embeddings
    captioner.set_frozen(audio=True, language_model=True)
    captioner.zero_grad(set_to_none=True)
    captioner.train()
    with torch.no_grad():
        train_embeddings = captioner.encode_audio(train_waves)
    mapper_optimizer = torch.optim.AdamW(captioner.mapper.parameters(), lr=1e-2)
    for _ in range(40):
        for batch in torch.randperm(len(train_labels)).split(32):
            out = captioner(
                audio_embedding=train_embeddings[batch],
                captions=[_caption(int(d)) for d in train_labels[batch]],
            )
            mapper_optimizer.zero_grad()
            out.loss.backward()
            mapper_optimizer.step()
    assert all(p.grad is None for p in captioner.language_model.parameters())

    print(f"mapper trained at {time.perf_counter() - started:.0f} s, loss {out.loss.item():.3f}")
    captions = captioner.generate(test_waves, beam_size=3, max_new_tokens=10)
    named = [re.findall(r"\b(" + "|".join(DIGITS) + r")\b", c) for c in captions]
    right = [bool(n) and n[-1] == DIGITS[int(d)] for n, d in zip(named, test_labels, strict=True)]
    accuracy = sum(right) / len(right)
    well_formed = sum(c.startswith("a man says the digit") for c in captions) / len(captions)
    print(
        f"\nheld-out speaker: captioner names the right digit in {accuracy:.0%} of {len(right)} "
        f"clips (encoder accuracy {encoder_accuracy:.0%}, chance 10%); well-formed captions "
        f"{well_formed:.0%}; {time.perf_counter() - started:.0f} s; e.g. {captions[:3]}"
    )
    assert well_formed >= 0.9
    # measured 55 % and 57 % with 1 and 2 threads (encoder 55 % and 40 %: how well the briefly
    # trained encoder hears an unseen speaker varies with the thread count); chance 10 %
    assert accuracy >= 0.35, captions[:10]
    # the captions follow the audio: held-out clips of different digits, each decoded on its
    # own, get different captions, each naming its clip's digit
    first_right: dict[str, int] = {}
    for index, (ok, digit) in enumerate(zip(right, test_labels, strict=True)):
        if ok:
            first_right.setdefault(DIGITS[int(digit)], index)
    chosen = list(first_right.values())[:4]
    assert len(chosen) >= 3, captions[:10]
    alone = [
        captioner.generate(test_waves[i : i + 1], beam_size=3, max_new_tokens=10)[0] for i in chosen
    ]
    assert len(set(alone)) == len(chosen), alone
    for index, caption in zip(chosen, alone, strict=True):
        assert (
            re.findall(r"\b(" + "|".join(DIGITS) + r")\b", caption)[-1]
            == DIGITS[int(test_labels[index])]
        ), (caption, int(test_labels[index]))
