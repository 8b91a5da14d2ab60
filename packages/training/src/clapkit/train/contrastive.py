"""The contrastive side of pretraining: the CLAP model of a config, its FLOPs, its updates.

::

    model = build_model(cfg, captions)                   # encoders by cfg.size, then build_clap
    flops = flops_per_sample(model, loss_fn, clip_seconds=7.0, prompt="this is a sound of x")
    updates = ContrastiveUpdates(accelerator, model, optimizer, loss_fn,
                                 accumulate_negatives=True, max_grad_norm=None)
    for batch in loader:
        loss = updates.feed(inputs)        # None while an update's micro-batches gather
    loss = updates.flush()                 # the epoch's short last group, if any

With ``accumulate_negatives`` and more than one micro-step per update, an update runs
``clapkit.core.accumulated_contrastive_step`` over all its micro-batches (one loss over the whole
global batch; accelerate's own accumulation is switched off); otherwise each micro-batch is a
forward and backward under ``accelerator.accumulate`` (negatives within one micro-step,
gathered over all processes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["ContrastiveUpdates", "build_model", "disable_dropout", "flops_per_sample"]


def build_model(cfg: Any, texts: Sequence[str]) -> Any:
    """The ``ClapModel`` of a pretraining config (random init unless weights are given).

    Args:
        cfg: a ``clapkit.train.presets.clap.Config`` (encoders, size, projection, temperature).
        texts: the training captions and the prompt (the small sizes' word tokenizer).

    Returns:
        The model.
    """
    from clapkit.core import build_clap
    from clapkit.train.demo import build_encoders

    audio_encoder, text_encoder = build_encoders(cfg, texts)
    model = build_clap(
        audio=audio_encoder,
        text=text_encoder,
        projection=cfg.projection,
        projection_dropout=cfg.projection_dropout,
        projection_dim=cfg.projection_dim,
        init_temperature=cfg.init_temperature,
    )
    if not getattr(cfg, "dropout", True):
        disable_dropout(model)
    return model


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


def flops_per_sample(model: Any, loss_fn: Any, *, clip_seconds: float, prompt: str) -> float:
    """Forward + backward FLOPs per sample on a stand-in batch of two (before ``prepare``).

    Counting leaves the model and the random generators as they were (``count_flops``).

    Args:
        model: the ``ClapModel``.
        loss_fn: its contrastive loss.
        clip_seconds: the training crop.
        prompt: a caption to tokenize.

    Returns:
        FLOPs per training sample.
    """
    from clapkit.train.throughput import count_flops

    samples = int(model.audio_encoder.frontend.sample_rate * clip_seconds)
    waveform = torch.randn(2, samples, generator=torch.Generator().manual_seed(0))
    batch = model.text_encoder.tokenize([prompt] * 2)

    def step() -> None:
        out = model(waveform, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss_fn(out.audio_embeds, out.text_embeds, out.logit_scale_exp).backward()

    return count_flops(step, model) / 2


@dataclasses.dataclass
class ContrastiveUpdates:
    """Optimizer updates from micro-batches, with or without full-batch negatives.

    Create it after ``accelerator.prepare``; it sets ``accelerator.gradient_accumulation_steps``
    to 1 when it runs the accumulation itself (``full_negatives``).

    Args:
        accelerator: the run's accelerator (its accumulation steps reach the global batch).
        model: the prepared model.
        optimizer: the prepared optimizer.
        loss_fn: the contrastive loss (gathers across processes).
        accumulate_negatives: one loss over the whole global batch when an update takes
            several micro-steps.
        max_grad_norm: clip the gradient norm to this before each update (None: no clipping).
    """

    accelerator: Any
    model: Any
    optimizer: Any
    loss_fn: Any
    accumulate_negatives: bool = True
    max_grad_norm: float | None = None
    pending: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.micro_steps = int(self.accelerator.gradient_accumulation_steps)
        self.full_negatives = self.accumulate_negatives and self.micro_steps > 1
        if self.full_negatives:  # clapkit.core's step runs the micro-batches: no division
            self.accelerator.gradient_accumulation_steps = 1
        self.updated = False
        """Whether the last ``feed``/``flush`` made an optimizer update."""

    def feed(self, inputs: Mapping[str, Any]) -> torch.Tensor | None:
        """One micro-batch (``waveform``, ``input_ids``, ``attention_mask``).

        Returns:
            The loss computed now (every micro-batch without full negatives; the update's
            full-batch loss when the last of its micro-batches arrives), else None.
        """
        if self.full_negatives:
            self.pending.append(inputs)
            self.updated = False
            return self.flush() if len(self.pending) == self.micro_steps else None
        accelerator, model = self.accelerator, self.model
        with accelerator.accumulate(model):
            out = model(**inputs)
            loss: torch.Tensor = self.loss_fn(
                out.audio_embeds, out.text_embeds, out.logit_scale_exp
            )
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.updated = bool(accelerator.sync_gradients)
        return loss.detach()

    def flush(self) -> torch.Tensor | None:
        """The update of the micro-batches gathered so far (full negatives), if any.

        Returns:
            Its full-batch loss, or None when nothing was pending.
        """
        from clapkit.core import accumulated_contrastive_step

        self.updated = False
        if not self.pending:
            return None
        accelerator, model = self.accelerator, self.model
        loss: torch.Tensor = accumulated_contrastive_step(
            model,
            self.pending,
            self.loss_fn,
            backward=accelerator.backward,
            no_sync=lambda: accelerator.no_sync(model),
        )
        if self.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.pending, self.updated = [], True
        return loss
