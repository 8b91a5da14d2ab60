"""Checkpoint loaders: a tiny transformers ClapModel end to end, and the error paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from clapkit.core import CheckpointError, ClapModel
from clapkit.core.convert.hf import hf_audio_to_reference


def _tiny_frontend() -> Any:
    from clapkit.audio import FrontendConfig

    return FrontendConfig(
        sample_rate=8000, n_fft=256, win_length=256, hop_length=80, n_mels=16,
        fmin=0.0, fmax=4000.0, clip_seconds=1.0, fill="repeatpad",
    )  # fmt: skip


def _check_against_hf(ours: ClapModel, hf: Any, fsdd_files: list[Path]) -> None:
    from clapkit.audio import fit_length, load_audio

    waves = torch.stack([fit_length(load_audio(f, 8000), 8000, "repeatpad") for f in fsdd_files])
    waves = torch.cat(
        [waves, 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))]
    )
    log_mel = ours.audio_encoder.log_mel.log_mel(waves).transpose(1, 2).unsqueeze(1)
    texts = ["a dog barks", "zero", "someone speaks the digits one two"]
    batch = ours.text_encoder.tokenize(texts)
    with torch.no_grad():
        hf_audio = hf.get_audio_features(input_features=log_mel).pooler_output
        hf_text = hf.get_text_features(**batch).pooler_output
        hf_probs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      input_features=log_mel).logits_per_audio.softmax(dim=-1)  # fmt: skip
    torch.testing.assert_close(ours.embed_audio(waves), hf_audio, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.embed_text(texts), hf_text, rtol=1e-4, atol=1e-5)
    probs = ours.zero_shot(waves, texts, template="{}")
    torch.testing.assert_close(probs, hf_probs, rtol=1e-4, atol=1e-5)


def test_from_transformers_object_matches_hf(
    tiny_hf_clap: Any, roberta_like_tokenizer: Any, fsdd_files: list[Path]
) -> None:
    ours = ClapModel.from_transformers(
        tiny_hf_clap, tokenizer=roberta_like_tokenizer, frontend=_tiny_frontend()
    )
    assert ours.config.projection == "mlp"
    assert ours.config.projection_dim == 24
    assert ours.logit_scale.item() == pytest.approx(2.5)
    _check_against_hf(ours, tiny_hf_clap, fsdd_files)


def test_from_transformers_folder_and_clapkit_round_trip(
    tiny_hf_clap: Any, roberta_like_tokenizer: Any, fsdd_files: list[Path], tmp_path: Path
) -> None:
    tiny_hf_clap.save_pretrained(tmp_path / "hf")
    roberta_like_tokenizer.save_pretrained(tmp_path / "hf")
    ours = ClapModel.from_transformers(tmp_path / "hf", frontend=_tiny_frontend())
    _check_against_hf(ours, tiny_hf_clap, fsdd_files)
    ours.save_pretrained(tmp_path / "clapkit")
    _check_against_hf(ClapModel.from_pretrained(tmp_path / "clapkit"), tiny_hf_clap, fsdd_files)


def test_from_transformers_names_unknown_keys(
    tiny_hf_clap: Any, roberta_like_tokenizer: Any, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    tiny_hf_clap.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["text_model.embeddings.position_ids"] = torch.arange(66)[None]  # old versions: dropped
    state["audio_model.audio_encoder.mystery.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"mystery\.weight") as error:
        ClapModel.from_transformers(
            tmp_path, tokenizer=roberta_like_tokenizer, frontend=_tiny_frontend()
        )
    assert "position_ids" not in str(error.value)


def test_hf_qkv_are_concatenated_in_order() -> None:
    prefix = "layers.0.blocks.1.attention.self."
    state = {
        f"{prefix}{n}.weight": torch.full((2, 2), float(i))
        for i, n in enumerate(("query", "key", "value"))
    }
    state["batch_norm.weight"] = torch.ones(3)
    out = hf_audio_to_reference(state)
    assert set(out) == {"layers.0.blocks.1.attn.qkv.weight", "bn0.weight"}
    torch.testing.assert_close(
        out["layers.0.blocks.1.attn.qkv.weight"][:, 0], torch.tensor([0.0, 0, 1, 1, 2, 2])
    )


def _save(path: Path, state: dict[str, torch.Tensor], wrapper: str) -> Path:
    torch.save({wrapper: state, "epoch": 3}, path)
    return path


def test_laion_fusion_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    state = {
        "module.logit_scale_a": torch.tensor(1.0),
        "module.audio_branch.patch_embed.fusion_model.local_att.0.weight": torch.zeros(1),
    }
    with pytest.raises(CheckpointError, match=r"fusion checkpoint.*not supported"):
        ClapModel.from_laion(_save(tmp_path / "fusion.pt", state, "state_dict"))


def test_unknown_keys_are_named_before_anything_is_built(tmp_path: Path) -> None:
    msclap = {
        "logit_scale": torch.tensor(1.0),
        "audio_encoder.base.htsat.norm.weight": torch.ones(2),
        "caption_encoder.base.wte.weight": torch.ones(2, 2),
        "caption_encoder.extra_head.weight": torch.ones(2),
    }
    with pytest.raises(
        CheckpointError, match=r"unexpected keys: caption_encoder\.extra_head\.weight"
    ):
        ClapModel.from_msclap(_save(tmp_path / "m.pth", msclap, "model"), version="2023")
    laion = {
        "logit_scale_a": torch.tensor(1.0),
        "text_transform.sequential.0.weight": torch.ones(1),
        "audio_branch.norm.weight": torch.ones(2),
        "text_branch.pooler.dense.weight": torch.ones(1),
        "bart_head.weight": torch.ones(1),
    }
    with pytest.raises(CheckpointError, match=r"unexpected keys: bart_head\.weight$"):
        ClapModel.from_laion(_save(tmp_path / "l.pt", laion, "state_dict"))
    with pytest.raises(ValueError, match="unknown msclap version 'clapcap'"):
        ClapModel.from_msclap(tmp_path / "m.pth", version="clapcap")
    with pytest.raises(
        CheckpointError, match=r"not an msclap 2022 checkpoint: no \['audio_encoder"
    ):
        ClapModel.from_msclap(
            _save(tmp_path / "m2.pth", {"logit_scale": torch.tensor(1.0)}, "model"), version="2022"
        )
