"""The contrastive side of pretraining: dropout switched off, FLOPs per sample.

::

    disable_dropout(model)                               # equivalence tests
    flops = flops_per_sample(model, loss_fn, clip_seconds=7.0)
    flops(batch["input_ids"].shape[1])                   # per sample at that caption length

The training step itself is ``recipes/pretrain_clap.py``'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

__all__ = ["CaptionFlops", "disable_dropout", "flops_per_sample"]


def disable_dropout(model: torch.nn.Module) -> list[str]:
    """Set every dropout rate of ``model`` to 0: ``nn.Dropout`` modules, the float attributes
    named ``*dropout`` that functional dropout reads (CNN14's ``block_dropout``,
    ``embed_dropout``) and stochastic depth's ``drop_prob``.

    Args:
        model: the model, changed in place.

    Returns:
        The names of the rates set to 0 (``"audio_encoder.block_dropout"``, ...).
    """
    switched = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p:
            module.p = 0.0
            switched.append(f"{name}.p")
        for attribute, value in list(vars(module).items()):
            rate = attribute.endswith("dropout") or attribute == "drop_prob"
            if rate and isinstance(value, float) and value:
                setattr(module, attribute, 0.0)
                switched.append(f"{name}.{attribute}".lstrip("."))
    return switched


@dataclasses.dataclass(frozen=True)
class CaptionFlops:
    """Forward + backward FLOPs per training sample as a function of the padded caption length.

    Counted at two caption lengths and interpolated in between: the text tower's cost is affine
    in the length but for attention's quadratic term, which at GPT2's 77 tokens is under 1% of
    a layer (``L / (12 d)``).

    Attributes:
        short: ``(length, FLOPs per sample)`` at the shorter count.
        long: the same at the longer count.
    """

    short: tuple[int, float]
    long: tuple[int, float]

    def __call__(self, length: int) -> float:
        """FLOPs per sample of a batch padded to ``length`` caption tokens."""
        (a, fa), (b, fb) = self.short, self.long
        return fa + (fb - fa) * (length - a) / (b - a)


def flops_per_sample(model: Any, loss_fn: Any, *, clip_seconds: float) -> CaptionFlops:
    """Forward + backward FLOPs per sample on stand-in batches of two (before ``prepare``).

    Counted on the training crop at caption lengths 8 and the text encoder's longest; counting
    leaves the model and the random generators as they were (``count_flops``).

    Args:
        model: the ``ClapModel``.
        loss_fn: its contrastive loss.
        clip_seconds: the training crop.

    Returns:
        FLOPs per training sample by padded caption length.
    """
    from clapkit.train.throughput import count_flops

    samples = int(model.audio_encoder.frontend.sample_rate * clip_seconds)
    generator = torch.Generator().manual_seed(0)
    waveform = torch.randn(2, samples, generator=generator)
    vocabulary = len(model.text_encoder.tokenizer)

    def count(length: int) -> tuple[int, float]:
        ids = torch.randint(0, vocabulary, (2, length), generator=generator)

        def step() -> None:
            out = model(waveform, input_ids=ids, attention_mask=torch.ones_like(ids))
            loss_fn(out.audio_embeds, out.text_embeds, out.logit_scale_exp).backward()

        return length, count_flops(step, model) / 2

    longest = int(model.text_encoder.max_length)
    return CaptionFlops(short=count(min(8, longest - 1)), long=count(longest))
