"""torch.compile of a CLAP training step: no graph break in any registered encoder pair, and the
compiled update gives eager's loss and gradients (CPU inductor here; the same graphs on a GPU).

The recipe compiles the audio tower, the text tower and the loss separately
(``pretrain_clap.py --compile``) with captions padded to a few fixed lengths; a graph break would
send the rest of a forward back to eager Python, and every break was a host read on the way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch._inductor.config

import clapkit.audio
import clapkit.text
from clapkit.audio import FrontendConfig
from clapkit.core import ContrastiveLoss, build_clap
from clapkit.text.corpus import small_config, train_tokenizer
from clapkit.train.contrastive import disable_dropout

FRONTEND = FrontendConfig(sample_rate=16000, clip_seconds=1.0, fmax=8000.0)
AUDIO = {
    "cnn14": {"frontend": FRONTEND, "channels": (8, 16, 32, 64), "out_dim": 32},
    "htsat": {"frontend": FRONTEND, "spec_size": 128, "embed_dim": 8, "depths": (2, 2),
              "num_heads": (1, 2), "window_size": 8},
}  # fmt: skip
CAPTIONS = ["a dog barks in the rain", "a siren", "rain on a tin roof", "birds at dawn"]
COMPILED_RELATIVE_TOLERANCE = 1e-4
"""Compiled vs eager loss, float32 on the CPU (inductor fuses and reorders reductions)."""
GRADIENT_TOLERANCE = {"rtol": 2e-3, "atol": 2e-5}
"""Compiled vs eager gradients: measured at most 6.6e-6 absolute / 4.5e-4 relative (bn0's bias,
a sum over every frame of the batch, summed in another order)."""


def _model(audio: str, text: str) -> Any:
    torch.manual_seed(0)
    tokenizer = train_tokenizer(text, CAPTIONS)
    return build_clap(
        audio, text, projection_dim=8, audio_kwargs=AUDIO[audio],
        text_kwargs={"config": small_config(text, tokenizer), "tokenizer": tokenizer},
    ).train()  # fmt: skip


def _step(model: Any, loss_fn: Any) -> Callable[..., torch.Tensor]:
    def step(waveform: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = model(waveform, input_ids=ids, attention_mask=mask)
        loss: torch.Tensor = loss_fn(out.audio_embeds, out.text_embeds, out.logit_scale_exp)
        return loss

    return step


@pytest.mark.parametrize("text", sorted(clapkit.text.NAMED_ENCODERS))
@pytest.mark.parametrize("audio", ["cnn14", "htsat"])
def test_training_forward_has_no_graph_break(audio: str, text: str) -> None:
    # every registered audio name is one of these two architectures (front ends aside)
    assert {b.__name__.split("_")[0] for b in clapkit.audio.NAMED_ENCODERS.values()} == {
        "cnn14", "htsat",
    }  # fmt: skip
    model = _model(audio, text)
    batch = model.text_encoder.tokenize(CAPTIONS[:2], pad_to_multiple_of=16)
    assert batch["input_ids"].shape[1] == 16
    waveform = torch.randn(2, FRONTEND.clip_samples)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(_step(model, ContrastiveLoss(pad_to=2)))(
        waveform, batch["input_ids"], batch["attention_mask"]
    )
    reasons = [str(reason.reason).splitlines()[0] for reason in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1


def test_compiled_update_equals_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    # the same random numbers in both passes: inductor draws from eager's generator, reseeded
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    model = _model("htsat", "gpt2-eot")
    # dropout, stochastic depth and SpecAugment draw other numbers when compiled
    assert disable_dropout(model)
    model.audio_encoder.log_mel.spec_augment = False
    batch = model.text_encoder.tokenize(CAPTIONS, pad_to_multiple_of=16)
    waveform = torch.randn(4, FRONTEND.clip_samples, generator=torch.Generator().manual_seed(1))
    loss_fn = ContrastiveLoss(pad_to=4)
    args = (waveform, batch["input_ids"], batch["attention_mask"])

    def gradients(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return grads

    buffers = {n: b.clone() for n, b in model.named_buffers()}
    torch.manual_seed(2)
    eager = _step(model, loss_fn)(*args)
    eager_grads = gradients(eager)
    with torch.no_grad():  # the same BatchNorm statistics for the compiled pass
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    torch._dynamo.reset()
    for module in (model.audio_encoder, model.text_encoder, loss_fn):
        module.compile()
    torch.manual_seed(2)
    compiled = _step(model, loss_fn)(*args)
    compiled_grads = gradients(compiled)
    torch.testing.assert_close(compiled, eager, rtol=COMPILED_RELATIVE_TOLERANCE, atol=1e-6)
    assert compiled_grads.keys() == eager_grads.keys()
    assert len(eager_grads) == sum(1 for p in model.parameters() if p.requires_grad)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(
            compiled_grads[name], grad, **GRADIENT_TOLERANCE, msg=lambda m, n=name: f"{n}: {m}"
        )
