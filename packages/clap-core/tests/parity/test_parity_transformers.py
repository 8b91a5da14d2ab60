"""clapkit vs transformers' ClapModel (default config: HTSAT-tiny + RoBERTa) on random weights."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("source", ["object", "folder"])
def test_transformers_default_clap(
    source: str, tmp_path: Path, clip_files: list[Path], roberta_dir: Path
) -> None:
    from transformers import ClapConfig, ClapFeatureExtractor
    from transformers import ClapModel as HfClapModel

    from clapkit.audio import load_audio
    from clapkit.core import ClapModel

    torch.manual_seed(11)
    reference = HfClapModel(ClapConfig()).eval()
    randomize_batchnorm(reference, seed=11)
    with torch.no_grad():
        reference.logit_scale_a.fill_(3.1)
    tokenizer = roberta_tokenizer(roberta_dir)
    # LAION's front end: 50-14000 Hz (the extractor's own default fmin is 0), no random crop
    extractor = ClapFeatureExtractor(
        frequency_min=50, frequency_max=14000, truncation="rand_trunc", padding="repeatpad"
    )
    if source == "object":
        ours = ClapModel.from_transformers(reference, tokenizer=tokenizer)
    else:
        reference.save_pretrained(tmp_path)
        tokenizer.save_pretrained(tmp_path)
        ours = ClapModel.from_transformers(tmp_path)

    waves = [load_audio(f, 48000) for f in clip_files]
    features = extractor([w.numpy() for w in waves], sampling_rate=48000, return_tensors="pt")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    prompts = tokenizer(
        [f"this is a sound of {x}" for x in LABELS], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        ref_audio = reference.get_audio_features(
            input_features=features["input_features"]
        ).pooler_output
        ref_text = reference.get_text_features(**batch).pooler_output
        ref_probs = reference(
            **prompts, input_features=features["input_features"]
        ).logits_per_audio.softmax(-1)

    rows_close(ours.embed_audio(clip_files), ref_audio)
    rows_close(ours.embed_text(TEXTS), ref_text)
    probs = ours.zero_shot(clip_files, LABELS, template="this is a sound of {}")
    torch.testing.assert_close(probs, ref_probs, rtol=1e-4, atol=1e-5)
