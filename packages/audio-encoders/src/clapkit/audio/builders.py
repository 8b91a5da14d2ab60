"""Component builders (every knob, checked up front) and named builders with papers' settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from clapkit.audio.base import AudioEncoder
from clapkit.audio.cnn14 import Cnn14
from clapkit.audio.config import FrontendConfig
from clapkit.audio.errors import CheckpointError
from clapkit.audio.htsat.model import HTSAT
from clapkit.audio.weights import WeightsSource, load_weights, read_safetensors_config

PANNS_FRONTEND = FrontendConfig(sample_rate=32000, clip_seconds=10.0, fill="pad")
"""PANNs AudioSet: 32 kHz, 1024/320, 64 mel, 50-14000 Hz, 10 s, zero padding."""

HTSAT_AUDIOSET_FRONTEND = FrontendConfig(sample_rate=32000, clip_seconds=10.0, fill="pad")
"""HTS-AT AudioSet: same front end as PANNs."""

HTSAT_22_FRONTEND = FrontendConfig(
    sample_rate=44100, fmin=50.0, fmax=8000.0, clip_seconds=7.0, fill="pad"
)
"""The 2023 paper as written: 44.1 kHz, 1024/320, 64 mel, 50-8000 Hz, 7 s, padded."""

MSCLAP_2022_FRONTEND = FrontendConfig(sample_rate=44100, clip_seconds=5.0, fill="repeat")
"""Released msclap 2022 CNN14: 44.1 kHz, filterbank for 44.1 kHz 50-14000 Hz, 5 s, repeat."""

MSCLAP_2023_FRONTEND = FrontendConfig(
    sample_rate=44100, filterbank_rate=32000, clip_seconds=7.0, fill="repeat"
)
"""Released msclap 2023 HTSAT: 44.1 kHz audio, HTS-AT's 32 kHz 50-14000 Hz filterbank, 7 s."""

