"""CNN14 of PANNs (Kong et al., 2020, arXiv 1912.10211), as in ``audioset_tagging_cnn``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from clapkit.audio.base import AudioEncoder, AudioEncoderOutput
from clapkit.audio.config import FrontendConfig
from clapkit.audio.frontend import LogMelFrontend


def pool_features(features: Tensor) -> Tensor:
    """PANNs' pooling: mean over mel, then max plus mean over time.

    Args:
        features: ``[b, c, f, m]`` conv map.

    Returns:
        ``[b, c]``.
    """
    x = features.mean(dim=3)
    return x.amax(dim=2) + x.mean(dim=2)


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
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            x = F.dropout(x, self.block_dropout, self.training)
        return x

    def forward_head(self, features: Tensor) -> AudioEncoderOutput:
        """Pool over mel (mean) and time (max + mean), then ``fc1`` and the classifier.

        Args:
            features: ``[b, c, f', m']`` from :meth:`forward_features`.

        Returns:
            ``embedding [b, out_dim]``, ``clipwise_logits [b, num_classes]`` or ``None``.
        """
        x = F.dropout(pool_features(features), self.embed_dropout, self.training)
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
