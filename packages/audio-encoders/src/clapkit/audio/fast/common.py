"""What both fast forms share: the snapshot base class and the chunked log-mel front end."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import Tensor, nn

from clapkit.audio.base import AudioEncoder, AudioEncoderOutput
from clapkit.audio.frontend import LogMelFrontend
from clapkit.audio.kernels import batch_norm_affine, inference_chunk, use_inference_kernels

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def snapshot(module: ModuleT) -> ModuleT:
    """A frozen copy of ``module`` (its own tensors, no gradients)."""
    return copy.deepcopy(module).requires_grad_(False)


def frozen(tensor: Tensor | None) -> Tensor | None:
    """A detached copy of ``tensor`` (``None`` stays ``None``)."""
    return None if tensor is None else tensor.detach().clone()


class ChunkedLogMel(nn.Module):
    """The evaluation front end: float64 STFT in chunks of clips, ``bn0`` as a fixed affine map.

    A batch's float64 frames and spectrum pass 32 MiB at batch 8 x 10 s and would come from
    fresh, faulting pages on every call; chunks under
    :data:`~clapkit.audio.kernels.INFERENCE_CHUNK_BYTES` are recycled from the heap (2x faster).

    Args:
        log_mel: The encoder's front end (its STFT settings and its ``bn0`` statistics now).
    """

    def __init__(self, log_mel: LogMelFrontend) -> None:
        super().__init__()
        self.config = log_mel.config
        # The window and filterbank follow from the config alone: borrow the front end's
        # (unregistered, so its bn0 stays out of this module).
        self._spectrogram = (log_mel,)
        scale, shift = batch_norm_affine(log_mel.bn0)
        dtype = log_mel.bn0.weight.dtype
        self.scale: Tensor
        self.shift: Tensor
        self.register_buffer("scale", scale.to(dtype)[:, None], persistent=False)
        self.register_buffer("shift", shift.to(dtype)[:, None], persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        """Normalised log-mel spectrogram.

        Args:
            waveform: ``[b, t]``.

        Returns:
            ``[b, 1, f, n_mels]`` in the dtype of ``bn0``.
        """
        frames = waveform.shape[1] // self.config.hop_length + 1
        chunk = inference_chunk(2 * self.config.n_fft * frames * 8)  # frames and spectrum
        spectrogram = self._spectrogram[0]
        log_mel = torch.cat([spectrogram.log_mel(part) for part in waveform.split(chunk)])
        features = torch.addcmul(self.shift, log_mel.to(self.scale.dtype), self.scale)
        return features.transpose(1, 2).unsqueeze(1)


class FastForm(nn.Module):
    """Base of the fast inference forms: the encoder's contract, and a fallback to it.

    The form is valid without autograd or autocast for float32/64 inputs on the CPU; any other
    call runs the encoder it was built from (as it is at call time).

    Args:
        encoder: The encoder this form was built from.

    Attributes:
        frontend: The encoder's front-end contract.
        out_dim: Embedding width.
        num_classes: Classifier outputs; 0 = no head.
        architecture: The encoder's architecture name.
    """

    def __init__(self, encoder: AudioEncoder) -> None:
        super().__init__()
        self.frontend = encoder.frontend
        self.out_dim = encoder.out_dim
        self.num_classes = encoder.num_classes
        self.architecture = encoder.architecture
        self._encoder = (encoder,)  # unregistered: not part of this module's tensors
        self.log_mel = ChunkedLogMel(encoder.log_mel)

    def forward(self, waveform: Tensor) -> AudioEncoderOutput:
        """Encode a batch of waveforms, as ``encoder(waveform)`` does.

        Args:
            waveform: ``[b, t]`` float samples at ``frontend.sample_rate``.

        Returns:
            :class:`~clapkit.audio.AudioEncoderOutput` with ``embedding [b, out_dim]``.
        """
        encoder = self._encoder[0]
        if not use_inference_kernels(waveform):
            return encoder(waveform)
        encoder._check_waveform(waveform)
        return self.encode(waveform)

    def encode(self, waveform: Tensor) -> AudioEncoderOutput:
        """The fast forward pass (subclasses), on a checked ``[b, t]`` waveform."""
        raise NotImplementedError
