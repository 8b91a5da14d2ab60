"""HTSAT's fast inference form: window-ordered Swin tokens, fused oneDNN linear layers.

Inside a stage the tokens travel as ``[b, h * w, d]`` sequences in *window order* (the tokens of
each unshifted window consecutive, windows row-major; see :mod:`clapkit.audio.htsat.windows`).
Plain blocks then attend without moving a token; a shifted block gathers its shifted windows with
one index (cyclic shift and partition in one copy) and scatter-adds its output back into the
residual stream with one ``index_add``, where the plain block rolls, partitions, merges and rolls
back. Patch merging gathers straight into the next stage's window order. Linear layers run through
:func:`clapkit.audio.kernels.linear` (bias, GELU or the residual in the GEMM's epilogue), and the
attention masks (position bias plus shift mask) are computed once, here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clapkit.audio.base import AudioEncoderOutput
from clapkit.audio.fast.common import FastForm, frozen, snapshot
from clapkit.audio.htsat.model import (
    HTSAT,
    crop_windows,
    eval_window_starts,
    fold_image,
    semantic_grid,
    token_semantic_output,
)
from clapkit.audio.htsat.swin import (
    PatchMerging,
    SwinBlock,
    SwinStage,
    window_attention,
    window_attention_mask,
)
from clapkit.audio.htsat.windows import inverse_order, window_order
from clapkit.audio.kernels import inference_chunk, linear


class _Linear(nn.Module):
    """Frozen weight and bias of an ``nn.Linear`` for :func:`~clapkit.audio.kernels.linear`."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.weight: Tensor
        self.bias: Tensor | None
        self.register_buffer("weight", frozen(layer.weight), persistent=False)
        self.register_buffer("bias", frozen(layer.bias), persistent=False)

    def forward(self, x: Tensor, *, gelu: bool = False, residual: Tensor | None = None) -> Tensor:
        """``[..., in] -> [..., out]``; see :func:`~clapkit.audio.kernels.linear`."""
        return linear(x, self.weight, self.bias, gelu=gelu, residual=residual)