LAION_FRONTEND = FrontendConfig(
    sample_rate=48000, hop_length=480, clip_seconds=10.0, fill="repeatpad"
)
"""LAION-CLAP: 48 kHz, 1024/480, 64 mel, 50-14000 Hz, 10 s, repeat-then-pad."""


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _rate(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def cnn14_encoder(
    *,
    frontend: FrontendConfig = PANNS_FRONTEND,
    channels: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
    out_dim: int = 2048,
    num_classes: int = 527,
    block_dropout: float = 0.2,
    embed_dropout: float = 0.5,
    spec_augment: bool = True,
) -> Cnn14:
    """CNN14 with every knob (small values give tiny test models).

    Args:
        frontend: Front-end contract.
        channels: Channels of each conv block; every block but the last halves time and mel.
        out_dim: Embedding width (``fc1``).
        num_classes: Classifier outputs; 0 = no head.
        block_dropout: Dropout after each conv block.
        embed_dropout: Dropout before ``fc1`` and on the embedding.
        spec_augment: SpecAugment in training.

    Returns:
        A randomly initialised :class:`Cnn14`.

    Raises:
        ValueError: On a bad knob, or when the pooling would shrink the mel axis to nothing.
    """
    if not channels:
        raise ValueError("channels must name at least one conv block")
    for i, width in enumerate(channels):
        _positive(f"channels[{i}]", width)
    _positive("out_dim", out_dim)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    _rate("block_dropout", block_dropout)
    _rate("embed_dropout", embed_dropout)
    shrink = 2 ** (len(channels) - 1)
    if frontend.n_mels < shrink:
        raise ValueError(
            f"{len(channels)} conv blocks pool the mel axis by {shrink}, more than n_mels="
            f"{frontend.n_mels}"
        )
    return Cnn14(
        frontend=frontend,
        channels=channels,
        out_dim=out_dim,
        num_classes=num_classes,
        block_dropout=block_dropout,
        embed_dropout=embed_dropout,
        spec_augment=spec_augment,
    )


def htsat_encoder(
    *,
    frontend: FrontendConfig = HTSAT_AUDIOSET_FRONTEND,
    spec_size: int = 256,
    patch_size: int = 4,
    patch_stride: int = 4,
    embed_dim: int = 96,
    depths: Sequence[int] = (2, 2, 6, 2),
    num_heads: Sequence[int] = (4, 8, 16, 32),
    window_size: int = 8,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
    num_classes: int = 527,
    spec_augment: bool = True,
    long_crop_frames: int | None = None,
    long_crop_hop: int | None = None,
) -> HTSAT:
    """HTSAT with every knob. Defaults = HTS-AT tiny on AudioSet.

    HTSAT-base (LAION): ``embed_dim=128, depths=(2, 2, 12, 2), num_heads=(4, 8, 16, 32)``.

    Args:
        frontend: Front-end contract.
        spec_size: Side of the square image (``spec_size // n_mels`` chunks are folded).
        patch_size: Patch-embedding kernel.
        patch_stride: Patch-embedding stride.
        embed_dim: Token width of stage 0 (doubles per stage; ``out_dim`` = last width).
        depths: Blocks per stage.
        num_heads: Heads per stage.
        window_size: Attention window side.
        mlp_ratio: MLP hidden width over token width.
        qkv_bias: Bias on qkv projections.
        drop_rate: Dropout after projections and patch embedding.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth of the last block (linear from 0).
        num_classes: Classes of the token-semantic head; 0 = no head.
        spec_augment: SpecAugment in training.
        long_crop_frames: Window length (frames) for spectrograms longer than the image in
            evaluation; ``None`` = HTS-AT's 689 per 1024 image frames.
        long_crop_hop: Hop of those windows; ``None`` = half the window (HTS-AT: 344).

    Returns:
        A randomly initialised :class:`HTSAT`.

    Raises:
        ValueError: On a bad knob or a geometry that does not tile (image vs mels, patches,
            stages, windows).
    """
    for name, value in (
        ("spec_size", spec_size),
        ("patch_size", patch_size),
        ("patch_stride", patch_stride),
        ("embed_dim", embed_dim),
        ("window_size", window_size),
    ):
        _positive(name, value)
    if len(depths) == 0 or len(depths) != len(num_heads):
        raise ValueError(
            f"depths {list(depths)} and num_heads {list(num_heads)} must be non-empty "
            "and of equal length"
        )
    for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
        _positive(f"depths[{i}]", depth)
        _positive(f"num_heads[{i}]", heads)
        if (embed_dim * 2**i) % heads:
            raise ValueError(
                f"stage {i} width {embed_dim * 2**i} is not divisible by {heads} heads"
            )
    freq_ratio = spec_size // frontend.n_mels
    if freq_ratio < 1 or (spec_size // freq_ratio) * freq_ratio != spec_size:
        raise ValueError(
            f"spec_size {spec_size} must be a multiple of n_mels-sized chunks: spec_size // "
            f"n_mels = {freq_ratio} must divide spec_size (n_mels={frontend.n_mels})"
        )
    grid = spec_size // patch_stride
    final = grid // 2 ** (len(depths) - 1)
    if spec_size % patch_stride or final * 2 ** (len(depths) - 1) != grid or final < 1:
        raise ValueError(
            f"the {grid}x{grid} patch grid (spec_size / patch_stride) must halve evenly through "
            f"{len(depths)} stages"
        )
    for i in range(len(depths)):
        side = grid // 2**i
        if side > window_size and side % window_size:
            raise ValueError(
                f"stage {i} grid {side} is not a multiple of window_size {window_size}"
            )
    if final % freq_ratio:
        raise ValueError(f"final grid {final} is not divisible by the fold ratio {freq_ratio}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    for name, rate in (
        ("drop_rate", drop_rate),
        ("attn_drop_rate", attn_drop_rate),
        ("drop_path_rate", drop_path_rate),
    ):
        _rate(name, rate)
    if mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
    image_frames = spec_size * freq_ratio
    if long_crop_frames is not None and not 1 <= long_crop_frames <= image_frames:
        raise ValueError(f"long_crop_frames must be in [1, {image_frames}], got {long_crop_frames}")
    if long_crop_hop is not None:
        _positive("long_crop_hop", long_crop_hop)
    return HTSAT(
        frontend=frontend,
        spec_size=spec_size,
        patch_size=patch_size,
        patch_stride=patch_stride,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=num_heads,
        window_size=window_size,
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        drop_rate=drop_rate,
        attn_drop_rate=attn_drop_rate,
        drop_path_rate=drop_path_rate,
        num_classes=num_classes,
        spec_augment=spec_augment,
        long_crop_frames=long_crop_frames,
        long_crop_hop=long_crop_hop,
    )


def _with_weights(encoder: AudioEncoder, weights: WeightsSource | None) -> AudioEncoder:
    if weights is not None:
        load_weights(encoder, weights)
    return encoder


def cnn14(weights: WeightsSource | None = None, **overrides: Any) -> Cnn14:
    """PANNs CNN14 on AudioSet (Kong et al., 2020, arXiv 1912.10211): 32 kHz, 10 s, 527 classes.

    Args:
        weights: ``Cnn14_mAP=0.431.pth``, any other supported file, or a state dict.
        **overrides: Knobs of :func:`cnn14_encoder`.

    Returns:
        The encoder (random init unless ``weights``), in training mode as ``nn.Module``s are.
    """
    overrides.setdefault("frontend", PANNS_FRONTEND)
    encoder = cnn14_encoder(**overrides)
    _with_weights(encoder, weights)
    return encoder


def cnn14_msclap_2022(weights: WeightsSource | None = None, **overrides: Any) -> Cnn14:
    """The audio encoder of msclap 2022 (Elizalde et al., ICASSP 2023, arXiv 2206.04769).

    CNN14 on 44.1 kHz audio, 5 s clips filled by repetition, filterbank for 44.1 kHz and
    50-14000 Hz, no SpecAugment (msclap's CNN14 has none).

    Args:
        weights: ``CLAP_weights_2022.pth`` (its audio part) or another supported source.
        **overrides: Knobs of :func:`cnn14_encoder`.

    Returns:
        The encoder.
    """
    overrides.setdefault("frontend", MSCLAP_2022_FRONTEND)
    overrides.setdefault("spec_augment", False)
    encoder = cnn14_encoder(**overrides)
    _with_weights(encoder, weights)
    return encoder


def htsat(weights: WeightsSource | None = None, **overrides: Any) -> HTSAT:
    """HTS-AT tiny on AudioSet (Chen et al., ICASSP 2022, arXiv 2202.00874): 32 kHz, 10 s.

    Args:
        weights: ``HTSAT_AudioSet_Saved_*.ckpt`` or another supported source.
        **overrides: Knobs of :func:`htsat_encoder`.

    Returns:
        The encoder.
    """
    overrides.setdefault("frontend", HTSAT_AUDIOSET_FRONTEND)
    encoder = htsat_encoder(**overrides)
    _with_weights(encoder, weights)
    return encoder


def htsat_22(weights: WeightsSource | None = None, **overrides: Any) -> HTSAT:
    """HTSAT-22 as the 2023 paper describes it (Elizalde et al., arXiv 2309.05767).

    HTS-AT tiny on 44.1 kHz audio, 7 s, 64 mel, 50-8000 Hz (filterbank for 44.1 kHz), padded.
    The released msclap 2023 model uses another front end: :func:`htsat_msclap_2023`.

    Args:
        weights: A supported weight source.
        **overrides: Knobs of :func:`htsat_encoder`.

    Returns:
        The encoder.
    """
    overrides.setdefault("frontend", HTSAT_22_FRONTEND)
    encoder = htsat_encoder(**overrides)
    _with_weights(encoder, weights)
    return encoder


def htsat_msclap_2023(weights: WeightsSource | None = None, **overrides: Any) -> HTSAT:
    """The audio encoder of the released msclap 2023 model (``CLAP_weights_2023.pth``).

    HTS-AT tiny fed 7 s of 44.1 kHz audio (965 frames, stretched to 1024) through HTS-AT's
    32 kHz / 50-14000 Hz filterbank, so the real band is about 69 Hz-19.3 kHz.

    Args:
        weights: ``CLAP_weights_2023.pth`` (audio part) or another supported source.
        **overrides: Knobs of :func:`htsat_encoder`.

    Returns:
        The encoder.
    """
    overrides.setdefault("frontend", MSCLAP_2023_FRONTEND)
    encoder = htsat_encoder(**overrides)
    _with_weights(encoder, weights)
    return encoder


NAMED_ENCODERS: dict[str, Callable[..., AudioEncoder]] = {
    "cnn14": cnn14,
    "cnn14-msclap-2022": cnn14_msclap_2022,
    "htsat": htsat,
    "htsat-22": htsat_22,
    "htsat-msclap-2023": htsat_msclap_2023,
}
"""Every named encoder of this package, the one table that maps names to builders (clapkit-core
reads it for its registry). Each builder takes ``weights=`` and keyword overrides of its
component builder; the architecture names ``"cnn14"`` and ``"htsat"`` are among the keys."""


def build_audio_encoder(config: dict[str, Any]) -> AudioEncoder:
    """Rebuild an encoder (random init) from :meth:`AudioEncoder.get_config` output.

    The ``architecture`` entry is looked up in :data:`NAMED_ENCODERS` (``get_config`` writes
    ``"cnn14"`` or ``"htsat"``; a preset name works too) and the other entries override the
    builder's defaults.

    Args:
        config: ``{"architecture": ..., "frontend": {...}, ...knobs}``.

    Returns:
        The encoder.

    Raises:
        ValueError: On an unknown architecture or knob.
    """
    knobs = dict(config)
    architecture = knobs.pop("architecture", None)
    if architecture not in NAMED_ENCODERS:
        raise ValueError(
            f"unknown audio architecture {architecture!r}; known: {sorted(NAMED_ENCODERS)}"
        )
    frontend = knobs.pop("frontend", None)
    if isinstance(frontend, dict):
        knobs["frontend"] = FrontendConfig.from_dict(frontend)
    elif isinstance(frontend, FrontendConfig):
        knobs["frontend"] = frontend
    try:
        return NAMED_ENCODERS[architecture](**knobs)
    except TypeError as error:
        raise ValueError(f"bad {architecture} config: {error}") from error


def load_audio_encoder(path: str | os.PathLike) -> AudioEncoder:
    """Build and load an encoder from a clapkit safetensors file (config in its metadata).

    Args:
        path: File written by :func:`clapkit.audio.save_weights`.

    Returns:
        The encoder, in eval mode.

    Raises:
        CheckpointError: If the file carries no clapkit config or does not fit it.
    """
    config = read_safetensors_config(path)
    if config is None:
        raise CheckpointError(f"{path}: no clapkit encoder config in the safetensors metadata")
    encoder = build_audio_encoder(config)
    load_weights(encoder, path)
    return encoder.eval()
