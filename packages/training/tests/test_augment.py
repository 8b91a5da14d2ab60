"""Fine-tuning augmentation: mixup, time shift, SpecAugment; seeded, and off = identity."""

from __future__ import annotations

import pytest
import torch

from clapkit.audio import FrontendConfig, cnn14_encoder
from clapkit.train.augment import (
    AugmentConfig,
    augment_batch,
    batch_generator,
    configure_spec_augment,
    mixup,
    time_shift,
)


def one_hot(indices: list[int], classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(indices), classes).float()


def test_batch_generator_is_a_function_of_its_keys() -> None:
    a = torch.rand(4, generator=batch_generator(0, 1, 2, 3))
    assert a.equal(torch.rand(4, generator=batch_generator(0, 1, 2, 3)))
    assert not a.equal(torch.rand(4, generator=batch_generator(0, 1, 2, 4)))
    assert not a.equal(torch.rand(4, generator=batch_generator(1, 1, 2, 3)))


def test_mixup_mixes_clips_and_targets_with_one_weight_per_clip() -> None:
    waveform = torch.randn(6, 100)
    targets = one_hot([0, 1, 2, 3, 4, 0], 5)
    mixed, mixed_targets, lam = mixup(waveform, targets, 0.4, batch_generator(0))
    assert (mixed.shape, mixed_targets.shape, lam.shape) == ((6, 100), (6, 5), (6,))
    assert torch.allclose(mixed_targets.sum(dim=1), torch.ones(6))  # still a distribution
    assert ((lam >= 0) & (lam <= 1)).all()
    assert not torch.allclose(lam, lam[0].expand(6))  # a weight per clip
    # each clip is lam * itself + (1 - lam) * one partner, and the targets say the same
    for i in range(6):
        rest = mixed[i] - lam[i] * waveform[i]
        partner = [
            j for j in range(6) if torch.allclose(rest, (1 - lam[i]) * waveform[j], atol=1e-5)
        ]
        assert len(partner) == 1, i
        expected = lam[i] * targets[i] + (1 - lam[i]) * targets[partner[0]]
        assert torch.allclose(mixed_targets[i], expected, atol=1e-6)
    again = mixup(waveform, targets, 0.4, batch_generator(0))
    assert again[0].equal(mixed)  # seeded
    assert again[2].equal(lam)


def test_mixup_keeps_the_global_random_state() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    mixup(torch.randn(4, 10, generator=batch_generator(1)), one_hot([0, 1, 0, 1], 2), 1.0,
          batch_generator(2))  # fmt: skip
    assert torch.rand(3).equal(expected)  # dropout in the model draws what it would have


def test_mixup_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha > 0"):
        mixup(torch.randn(2, 10), one_hot([0, 1], 2), 0.0, batch_generator(0))
    with pytest.raises(ValueError, match="must agree"):
        mixup(torch.randn(3, 10), one_hot([0, 1], 2), 1.0, batch_generator(0))


def test_time_shift_rolls_each_clip_within_its_bound() -> None:
    waveform = torch.arange(4 * 50, dtype=torch.float32).reshape(4, 50)
    shifted = time_shift(waveform, 0.2, batch_generator(3))
    shifts = set()
    for row, out in zip(waveform, shifted, strict=True):
        match = [s for s in range(-10, 11) if out.equal(torch.roll(row, s))]
        assert match, "not a roll of at most 10 samples"
        shifts.add(match[0])
    assert len(shifts) > 1  # one offset per clip
    assert time_shift(waveform, 0.0, batch_generator(3)) is waveform


def test_off_means_identity() -> None:
    waveform, targets = torch.randn(4, 80), one_hot([0, 1, 2, 0], 3)
    out, out_targets = augment_batch(waveform, targets, AugmentConfig(), batch_generator(0))
    assert out is waveform
    assert out_targets is targets
    encoder = cnn14_encoder(frontend=FrontendConfig(sample_rate=8000, n_fft=256, win_length=256,
                            hop_length=80, n_mels=16, fmin=20.0, fmax=4000.0, clip_seconds=0.5),
                            channels=(4, 8), out_dim=8, num_classes=0)  # fmt: skip
    configure_spec_augment(encoder, AugmentConfig(spec_augment=False))
    encoder.train()
    assert encoder.log_mel.spec_augment is False
    wave = torch.randn(2, 4000)
    assert encoder.log_mel(wave).equal(encoder.log_mel(wave))  # nothing random is applied


def test_spec_augment_zeroes_whole_time_and_mel_stripes_seeded() -> None:
    frontend = FrontendConfig(sample_rate=8000, n_fft=256, win_length=256, hop_length=80,
                              n_mels=16, fmin=20.0, fmax=4000.0, clip_seconds=0.5)  # fmt: skip
    encoder = cnn14_encoder(frontend=frontend, channels=(4, 8), out_dim=8, num_classes=0)
    config = AugmentConfig(spec_augment=True, spec_time_width=10, spec_freq_width=5, spec_stripes=1)
    configure_spec_augment(encoder, config)
    front = encoder.log_mel
    assert (
        front.spec_augment,
        front.time_stripe_width,
        front.freq_stripe_width,
        front.stripes,
    ) == (True, 10, 5, 1)
    features = torch.randn(8, 1, 51, 16) + 10.0  # no zero unless masked
    augment_batch(torch.zeros(8, 4000), one_hot([0] * 8, 2), config, batch_generator(5),
                  encoder=encoder)  # fmt: skip
    masked = front.augment(features)
    for clip in masked[:, 0]:
        zero = clip == 0
        frames = zero.all(dim=1).nonzero().flatten().tolist()
        mels = zero.all(dim=0).nonzero().flatten().tolist()
        # every zero lies in a fully zeroed frame or mel band, each one stripe narrower than
        # its bound
        covered = torch.zeros_like(zero)
        covered[frames, :] = True
        covered[:, mels] = True
        assert zero.equal(covered)
        assert len(frames) < 10
        assert len(mels) < 5
        for kept in (frames, mels):
            assert kept == list(range(kept[0], kept[0] + len(kept))) if kept else True
    assert (masked == 0).any()
    augment_batch(torch.zeros(8, 4000), one_hot([0] * 8, 2), config, batch_generator(5),
                  encoder=encoder)  # fmt: skip
    assert front.augment(features).equal(masked)  # the batch's generator decides the stripes


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="mixup_alpha"):
        AugmentConfig(mixup_alpha=-1)
    with pytest.raises(ValueError, match="time_shift"):
        AugmentConfig(time_shift=1.5)
    with pytest.raises(ValueError, match="spec_stripes"):
        AugmentConfig(spec_stripes=0)


def test_augment_batch_applies_what_is_on_in_order() -> None:
    waveform, targets = torch.randn(4, 80), one_hot([0, 1, 2, 0], 3)
    config = AugmentConfig(time_shift=0.5, mixup_alpha=1.0)
    out, out_targets = augment_batch(waveform, targets, config, batch_generator(9))
    generator = batch_generator(9)
    expected = mixup(time_shift(waveform, 0.5, generator), targets, 1.0, generator)
    assert out.equal(expected[0])
    assert out_targets.equal(expected[1])
    shifted, same = augment_batch(
        waveform, targets, AugmentConfig(time_shift=0.5), batch_generator(9)
    )
    assert same is targets
    assert not shifted.equal(waveform)
