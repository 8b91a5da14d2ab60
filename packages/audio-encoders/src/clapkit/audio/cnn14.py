"""CNN14 of PANNs (Kong et al., 2020, arXiv 1912.10211), as in ``audioset_tagging_cnn``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from clapkit.audio.base import AudioEncoder, AudioEncoderOutput
from clapkit.audio.config import FrontendConfig
from clapkit.audio.frontend import LogMelFrontend
from clapkit.audio.kernels import (
    INFERENCE_CHUNK_BYTES,
    conv3x3_single_channel,
    fold_batch_norm,
    inference_chunk,
    use_inference_kernels,
    winograd_conv3x3,
    winograd_filter,
)


@dataclass(frozen=True)
class FoldedConv:
    """A convolution with its BatchNorm folded in, ready for one inference kernel.

    Attributes:
        kernel: ``"single"`` (1 input channel, :func:`conv3x3_single_channel`), ``"winograd"``
            (:func:`winograd_conv3x3`) or ``"direct"`` (oneDNN, channels-last).
        weight: The folded weight; Winograd filters ``[16, c_in, c_out]`` for ``"winograd"``.
        bias: ``[c_out]``.
    """

    kernel: str
    weight: Tensor
    bias: Tensor


class ConvBlock(nn.Module):
    """Two 3x3 convolutions (no bias) with BatchNorm and ReLU, then average pooling.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        pool: Average-pooling kernel (time, mel); ``(1, 1)`` skips pooling.
    """

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.pool = pool
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self._folded_key: tuple[object, ...] | None = None
        self._folded: tuple[FoldedConv, FoldedConv] | None = None

    def train(self, mode: bool = True) -> ConvBlock:
        """Set training mode; entering it drops the folded-weight cache (it would go stale).

        Args:
            mode: Training (True) or evaluation (False).

        Returns:
            ``self``.
        """
        if mode:
            self._folded = None
            self._folded_key = None
        return super().train(mode)

    def folded(self, winograd_min_channels: int) -> tuple[FoldedConv, FoldedConv] | None:
        """Both convolutions with their BatchNorms folded in, cached until a tensor changes.

        The cache is keyed on the version counter, storage and dtype of every parameter and
        running statistic, so loading weights, an optimiser step or ``.to()`` rebuilds it. Only
        what the kernel needs is kept (Winograd filters are 16/9 the size of the weight).

        Args:
            winograd_min_channels: Convolutions with at least this many input channels run as
                Winograd F(2x2, 3x3).

        Returns:
            The two folded convolutions; ``None`` for weights created under
            ``torch.inference_mode`` (they keep no version counter to key a cache on).
        """
        tensors = [
            t
            for module in (self.conv1, self.bn1, self.conv2, self.bn2)
            for t in (*module.parameters(), *module.buffers())
        ]
        if any(t.is_inference() for t in tensors):
            return None
        key = (winograd_min_channels, *((t._version, t.data_ptr(), t.dtype) for t in tensors))
        if key != self._folded_key or self._folded is None:
            self._folded = None  # free the old tensors before building new ones
            convs = []
            for conv, norm in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
                weight, bias = fold_batch_norm(conv.weight, norm)
                if conv.in_channels == 1:
                    convs.append(FoldedConv("single", weight, bias))
                elif conv.in_channels >= winograd_min_channels:
                    convs.append(FoldedConv("winograd", winograd_filter(weight), bias))
                else:
                    weight = weight.contiguous(memory_format=torch.channels_last)
                    convs.append(FoldedConv("direct", weight, bias))
            self._folded = (convs[0], convs[1])
            self._folded_key = key
        return self._folded

    def forward_inference(self, x: Tensor, winograd_min_channels: int) -> Tensor:
        """Evaluation forward without autograd on the kernels of :mod:`clapkit.audio.kernels`.

        Args:
            x: ``[b, c_in, f, m]``, preferably channels-last in memory.
            winograd_min_channels: See :meth:`folded`.

        Returns:
            ``[b, c_out, f / pool_f, m / pool_m]``, channels-last in memory.
        """
        folded = self.folded(winograd_min_channels)
        if folded is None:
            return self(x)
        for conv in folded:
            if conv.kernel == "single":
                x = conv3x3_single_channel(x[:, 0], conv.weight, conv.bias).permute(0, 3, 1, 2)
            elif conv.kernel == "winograd":
                nhwc = x.permute(0, 2, 3, 1).contiguous()
                x = winograd_conv3x3(nhwc, conv.weight, conv.bias).permute(0, 3, 1, 2)
            else:
                x = x.contiguous(memory_format=torch.channels_last)
                x = F.conv2d(x, conv.weight, conv.bias, padding=1)
            x = x.relu_()
        if self.pool != (1, 1):
            x = F.avg_pool2d(x, self.pool)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: ``[b, c_in, f, m]``.

        Returns:
            ``[b, c_out, f / pool_f, m / pool_m]``.
        """
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        if self.pool != (1, 1):
            x = F.avg_pool2d(x, self.pool)
        return x


