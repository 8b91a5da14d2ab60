"""CNN14's fast inference form: folded BatchNorm, Winograd F(2x2, 3x3), chunked early blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clapkit.audio.base import AudioEncoderOutput
from clapkit.audio.cnn14 import Cnn14, ConvBlock, pool_features
from clapkit.audio.fast.common import FastForm, frozen
from clapkit.audio.kernels import (
    INFERENCE_CHUNK_BYTES,
    conv3x3_single_channel,
    fold_batch_norm,
    inference_chunk,
    winograd_conv3x3,
    winograd_filter,
)

WINOGRAD_MIN_CHANNELS = 256
"""Convolutions with this many input channels or more run as Winograd F(2x2, 3x3): below it
oneDNN's direct kernel is faster on the wide early feature maps."""


class FoldedConv(nn.Module):
    """A 3x3 convolution with its BatchNorm folded in, then ReLU, on one inference kernel.

    Args:
        conv: The bias-free convolution.
        norm: The BatchNorm after it (running statistics).
        winograd_min_channels: Input channels from which Winograd is used.

    Attributes:
        kernel: ``"single"`` (1 input channel, :func:`conv3x3_single_channel`), ``"winograd"``
            (:func:`winograd_conv3x3`) or ``"direct"`` (oneDNN, channels-last).
    """

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d, winograd_min_channels: int) -> None:
        super().__init__()
        weight, bias = fold_batch_norm(conv.weight.detach(), norm)
        if conv.in_channels == 1:
            self.kernel = "single"
        elif conv.in_channels >= winograd_min_channels:
            self.kernel = "winograd"
            weight = winograd_filter(weight)  # only the filters are kept: 16/9 the weight
        else:
            self.kernel = "direct"
            weight = weight.contiguous(memory_format=torch.channels_last)
        self.weight: Tensor
        self.bias: Tensor
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``relu(norm(conv(x)))``.

        Args:
            x: ``[b, c_in, f, m]``, preferably channels-last in memory.

        Returns:
            ``[b, c_out, f, m]``, channels-last in memory.
        """
        if self.kernel == "single":
            x = conv3x3_single_channel(x[:, 0], self.weight, self.bias).permute(0, 3, 1, 2)
        elif self.kernel == "winograd":
            nhwc = x.permute(0, 2, 3, 1).contiguous()
            x = winograd_conv3x3(nhwc, self.weight, self.bias).permute(0, 3, 1, 2)
        else:
            x = x.contiguous(memory_format=torch.channels_last)
            x = F.conv2d(x, self.weight, self.bias, padding=1)
        return x.relu_()


class FoldedConvBlock(nn.Module):
    """A :class:`~clapkit.audio.cnn14.ConvBlock` as two folded convolutions and its pooling.

    Args:
        block: The plain block.
        winograd_min_channels: See :class:`FoldedConv`.
    """

    def __init__(self, block: ConvBlock, winograd_min_channels: int) -> None:
        super().__init__()
        self.pool = block.pool
        self.out_channels = block.conv2.out_channels
        self.conv1 = FoldedConv(block.conv1, block.bn1, winograd_min_channels)
        self.conv2 = FoldedConv(block.conv2, block.bn2, winograd_min_channels)

    def forward(self, x: Tensor) -> Tensor:
        """``[b, c_in, f, m]`` -> ``[b, c_out, f / pool_f, m / pool_m]`` (channels-last)."""
        x = self.conv2(self.conv1(x))
        return F.avg_pool2d(x, self.pool) if self.pool != (1, 1) else x


class FastCnn14(FastForm):
    """CNN14 for CPU evaluation without autograd; see :func:`clapkit.audio.inference_form`.

    Args:
        encoder: The encoder (evaluation mode, CPU, float32/64); its weights are copied.
        winograd_min_channels: Convolutions with this many input channels or more run as
            Winograd F(2x2, 3x3).
    """

    def __init__(self, encoder: Cnn14, winograd_min_channels: int = WINOGRAD_MIN_CHANNELS) -> None:
        super().__init__(encoder)
        self.blocks = nn.ModuleList(
            FoldedConvBlock(block, winograd_min_channels)
            for block in encoder.blocks
            if isinstance(block, ConvBlock)
        )
        self.embed_weight: Tensor
        self.embed_bias: Tensor
        self.register_buffer("embed_weight", frozen(encoder.embed.weight), persistent=False)
        self.register_buffer("embed_bias", frozen(encoder.embed.bias), persistent=False)
        self.head_weight: Tensor | None
        self.head_bias: Tensor | None
        head = encoder.head
        self.register_buffer("head_weight", frozen(head.weight) if head else None, False)
        self.register_buffer("head_bias", frozen(head.bias) if head else None, False)

    def forward_blocks(self, x: Tensor) -> Tensor:
        """The conv blocks; leading ones in chunks of clips.

        Blocks whose activations would pass :data:`INFERENCE_CHUNK_BYTES` at full batch run in
        chunks (heap-recycled memory instead of fresh pages on every call); the deep blocks run
        on the whole batch, where their GEMMs need the rows.

        Args:
            x: ``[b, 1, f, m]`` normalised log-mel.

        Returns:
            ``[b, c, f', m']`` (contiguous).
        """
        blocks = [block for block in self.blocks if isinstance(block, FoldedConvBlock)]
        batch, _, frames, mels = x.shape
        per_item = [
            block.out_channels * (frames >> i) * (mels >> i) * x.element_size()
            for i, block in enumerate(blocks)
        ]
        early = sum(1 for size in per_item if size * batch > INFERENCE_CHUNK_BYTES)
        chunk = inference_chunk(per_item[0])
        if early and chunk < batch:
            parts = []
            for part in x.split(chunk):
                for block in blocks[:early]:
                    part = block(part)
                parts.append(part)
            x = torch.cat(parts)
            blocks = blocks[early:]
        for block in blocks:
            x = block(x)
        return x.contiguous()

    def encode(self, waveform: Tensor) -> AudioEncoderOutput:
        """Log-mel, folded conv blocks, PANNs pooling, ``fc1`` and the classifier.

        Args:
            waveform: ``[b, t]``.

        Returns:
            ``embedding [b, out_dim]``, ``clipwise_logits [b, num_classes]`` or ``None``.
        """
        pooled = pool_features(self.forward_blocks(self.log_mel(waveform)))
        hidden = F.relu(F.linear(pooled, self.embed_weight, self.embed_bias))
        logits = None
        if self.head_weight is not None:
            logits = F.linear(hidden, self.head_weight, self.head_bias)
        return AudioEncoderOutput(embedding=hidden, clipwise_logits=logits)
