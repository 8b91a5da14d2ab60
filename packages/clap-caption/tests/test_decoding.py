from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging

from clapkit.caption import beam_search, msclap_beam_search, sample

EOS = 7


@pytest.fixture(scope="module")
def language_model() -> GPT2LMHeadModel:
    logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=30,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        eos_token_id=EOS,
        bos_token_id=EOS,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def stopping_model(language_model: GPT2LMHeadModel) -> GPT2LMHeadModel:
    """The same model with EOS's (tied) embedding scaled up, so that msclap's beams do stop."""
    boosted = copy.deepcopy(language_model)
    with torch.no_grad():
        boosted.transformer.wte.weight[EOS] *= 3.0
    return boosted


@pytest.fixture(scope="module")
def prefix() -> torch.Tensor:
    return torch.randn(8, 5, 32, generator=torch.Generator().manual_seed(1))


def _until_eos(rows: torch.Tensor) -> list[list[int]]:
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(EOS)] if EOS in row else row)
    return out


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
@pytest.mark.parametrize("max_new_tokens", [3, 20])
def test_beam_search_equals_transformers_canonical_beam_search(
    language_model: GPT2LMHeadModel,
    prefix: torch.Tensor,
    length_penalty: float,
    max_new_tokens: int,
) -> None:
    ours = beam_search(
        language_model,
        prefix,
        beam_size=4,
        max_new_tokens=max_new_tokens,
        eos_token_id=EOS,
        length_penalty=length_penalty,
    )
    hf = language_model.generate(
        inputs_embeds=prefix,
        attention_mask=torch.ones(8, 5, dtype=torch.long),
        num_beams=4,
        max_new_tokens=max_new_tokens,
        eos_token_id=EOS,
        pad_token_id=EOS,
        length_penalty=length_penalty,
        early_stopping="never",
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert ours.token_ids == _until_eos(hf.sequences)
    assert torch.allclose(ours.scores, hf.sequences_scores, atol=1e-5)


def test_some_beams_end_early_with_eos(
    language_model: GPT2LMHeadModel, prefix: torch.Tensor
) -> None:
    # makes the comparison above meaningful: finished hypotheses of several lengths occur
    ours = beam_search(
        language_model, prefix, beam_size=4, max_new_tokens=20, eos_token_id=EOS, length_penalty=0.0
    )
    assert len({len(t) for t in ours.token_ids}) > 1


def test_greedy_equals_transformers_greedy(
    language_model: GPT2LMHeadModel, prefix: torch.Tensor
) -> None:
    eos = 3  # a token greedy decoding reaches for some clips
    ours = sample(language_model, prefix, max_new_tokens=15, eos_token_id=eos, greedy=True)
    hf = language_model.generate(
        inputs_embeds=prefix,
        attention_mask=torch.ones(8, 5, dtype=torch.long),
        max_new_tokens=15,
        eos_token_id=eos,
        pad_token_id=eos,
        do_sample=False,
    )
    expected = [row[: row.index(eos)] if eos in row else row for row in hf.tolist()]
    assert ours.token_ids == expected


@pytest.mark.parametrize("strategy", ["beam", "msclap", "greedy", "sample"])
def test_key_value_cache_gives_the_same_tokens(
    stopping_model: GPT2LMHeadModel, prefix: torch.Tensor, strategy: str
) -> None:
    language_model = stopping_model  # clips finish at different steps: the cache is pruned

    def run(use_cache: bool) -> list[list[int]]:
        if strategy == "beam":
            return beam_search(
                language_model,
                prefix,
                beam_size=3,
                max_new_tokens=25,
                eos_token_id=EOS,
                use_cache=use_cache,
            ).token_ids
        if strategy == "msclap":
            return msclap_beam_search(
                language_model,
                prefix,
                beam_size=3,
                max_new_tokens=25,
                stop_token_id=EOS,
                use_cache=use_cache,
            ).token_ids
        generator = torch.Generator().manual_seed(3)
        return sample(
            language_model,
            prefix,
            max_new_tokens=25,
            eos_token_id=EOS,
            greedy=strategy == "greedy",
            top_k=10,
            top_p=0.9,
            generator=generator,
            use_cache=use_cache,
        ).token_ids

    assert run(True) == run(False)


def test_msclap_search_keeps_stop_token_and_scores_by_mean(
    stopping_model: GPT2LMHeadModel, prefix: torch.Tensor
) -> None:
    language_model = stopping_model
    out = msclap_beam_search(
        language_model, prefix, beam_size=4, max_new_tokens=30, stop_token_id=EOS
    )
    stopped = [ids for ids in out.token_ids if ids[-1] == EOS]
    assert 0 < len(stopped) < len(out.token_ids)
    assert len({len(ids) for ids in stopped}) > 1
    assert all(EOS not in ids[:-1] for ids in out.token_ids)
    # the score is the mean log-prob of the returned tokens (stop token included)
    clip = next(i for i, ids in enumerate(out.token_ids) if ids[-1] == EOS)
    ids = out.token_ids[clip]
    with torch.no_grad():
        embeds = torch.cat(
            (prefix[clip : clip + 1], language_model.transformer.wte(torch.tensor([ids[:-1]]))),
            dim=1,
        )
        log_probs = language_model(inputs_embeds=embeds).logits[0, 4:].log_softmax(-1)
    mean = log_probs.gather(1, torch.tensor(ids)[:, None]).mean()
    assert out.scores[clip].item() == pytest.approx(mean.item(), abs=1e-5)


def test_sampling_is_seeded_and_top_k_1_is_greedy(
    language_model: GPT2LMHeadModel, prefix: torch.Tensor
) -> None:
    def draw(seed: int) -> list[list[int]]:
        return sample(
            language_model,
            prefix,
            max_new_tokens=10,
            eos_token_id=EOS,
            generator=torch.Generator().manual_seed(seed),
        ).token_ids

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)
    greedy = sample(
        language_model, prefix, max_new_tokens=10, eos_token_id=EOS, greedy=True
    ).token_ids
    top1 = sample(language_model, prefix, max_new_tokens=10, eos_token_id=EOS, top_k=1).token_ids
    assert top1 == greedy


def test_bad_decoding_settings_are_refused(
    language_model: GPT2LMHeadModel, prefix: torch.Tensor
) -> None:
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(language_model, prefix, beam_size=0, eos_token_id=EOS)
    with pytest.raises(ValueError, match="beam_size >= 2"):
        msclap_beam_search(language_model, prefix, beam_size=1)
    with pytest.raises(ValueError, match="top_p"):
        sample(language_model, prefix, eos_token_id=EOS, top_p=0.0)
