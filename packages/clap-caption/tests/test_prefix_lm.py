"""PrefixLanguageModel: prompt packing, a loss on the answer only, prompted generation, saving."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config

from clapkit.audio import cnn14_encoder
from clapkit.caption import ClapCaptioner, PrefixLanguageModel, transformer_mapper

from .conftest import TINY_FRONTEND


def tiny_model(tokenizer: Path, seed: int = 0, **flags: bool) -> PrefixLanguageModel:
    torch.manual_seed(seed)
    encoder = cnn14_encoder(
        frontend=TINY_FRONTEND, channels=(8, 16), out_dim=16, num_classes=0, spec_augment=False
    )
    mapper = transformer_mapper(embed_dim=16, prefix_length=3, width=32, depth=1, num_heads=2)
    lm = GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    return PrefixLanguageModel.build(
        audio_encoder=encoder, mapper=mapper, language_model=lm, tokenizer=tokenizer,
        projection="linear", projection_dim=16, **flags,
    )  # fmt: skip


@pytest.fixture
def model(tokenizer_folder: Path) -> PrefixLanguageModel:
    return tiny_model(tokenizer_folder)


def test_prompt_and_answer_are_packed_per_row(model: PrefixLanguageModel) -> None:
    batch = model.tokenize_prompted(["this is a sound of", "which digit"], ["dog", "seven"])
    tok, eos = model.tokenizer, model.eos_token_id
    first = [*tok.encode("this is a sound of"), *tok.encode(" dog"), eos]
    assert batch["input_ids"][0].tolist() == first
    assert tok.decode(batch["input_ids"][0, :-1]) == "this is a sound of dog"
    second = [*tok.encode("which digit"), *tok.encode(" seven"), eos]
    assert batch["input_ids"][1, : len(second)].tolist() == second
    # the answer and its EOS are scored, the prompt and the padding are not
    assert batch["loss_mask"][0].tolist() == [0] * 5 + [1, 1]
    assert batch["loss_mask"][1].tolist() == [0, 0, 1, 1, 0, 0, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 0]
    # no prompt: the answer is a caption (no leading space)
    plain = model.tokenize_prompted([""], ["dog"])
    assert plain["input_ids"][0].tolist() == [*tok.encode("dog"), eos]
    cut = model.tokenize_prompted(["a"], ["one two three four"], max_answer_tokens=2)
    assert cut["loss_mask"][0].tolist() == [0, 1, 1]


def test_bad_prompted_input_is_named(model: PrefixLanguageModel) -> None:
    with pytest.raises(ValueError, match="2 prompts for 1 answers"):
        model.tokenize_prompted(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="answer 1 is int"):
        model.tokenize_prompted(["a", "b"], ["c", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no answers"):
        model.tokenize_prompted([], [])
    with pytest.raises(ValueError, match="mapper takes 16-d embeddings, the audio side gives 8"):
        PrefixLanguageModel.build(
            audio_encoder=model.audio_encoder, mapper=model.mapper,
            language_model=model.language_model, tokenizer=model.tokenizer, projection_dim=8,
        )  # fmt: skip


def test_loss_is_cross_entropy_on_the_answer_only(model: PrefixLanguageModel) -> None:
    wave = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    model.eval()
    batch = model.tokenize_prompted(["this is a sound of", "which digit"], ["dog", "seven"])
    out = model(wave, **batch)
    # reference: transformers' shifted loss, labels -100 on the prefix, the prompt and padding
    prefix = out.prefix
    embeds = torch.cat((prefix, model.language_model.transformer.wte(batch["input_ids"])), dim=1)
    labels = batch["input_ids"].masked_fill(batch["loss_mask"] == 0, -100)
    labels = torch.cat((torch.full(prefix.shape[:2], -100), labels), dim=1)
    mask = torch.cat((torch.ones(prefix.shape[:2], dtype=torch.long), batch["attention_mask"]), 1)
    expected = model.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    assert torch.allclose(out.loss, expected, atol=1e-5)
    # scoring the prompt too gives another loss: the mask is what makes it the answer's
    unmasked = model(wave, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert not torch.allclose(out.loss, unmasked.loss, atol=1e-3)


def test_the_audio_encoder_trains_and_the_language_model_stays(
    model: PrefixLanguageModel,
) -> None:
    model.train()
    assert model.audio_encoder.training
    assert not model.language_model.training
    batch = model.tokenize_prompted(["which digit"], ["seven"])
    model(torch.randn(1, 8000), **batch).loss.backward()
    assert all(p.grad is not None for p in model.audio_encoder.parameters())
    assert all(p.grad is not None for p in model.mapper.parameters())
    assert all(p.grad is None for p in model.language_model.parameters())


def test_generation_follows_the_prompt(model: PrefixLanguageModel) -> None:
    """Overfit two (clip, prompt) pairs of the same clip: the prompt decides the answer."""
    wave = torch.randn(1, 8000, generator=torch.Generator().manual_seed(1)).repeat(2, 1)
    prompts, answers = ["which digit", "which speaker is it"], ["seven", "george"]
    model.set_frozen(audio=False, language_model=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = model.tokenize_prompted(prompts, answers)
    model.train()
    for _ in range(80):
        loss = model(wave, **batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert model.generate_answers(wave, prompts, max_new_tokens=4) == answers
    beams = model.generate_answers(wave, prompts, strategy="beam", beam_size=2, max_new_tokens=4)
    assert beams == answers
    assert model.training  # generation restores the mode
    with pytest.raises(ValueError, match="1 prompts for 2 clips"):
        model.generate_answers(wave, prompts[:1])


def test_saved_folder_loads_as_both_classes(tmp_path: Path, model: PrefixLanguageModel) -> None:
    model.save_pretrained(tmp_path / "m")
    loaded = PrefixLanguageModel.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, PrefixLanguageModel)
    assert not loaded.config.freeze_audio
    assert loaded.config.freeze_language_model
    wave = torch.randn(1, 8000, generator=torch.Generator().manual_seed(2))
    batch = model.tokenize_prompted(["which digit"], ["seven"])
    model.eval()
    assert torch.equal(model(wave, **batch).loss, loaded(wave, **batch).loss)
    as_captioner = ClapCaptioner.from_pretrained(tmp_path / "m")
    assert torch.equal(as_captioner.encode_audio(wave), loaded.encode_audio(wave))
