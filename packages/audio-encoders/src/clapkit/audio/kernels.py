"""Inference kernels: CPU float32 forward passes without autograd, built from torch ops.

:mod:`clapkit.audio.fast` builds the encoders' fast inference forms from these; they run where
:func:`use_inference_kernels` says so (no autograd, float32/64 on CPU, no autocast). The model
files keep the plain layer-by-layer forward that training, GPUs and the checkpoints use.

HTS-AT spends most of its time in linear layers already at the GEMM's peak; :func:`linear` runs
them through oneDNN with the bias, the MLP's GELU or a residual addition applied in the GEMM's
epilogue instead of extra passes over the activations.

Both fast forms (and their log-mel front end) split a batch into chunks whose largest
activation stays under :data:`INFERENCE_CHUNK_BYTES` (:func:`inference_chunk`).

CNN14 spends almost all of its CPU time in 3x3 convolutions that oneDNN already runs near the
machine's peak FLOP rate, so a faster float32 forward pass has to do less arithmetic:

- BatchNorm folded into the convolution (one pass over the activations instead of three);
- the 1-channel first convolution as one ``[pixels, 9] @ [9, c]`` matrix product (oneDNN's
  direct kernel is memory-bound there);
- Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2015, arXiv 1509.09308) for the deep,
  channel-heavy layers: 16 multiplies per 2x2 output tile instead of 36, all of them in one
  batched GEMM. Its transforms use only 0, +-1 and 1/2, so float32 results stay within a few
  1e-7 of the direct convolution (relative to the output scale).

Convolution tensors here are channels-last (``[b, h, w, c]``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_MKLDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None)


@functools.cache
def _mkldnn_linear_works() -> bool:
    """Whether this torch build runs oneDNN's fused linear (probed once on a tiny input)."""
    if _MKLDNN_LINEAR is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.no_grad():
            x, w = torch.ones(2, 3), torch.ones(4, 3)
            out = _MKLDNN_LINEAR(x, w, torch.zeros(4), "gelu", [], "none")
            added = _MKLDNN_LINEAR.binary(x, torch.ones(2, 4), w, None, "add")
    except (RuntimeError, NotImplementedError):
        return False
    return bool(torch.allclose(out, F.gelu(x @ w.t())) and torch.allclose(added, x @ w.t() + 1))


INFERENCE_CHUNK_BYTES = 24 << 20
"""Largest activation an inference chunk should allocate. glibc serves blocks up to 32 MiB from
its heap, where they are reused; larger ones get fresh mmap pages that fault in on every call,
which costs CNN14 and HTS-AT 10-20% of a forward pass at batch 8."""


def inference_chunk(bytes_per_item: int) -> int:
    """How many batch items fit one inference chunk.

    Args:
        bytes_per_item: Size of the largest activation one item creates.

    Returns:
        ``max(1, INFERENCE_CHUNK_BYTES // bytes_per_item)``.
    """
    return max(1, INFERENCE_CHUNK_BYTES // max(1, bytes_per_item))


def use_inference_kernels(x: Tensor) -> bool:
    """Whether a pass on ``x`` may take these kernels (the fast forms' own check).

    Args:
        x: An input or activation of the pass (its device and dtype count).

    Returns:
        True without autograd or autocast, for float32/64 on the CPU.
    """
    return (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
    )


def linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    gelu: bool = False,
    residual: Tensor | None = None,
) -> Tensor:
    """``x @ weight.T + bias``, then exact (erf) GELU or a residual added, when asked.

    Without autograd or autocast, float32 on the CPU runs as one oneDNN call with the bias and
    the GELU or the residual addition in the GEMM's epilogue; otherwise as ``F.linear``
    followed by ``F.gelu`` or ``residual + ...``.

    Args:
        x: ``[..., in_features]``.
        weight: ``[out_features, in_features]``.
        bias: Optional ``[out_features]``.
        gelu: Apply GELU to the output.
        residual: ``[..., out_features]`` to add to the output (not with ``gelu``).

    Returns:
        ``[..., out_features]``.

    Raises:
        ValueError: If both ``gelu`` and ``residual`` are given.
    """
    if gelu and residual is not None:
        raise ValueError("linear takes gelu or residual, not both")
    if (
        _MKLDNN_LINEAR is not None
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and _mkldnn_linear_works()
    ):
        if gelu:
            return _MKLDNN_LINEAR(x, weight, bias, "gelu", [], "none")
        if residual is not None and residual.dtype == torch.float32:
            return _MKLDNN_LINEAR.binary(x, residual, weight, bias, "add")
        out = _MKLDNN_LINEAR(x, weight, bias, "none", [], "")
    else:
        out = F.linear(x, weight, bias)
        if gelu:
            return F.gelu(out)
    return out if residual is None else residual + out


