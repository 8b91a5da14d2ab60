"""clapkit vs msclap 1.3.4's clapcap captioner on the same random weights (``nox -s parity``).

msclap's wrapper downloads GPT2 and its tokenizer at construction; here they are built offline
(random GPT2 from ``GPT2Config()``, the real GPT-2 tokenizer files from data/reference). The
random weights, BatchNorm statistics included, are written in msclap's file layout and loaded by
both sides: msclap through its own ``CLAPWrapper``, clapkit through ``ClapCaptioner.from_msclap``.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.parity

REPO = Path(__file__).resolve().parents[4]
TOKENIZER = REPO / "data" / "reference" / "tokenizers" / "gpt2"
FSDD = REPO / "data" / "fsdd" / "recordings"
CLIPS = ["7_theo_3.flac", "0_jackson_10.flac", "3_nicolas_7.flac", "9_yweweler_41.flac"]
# Random GPT2 never ends a caption; scaling the (tied) embedding of token 220 makes msclap's stop
# rule fire for some clips and not others, so both paths are compared. msclap decodes without a
# cache (about a minute per clip and step count on 2 busy cores), hence 12 tokens and 3 clips
# for the token comparison; the algorithm is the same at 67 tokens.
STOP_BOOST = 7.0
DECODE_TOKENS = 12


def _offline_msclap(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Import msclap with GPT2 and its tokenizer built offline (random GPT2, real vocabulary)."""
    import msclap.CLAPWrapper as wrapper_module  # noqa: N813
    import msclap.models.clap as clap_module
    import msclap.models.mapper as mapper_module
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, GPT2Tokenizer

    monkeypatch.setattr(
        clap_module,
        "AutoModel",
        types.SimpleNamespace(from_pretrained=lambda *_: GPT2Model(GPT2Config())),
    )
    monkeypatch.setattr(
        mapper_module,
        "GPT2LMHeadModel",
        types.SimpleNamespace(from_pretrained=lambda *_: GPT2LMHeadModel(GPT2Config())),
    )
    monkeypatch.setattr(
        wrapper_module,
        "AutoTokenizer",
        types.SimpleNamespace(
            from_pretrained=lambda *_: GPT2Tokenizer.from_pretrained(str(TOKENIZER))
        ),
    )
    return wrapper_module


def _soundfile_load(path: str) -> tuple[torch.Tensor, int]:
    """``torchaudio.load`` as msclap calls it (torchaudio 2.9+ needs torchcodec for it)."""
    import soundfile

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, list[str]]]:
    """(msclap CLAPWrapper, clapkit ClapCaptioner, clip paths) on the same random weights."""
    import soundfile

    from clapkit.caption import ClapCaptioner

    with pytest.MonkeyPatch.context() as monkeypatch:
        wrapper_module = _offline_msclap(monkeypatch)
        monkeypatch.setattr(
            wrapper_module, "torchaudio", types.SimpleNamespace(load=_soundfile_load)
        )
        from msclap.models.clap import CLAP
        from msclap.models.mapper import ClapCaptionModel

        torch.manual_seed(0)
        clap = CLAP(
            audioenc_name="HTSAT",
            sample_rate=44100,
            window_size=1024,
            hop_size=320,
            mel_bins=64,
            fmin=50,
            fmax=8000,
            classes_num=527,
            out_emb=768,
            text_model="gpt2",
            transformer_embed_dim=768,
            d_proj=1024,
        )
        reference = ClapCaptionModel(clap, "gpt2", 40, 40, 1024, 8, True, "transformer", True, True)
        with torch.no_grad():
            for module in reference.modules():
                if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                    module.running_mean.normal_(0.0, 2.0)
                    module.running_var.uniform_(0.5, 3.0)
            reference.gpt.transformer.wte.weight[220] *= STOP_BOOST
        folder = tmp_path_factory.mktemp("clapcap")
        checkpoint = folder / "clapcap_weights_2023.pth"
        torch.save({"model": reference.state_dict()}, checkpoint)
        wrapper = wrapper_module.CLAPWrapper(str(checkpoint), version="clapcap")
        captioner = ClapCaptioner.from_msclap(checkpoint, tokenizer=TOKENIZER)
        noise = folder / "noise.wav"
        samples = torch.randn(3 * 22050, generator=torch.Generator().manual_seed(1)) * 0.1
        soundfile.write(noise, samples.numpy(), 22050)
        clips = [str(FSDD / name) for name in CLIPS] + [str(noise)]
        yield wrapper, captioner, clips


def _reference_prefix(wrapper: object, audio: torch.Tensor) -> torch.Tensor:
    """msclap's prefix computation, as in ``CLAPWrapper.generate_caption``."""
    model = wrapper.clapcap
    with torch.no_grad():
        embedding = model.clap(audio)[0]
        embedding = embedding / embedding.norm(2, -1).reshape(-1, 1)
        return model.clap_project(embedding).view(-1, 40, 768)


def test_prefix_embeddings_match(models: tuple[Any, Any, list[str]]) -> None:
    wrapper, captioner, clips = models
    audio = wrapper.preprocess_audio(clips, True).squeeze(1)
    expected = _reference_prefix(wrapper, audio)
    with torch.no_grad():
        actual = captioner.prefix(captioner.encode_audio(audio))
    error = ((actual - expected).norm(dim=(1, 2)) / expected.norm(dim=(1, 2))).max().item()
    assert error < 1e-4, f"relative error {error:.2e}"


def test_generated_tokens_match_msclap_decoding(models: tuple[Any, Any, list[str]]) -> None:
    """msclap's generate_caption vs clapkit's msclap-compatible batched, cached beam search."""
    wrapper, captioner, clips = models
    clips = clips[:2] + clips[-1:]
    audio = wrapper.preprocess_audio(clips, True).squeeze(1)
    with torch.no_grad():
        embedding = captioner.encode_audio(audio)
    ours = captioner.generate_tokens(
        embedding, compatibility="msclap", beam_size=5, max_new_tokens=DECODE_TOKENS
    )
    # msclap returns only text: record the ids its tokenizer decodes, then pick the returned one
    tokenizer = wrapper.tokenizer
    decoded: dict[str, list[int]] = {}
    real_decode = tokenizer.decode

    def recording_decode(ids: object, *args: object, **kwargs: object) -> str:
        text = real_decode(ids, *args, **kwargs)
        decoded[text.capitalize()] = [int(i) for i in ids]
        return text

    tokenizer.decode = recording_decode
    try:
        texts = wrapper.generate_caption(
            clips, resample=True, beam_size=5, entry_length=DECODE_TOKENS
        )
    finally:
        tokenizer.decode = real_decode
    theirs = [decoded[text] for text in texts]
    assert ours.token_ids == theirs
    assert captioner.decode(ours.token_ids, compatibility="msclap") == texts
    stopped = [ids[-1] == 220 for ids in theirs]
    assert any(stopped), "no beam stopped: the stop rule was not exercised"
