"""HTS-AT (Chen et al., ICASSP 2022, arXiv 2202.00874): Swin over a folded log-mel image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from clapkit.audio.base import AudioEncoder, AudioEncoderOutput
from clapkit.audio.config import FrontendConfig
from clapkit.audio.frontend import LogMelFrontend
from clapkit.audio.htsat.swin import SwinStage


def _mean_probability_logit(logits: Tensor, dim: int) -> Tensor:
    """``logit(mean(sigmoid(logits)))`` along ``dim``, stable for large magnitudes."""
    return torch.logsumexp(F.logsigmoid(logits), dim) - torch.logsumexp(F.logsigmoid(-logits), dim)


def eval_window_starts(frames: int, crop: int, hop: int) -> list[int]:
    """Start frames of HTS-AT's evaluation windows over a long spectrogram.

    Args:
        frames: Spectrogram frames.
        crop: Window length.
        hop: Window hop.

    Returns:
        ``range(0, frames - crop - 1, hop)`` as HTS-AT has it, or ``[0]`` if that is empty.
    """
    return list(range(0, frames - crop - 1, hop)) or [0]


def crop_windows(log_mel: Tensor, starts: Tensor, length: int) -> Tensor:
    """Cut windows out of each spectrogram.

    Args:
        log_mel: ``[b, 1, f, m]``.
        starts: ``[b, w]`` start frames.
        length: Window length ``L``.

    Returns:
        ``[b * w, 1, L, m]``, the windows of one clip consecutive.
    """
    batch, _, _, mels = log_mel.shape
    index = starts[..., None] + torch.arange(length, device=log_mel.device)  # [b, w, L]
    crops = log_mel[:, 0][torch.arange(batch, device=log_mel.device)[:, None, None], index]
    return crops.view(-1, 1, length, mels)


def fold_image(log_mel: Tensor, freq_ratio: int, image_frames: int, image_mels: int) -> Tensor:
    """Stretch a log-mel spectrogram to the image length and fold it square.

    Args:
        log_mel: ``[n, 1, f, m]`` with ``f <= image_frames``.
        freq_ratio: Time chunks stacked along frequency.
        image_frames: Frames the image holds (``spec_size * freq_ratio``).
        image_mels: Mel bins the image holds (``spec_size // freq_ratio``).

    Returns:
        ``[n, 1, spec_size, spec_size]``: chunk ``k`` of ``f / freq_ratio`` frames occupies
        rows ``k * m ... (k + 1) * m - 1``.
    """
    frames, mels = log_mel.shape[2:]
    if frames < image_frames or mels < image_mels:
        size = (max(frames, image_frames), max(mels, image_mels))
        log_mel = F.interpolate(log_mel, size, mode="bicubic", align_corners=True)
    return rearrange(log_mel, "n 1 (k t) m -> n 1 (k m) t", k=freq_ratio)


def semantic_grid(tokens: Tensor, freq_ratio: int) -> Tensor:
    """The token-semantic regrouping of the final token grid into frequency x time.

    Args:
        tokens: ``[n, s * s, d]`` final tokens in grid order.
        freq_ratio: Time chunks the image folding stacked along frequency.

    Returns:
        ``[n, d, s / freq_ratio, freq_ratio * s]``: each chunk's rows moved onto the time axis.
    """
    side = round(tokens.shape[1] ** 0.5)
    grid = rearrange(tokens, "n (h w) d -> n d h w", h=side)
    return rearrange(grid, "n d (k r) c -> n d r (k c)", k=freq_ratio)


def token_semantic_output(features: Tensor, head: nn.Module | None) -> AudioEncoderOutput:
    """Embedding and class maps, averaged over windows (HTS-AT's ``latent_output``, ``tscam``).

    Args:
        features: ``[b, w, d, r, c]`` token maps.
        head: The class-map convolution (``tscam_conv``), or ``None``.

    Returns:
        ``embedding [b, d]``; ``clipwise_logits [b, classes]`` (mean over time of the class
        map) and ``framewise_logits [b, c, classes]``; over several windows the logits are those
        of the mean probability, as HTS-AT averages sigmoid outputs.
    """
    batch, windows = features.shape[:2]
    embedding = features.mean(dim=(1, 3, 4))
    if head is None:
        return AudioEncoderOutput(embedding=embedding)
    frame_logits = head(features.flatten(0, 1)).flatten(2)  # [b * w, classes, c]
    frame_logits = frame_logits.view(batch, windows, *frame_logits.shape[1:])
    clip_logits = frame_logits.mean(dim=3)
    frame_logits = frame_logits.transpose(2, 3)
    if windows == 1:
        return AudioEncoderOutput(embedding, clip_logits[:, 0], frame_logits[:, 0])
    return AudioEncoderOutput(
        embedding,
        _mean_probability_logit(clip_logits, 1),
        _mean_probability_logit(frame_logits, 1),
    )


class PatchEmbed(nn.Module):
    """Strided convolution into patch tokens, then LayerNorm.

    Args:
        patch_size: Convolution kernel.
        patch_stride: Convolution stride (padding ``(size - stride) // 2``).
        dim: Token width.
    """

    def __init__(self, patch_size: int, patch_stride: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            1, dim, patch_size, stride=patch_stride, padding=(patch_size - patch_stride) // 2
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: Tensor) -> Tensor:
        """``[b, 1, s, s]`` image -> ``[b, (s/stride)^2, dim]`` tokens in grid order."""
        return self.norm(rearrange(self.proj(image), "b d h w -> b (h w) d"))


class HTSAT(AudioEncoder):
    """HTS-AT: hierarchical token-semantic audio transformer.

    The log-mel spectrogram ``[f, m]`` is stretched (bicubic, ``align_corners=True``) to
    ``spec_size * freq_ratio`` frames when shorter, folded into a ``spec_size`` square image
    (``freq_ratio = spec_size // n_mels`` consecutive time chunks stacked along frequency),
    embedded into patches and run through Swin stages. The token-semantic module regroups the
    final grid into frequency x time, averages it into the embedding (``latent_output``) and
    convolves it into class maps (``tscam_conv``) for framewise and clipwise outputs.

    Longer spectrograms follow HTS-AT too: in training one random crop of the image length
    (from the front end's generator); in evaluation windows of ``long_crop_frames`` every
    ``long_crop_hop`` frames (HTS-AT: 689 and 344 for a 1024-frame image, starting while
    ``start < f - crop - 1``), each stretched and encoded, with embeddings and class
    probabilities averaged. 10 s at 32 kHz (1001 frames) and 7 s at 44.1 kHz (965) are shorter
    than the 1024-frame image and only stretched.

    Build it with :func:`clapkit.audio.htsat_encoder` or a named builder. Args mirror that
    builder.
    """

    architecture = "htsat"

    def __init__(
        self,
        *,
        frontend: FrontendConfig,
        spec_size: int = 256,
        patch_size: int = 4,
        patch_stride: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        num_classes: int = 527,
        spec_augment: bool = True,
        long_crop_frames: int | None = None,
        long_crop_hop: int | None = None,
    ) -> None:
        depths, num_heads = tuple(depths), tuple(num_heads)
        stages = len(depths)
        super().__init__(frontend, out_dim=embed_dim * 2 ** (stages - 1), num_classes=num_classes)
        self.spec_size = spec_size
        self.patch_size = patch_size
        self.patch_stride = patch_stride
        self.embed_dim = embed_dim
        self.depths = depths
        self.num_heads = num_heads
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.drop_rate = drop_rate
        self.attn_drop_rate = attn_drop_rate
        self.drop_path_rate = drop_path_rate
        self.freq_ratio = spec_size // frontend.n_mels
        self.image_frames = spec_size * self.freq_ratio
        self.image_mels = spec_size // self.freq_ratio
        default_crop = self.image_frames * 689 // 1024
        self.long_crop_frames = long_crop_frames if long_crop_frames is not None else default_crop
        self.long_crop_hop = (
            long_crop_hop if long_crop_hop is not None else self.long_crop_frames // 2
        )
        grid = spec_size // patch_stride
        self.final_grid = grid // 2 ** (stages - 1)
        self.semantic_rows = self.final_grid // self.freq_ratio

        self.log_mel = LogMelFrontend(frontend, spec_augment=spec_augment)
        self.patch_embed = PatchEmbed(patch_size, patch_stride, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(stages):
            side = grid // 2**i
            self.stages.append(
                SwinStage(
                    embed_dim * 2**i,
                    (side, side),
                    depths[i],
                    num_heads[i],
                    window=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path_rates=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                    downsample=i < stages - 1,
                )
            )
        self.norm = nn.LayerNorm(self.out_dim)
        self.head: nn.Conv2d | None = None
        self.apply(self._init_weights)
        self.reset_classifier(num_classes)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            # HTS-AT's trunc_normal_(std=0.02) cuts at +-2 absolute = 100 sigma: a plain normal.
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each Swin block in the backward pass.

        Args:
            enable: Turn checkpointing on or off.
        """
        super().set_grad_checkpointing(enable)
        for stage in self.stages:
            if isinstance(stage, SwinStage):
                stage.grad_checkpointing = enable

    def _new_head(self, num_classes: int) -> nn.Conv2d:
        """``tscam_conv``: class maps from the token-semantic grid."""
        return nn.Conv2d(self.out_dim, num_classes, (self.semantic_rows, 3), padding=(0, 1))

    def _crop_starts(self, frames: int, batch: int, device: torch.device) -> Tensor:
        """Start frames ``[batch, w]`` of the windows a long spectrogram is cut into."""
        if self.training:
            high = frames - self.image_frames  # HTS-AT: randint(0, f - crop - 1) inclusive
            generator = self.log_mel.generator
            starts = torch.randint(
                0,
                max(high, 1),
                (batch, 1),
                generator=generator,
                device=generator.device if generator is not None else "cpu",
            )
            return starts.to(device)
        positions = eval_window_starts(frames, self.long_crop_frames, self.long_crop_hop)
        return torch.tensor(positions, device=device).expand(batch, -1)

    def to_image(self, log_mel: Tensor) -> Tensor:
        """Stretch and fold a log-mel spectrogram (:func:`fold_image` with this model's sizes).

        Args:
            log_mel: ``[n, 1, f, m]`` with ``f <= image_frames``.

        Returns:
            ``[n, 1, spec_size, spec_size]``.
        """
        return fold_image(log_mel, self.freq_ratio, self.image_frames, self.image_mels)

    def forward_features(self, waveform: Tensor) -> Tensor:
        """Front end, image folding, Swin stages and the token-semantic regrouping.

        Args:
            waveform: ``[b, t]`` at ``frontend.sample_rate``.

        Returns:
            ``[b, w, d, r, c]`` token map per window: ``w`` windows (1 unless the clip is
            longer than the image in evaluation), ``d = out_dim``, ``r`` frequency groups
            (HTS-AT: 2) and ``c`` time positions (HTS-AT: 32).
        """
        self._check_waveform(waveform)
        log_mel = self.log_mel(waveform)
        batch, _, frames, _ = log_mel.shape
        windows = 1
        if frames > self.image_frames:
            starts = self._crop_starts(frames, batch, log_mel.device)
            windows = starts.shape[1]
            length = self.image_frames if self.training else self.long_crop_frames
            log_mel = crop_windows(log_mel, starts, length)
        x = self.pos_drop(self.patch_embed(self.to_image(log_mel)))
        for stage in self.stages:
            x = stage(x)
        x = semantic_grid(self.norm(x), self.freq_ratio)
        return x.view(batch, windows, *x.shape[1:])

    def forward_head(self, features: Tensor) -> AudioEncoderOutput:
        """Embedding and class maps (:func:`token_semantic_output` with this model's head).

        Args:
            features: ``[b, w, d, r, c]`` from :meth:`forward_features`.

        Returns:
            ``embedding [b, d]``; ``clipwise_logits [b, classes]`` and
            ``framewise_logits [b, c, classes]`` with a head.
        """
        return token_semantic_output(features, self.head)

    def get_config(self) -> dict[str, Any]:
        """Every knob, JSON-serialisable; see :class:`AudioEncoder`."""
        return {
            "architecture": self.architecture,
            "frontend": self.frontend.to_dict(),
            "spec_size": self.spec_size,
            "patch_size": self.patch_size,
            "patch_stride": self.patch_stride,
            "embed_dim": self.embed_dim,
            "depths": list(self.depths),
            "num_heads": list(self.num_heads),
            "window_size": self.window_size,
            "mlp_ratio": self.mlp_ratio,
            "qkv_bias": self.qkv_bias,
            "drop_rate": self.drop_rate,
            "attn_drop_rate": self.attn_drop_rate,
            "drop_path_rate": self.drop_path_rate,
            "num_classes": self.num_classes,
            "spec_augment": self.log_mel.spec_augment,
            "long_crop_frames": self.long_crop_frames,
            "long_crop_hop": self.long_crop_hop,
        }
