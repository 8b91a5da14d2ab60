"""Text encoders for CLAP: BERT, RoBERTa, CLIP text and GPT2-EOT on transformers.

``from clapkit.text import gpt2_eot; enc = gpt2_eot(pretrained="gpt2"); enc(["a dog barks"])``
gives ``TextEncoderOutput.embedding`` of shape ``[b, enc.out_dim]``.
"""

from clapkit.text.architectures import ARCHITECTURES, POOLINGS, Architecture
from clapkit.text.builders import (
    NAMED_ENCODERS,
    bert,
    build_text_encoder,
    clip_text,
    gpt2_eot,
    load_tokenizer,
    roberta,
)
from clapkit.text.encoder import TextEncoder, TextEncoderOutput, TextTruncationWarning
from clapkit.text.inputs import check_texts
from clapkit.text.pooling import last_real_token_index, pool_last_real_token
from clapkit.text.tokenization import EOT_SUFFIX_MSCLAP, EOT_SUFFIX_PLAIN

__all__ = [
    "ARCHITECTURES",
    "EOT_SUFFIX_MSCLAP",
    "EOT_SUFFIX_PLAIN",
    "NAMED_ENCODERS",
    "POOLINGS",
    "Architecture",
    "TextEncoder",
    "TextEncoderOutput",
    "TextTruncationWarning",
    "bert",
    "build_text_encoder",
    "check_texts",
    "clip_text",
    "gpt2_eot",
    "last_real_token_index",
    "load_tokenizer",
    "pool_last_real_token",
    "roberta",
]
