"""Weight files in the real layouts (keys and shapes from the reference manifests), strictly."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor

from clapkit.audio import (
    LAION_FRONTEND,
    MSCLAP_2022_FRONTEND,
    MSCLAP_2023_FRONTEND,
    PANNS_FRONTEND,
    AudioEncoder,
    CheckpointError,
    FrontendConfig,
    cnn14,
    cnn14_encoder,
    cnn14_msclap_2022,
    htsat,
    htsat_encoder,
    htsat_msclap_2023,
    identify_state_dict,
    load_reference_state_dict,
    load_weights,
    mel_filterbank,
    save_weights,
)

from .conftest import tiny

MANIFESTS = Path(__file__).resolve().parents[3] / "data" / "reference" / "checkpoints"
"""Key/shape manifests of the official checkpoints, kept in the repository."""


def _manifest(name: str) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = json.loads((MANIFESTS / f"{name}.json").read_text())
    return shapes


def _random_state(
    shapes: dict[str, list[int]], frontend: FrontendConfig, keep: Callable[[str], bool]
) -> dict[str, Tensor]:
    """Random tensors in a manifest's layout; ``melW`` is the true filterbank of ``frontend``."""
    generator = torch.Generator().manual_seed(0)
    state: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if not keep(key):
            state[key] = torch.zeros(1)  # other parts of a CLAP file: only the names matter here
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("melW"):
            state[key] = mel_filterbank(frontend)
        elif key.endswith(("relative_position_index", "attn_mask")):
            state[key] = torch.zeros(shape)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    return state


def _panns_to_clapkit(key: str) -> str | None:
    """Expected clapkit name of a PANNs CNN14 key (written out independently of the loader)."""
    if "spectrogram_extractor" in key or "melW" in key:
        return None
    key = re.sub(r"^conv_block(\d)", lambda m: f"blocks.{int(m.group(1)) - 1}", key)
    key = key.replace("fc1.", "embed.").replace("fc_audioset.", "head.")
    return "log_mel." + key if key.startswith("bn0.") else key


def _htsat_to_clapkit(key: str) -> str | None:
    if "spectrogram_extractor" in key or "melW" in key or key.startswith("head."):
        return None
    if key.endswith(("relative_position_index", "attn_mask")):
        return None
    key = key.replace("layers.", "stages.", 1).replace("tscam_conv.", "head.")
    return "log_mel." + key if key.startswith("bn0.") else key


def _assert_loaded(
    encoder: AudioEncoder, reference: dict[str, Tensor], rename: Callable[[str], str | None]
) -> None:
    ours = encoder.state_dict()
    expected = {rename(k): v for k, v in reference.items() if rename(k) is not None}
    assert set(expected) == set(ours)
    for name, value in expected.items():
        assert torch.equal(ours[name], value.to(ours[name].dtype)), name


@pytest.fixture(scope="module")
def panns_state() -> dict[str, Tensor]:
    return _random_state(_manifest("cnn14_panns"), PANNS_FRONTEND, lambda k: True)


@pytest.fixture(scope="module")
def htsat_state() -> dict[str, Tensor]:
    return _random_state(_manifest("htsat_audioset"), PANNS_FRONTEND, lambda k: True)


def test_panns_pth(tmp_path: Path, panns_state: dict[str, Tensor]) -> None:
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    torch.save({"model": panns_state, "iteration": 660000, "sampler": {"queue": [1, 2]}}, path)
    encoder = cnn14(weights=path)
    _assert_loaded(encoder, panns_state, _panns_to_clapkit)
    assert identify_state_dict(torch.load(path, weights_only=True))[0] == "panns"


