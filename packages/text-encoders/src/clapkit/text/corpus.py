"""Tokenizers trained from your own captions, and small model configs to go with them.

No hub access is needed: a tokenizer of the right family (GPT-2, RoBERTa, CLIP, BERT byte-level
BPE or WordPiece, with each family's special tokens and post-processing) is trained in memory
with the `tokenizers` library, and `small_config` sizes a transformers config to it. This is how
the pretraining recipe's ``demo`` preset builds a text tower from its captions, and how tests
build tiny encoders that behave like the real ones.

Example:
    >>> from clapkit.text import gpt2_eot
    >>> from clapkit.text.corpus import small_config, train_tokenizer
    >>> tok = train_tokenizer("gpt2-eot", ["a dog barks", "a man says the digit seven"])
    >>> enc = gpt2_eot(config=small_config("gpt2-eot", tok), tokenizer=tok)
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers as tokenizer_trainers
from transformers import (
    BertConfig,
    CLIPTextConfig,
    GPT2Config,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    RobertaConfig,
)

KINDS = ("gpt2-eot", "roberta", "clip", "bert")


def _byte_level_bpe(corpus: list[str], special_tokens: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = tokenizer_trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def _gpt2(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    # GPT-2's layout: no pad token of its own, <|endoftext|> the last id.
    tokenizer = _byte_level_bpe(corpus, [], vocab_size)
    tokenizer.add_special_tokens(["<|endoftext|>"])
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=eot, eos_token=eot, unk_token=eot
    )


def _roberta(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = _byte_level_bpe(corpus, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], vocab_size)
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


def _clip(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    start, end = "<|startoftext|>", "<|endoftext|>"
    tokenizer = _byte_level_bpe(corpus, [start, end], vocab_size)
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}",
        special_tokens=[(start, tokenizer.token_to_id(start)), (end, tokenizer.token_to_id(end))],
    )
    # As openai/clip-vit-*: the end-of-text token doubles as the pad token.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=start, eos_token=end, pad_token=end, unk_token=end
    )


def _bert(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = tokenizer_trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
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


_TRAINERS = {"gpt2-eot": _gpt2, "roberta": _roberta, "clip": _clip, "bert": _bert}


def train_tokenizer(
    kind: str, corpus: Iterable[str], *, vocab_size: int | None = None
) -> PreTrainedTokenizerFast:
    """Train a tokenizer of one text-encoder family on a corpus, in memory.

    Args:
        kind: ``"gpt2-eot"``, ``"roberta"``, ``"clip"`` (byte-level BPE) or ``"bert"`` (WordPiece).
        corpus: the texts to learn the vocabulary from (e.g. every caption of a manifest).
        vocab_size: the vocabulary's upper bound; default 400 for BPE (256 bytes + merges),
            200 for WordPiece. A small corpus may give fewer tokens.

    Returns:
        A transformers fast tokenizer with the family's special tokens and post-processing,
        ready for the matching builder (`gpt2_eot`, `roberta`, `clip_text`, `bert`).

    Raises:
        ValueError: for an unknown kind or an empty corpus.
    """
    if kind not in _TRAINERS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {KINDS}")
    texts = [str(text) for text in corpus]
    if not texts:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    default = 200 if kind == "bert" else 400
    return _TRAINERS[kind](texts, vocab_size or default)


def small_config(
    kind: str,
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 37,
    max_positions: int = 128,
    projection_dim: int = 24,
) -> PretrainedConfig:
    """A small transformers config of one family, sized to ``tokenizer``'s vocabulary.

    Args:
        kind: ``"gpt2-eot"``, ``"roberta"``, ``"clip"`` or ``"bert"``.
        tokenizer: the tokenizer the model will read (from `train_tokenizer` or the hub).
        hidden_size: model width.
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: MLP width (GPT2 uses ``4 * hidden_size``).
        max_positions: position table size (RoBERTa gets 2 more for its offset).
        projection_dim: CLIP's text projection size (its ``out_dim``).

    Returns:
        The config; random-initialised weights come from the builder.

    Raises:
        ValueError: for an unknown kind or heads that do not divide the width.
    """
    if kind not in _TRAINERS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {KINDS}")
    if hidden_size % num_heads:
        raise ValueError(f"num_heads={num_heads} does not divide hidden_size={hidden_size}")
    vocab_size = len(tokenizer)
    if kind == "gpt2-eot":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=max_positions,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    shared = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "intermediate_size": intermediate_size,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if kind == "bert":
        return BertConfig(max_position_embeddings=max_positions, **shared)
    if kind == "roberta":
        return RobertaConfig(
            max_position_embeddings=max_positions + 2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **shared,
        )
    return CLIPTextConfig(
        projection_dim=projection_dim,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **shared,
    )
