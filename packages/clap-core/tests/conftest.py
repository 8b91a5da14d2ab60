"""Tiny encoders for clap-core tests: a small conv audio encoder and a tiny GPT2-EOT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

FSDD = Path(__file__).resolve().parents[3] / "data" / "fsdd" / "recordings"
CORPUS = [
    "a dog barks in the rain",
    "this is a sound of a car horn",
    "birds sing in the morning forest",
    "someone speaks the digits zero one two three four five six seven eight nine",
    "a siren wails and glass breaks",
    "music with piano and drums",
]


class _Output:
    def __init__(self, embedding: Tensor) -> None:
        self.embedding = embedding


class TinyConvAudioEncoder(nn.Module):
    """Follows the clapkit.audio encoder contract; 8 kHz, 1 s clips, 'repeat' fill."""

    def __init__(self, out_dim: int = 12, hop: int = 80) -> None:
        super().__init__()
        from clapkit.audio import FrontendConfig

        self.frontend = FrontendConfig(
            sample_rate=8000, n_fft=256, win_length=256, hop_length=hop, n_mels=8,
            fmin=0.0, fmax=4000.0, clip_seconds=1.0, fill="repeat",
        )  # fmt: skip
        self.out_dim = out_dim
        self.hop = hop
        self.frame = nn.Linear(hop, 16)
        self.norm = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, out_dim)

    def forward(self, waveform: Tensor) -> _Output:
        if waveform.shape[-1] != self.frontend.clip_samples:
            raise ValueError(f"expected clip-long input, got {waveform.shape[-1]} samples")
        frames = waveform.reshape(waveform.shape[0], -1, self.hop)
        hidden = self.norm(torch.tanh(self.frame(frames)).transpose(1, 2)).mean(dim=-1)
        return _Output(self.head(hidden))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        pass

    def get_config(self) -> dict[str, Any]:
        return {"architecture": "tiny-conv", "out_dim": self.out_dim, "hop": self.hop}


def tiny_conv_from_config(config: dict[str, Any]) -> TinyConvAudioEncoder:
    return TinyConvAudioEncoder(out_dim=config["out_dim"], hop=config["hop"])


@pytest.fixture(scope="session", autouse=True)
def _register_tiny_audio() -> None:
    from clapkit.core import register_audio_encoder

    register_audio_encoder(
        "tiny-conv", TinyConvAudioEncoder, from_config=tiny_conv_from_config, overwrite=True
    )


def _byte_level_bpe(specials: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return tokenizer


@pytest.fixture(scope="session")
def gpt2_like_tokenizer() -> Any:
    """A byte-level BPE trained here, with <|endoftext|> as its last id (like GPT-2)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = _byte_level_bpe([])
    tokenizer.add_special_tokens(["<|endoftext|>"])
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=eot, eos_token=eot, unk_token=eot
    )


@pytest.fixture(scope="session")
def roberta_like_tokenizer() -> Any:
    """Byte-level BPE with RoBERTa's special ids (<s> 0, <pad> 1, </s> 2, <unk> 3)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
    )  # fmt: skip


@pytest.fixture
def tiny_text(gpt2_like_tokenizer: Any) -> nn.Module:
    from transformers import GPT2Config

    from clapkit.text import gpt2_eot

    torch.manual_seed(0)
    eot = gpt2_like_tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(gpt2_like_tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2,
        bos_token_id=eot, eos_token_id=eot,
    )  # fmt: skip
    return gpt2_eot(config=config, tokenizer=gpt2_like_tokenizer, max_length=48)


@pytest.fixture
def tiny_model(tiny_text: nn.Module) -> Any:
    from clapkit.core import build_clap

    torch.manual_seed(0)
    return build_clap("tiny-conv", tiny_text, projection_dim=8, init_temperature=0.07).eval()


@pytest.fixture(scope="session")
def fsdd_files() -> list[Path]:
    files = sorted(FSDD.glob("*.flac"))[:6]
    assert files, f"no FSDD clips under {FSDD}"
    return files


@pytest.fixture
def tiny_hf_clap(roberta_like_tokenizer: Any) -> Any:
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig
    from transformers import ClapModel as HfClapModel

    torch.manual_seed(0)
    text = ClapTextConfig(
        vocab_size=len(roberta_like_tokenizer), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=37, max_position_embeddings=66,
    )  # fmt: skip
    audio = ClapAudioConfig(
        num_mel_bins=16, window_size=4, spec_size=64, patch_size=2, patch_stride=2,
        hidden_size=32, patch_embeds_hidden_size=16, depths=[2, 2], num_attention_heads=[2, 2],
    )  # fmt: skip
    model = HfClapModel(
        ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=24)
    )
    with torch.no_grad():  # random batch-norm statistics and a non-default logit scale
        bn = model.audio_model.audio_encoder.batch_norm
        bn.running_mean.uniform_(-20, 0)
        bn.running_var.uniform_(5, 50)
        model.logit_scale_a.fill_(2.5)
    return model.eval()


@pytest.fixture
def tiny_hf_folder(tiny_hf_clap: Any, roberta_like_tokenizer: Any, tmp_path: Path) -> Path:
    """The tiny transformers ClapModel saved with its tokenizer, as on the hub."""
    folder = tmp_path / "hf-clap"
    tiny_hf_clap.save_pretrained(folder)
    roberta_like_tokenizer.save_pretrained(folder)
    return folder