def test_htsat_lightning_ckpt(tmp_path: Path) -> None:
    layout = _manifest("htsat_audioset_ckpt_layout")
    assert all(k.startswith("sed_model.") for k in layout)
    state = _random_state(layout, PANNS_FRONTEND, lambda k: True)
    path = tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"
    checkpoint = {
        "epoch": 37,
        "global_step": 1,
        "pytorch-lightning_version": "1.5.9",
        "state_dict": state,
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    torch.save(checkpoint, path)
    encoder = htsat(weights=path)
    stripped = {k[len("sed_model.") :]: v for k, v in state.items()}
    _assert_loaded(encoder, stripped, _htsat_to_clapkit)


@pytest.mark.parametrize(
    ("manifest", "prefix", "builder", "rename"),
    [
        ("msclap_2022", "audio_encoder.base.", cnn14_msclap_2022, _panns_to_clapkit),
        ("msclap_2023", "audio_encoder.base.htsat.", htsat_msclap_2023, _htsat_to_clapkit),
        ("msclap_clapcap", "clap.base.htsat.", htsat_msclap_2023, _htsat_to_clapkit),
    ],
)
def test_msclap_files(
    tmp_path: Path,
    manifest: str,
    prefix: str,
    builder: Callable[..., AudioEncoder],
    rename: Callable[[str], str | None],
) -> None:
    frontend = MSCLAP_2022_FRONTEND if "2022" in manifest else MSCLAP_2023_FRONTEND
    state = _random_state(_manifest(manifest), frontend, lambda k: k.startswith(prefix))
    path = tmp_path / f"{manifest}.pth"
    torch.save({"model": state}, path)
    encoder = builder(weights=path)
    _assert_loaded(
        encoder, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, rename
    )


@pytest.mark.parametrize(
    ("manifest", "build"),
    [
        ("laion_clap_HTSAT-tiny_roberta", lambda: htsat_encoder(frontend=LAION_FRONTEND)),
        ("laion_clap_PANN-14_roberta", lambda: cnn14_encoder(frontend=LAION_FRONTEND)),
    ],
)
def test_laion_files(tmp_path: Path, manifest: str, build: Callable[[], AudioEncoder]) -> None:
    shapes = {"module." + k: v for k, v in _manifest(manifest).items()}
    state = _random_state(shapes, LAION_FRONTEND, lambda k: k.startswith("module.audio_branch."))
    path = tmp_path / "630k-audioset-best.pt"
    torch.save({"epoch": 45, "state_dict": state}, path)
    encoder = build()
    assert load_weights(encoder, path) == "laion"
    rename = _htsat_to_clapkit if "HTSAT" in manifest else _panns_to_clapkit
    prefix = "module.audio_branch."
    _assert_loaded(
        encoder, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, rename
    )


def test_wrong_filterbank_names_the_matching_design(tmp_path: Path) -> None:
    state = _random_state(
        _manifest("msclap_2022"), MSCLAP_2022_FRONTEND, lambda k: "audio_encoder.base" in k
    )
    path = tmp_path / "CLAP_weights_2022.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="melW differs") as info:
        tiny("cnn14", weights=path)  # PANNs preset: filterbank for 32 kHz
    assert "designed for 44100 Hz" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_unexpected_and_misshapen_keys_are_listed(htsat_state: dict[str, Tensor]) -> None:
    encoder = htsat()
    broken = dict(htsat_state)
    del broken["layers.1.blocks.0.mlp.fc2.bias"]
    broken["layers.1.blocks.0.extra.weight"] = torch.zeros(3)
    broken["norm.weight"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as info:
        load_reference_state_dict(encoder, broken)
    message = str(info.value)
    assert "stages.1.blocks.0.mlp.fc2.bias" in message
    assert "layers.1.blocks.0.extra.weight" in message
    assert "norm.weight: file (5,) vs encoder (768,)" in message


def test_headless_encoder_drops_the_file_classifier_by_name(
    htsat_state: dict[str, Tensor],
) -> None:
    headed, headless = htsat(), htsat(num_classes=0)
    load_reference_state_dict(headed, htsat_state)
    load_reference_state_dict(headless, htsat_state)  # strict: tscam_conv.* dropped by name
    assert not any(k.startswith("head.") for k in headless.state_dict())
    wave = torch.randn(1, 32000)
    with torch.no_grad():
        expected = headed.eval()(wave).embedding
        torch.testing.assert_close(headless.eval()(wave).embedding, expected)
    broken = dict(htsat_state)
    broken["layers.0.blocks.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"layers\.0\.blocks\.0\.extra\.weight"):
        load_reference_state_dict(htsat(num_classes=0), broken)
    load_reference_state_dict(headless, htsat_state, strict=False)
    assert torch.equal(headless.norm.weight, htsat_state["norm.weight"])


def test_headed_encoder_from_a_headless_file_says_how(tmp_path: Path) -> None:
    path = tmp_path / "tower.safetensors"
    save_weights(tiny("cnn14", num_classes=0), path)
    with pytest.raises(
        CheckpointError, match=r"head\.weight.*build the encoder with num_classes=0"
    ):
        tiny("cnn14", weights=path)
    headless = tiny("cnn14", num_classes=0, weights=path)
    assert headless.num_classes == 0


def test_architecture_mismatch(tmp_path: Path, htsat_state: dict[str, Tensor]) -> None:
    path = tmp_path / "htsat.pth"
    torch.save({"model": htsat_state}, path)
    with pytest.raises(CheckpointError, match="holds a htsat"):
        tiny("cnn14", weights=path)


def test_stft_size_mismatch(htsat_state: dict[str, Tensor]) -> None:
    encoder = tiny("htsat", frontend=FrontendConfig(sample_rate=32000, n_fft=512, win_length=512))
    with pytest.raises(CheckpointError, match="n_fft=512"):
        load_reference_state_dict(encoder, htsat_state)


def test_unsafe_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        tiny("cnn14", weights=path)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=re.escape(str(junk))):
        tiny("htsat", weights=junk)
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        tiny("htsat", weights=tmp_path / "nope.pth")


def test_unknown_layout() -> None:
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        load_weights(tiny("cnn14"), {"weight": torch.zeros(1)})


def test_clapkit_safetensors_and_front_end_check(tmp_path: Path) -> None:
    source = tiny("cnn14")
    path = tmp_path / "tiny.safetensors"
    save_weights(source, path)
    target = tiny("cnn14")
    assert load_weights(target, path) == "safetensors"
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    other = tiny("cnn14-msclap-2022")
    with pytest.raises(CheckpointError, match="sample_rate"):
        load_weights(other, path)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(bare))
    assert load_weights(other, bare) == "safetensors"  # no config stored: keys decide
    assert load_weights(other, source.state_dict()) == "clapkit"