WINOGRAD_CHUNK_BYTES = 16 << 20
"""Size of the transformed-input buffer one Winograd pass handles (keeps it cache-resident)."""

WINOGRAD_MIN_ROWS = 1024
"""Fewest GEMM rows (tiles) per Winograd pass: smaller products lose the GEMM's efficiency."""


def batch_norm_affine(norm: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """The per-channel ``(scale, shift)`` an evaluation-mode BatchNorm applies.

    Args:
        norm: A BatchNorm with running statistics.

    Returns:
        ``(scale, shift)``, each ``[c]`` in float64, with ``norm(x) == x * scale + shift``
        along the channel axis.

    Raises:
        ValueError: If the BatchNorm keeps no running statistics.
    """
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    shift = -norm.running_mean.double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.double()
    return scale, shift


def fold_batch_norm(weight: Tensor, norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold an evaluation-mode BatchNorm into the bias-free convolution before it.

    Args:
        weight: ``[c_out, c_in, k, k]`` convolution weight.
        norm: The BatchNorm that follows (its running statistics are used).

    Returns:
        ``(weight, bias)`` with ``conv(x, weight) + bias == norm(conv(x, original weight))``
        (per-channel factors computed in float64), in ``weight``'s dtype.

    Raises:
        ValueError: If the BatchNorm keeps no running statistics.
    """
    scale, shift = batch_norm_affine(norm)
    folded = weight * scale.to(weight.dtype)[:, None, None, None]
    return folded, shift.to(weight.dtype)


def winograd_filter(weight: Tensor) -> Tensor:
    """Transform 3x3 filters for :func:`winograd_conv3x3`.

    Args:
        weight: ``[c_out, c_in, 3, 3]``.

    Returns:
        ``[16, c_in, c_out]``: ``G g G^T`` per filter, tile positions first, in ``weight``'s
        dtype (the transform only halves and adds three terms, exact to one rounding).

    Raises:
        ValueError: If the kernel is not 3x3.
    """
    if weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise ValueError(f"expected [c_out, c_in, 3, 3] filters, got {tuple(weight.shape)}")

    def transform(g: Tensor, dim: int) -> Tensor:  # G applied along one kernel axis
        g0, g1, g2 = g.unbind(dim)
        return torch.stack((g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2), dim)

    u = transform(transform(weight.permute(2, 3, 1, 0), 0), 1)  # [4, 4, c_in, c_out]
    return u.reshape(16, weight.shape[1], weight.shape[0]).contiguous()


def _input_transform(rows: Tensor, vertical: Tensor, out: Tensor) -> None:
    """``B^T d B`` of every 4x4 tile.

    ``rows [b, 2n + 2, 2tw + 2, c]`` (padded input) -> ``out [4, 4, b, n, tw, c]``, through
    ``vertical [4, b, n, 2tw + 2, c]`` (scratch for the pass over each tile's rows).
    """
    n, width_tiles = out.shape[3], out.shape[4]
    r = [rows[:, k : k + 2 * n : 2] for k in range(4)]
    torch.sub(r[0], r[2], out=vertical[0])
    torch.add(r[1], r[2], out=vertical[1])
    torch.sub(r[2], r[1], out=vertical[2])
    torch.sub(r[1], r[3], out=vertical[3])
    c = [vertical[:, :, :, k : k + 2 * width_tiles : 2] for k in range(4)]
    torch.sub(c[0], c[2], out=out[:, 0])
    torch.add(c[1], c[2], out=out[:, 1])
    torch.sub(c[2], c[1], out=out[:, 2])
    torch.sub(c[1], c[3], out=out[:, 3])


def _output_transform(products: Tensor, out: Tensor, bias: Tensor | None) -> None:
    """``A^T m A`` of every tile, plus bias.

    ``products [4, 4, b, n, tw, c]`` -> ``out [b, n, 2, tw, 2, c]``.
    """
    m = products
    if bias is not None:
        # Row and column 1 of A are all ones: a constant on product (1, 1) reaches all 4 outputs.
        m[1, 1].add_(bias)
    top = m[0] + m[1] + m[2]  # [4, b, n, tw, c], output row 0 before the column pass
    bottom = m[1] - m[2] - m[3]
    for row, partial in enumerate((top, bottom)):
        left = out[:, :, row, :, 0]
        right = out[:, :, row, :, 1]
        torch.add(partial[0], partial[1], out=left).add_(partial[2])
        torch.sub(partial[1], partial[2], out=right).sub_(partial[3])


def winograd_conv3x3(x: Tensor, filters: Tensor, bias: Tensor | None = None) -> Tensor:
    """3x3 convolution, stride 1, zero padding 1, by Winograd F(2x2, 3x3).

    The output is computed in horizontal bands of tile rows so that the transformed input stays
    near :data:`WINOGRAD_CHUNK_BYTES` while each GEMM keeps at least
    :data:`WINOGRAD_MIN_ROWS` rows.

    Args:
        x: ``[b, h, w, c_in]`` channels-last input.
        filters: ``[16, c_in, c_out]`` from :func:`winograd_filter`.
        bias: Optional ``[c_out]``.

    Returns:
        ``[b, h, w, c_out]`` (contiguous), equal to ``conv2d(x, weight, bias, padding=1)``
        up to float rounding.

    Raises:
        ValueError: If the shapes do not fit together.
    """
    if x.ndim != 4 or filters.ndim != 3 or filters.shape[0] != 16:
        raise ValueError(
            f"expected x [b, h, w, c] and filters [16, c_in, c_out], got {tuple(x.shape)} and "
            f"{tuple(filters.shape)}"
        )
    batch, height, width, channels = x.shape
    if filters.shape[1] != channels:
        raise ValueError(f"filters expect {filters.shape[1]} input channels, x has {channels}")
    out_channels = filters.shape[2]
    tiles_h, tiles_w = (height + 1) // 2, (width + 1) // 2
    # Zero padding: 1 before, enough after for whole 4x4 tiles at stride 2.
    padded = F.pad(x, (0, 0, 1, 2 * tiles_w + 1 - width, 1, 2 * tiles_h + 1 - height))
    row_tiles = batch * tiles_w
    widest = max(channels, out_channels)
    band = WINOGRAD_CHUNK_BYTES // (16 * row_tiles * widest * x.element_size())
    band = min(tiles_h, max(1, band, -(-WINOGRAD_MIN_ROWS // row_tiles)))
    out = x.new_empty(batch, 2 * tiles_h, 2 * tiles_w, out_channels)
    # Flat buffers, reused by every band; the last (shorter) band views their front.
    padded_width = padded.shape[2]
    vertical_buffer = x.new_empty(4 * batch * band * padded_width * channels)
    transformed_buffer = x.new_empty(16 * batch * band * tiles_w * channels)
    products_buffer = x.new_empty(16 * batch * band * tiles_w * out_channels)
    for start in range(0, tiles_h, band):
        n = min(band, tiles_h - start)
        tiles = batch * n * tiles_w
        transformed = transformed_buffer[: 16 * tiles * channels].view(4, 4, batch, n, tiles_w, -1)
        products = products_buffer[: 16 * tiles * out_channels].view(16, tiles, out_channels)
        vertical = vertical_buffer[: 4 * batch * n * padded_width * channels]
        vertical = vertical.view(4, batch, n, padded_width, channels)
        _input_transform(padded[:, 2 * start : 2 * start + 2 * n + 2], vertical, transformed)
        torch.bmm(transformed.view(16, tiles, channels), filters, out=products)
        target = out[:, 2 * start : 2 * (start + n)].view(batch, n, 2, tiles_w, 2, out_channels)
        _output_transform(products.view(4, 4, batch, n, tiles_w, out_channels), target, bias)
    if out.shape[1] != height or out.shape[2] != width:
        out = out[:, :height, :width].contiguous()
    return out


def conv3x3_single_channel(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """3x3 convolution (stride 1, zero padding 1) of a 1-channel image as one matrix product.

    Args:
        x: ``[b, h, w]`` image.
        weight: ``[c_out, 1, 3, 3]``.
        bias: Optional ``[c_out]``.

    Returns:
        ``[b, h, w, c_out]`` channels-last output.

    Raises:
        ValueError: If the weight is not ``[c_out, 1, 3, 3]``.
    """
    if weight.ndim != 4 or weight.shape[1:] != (1, 3, 3):
        raise ValueError(f"expected [c_out, 1, 3, 3] filters, got {tuple(weight.shape)}")
    batch, height, width = x.shape
    out_channels = weight.shape[0]
    padded = F.pad(x, (1, 1, 1, 1)).contiguous()
    s_b, s_h, s_w = padded.stride()
    patches = padded.as_strided((batch, height, width, 3, 3), (s_b, s_h, s_w, s_h, s_w))
    kernel = weight.reshape(out_channels, 9).t()
    if bias is None:
        return torch.mm(patches.reshape(-1, 9), kernel).view(batch, height, width, out_channels)
    # A column of ones against a bias row: the GEMM adds the bias (addmm would first copy it
    # into the whole output).
    columns = x.new_empty(batch, height, width, 10)
    columns[..., :9].view(batch, height, width, 3, 3).copy_(patches)
    columns[..., 9] = 1.0
    kernel = torch.cat((kernel, bias[None]))
    return torch.mm(columns.view(-1, 10), kernel).view(batch, height, width, out_channels)
