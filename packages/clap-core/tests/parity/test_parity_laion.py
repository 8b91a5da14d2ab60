"""clapkit vs LAION-CLAP 1.1.7 (HTSAT-tiny + RoBERTa) on the same random weights."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from core_parity_helpers import (  # type: ignore[import-not-found]
    LABELS,
    TEXTS,
    randomize_batchnorm,
    roberta_tokenizer,
    rows_close,
)

pytestmark = pytest.mark.parity


def _roberta_base(*args: Any, **kwargs: Any) -> Any:
    """LAION's RobertaModel.from_pretrained("roberta-base"), offline: random weights."""
    import transformers

    config = transformers.RobertaConfig(
        vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    return transformers.RobertaModel(config)


def test_laion_htsat_tiny_roberta(
    tmp_path: Path, clip_files: list[Path], roberta_dir: Path
) -> None:
    import laion_clap

    from clapkit.audio import load_audio
    from clapkit.core import ClapModel

    factory_model = sys.modules["clap_module.model"]
    torch.manual_seed(7)
    with (
        mock.patch.object(factory_model.RobertaModel, "from_pretrained", side_effect=_roberta_base),
        mock.patch.object(
            laion_clap.hook.RobertaTokenizer,
            "from_pretrained",
            side_effect=lambda *a, **k: roberta_tokenizer(roberta_dir),
        ),
    ):  # fmt: skip
        reference = laion_clap.CLAP_Module(
            enable_fusion=False, amodel="HTSAT-tiny", tmodel="roberta", device="cpu"
        )
    randomize_batchnorm(reference.model, seed=7)
    with torch.no_grad():
        reference.model.logit_scale_a.fill_(3.7)
    reference.eval()
    path = tmp_path / "630k-best.pt"  # as LAION's training saves it: DDP prefixes, state_dict
    torch.save(
        {
            "epoch": 1,
            "state_dict": {f"module.{k}": v for k, v in reference.model.state_dict().items()},
        },
        path,
    )

    ours = ClapModel.from_laion(
        path, audio="htsat-tiny", text="roberta", tokenizer=roberta_tokenizer(roberta_dir)
    )
    waves = [load_audio(f, 48000) for f in clip_files]
    with torch.no_grad():
        ref_audio = torch.cat(
            [reference.get_audio_embedding_from_data([w], use_tensor=True) for w in waves]
        )
        ref_text = reference.get_text_embedding(TEXTS, use_tensor=True)
        prompts = reference.get_text_embedding(
            [f"this is a sound of {x}" for x in LABELS], use_tensor=True
        )
        ref_probs = (reference.model.logit_scale_a.exp() * ref_audio @ prompts.T).softmax(dim=-1)

    rows_close(ours.embed_audio(clip_files), ref_audio)
    rows_close(ours.embed_audio(waves, batch_size=3), ref_audio)
    rows_close(ours.embed_text(TEXTS), ref_text)
    probs = ours.zero_shot(clip_files, LABELS, template="this is a sound of {}")
    torch.testing.assert_close(probs, ref_probs, rtol=1e-4, atol=1e-5)