class WindowOrderBlock(nn.Module):
    """A :class:`~clapkit.audio.htsat.swin.SwinBlock` on window-order tokens.

    Args:
        block: The plain block (evaluation: no dropout, no drop path).
    """

    def __init__(self, block: SwinBlock) -> None:
        super().__init__()
        self.tokens = block.window**2
        self.n_windows = block.n_windows
        self.heads = block.attn.num_heads
        self.norm1 = snapshot(block.norm1)
        self.norm2 = snapshot(block.norm2)
        self.qkv = _Linear(block.attn.qkv)
        self.proj = _Linear(block.attn.proj)
        self.fc1 = _Linear(block.mlp.fc1)
        self.fc2 = _Linear(block.mlp.fc2)
        bias = block.attn.position_bias().detach()
        self.mask: Tensor
        self.register_buffer(
            "mask", window_attention_mask(bias, block.shift_mask).contiguous(), persistent=False
        )
        self.shift_order: Tensor | None
        order = None
        if block.shift:
            resolution, window = block.resolution, block.window
            # Sequence position (plain window order) of every token of the shifted windows.
            plain = inverse_order(window_order(*resolution, window))
            order = plain[window_order(*resolution, window, block.shift)].to(bias.device)
        self.register_buffer("shift_order", order, persistent=False)

    def _attend(self, windows: Tensor, residual: Tensor | None) -> Tensor:
        bw, n, d = windows.shape
        qkv = self.qkv(windows).view(bw, n, 3, self.heads, d // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = window_attention(query, key, value, self.mask, self.n_windows, 0.0)
        return self.proj(out, residual=residual)

    def forward(self, x: Tensor) -> Tensor:
        """``[b, h * w, d]`` in plain window order -> the same shape and order."""
        b, length, d = x.shape
        if self.shift_order is None:  # the residual joins the projection's epilogue
            windows = x.view(-1, self.tokens, d)
            x = self._attend(self.norm1(windows), residual=windows).view(b, length, d)
        else:
            windows = self.norm1(x.index_select(1, self.shift_order)).view(-1, self.tokens, d)
            y = self._attend(windows, residual=None)
            x = x.index_add(1, self.shift_order, y.view(b, length, d))
        return self.fc2(self.fc1(self.norm2(x), gelu=True), residual=x)


class WindowOrderMerging(nn.Module):
    """:class:`~clapkit.audio.htsat.swin.PatchMerging` from one window order into the next.

    Args:
        merging: The plain patch merging.
        window: Window side of the input sequence's order.
        next_window: Window side of the output sequence's order.
    """

    def __init__(self, merging: PatchMerging, window: int, next_window: int) -> None:
        super().__init__()
        height, width = merging.resolution
        self.norm = snapshot(merging.norm)
        self.reduction = _Linear(merging.reduction)
        position = inverse_order(window_order(height, width, window))  # grid -> sequence index
        merged = window_order(height // 2, width // 2, next_window)
        rows, cols = 2 * (merged // (width // 2)), 2 * (merged % (width // 2))
        # Swin concatenates (row0,col0), (row1,col0), (row0,col1), (row1,col1): column-major.
        sources = torch.stack(
            (rows * width + cols, (rows + 1) * width + cols, rows * width + cols + 1,
             (rows + 1) * width + cols + 1),
            dim=1,
        )  # fmt: skip
        self.gather_index: Tensor
        index = position[sources].flatten().to(self.reduction.weight.device)
        self.register_buffer("gather_index", index, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``[b, h * w, d]`` -> ``[b, h * w / 4, 2d]`` in the next window order."""
        b, length, d = x.shape
        x = x.index_select(1, self.gather_index).view(b, length // 4, 4 * d)
        return self.reduction(self.norm(x))


class FastHTSAT(FastForm):
    """HTSAT for CPU evaluation without autograd; see :func:`clapkit.audio.inference_form`.

    Args:
        encoder: The encoder (evaluation mode, CPU, float32/64); its weights are copied.
    """

    def __init__(self, encoder: HTSAT) -> None:
        super().__init__(encoder)
        self.freq_ratio = encoder.freq_ratio
        self.image_frames = encoder.image_frames
        self.image_mels = encoder.image_mels
        self.long_crop_frames = encoder.long_crop_frames
        self.long_crop_hop = encoder.long_crop_hop
        self.patch_embed = snapshot(encoder.patch_embed)
        stages = [stage for stage in encoder.stages if isinstance(stage, SwinStage)]
        layers: list[nn.Module] = []
        for i, stage in enumerate(stages):
            layers += [WindowOrderBlock(block) for block in stage.blocks]  # type: ignore[arg-type]
            if stage.downsample is not None:
                following = stages[i + 1].window if i + 1 < len(stages) else stage.window
                layers.append(WindowOrderMerging(stage.downsample, stage.window, following))
        self.layers = nn.ModuleList(layers)
        self.norm = snapshot(encoder.norm)
        self.head = snapshot(encoder.head) if encoder.head is not None else None
        device = encoder.norm.weight.device
        grid = encoder.spec_size // encoder.patch_stride
        final = encoder.final_grid
        self.grid_to_sequence: Tensor
        self.sequence_to_grid: Tensor
        first = window_order(grid, grid, stages[0].window)
        last = inverse_order(window_order(final, final, stages[-1].window))
        self.register_buffer("grid_to_sequence", first.to(device), persistent=False)
        self.register_buffer("sequence_to_grid", last.to(device), persistent=False)
        hidden = int(encoder.embed_dim * encoder.mlp_ratio)
        self.widest_per_image = grid * grid * hidden  # elements of the first stage's MLP

    def encode_images(self, image: Tensor) -> Tensor:
        """``[n, 1, s, s]`` images -> ``[n, s' * s', d]`` final tokens in grid order."""
        x = self.patch_embed(image).index_select(1, self.grid_to_sequence)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).index_select(1, self.sequence_to_grid)

    def encode(self, waveform: Tensor) -> AudioEncoderOutput:
        """Front end, long-clip windows, folding, Swin stages in chunks, token-semantic head.

        Args:
            waveform: ``[b, t]``.

        Returns:
            As :meth:`clapkit.audio.HTSAT.forward`.
        """
        log_mel = self.log_mel(waveform)
        batch, _, frames, _ = log_mel.shape
        windows = 1
        if frames > self.image_frames:
            positions = eval_window_starts(frames, self.long_crop_frames, self.long_crop_hop)
            starts = torch.tensor(positions, device=log_mel.device).expand(batch, -1)
            windows = len(positions)
            log_mel = crop_windows(log_mel, starts, self.long_crop_frames)
        image = fold_image(log_mel, self.freq_ratio, self.image_frames, self.image_mels)
        # Images in chunks whose activations glibc recycles (see INFERENCE_CHUNK_BYTES).
        chunk = inference_chunk(self.widest_per_image * image.element_size())
        parts = [self.encode_images(part) for part in image.split(chunk)]
        tokens = parts[0] if len(parts) == 1 else torch.cat(parts)
        features = semantic_grid(tokens, self.freq_ratio)
        return token_semantic_output(features.view(batch, windows, *features.shape[1:]), self.head)
