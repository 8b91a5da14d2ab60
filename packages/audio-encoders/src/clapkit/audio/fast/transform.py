"""The transform itself: which encoders have a fast form, and building it."""

from __future__ import annotations

import torch
from torch import nn

from clapkit.audio.cnn14 import Cnn14
from clapkit.audio.fast.cnn14 import WINOGRAD_MIN_CHANNELS, FastCnn14
from clapkit.audio.fast.htsat import FastHTSAT
from clapkit.audio.htsat.model import HTSAT


def has_inference_form(encoder: nn.Module) -> bool:
    """Whether :func:`inference_form` gives ``encoder`` a fast form (rather than itself).

    Args:
        encoder: Any module.

    Returns:
        True for a :class:`~clapkit.audio.Cnn14` or :class:`~clapkit.audio.HTSAT` (exactly
        those classes: a subclass may change the forward pass) in evaluation mode whose
        tensors are all on the CPU in one dtype, float32 or float64.
    """
    if type(encoder) not in (Cnn14, HTSAT) or encoder.training:
        return False
    tensors = [*encoder.parameters(), *encoder.buffers()]
    floating = {t.dtype for t in tensors if t.is_floating_point()}
    return all(t.device.type == "cpu" for t in tensors) and (
        floating == {torch.float32} or floating == {torch.float64}
    )


def inference_form(
    encoder: nn.Module, *, winograd_min_channels: int = WINOGRAD_MIN_CHANNELS
) -> nn.Module:
    """The encoder's fast inference form, or the encoder itself where it has none.

    The form is called like the encoder (``form(waveform [b, t]) -> AudioEncoderOutput``) and
    carries the same ``frontend`` and ``out_dim``. It is a snapshot: it holds copies of the
    weights as they are now (folded, transformed) and does not follow later changes to the
    encoder; use :class:`InferenceFormCache` to keep one current. It is valid in evaluation
    without autograd or autocast on CPU float32/64 inputs; called otherwise (with autograd on,
    under autocast, on another device) it runs the encoder itself.

    Args:
        encoder: An audio encoder.
        winograd_min_channels: CNN14 convolutions with this many input channels or more run as
            Winograd F(2x2, 3x3) (fewer run on oneDNN's direct kernel).

    Returns:
        A :class:`FastCnn14` or :class:`FastHTSAT` where :func:`has_inference_form` holds,
        else ``encoder``.
    """
    if not has_inference_form(encoder):
        return encoder
    with torch.no_grad():
        if isinstance(encoder, Cnn14):
            return FastCnn14(encoder, winograd_min_channels)
        assert isinstance(encoder, HTSAT)
        return FastHTSAT(encoder)