class Cnn14(AudioEncoder):
    """CNN14: six conv blocks, mel-mean + time max-plus-mean pooling, ``fc1`` embedding.

    Build it with :func:`clapkit.audio.cnn14_encoder` or a named builder.

    Args:
        frontend: Front-end contract.
        channels: Output channels of each conv block (PANNs: 64 ... 2048).
        out_dim: Width of the embedding layer ``fc1`` (PANNs: 2048).
        num_classes: Classifier outputs (AudioSet: 527); 0 = no head.
        block_dropout: Dropout after every conv block.
        embed_dropout: Dropout before ``fc1`` and on the returned embedding.
        spec_augment: SpecAugment in training (PANNs: on; msclap's CNN14: off).
    """

    architecture = "cnn14"
    fast_inference = True
    """CPU float32 evaluation without autograd takes the folded/Winograd path of
    :meth:`ConvBlock.forward_inference`; set False on an instance for the plain layer order."""
    winograd_min_channels = 256
    """Convolutions with this many input channels or more run as Winograd F(2x2, 3x3) there."""

    def __init__(
        self,
        *,
        frontend: FrontendConfig,
        channels: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
        out_dim: int = 2048,
        num_classes: int = 527,
        block_dropout: float = 0.2,
        embed_dropout: float = 0.5,
        spec_augment: bool = True,
    ) -> None:
        super().__init__(frontend, out_dim=out_dim, num_classes=num_classes)
        self.channels = tuple(channels)
        self.block_dropout = block_dropout
        self.embed_dropout = embed_dropout
        self.log_mel = LogMelFrontend(frontend, spec_augment=spec_augment)
        widths = (1, *self.channels)
        last = len(self.channels) - 1
        self.blocks = nn.ModuleList(
            ConvBlock(widths[i], widths[i + 1], (1, 1) if i == last else (2, 2))
            for i in range(len(self.channels))
        )
        self.embed = nn.Linear(self.channels[-1], out_dim)
        self.head: nn.Linear | None = None
        self.reset_classifier(num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _new_head(self, num_classes: int) -> nn.Linear:
        """``fc_audioset``: a Xavier-initialised linear layer on the embedding."""
        head = nn.Linear(self.out_dim, num_classes)
        nn.init.xavier_uniform_(head.weight)
        nn.init.zeros_(head.bias)
        return head

    def forward_features(self, waveform: Tensor) -> Tensor:
        """Log-mel and the conv blocks.

        Args:
            waveform: ``[b, t]`` at ``frontend.sample_rate``.

        Returns:
            ``[b, channels[-1], f / 2^(n-1), n_mels / 2^(n-1)]`` (n = number of blocks).
        """
        self._check_waveform(waveform)
        x = self.log_mel(waveform)
        if self._fast_path(x):
            return self._forward_blocks_inference(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            x = F.dropout(x, self.block_dropout, self.training)
        return x

    def _forward_blocks_inference(self, x: Tensor) -> Tensor:
        """The conv blocks on the inference kernels.

        Leading blocks whose activations would pass :data:`INFERENCE_CHUNK_BYTES` at full batch
        run in chunks of clips (heap-recycled memory instead of fresh pages on every call); the
        deep blocks run on the whole batch, where their GEMMs need the rows.
        """
        blocks = [block for block in self.blocks if isinstance(block, ConvBlock)]
        batch, _, frames, mels = x.shape
        per_item = [
            block.conv1.out_channels * (frames >> i) * (mels >> i) * x.element_size()
            for i, block in enumerate(blocks)
        ]
        early = sum(1 for size in per_item if size * batch > INFERENCE_CHUNK_BYTES)
        chunk = inference_chunk(per_item[0])
        if early and chunk < batch:
            parts = []
            for part in x.split(chunk):
                for block in blocks[:early]:
                    part = block.forward_inference(part, self.winograd_min_channels)
                parts.append(part)
            x = torch.cat(parts)
            blocks = blocks[early:]
        for block in blocks:
            x = block.forward_inference(x, self.winograd_min_channels)
        return x.contiguous()

    def _fast_path(self, x: Tensor) -> bool:
        return self.fast_inference and use_inference_kernels(self, x)

    def forward_head(self, features: Tensor) -> AudioEncoderOutput:
        """Pool over mel (mean) and time (max + mean), then ``fc1`` and the classifier.

        Args:
            features: ``[b, c, f', m']`` from :meth:`forward_features`.

        Returns:
            ``embedding [b, out_dim]``, ``clipwise_logits [b, num_classes]`` or ``None``.
        """
        x = features.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        x = F.dropout(x, self.embed_dropout, self.training)
        hidden = F.relu(self.embed(x))
        embedding = F.dropout(hidden, self.embed_dropout, self.training)
        logits = self.head(hidden) if self.head is not None else None
        return AudioEncoderOutput(embedding=embedding, clipwise_logits=logits)

    def get_config(self) -> dict[str, Any]:
        """Every knob, JSON-serialisable; see :class:`AudioEncoder`."""
        return {
            "architecture": self.architecture,
            "frontend": self.frontend.to_dict(),
            "channels": list(self.channels),
            "out_dim": self.out_dim,
            "num_classes": self.num_classes,
            "block_dropout": self.block_dropout,
            "embed_dropout": self.embed_dropout,
            "spec_augment": self.log_mel.spec_augment,
        }
