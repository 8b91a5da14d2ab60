"""Every registered audio encoder (tiny sizes, from clapkit.audio) in a ClapModel: train step,
save/load round trip through the encoder packages' own config rebuilders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from clapkit.core import ClapModel, ContrastiveLoss, build_clap


def _tiny_frontend() -> Any:
    from clapkit.audio import FrontendConfig

    return FrontendConfig(
        sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=32,
        fmin=0.0, fmax=4000.0, clip_seconds=1.0, fill="repeat",
    )  # fmt: skip


TINY_AUDIO = {
    "cnn14": {"channels": (4, 4, 8, 8, 8, 16), "out_dim": 16, "num_classes": 3},
    "htsat": {"spec_size": 64, "patch_size": 2, "patch_stride": 2, "embed_dim": 8,
              "depths": (1, 1), "num_heads": (1, 2), "window_size": 4, "num_classes": 3},
    "htsat-22": {"spec_size": 64, "patch_size": 2, "patch_stride": 2, "embed_dim": 8,
                 "depths": (1, 1), "num_heads": (1, 2), "window_size": 4, "num_classes": 0},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY_AUDIO))
def test_registered_audio_encoder_trains_and_round_trips(
    name: str, tiny_text: Any, tmp_path: Path, fsdd_files: list[Path]
) -> None:
    torch.manual_seed(0)
    model = build_clap(
        name,
        tiny_text,
        projection_dim=8,
        audio_kwargs={"frontend": _tiny_frontend(), **TINY_AUDIO[name]},
    )
    model.train()
    out = model(torch.randn(3, 8000), ["a dog", "rain falls", "zero"])
    ContrastiveLoss()(out.audio_embeds, out.text_embeds, out.logit_scale_exp).backward()
    assert all(p.grad is not None for p in model.audio_projection.parameters())

    model.save_pretrained(tmp_path)
    loaded = ClapModel.from_pretrained(tmp_path)
    assert type(loaded.audio_encoder) is type(model.audio_encoder)
    torch.testing.assert_close(loaded.embed_audio(fsdd_files), model.embed_audio(fsdd_files))
