"""Log-mel front end: STFT power spectrum, Slaney mel filterbank, dB, ``bn0``, SpecAugment.

Numerically the torchlibrosa ``Spectrogram`` + ``LogmelFilterBank`` pair that PANNs, HTS-AT and
msclap use, computed with ``torch.stft`` instead of a DFT convolution.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from clapkit.audio.config import FrontendConfig

AMIN = 1e-10
"""Power floor before the logarithm (torchlibrosa ``amin``)."""


def mel_filterbank(frontend: FrontendConfig) -> Tensor:
    """The Slaney-style mel filterbank (librosa's default) for a front end.

    Args:
        frontend: The front-end config; the bank is designed for ``frontend.mel_rate``.

    Returns:
        Float32 tensor ``[n_fft // 2 + 1, n_mels]`` (the layout of torchlibrosa's ``melW``).
    """
    return AF.melscale_fbanks(
        n_freqs=frontend.n_fft // 2 + 1,
        f_min=float(frontend.fmin),
        f_max=float(frontend.fmax),
        n_mels=frontend.n_mels,
        sample_rate=frontend.mel_rate,
        norm="slaney",
        mel_scale="slaney",
    )


def _stripe_mask(
    batch: int,
    total: int,
    max_width: int,
    stripes: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Boolean ``[batch, total]`` mask, True inside ``stripes`` random stripes per row.

    Each stripe has a width drawn uniformly from ``[0, max_width)`` and a start drawn uniformly
    from the positions where it fits, as torchlibrosa's ``DropStripes`` does. Drawn on the
    generator's device, else on ``device`` (the features', so a GPU run copies nothing).
    """
    if generator is not None:
        device = generator.device
    width = torch.randint(0, max_width, (batch, stripes), generator=generator, device=device)
    width = width.clamp(max=total)
    start = torch.rand(batch, stripes, generator=generator, device=device) * (total - width + 1)
    start = start.long().clamp(max=total - width)
    position = torch.arange(total, device=device)
    inside = (position >= start[..., None]) & (position < (start + width)[..., None])
    return inside.any(dim=1)


class LogMelFrontend(nn.Module):
    """Waveform -> normalised log-mel spectrogram, batched on the module's device.

    Args:
        frontend: STFT and filterbank settings.
        spec_augment: Zero 2 time stripes (width < 64 frames) and 2 mel stripes (width < 8
            bins) per clip in training mode, after ``bn0`` (PANNs, HTS-AT).
        time_stripe_width: Exclusive upper bound of a time stripe's width.
        freq_stripe_width: Exclusive upper bound of a mel stripe's width.
        stripes: Stripes of each kind per clip.

    Attributes:
        generator: Optional ``torch.Generator`` all training-time randomness of the front end
            draws from (seed it for reproducible augmentation); ``None`` = global RNG.
    """

    def __init__(
        self,
        frontend: FrontendConfig,
        *,
        spec_augment: bool = True,
        time_stripe_width: int = 64,
        freq_stripe_width: int = 8,
        stripes: int = 2,
    ) -> None:
        super().__init__()
        self.config = frontend
        self.spec_augment = spec_augment
        self.time_stripe_width = time_stripe_width
        self.freq_stripe_width = freq_stripe_width
        self.stripes = stripes
        self.generator: torch.Generator | None = None
        self.bn0 = nn.BatchNorm1d(frontend.n_mels)
        # Window and filterbank are derived from the config, never trained nor saved; made once
        # in float64 and kept per device and dtype, so ``.half()`` or ``.to(bfloat16)`` cannot
        # degrade them.
        self._window = torch.hann_window(frontend.win_length, periodic=True, dtype=torch.float64)
        # [n_mels, n_freqs], so the product lands as [b, n_mels, f] for bn0.
        self._bank = mel_filterbank(frontend).T.to(torch.float64).contiguous()
        self._dsp: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def _window_and_filterbank(
        self, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        if torch.compiler.is_compiling():  # constants of the graph: no cache to fill
            return self._window.to(device, dtype), self._bank.to(device, dtype)
        key = (device, dtype)
        if key not in self._dsp:
            self._dsp[key] = (self._window.to(device, dtype), self._bank.to(device, dtype))
        return self._dsp[key]

    def power_mel(self, waveform: Tensor, *, float32: bool = False) -> Tensor:
        """Mel power spectrogram.

        Args:
            waveform: ``[b, t]`` float samples at ``config.sample_rate``.
            float32: compute in float32 instead of float64 (what :meth:`forward` does under
                autocast; within ``FP32_LOG_MEL_ERROR_DB`` of float64 on real audio).

        Returns:
            ``[b, n_mels, f]`` mel power (float64; float32 on MPS or with ``float32``),
            ``f = t // hop_length + 1``.

        Raises:
            ValueError: If the waveform is not 2-D or too short for the reflect padding.
        """
        if waveform.ndim != 2:
            raise ValueError(
                f"waveform must be [batch, samples], got shape {tuple(waveform.shape)}"
            )
        if waveform.shape[1] <= self.config.n_fft // 2:
            raise ValueError(
                f"waveform has {waveform.shape[1]} samples; the centred STFT needs more than "
                f"n_fft // 2 = {self.config.n_fft // 2} (fill short audio with fit_length)"
            )
        # float64 where the device has it (the reference-exact path): a float32 FFT leaves a
        # noise floor about 120 dB under the frame peak, visible in the near-silent mel bins that
        # the dB scale magnifies. Mixed-precision training asks for float32: GPUs run float64
        # at a small fraction of float32's speed.
        dtype = torch.float32 if float32 or waveform.device.type == "mps" else torch.float64
        window, bank = self._window_and_filterbank(waveform.device, dtype)
        spectrum = torch.stft(
            waveform.to(dtype),
            n_fft=self.config.n_fft,
            hop_length=self.config.hop_length,
            win_length=self.config.win_length,
            window=window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        # [b, n_freqs, f]
        power = torch.addcmul(spectrum.real.square(), spectrum.imag, spectrum.imag)
        return torch.matmul(bank, power)

    def log_mel(self, waveform: Tensor, *, float32: bool = False) -> Tensor:
        """Log-mel spectrogram in dB before ``bn0``.

        Args:
            waveform: ``[b, t]``.
            float32: compute in float32 (see :meth:`power_mel`).

        Returns:
            ``[b, n_mels, f]`` float32: ``10 * log10(max(mel, 1e-10))``.
        """
        power = self.power_mel(waveform, float32=float32)
        return (10.0 * torch.log10(power.clamp(min=AMIN))).float()

    def forward(self, waveform: Tensor) -> Tensor:
        """Normalised (and, in training, augmented) log-mel spectrogram.

        Args:
            waveform: ``[b, t]`` float samples at ``config.sample_rate``.

        Returns:
            ``[b, 1, f, n_mels]`` in the dtype of ``bn0`` (float32 unless the module was cast).
        """
        device = waveform.device.type
        # under autocast (mixed-precision training) the spectrogram is computed in float32
        float32 = torch.is_autocast_enabled(device)
        with torch.autocast(device_type=device, enabled=False):
            log_mel = self.log_mel(waveform, float32=float32).to(self.bn0.weight.dtype)
            features = self.bn0(log_mel).transpose(1, 2).unsqueeze(1)
            if self.training and self.spec_augment:
                features = self.augment(features)
        return features

    def augment(self, features: Tensor) -> Tensor:
        """SpecAugment: zero random time and mel stripes of each clip.

        Args:
            features: ``[b, c, f, m]``.

        Returns:
            ``[b, c, f, m]`` with stripes set to 0 (a new tensor).
        """
        batch, _, frames, mels = features.shape
        device = features.device
        time_drop = _stripe_mask(
            batch, frames, self.time_stripe_width, self.stripes, self.generator, device
        )
        freq_drop = _stripe_mask(
            batch, mels, self.freq_stripe_width, self.stripes, self.generator, device
        )
        drop = time_drop[:, None, :, None] | freq_drop[:, None, None, :]
        return features.masked_fill(drop.to(features.device, non_blocking=True), 0.0)
