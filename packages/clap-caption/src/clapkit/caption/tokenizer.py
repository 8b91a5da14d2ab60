"""Loading the language model's tokenizer from an object, a folder or a hub id.

``load_lm_tokenizer`` is the captioner's: a causal LM's tokenizer, with an EOS token that ends
every caption and a pad token (``clapkit.text.load_tokenizer`` is the text encoders', by
architecture).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Union

from transformers import AutoTokenizer, GPT2Tokenizer, PreTrainedTokenizerBase

TokenizerLike = Union[PreTrainedTokenizerBase, str, "os.PathLike[str]"]


def load_lm_tokenizer(tokenizer: TokenizerLike) -> Any:
    """A causal language model's transformers tokenizer, with an EOS token.

    A folder holding only GPT-2's ``vocab.json`` and ``merges.txt`` (no tokenizer config) is
    read as a GPT-2 tokenizer.

    Args:
        tokenizer: a tokenizer object, a local folder, or a hub id (e.g. ``"gpt2"``).

    Returns:
        The tokenizer (pad token set to EOS when it had none).

    Raises:
        ValueError: when the tokenizer has no EOS token or the folder holds no tokenizer.
    """
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        loaded = tokenizer
    else:
        folder = Path(tokenizer)
        bare_gpt2 = (
            folder.is_dir()
            and (folder / "vocab.json").is_file()
            and (folder / "merges.txt").is_file()
            and not (folder / "tokenizer_config.json").is_file()
            and not (folder / "tokenizer.json").is_file()
        )
        if bare_gpt2:
            loaded = GPT2Tokenizer.from_pretrained(str(folder))
        elif folder.exists() and not folder.is_dir():
            raise ValueError(
                f"tokenizer {folder} is a file; give its folder, a hub id or an object"
            )
        else:
            loaded = AutoTokenizer.from_pretrained(str(tokenizer))
    if loaded.eos_token_id is None:
        raise ValueError(f"tokenizer {tokenizer!r} has no EOS token; captions must end with one")
    if loaded.pad_token_id is None:
        loaded.pad_token = loaded.eos_token
    return loaded


def load_tokenizer(tokenizer: TokenizerLike) -> Any:
    """Deprecated name of :func:`load_lm_tokenizer` (removed in clapkit-caption 0.6).

    Args:
        tokenizer: as :func:`load_lm_tokenizer`'s.

    Returns:
        :func:`load_lm_tokenizer`'s tokenizer.
    """
    warnings.warn(
        "clapkit.caption.load_tokenizer is now load_lm_tokenizer (clapkit.text.load_tokenizer "
        "loads the text encoders' tokenizers); the old name goes in clapkit-caption 0.6",
        DeprecationWarning,
        stacklevel=2,
    )
    return load_lm_tokenizer(tokenizer)
