"""Tiny tokenizers (trained here with the `tokenizers` library) and tiny model configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    BertConfig,
    CLIPTextConfig,
    GPT2Config,
    GPT2TokenizerFast,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    RobertaConfig,
)

CORPUS = [
    "a dog barks loudly in the distance while rain falls on a tin roof",
    "this is a sound of a car horn honking twice on a busy street",
    "birds chirp and sing in the early morning forest",
    "someone types quickly on a mechanical keyboard!",
    "a baby cries, then laughs; water runs from a tap.",
    "the engine of an airplane roars as it takes off",
    "church bells ring while people talk and footsteps pass by",
    "wow! thunder rumbles, glass breaks and a siren wails",
    "zero one two three four five six seven eight nine",
    "music with piano, drums and a singing voice",
]
# Tiny model sizes: every test model has a few thousand parameters per layer.
HIDDEN = 32
MAX_POSITIONS = 128


def _train_byte_level_bpe(special_tokens: list[str], vocab_size: int = 400) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return tokenizer


def _gpt2_like_tokenizer() -> PreTrainedTokenizerFast:
    # Byte-level BPE with <|endoftext|> as its last id, like GPT-2 (no pad token of its own).
    tokenizer = _train_byte_level_bpe([])
    tokenizer.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def _roberta_like_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = _train_byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def _clip_like_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = _train_byte_level_bpe(["<|startoftext|>", "<|endoftext|>"])
    start, end = tokenizer.token_to_id("<|startoftext|>"), tokenizer.token_to_id("<|endoftext|>")
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", start), ("<|endoftext|>", end)],
    )
    # Like openai/clip-vit-*: the end-of-text token doubles as the pad token.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def _bert_like_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=specials, show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # as BERT's own
    )


@pytest.fixture(scope="session")
def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    return _gpt2_like_tokenizer()


@pytest.fixture(scope="session")
def roberta_tokenizer() -> PreTrainedTokenizerFast:
    return _roberta_like_tokenizer()


@pytest.fixture(scope="session")
def clip_tokenizer() -> PreTrainedTokenizerFast:
    return _clip_like_tokenizer()


@pytest.fixture(scope="session")
def bert_tokenizer() -> PreTrainedTokenizerFast:
    return _bert_like_tokenizer()


def _tiny_config(name: str, tokenizer: PreTrainedTokenizerFast) -> PretrainedConfig:
    vocab_size = len(tokenizer)
    if name == "gpt2-eot":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=MAX_POSITIONS,
            n_embd=HIDDEN,
            n_layer=2,
            n_head=4,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    if name == "bert":
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=MAX_POSITIONS,
            pad_token_id=tokenizer.pad_token_id,
        )
    if name == "roberta":
        return RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=MAX_POSITIONS + 2,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=37,
        projection_dim=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@pytest.fixture(scope="session")
def tiny_tokenizers(
    gpt2_tokenizer: PreTrainedTokenizerFast,
    bert_tokenizer: PreTrainedTokenizerFast,
    roberta_tokenizer: PreTrainedTokenizerFast,
    clip_tokenizer: PreTrainedTokenizerFast,
) -> dict[str, PreTrainedTokenizerFast]:
    return {
        "gpt2-eot": gpt2_tokenizer,
        "bert": bert_tokenizer,
        "roberta": roberta_tokenizer,
        "clip": clip_tokenizer,
    }


TinyFactory = Callable[..., tuple[PretrainedConfig, PreTrainedTokenizerFast]]


@pytest.fixture(scope="session")
def tiny_parts(tiny_tokenizers: dict[str, PreTrainedTokenizerFast]) -> TinyFactory:
    """``tiny_parts(name)`` -> (fresh tiny config, tokenizer) for "bert", "roberta", ..."""

    def make(name: str) -> tuple[PretrainedConfig, PreTrainedTokenizerFast]:
        tokenizer = tiny_tokenizers[name]
        return _tiny_config(name, tokenizer), tokenizer

    return make


def shared_gpt2_folder() -> Path | None:
    """The real GPT-2 vocabulary beside the repository clone (``<repo>/../shared``)."""
    repo_root = Path(__file__).resolve().parents[3]
    folder = repo_root.parent / "shared" / "reference" / "tokenizers" / "gpt2"
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    return None


@pytest.fixture(scope="session")
def real_gpt2_tokenizer() -> GPT2TokenizerFast:
    folder = shared_gpt2_folder()
    if folder is None:
        pytest.skip("GPT-2 vocabulary not found at <repo>/../shared/reference/tokenizers/gpt2")
    return GPT2TokenizerFast.from_pretrained(str(folder))
