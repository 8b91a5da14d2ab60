"""Named captioners: msclap's clapcap architecture and a captioner on a `ClapModel`."""

from __future__ import annotations

from typing import Any

from clapkit.caption.captioner import ClapCaptioner
from clapkit.caption.parts import clapcap_2023_parts
from clapkit.caption.tokenizer import TokenizerLike
from clapkit.core import ClapModel

__all__ = ["clapcap_2023", "from_clap"]


def from_clap(clap: ClapModel, *, tokenizer: TokenizerLike, **kwargs: Any) -> ClapCaptioner:
    """A captioner on the audio side of a ``ClapModel``; see `ClapCaptioner.from_clap`.

    Args:
        clap: the CLAP model.
        tokenizer: the language model's tokenizer (object, folder or hub id).
        **kwargs: see `clapkit.caption.parts.clap_parts`.

    Returns:
        The captioner.
    """
    return ClapCaptioner.from_clap(clap, tokenizer=tokenizer, **kwargs)


def clapcap_2023(*, tokenizer: TokenizerLike = "gpt2", **kwargs: Any) -> ClapCaptioner:
    """msclap's clapcap architecture with random weights (Elizalde et al., arXiv 2309.05767).

    HTSAT with the msclap 2023 front end, msclap projection 768 -> 1024, the clapcap transformer
    mapper (40 x 768 prefix) and GPT2 base.

    Args:
        tokenizer: GPT2 tokenizer (object, folder or hub id).
        **kwargs: ``language_model`` and the flags of
            `clapkit.caption.parts.clapcap_2023_parts`.

    Returns:
        The captioner.
    """
    return ClapCaptioner.from_parts(clapcap_2023_parts(**kwargs), tokenizer=tokenizer)
