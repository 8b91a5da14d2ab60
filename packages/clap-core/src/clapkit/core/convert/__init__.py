"""Converters of released CLAP checkpoints: msclap, LAION-CLAP and transformers ``ClapModel``,
and the export back to transformers (``export_transformers``).

Each returns a `ConvertedClap` (config, clapkit-named state dict, tokenizer); the ``ClapModel``
class methods ``from_msclap`` / ``from_laion`` / ``from_transformers`` assemble the model.
"""

from clapkit.core.convert.common import ConvertedClap
from clapkit.core.convert.hf import convert_transformers
from clapkit.core.convert.hf_export import export_transformers, transformers_blockers
from clapkit.core.convert.laion import LAION_AUDIO_ENCODERS, LAION_TEXT_ENCODERS, convert_laion
from clapkit.core.convert.msclap import (
    MSCLAP_AUDIO_PREFIX,
    MSCLAP_TEXT_PREFIX,
    MSCLAP_VERSIONS,
    MsclapAudio,
    convert_msclap,
    split_msclap_audio,
)

__all__ = [
    "LAION_AUDIO_ENCODERS",
    "LAION_TEXT_ENCODERS",
    "MSCLAP_AUDIO_PREFIX",
    "MSCLAP_TEXT_PREFIX",
    "MSCLAP_VERSIONS",
    "ConvertedClap",
    "MsclapAudio",
    "convert_laion",
    "convert_msclap",
    "convert_transformers",
    "export_transformers",
    "split_msclap_audio",
    "transformers_blockers",
]
