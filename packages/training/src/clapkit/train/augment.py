"""Training-time augmentation for classification fine-tuning: mixup, time shift, SpecAugment.

As the PANNs and HTS-AT fine-tuning recipes do it, each switchable:

- **mixup** (Zhang et al. 2018): every clip is mixed with a partner of the batch,
  ``x = lam * x + (1 - lam) * x[partner]`` with ``lam ~ Beta(alpha, alpha)`` per clip, and the
  targets the same way (soft targets that still sum to one for a multiclass task). Here on the
  waveforms (the encoder takes waveforms; PANNs mixes log-mels, a linear map of the power
  spectrum only approximately, so the two are close, not equal).
- **time shift**: each waveform is rolled circularly by a random offset (HTS-AT's ESC-50
  ``time_shifting``), up to ``time_shift`` of its length.
- **SpecAugment**: the audio encoder's own front end zeroes random time and mel stripes after
  ``bn0`` in training mode (:class:`clapkit.audio.LogMelFrontend`); :func:`configure_spec_augment`
  switches it and sets its widths, :func:`augment_batch` hands it the batch's generator.

Randomness is drawn from a generator made from the batch's coordinates (seed, fold, epoch,
batch, process) by :func:`batch_generator`, never from state carried between batches: a resumed
run draws the same numbers as an uninterrupted one with nothing to checkpoint::

    generator = batch_generator(cfg.seed, fold, epoch, batch_index, rank)
    waveform, targets = augment_batch(waveform, targets, augment, generator, encoder=encoder)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "AugmentConfig",
    "augment_batch",
    "batch_generator",
    "configure_spec_augment",
    "mixup",
    "time_shift",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations a fine-tuning run uses (all off by default).

    Attributes:
        mixup_alpha: Beta(alpha, alpha) of the mixing weight; 0 = no mixup (PANNs: 1.0).
        time_shift: largest circular shift as a fraction of the clip, in [0, 1]; 0 = none
            (HTS-AT's ESC-50 recipe: any shift, 1.0).
        spec_augment: zero time and mel stripes in the encoder's front end (training only).
        spec_time_width: exclusive upper bound of a time stripe's width, in frames (PANNs: 64).
        spec_freq_width: exclusive upper bound of a mel stripe's width, in bins (PANNs: 8).
        spec_stripes: stripes of each kind per clip (PANNs: 2).
    """

    mixup_alpha: float = 0.0
    time_shift: float = 0.0
    spec_augment: bool = False
    spec_time_width: int = 64
    spec_freq_width: int = 8
    spec_stripes: int = 2

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0 = off), got {self.mixup_alpha}")
        if not 0.0 <= self.time_shift <= 1.0:
            raise ValueError(f"time_shift must be a fraction in [0, 1], got {self.time_shift}")
        for name in ("spec_time_width", "spec_freq_width", "spec_stripes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def batch_generator(*keys: int | str) -> torch.Generator:
    """A CPU generator seeded from the batch's coordinates (seed, fold, epoch, batch, process).

    Args:
        *keys: integers or names (a fold's name: a fold then draws the same numbers whichever
            folds ran before it); equal keys give equal numbers in any process.

    Returns:
        A seeded ``torch.Generator``.
    """
    digest = hashlib.sha256(repr(tuple(keys)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def mixup(
    waveform: Tensor, targets: Tensor, alpha: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Mix every clip with a random partner of the batch, targets alike.

    Args:
        waveform: clips. Shape ``[b, t]``.
        targets: one-hot (or multi-hot, or already soft) targets. Shape ``[b, c]``.
        alpha: the Beta distribution's parameter (> 0).
        generator: where the weights and partners come from.

    Returns:
        ``(mixed waveform [b, t], mixed targets [b, c], weights lam [b])``; clip ``i`` is
        ``lam[i] * x[i] + (1 - lam[i]) * x[partner[i]]``.

    Raises:
        ValueError: ``alpha <= 0`` or the batch sizes of waveform and targets differ.
    """
    if alpha <= 0:
        raise ValueError(f"mixup needs alpha > 0, got {alpha}")
    if waveform.shape[0] != targets.shape[0] or targets.ndim != 2:
        raise ValueError(
            f"waveform [b, t] and targets [b, c] must agree: {tuple(waveform.shape)} vs "
            f"{tuple(targets.shape)}"
        )
    batch = waveform.shape[0]
    partner = torch.randperm(batch, generator=generator)
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    # torch's Beta sampler takes no generator: draw it from a forked, seeded global RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((batch,))
    lam = lam.to(waveform.device)
    partner = partner.to(waveform.device)
    mixed = lam[:, None] * waveform + (1 - lam[:, None]) * waveform[partner]
    lam_t = lam.to(targets.dtype)[:, None]
    mixed_targets = lam_t * targets + (1 - lam_t) * targets[partner]
    return mixed, mixed_targets, lam


def time_shift(waveform: Tensor, max_fraction: float, generator: torch.Generator) -> Tensor:
    """Roll each clip circularly by a random offset of at most ``max_fraction`` of its length.

    Args:
        waveform: clips. Shape ``[b, t]``.
        max_fraction: in [0, 1]; offsets are uniform in ``[-m, m]`` samples,
            ``m = round(max_fraction * t)``, wrapped around (1.0: any offset).
        generator: where the offsets come from.

    Returns:
        ``[b, t]``: ``out[i, j] = waveform[i, (j - shift[i]) % t]``.
    """
    batch, length = waveform.shape
    limit = round(max_fraction * length)
    if limit == 0:
        return waveform
    shift = torch.randint(-limit, limit + 1, (batch,), generator=generator).to(waveform.device)
    index = (torch.arange(length, device=waveform.device)[None, :] - shift[:, None]) % length
    return waveform.gather(1, index)


def configure_spec_augment(encoder: Any, config: AugmentConfig) -> None:
    """Switch the encoder front end's SpecAugment on or off and set its stripe widths.

    Args:
        encoder: a ``clapkit.audio.AudioEncoder`` (its ``log_mel`` front end).
        config: the run's augmentation settings.
    """
    front = encoder.log_mel
    front.spec_augment = config.spec_augment
    front.time_stripe_width = config.spec_time_width
    front.freq_stripe_width = config.spec_freq_width
    front.stripes = config.spec_stripes


def augment_batch(
    waveform: Tensor,
    targets: Tensor,
    config: AugmentConfig,
    generator: torch.Generator,
    *,
    encoder: Any = None,
) -> tuple[Tensor, Tensor]:
    """Time shift, then mixup, of one training batch; SpecAugment gets its generator.

    Args:
        waveform: clips. Shape ``[b, t]``.
        targets: one-hot or multi-hot float targets. Shape ``[b, c]``.
        config: which augmentations.
        generator: this batch's generator (:func:`batch_generator`).
        encoder: the audio encoder whose front end runs SpecAugment in its forward pass; its
            generator is set to one drawn from ``generator`` (None: not touched).

    Returns:
        ``(waveform [b, t], targets [b, c])``, the inputs themselves when all is off.
    """
    if config.time_shift > 0:
        waveform = time_shift(waveform, config.time_shift, generator)
    if config.mixup_alpha > 0:
        waveform, targets, _ = mixup(waveform, targets, config.mixup_alpha, generator)
    if encoder is not None and config.spec_augment:
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        encoder.set_generator(torch.Generator().manual_seed(seed))
    return waveform, targets
