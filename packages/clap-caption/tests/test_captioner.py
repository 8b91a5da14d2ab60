from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from clapkit.audio import CheckpointError
from clapkit.caption import CaptionerConfig, ClapCaptioner

from .conftest import FSDD, tiny_captioner


def test_tokenized_captions_end_with_eos_and_are_right_padded(captioner: ClapCaptioner) -> None:
    batch = captioner.tokenize_captions(["a man says the digit seven", "a dog"])
    eos = captioner.tokenizer.eos_token_id
    assert batch["input_ids"][0].tolist() == [
        *captioner.tokenizer.encode("a man says the digit seven"),
        eos,
    ]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert batch["input_ids"][1, 2].item() == eos


def test_loss_is_cross_entropy_on_caption_tokens_only(captioner: ClapCaptioner) -> None:
    wave = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    captions = ["a man says the digit seven", "a dog barks"]
    out = captioner(wave, captions=captions)
    # reference: transformers' own shifted loss with the prefix and the padding labelled -100
    batch = captioner.tokenize_captions(captions)
    prefix = out.prefix
    embeds = torch.cat(
        (prefix, captioner.language_model.transformer.wte(batch["input_ids"])), dim=1
    )
    labels = torch.cat(
        (
            torch.full(prefix.shape[:2], -100),
            batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100),
        ),
        dim=1,
    )
    mask = torch.cat(
        (torch.ones(prefix.shape[:2], dtype=torch.long), batch["attention_mask"]), dim=1
    )
    expected = captioner.language_model(
        inputs_embeds=embeds, attention_mask=mask, labels=labels
    ).loss
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert out.logits.shape == (2, batch["input_ids"].shape[1], 50257)


def test_only_the_mapper_trains_by_default(captioner: ClapCaptioner) -> None:
    captioner.train()
    assert not captioner.audio_encoder.training
    assert not captioner.language_model.training
    assert captioner.mapper.training
    out = captioner(torch.randn(2, 8000), captions=["one", "two"])
    out.loss.backward()
    with_grad = {n.split(".")[0] for n, p in captioner.named_parameters() if p.grad is not None}
    assert with_grad == {"mapper"}


def test_unfrozen_audio_side_gets_gradient(tokenizer_folder: Path) -> None:
    captioner = tiny_captioner(tokenizer_folder, freeze_audio=False).train()
    assert captioner.audio_encoder.training
    captioner(torch.randn(2, 8000), captions=["one", "two"]).loss.backward()
    grads = [p.grad for p in captioner.audio_encoder.parameters() if p.requires_grad]
    assert grads
    assert all(g is not None for g in grads)
    assert all(p.grad is None for p in captioner.language_model.parameters())


def test_generate_from_tensors_and_files(captioner: ClapCaptioner) -> None:
    files = [str(FSDD / "7_theo_3.flac"), str(FSDD / "0_jackson_10.flac")]
    from_files = captioner.generate(files, max_new_tokens=6)
    assert len(from_files) == 2
    assert all(isinstance(c, str) for c in from_files)
    greedy = captioner.generate(torch.randn(3, 8000), strategy="greedy", max_new_tokens=4)
    assert len(greedy) == 3
    msclap = captioner.generate(files, compatibility="msclap", max_new_tokens=4)
    assert all(c[:1] == c[:1].upper() for c in msclap)
    with pytest.raises(ValueError, match="strategy"):
        captioner.generate(files, strategy="nucleus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beam search only"):
        captioner.generate(files, strategy="greedy", compatibility="msclap")


def test_long_audio_is_embedded_whole_and_deterministically(captioner: ClapCaptioner) -> None:
    long = torch.randn(20000, generator=torch.Generator().manual_seed(2))
    first = captioner.embed_audio(long)
    assert torch.equal(first, captioner.embed_audio([long]))
    windows = torch.stack([long[:8000], long[8000:16000], long[-8000:]])
    with torch.no_grad():
        expected = F.normalize(
            captioner.audio_projection(captioner.audio_encoder(windows).embedding).mean(
                0, keepdim=True
            ),
            dim=-1,
        )
    assert torch.allclose(first, expected, atol=1e-5)


def test_captions_of_arrays_at_another_rate_and_of_hf_audio_dicts(
    captioner: ClapCaptioner,
) -> None:
    """numpy arrays at 16 kHz (sample_rate=), HF datasets dicts: resampled to the model's 8 kHz."""
    import numpy as np
    import torchaudio.functional as AF

    rng = np.random.default_rng(0)
    waves = [rng.normal(0.0, 0.1, 12000), rng.normal(0.0, 0.1, 40000)]  # 0.75 s, 2.5 s at 16k
    at_model_rate = [AF.resample(torch.from_numpy(w).float(), 16000, 8000) for w in waves]
    expected = captioner.embed_audio(at_model_rate, batch_size=1)
    assert torch.equal(captioner.embed_audio(waves, sample_rate=16000, batch_size=1), expected)
    dicts = [{"array": w, "sampling_rate": 16000} for w in waves]
    assert torch.equal(captioner.embed_audio(dicts, batch_size=1), expected)
    greedy = {"strategy": "greedy", "max_new_tokens": 5, "batch_size": 1}
    assert captioner.generate(waves, sample_rate=16000, **greedy) == captioner.generate(
        at_model_rate, **greedy
    )
    with pytest.raises(ValueError, match=r"^audio item 1 is a dict without \['sampling_rate'\]"):
        captioner.generate([dicts[0], {"array": waves[1]}])


def test_save_and_load_round_trip(captioner: ClapCaptioner, tmp_path: Path) -> None:
    captioner.eval()
    captioner.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert CaptionerConfig.from_dict(config).mapper["prefix_length"] == 4
    loaded = ClapCaptioner.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(
        captioner.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    wave = torch.randn(2, 8000)
    assert captioner.generate(wave, max_new_tokens=5) == loaded.generate(wave, max_new_tokens=5)
    assert (
        loaded.language_model.lm_head.weight.data_ptr()
        == loaded.language_model.transformer.wte.weight.data_ptr()
    )


def test_loading_fails_on_foreign_weights(captioner: ClapCaptioner, tmp_path: Path) -> None:
    captioner.save_pretrained(tmp_path)
    state = {
        k: v.contiguous()
        for k, v in captioner.state_dict().items()
        if k != "language_model.lm_head.weight"
    }
    state["mapper.extra"] = torch.zeros(1)
    del state["mapper.prefix_const"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: mapper\.prefix_const; unexpected keys: mapper\.extra$",
    ):
        ClapCaptioner.from_pretrained(tmp_path)


def test_config_rejects_a_mapper_of_the_wrong_width(captioner: ClapCaptioner) -> None:
    values = captioner.config.to_dict()
    values["mapper"] = {**values["mapper"], "width": 48}
    with pytest.raises(ValueError, match="mapper width 48 != language model width 32"):
        CaptionerConfig.from_dict(values)
