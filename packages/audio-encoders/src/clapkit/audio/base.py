"""The interface every clapkit audio encoder answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from clapkit.audio.config import FrontendConfig
from clapkit.audio.frontend import LogMelFrontend


@dataclass
class AudioEncoderOutput:
    """What an audio encoder returns.

    Attributes:
        embedding: ``[b, d]`` clip embedding (``d = encoder.out_dim``): CNN14's ``fc1`` output,
            HTSAT's ``latent_output``.
        clipwise_logits: ``[b, c]`` pre-sigmoid class scores, ``None`` without a head.
        framewise_logits: ``[b, f', c]`` pre-sigmoid scores per output frame (HTSAT: 32 frames
            over the folded clip), ``None`` where the model has none.
    """

    embedding: Tensor
    clipwise_logits: Tensor | None = None
    framewise_logits: Tensor | None = None

    @property
    def clipwise_probs(self) -> Tensor | None:
        """``sigmoid(clipwise_logits)``: the reference models' ``clipwise_output``."""
        return None if self.clipwise_logits is None else torch.sigmoid(self.clipwise_logits)


class AudioEncoder(nn.Module):
    """Base class: waveform ``[b, t]`` at ``frontend.sample_rate`` -> :class:`AudioEncoderOutput`.

    Subclasses build ``self.log_mel`` (a :class:`LogMelFrontend`) and implement
    :meth:`forward_features`, :meth:`forward_head`, :meth:`reset_classifier` and
    :meth:`get_config`.

    Attributes:
        frontend: The front-end contract (rate, STFT, band, clip length, fill mode).
        out_dim: Embedding width.
        num_classes: Classifier outputs; 0 = no head.
        architecture: Registry key of the architecture (``"cnn14"``, ``"htsat"``).
        grad_checkpointing: Whether blocks recompute activations in the backward pass.
    """

    architecture: str = ""

    def __init__(self, frontend: FrontendConfig, *, out_dim: int, num_classes: int) -> None:
        super().__init__()
        self.frontend = frontend
        self.out_dim = out_dim
        self.num_classes = num_classes
        self.grad_checkpointing = False

    log_mel: LogMelFrontend
    head: nn.Module | None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory.

        Args:
            enable: Turn checkpointing on or off.
        """
        self.grad_checkpointing = enable

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Draw all training-time randomness of the front end (SpecAugment, crops) from here.

        Args:
            generator: A seeded ``torch.Generator``, or ``None`` for the global RNG.
        """
        self.log_mel.generator = generator

    def forward_features(self, waveform: Tensor) -> Tensor:
        """Backbone feature map before pooling (shape documented per model).

        Args:
            waveform: ``[b, t]``.

        Returns:
            The feature map.
        """
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> AudioEncoderOutput:
        """Pooling, embedding and classifier on a :meth:`forward_features` map.

        Args:
            features: The feature map.

        Returns:
            The encoder output.
        """
        raise NotImplementedError

    def forward(self, waveform: Tensor) -> AudioEncoderOutput:
        """Encode a batch of waveforms.

        Args:
            waveform: ``[b, t]`` float samples at ``frontend.sample_rate``.

        Returns:
            :class:`AudioEncoderOutput` with ``embedding [b, out_dim]``.
        """
        return self.forward_head(self.forward_features(waveform))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one (:meth:`_new_head`).

        The new head takes the device and dtype of the front end's ``bn0``.

        Args:
            num_classes: New number of classes; 0 removes the head.

        Raises:
            ValueError: If ``num_classes`` is negative.
        """
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        if num_classes == 0:
            self.head = None
            return
        reference = self.log_mel.bn0.weight
        self.head = self._new_head(num_classes).to(reference.device, reference.dtype)

    def _new_head(self, num_classes: int) -> nn.Module:
        """A freshly initialised classifier with ``num_classes`` outputs."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable config that :func:`clapkit.audio.build_audio_encoder` rebuilds from.

        Returns:
            ``{"architecture": ..., "frontend": {...}, ...every knob}``.
        """
        raise NotImplementedError

    def _check_waveform(self, waveform: Tensor) -> None:
        if waveform.ndim != 2:
            raise ValueError(
                f"{type(self).__name__} expects a waveform batch [batch, samples], got shape "
                f"{tuple(waveform.shape)}"
            )
        if not waveform.is_floating_point():
            raise ValueError(f"waveform must be floating point, got {waveform.dtype}")
