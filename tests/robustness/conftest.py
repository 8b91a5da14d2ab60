"""A tiny real CLAP model (CNN14 + GPT2-EOT at toy sizes, word tokenizer) saved once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from clapkit.audio import FrontendConfig
from clapkit.core import ClapModel, build_clap
from clapkit.text.corpus import small_config, train_tokenizer

REPO = Path(__file__).resolve().parents[2]
FSDD = REPO / "data" / "fsdd" / "recordings"
WORDS = ["zero", "one", "two", "three", "seven", "a", "man", "says", "this", "is", "sound", "of"]
FRONTEND = FrontendConfig(
    sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=32,
    fmin=0.0, fmax=4000.0, clip_seconds=1.0, fill="repeat",
)  # fmt: skip


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model (``save_pretrained`` layout)."""
    tokenizer = train_tokenizer("gpt2-eot", [" ".join(WORDS), "a man says seven"])
    model = build_clap(
        "cnn14",
        "gpt2-eot",
        projection_dim=8,
        audio_kwargs={
            "frontend": FRONTEND,
            "channels": (2, 2, 4, 4, 4, 8),
            "out_dim": 8,
            "num_classes": 2,
        },
        text_kwargs={
            "config": small_config("gpt2-eot", tokenizer, hidden_size=8, num_heads=2),
            "tokenizer": tokenizer,
        },
    )
    folder = tmp_path_factory.mktemp("model") / "best"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model(model_folder: Path) -> ClapModel:
    return ClapModel.from_pretrained(model_folder)


@pytest.fixture
def clip() -> Path:
    return FSDD / "7_theo_15.flac"
