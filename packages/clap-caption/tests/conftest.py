"""Tiny captioners for fast tests, and the real GPT-2 tokenizer files from data/reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config

from clapkit.audio import FrontendConfig, cnn14_encoder
from clapkit.caption import CaptionerConfig, ClapCaptioner, transformer_mapper

REPO = Path(__file__).resolve().parents[3]
FSDD = REPO / "data" / "fsdd" / "recordings"
TINY_FRONTEND = FrontendConfig(
    sample_rate=8000,
    n_fft=256,
    win_length=256,
    hop_length=80,
    n_mels=32,
    fmin=50.0,
    fmax=4000.0,
    clip_seconds=1.0,
)


GPT2_TOKENIZER = REPO / "data" / "reference" / "tokenizers" / "gpt2"  # GPT-2's real vocabulary


@pytest.fixture(scope="session")
def tokenizer_folder() -> Path:
    return GPT2_TOKENIZER


def tiny_captioner(tokenizer: Path, *, seed: int = 0, **flags: bool) -> ClapCaptioner:
    """Tiny CNN14 at 8 kHz, msclap projection, 2-layer mapper and GPT2 (real vocabulary)."""
    torch.manual_seed(seed)
    encoder = cnn14_encoder(
        frontend=TINY_FRONTEND, channels=(8, 16, 32), out_dim=32, num_classes=0, spec_augment=False
    )
    mapper = transformer_mapper(embed_dim=16, prefix_length=4, width=32, depth=2, num_heads=2)
    lm_config = GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    config = CaptionerConfig(
        audio=encoder.get_config(),
        mapper=mapper.get_config(),
        language_model=lm_config.to_dict(),
        projection="msclap",
        projection_dim=16,
        **flags,
    )
    return ClapCaptioner(config, tokenizer=tokenizer, audio_encoder=encoder, mapper=mapper)


@pytest.fixture
def captioner(tokenizer_folder: Path) -> ClapCaptioner:
    return tiny_captioner(tokenizer_folder)
