"""Loaders of released CLAP checkpoints: msclap, LAION-CLAP and transformers ``ClapModel``."""

from clapkit.core.convert.hf import from_transformers
from clapkit.core.convert.laion import LAION_AUDIO_ENCODERS, from_laion
from clapkit.core.convert.msclap import MSCLAP_VERSIONS, from_msclap

__all__ = [
    "LAION_AUDIO_ENCODERS",
    "MSCLAP_VERSIONS",
    "from_laion",
    "from_msclap",
    "from_transformers",
]
