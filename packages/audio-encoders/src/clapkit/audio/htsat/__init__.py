"""HTS-AT: Swin Transformer parts and the token-semantic audio model."""

from clapkit.audio.htsat.model import HTSAT

__all__ = ["HTSAT"]
