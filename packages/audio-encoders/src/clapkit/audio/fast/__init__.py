"""The CPU fast path as one transform: an encoder's fast inference form, and a cache of it.

:func:`inference_form` turns a plain encoder (the architecture of the model files, which training,
GPUs and the checkpoints use) into a module that computes the same outputs faster on the CPU
without autograd, as timm's ``reparameterize_model`` / ``fuse()`` do for image models:

- **both**: float64 STFT in chunks of clips, ``bn0`` as a fixed affine map, and activations kept
  under :data:`~clapkit.audio.kernels.INFERENCE_CHUNK_BYTES` by running the batch in chunks;
- **CNN14**: BatchNorm folded into the convolutions, the 1-channel first convolution as one GEMM,
  channels-last oneDNN convolutions for the wide early layers, Winograd F(2x2, 3x3) for
  convolutions with 256 or more input channels;
- **HTSAT**: Swin tokens in window order (no roll, partition or merge copies), linear layers
  through oneDNN with bias, GELU or the residual in the GEMM's epilogue, attention masks
  precomputed.

:class:`InferenceFormCache` keeps one form per encoder and rebuilds it when it goes stale.

Example:
    >>> from clapkit.audio import cnn14, inference_form
    >>> encoder = cnn14().eval()
    >>> fast = inference_form(encoder)
    >>> with torch.inference_mode():
    ...     out = fast(waveform)  # == encoder(waveform) within float32 rounding
"""

from clapkit.audio.fast.cache import InferenceFormCache
from clapkit.audio.fast.cnn14 import WINOGRAD_MIN_CHANNELS, FastCnn14
from clapkit.audio.fast.common import FastForm
from clapkit.audio.fast.htsat import FastHTSAT
from clapkit.audio.fast.transform import has_inference_form, inference_form

__all__ = [
    "WINOGRAD_MIN_CHANNELS",
    "FastCnn14",
    "FastForm",
    "FastHTSAT",
    "InferenceFormCache",
    "has_inference_form",
    "inference_form",
]
