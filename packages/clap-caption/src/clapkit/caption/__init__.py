"""clapkit.caption: audio captioning on CLAP (a mapper prefixing a frozen GPT2).

>>> from clapkit.caption import ClapCaptioner
>>> cap = ClapCaptioner.from_msclap("clapcap_weights_2023.pth", tokenizer="gpt2")
>>> cap.generate(["dog.wav"], beam_size=5, max_new_tokens=67)
"""

from clapkit.caption.builders import clapcap_2023, from_clap
from clapkit.caption.captioner import CaptionerOutput, ClapCaptioner
from clapkit.caption.config import CaptionerConfig
from clapkit.caption.convert import ConvertedCaptioner, convert_clapcap
from clapkit.caption.decoding import DecodingOutput, beam_search, msclap_beam_search, sample
from clapkit.caption.language_model import build_language_model
from clapkit.caption.mappers import (
    MapperConfig,
    MlpMapper,
    TransformerMapper,
    build_mapper,
    clapcap_mapper,
    mlp_mapper,
    transformer_mapper,
)
from clapkit.caption.metrics import CaptionScores, evaluate_captions
from clapkit.caption.parts import CaptionerParts, clap_parts, clapcap_2023_parts
from clapkit.caption.pipeline import AudioCaptioningPipeline
from clapkit.caption.prefix_lm import PrefixLanguageModel
from clapkit.caption.tokenizer import load_lm_tokenizer, load_tokenizer

__all__ = [
    "AudioCaptioningPipeline",
    "CaptionScores",
    "CaptionerConfig",
    "CaptionerOutput",
    "CaptionerParts",
    "ClapCaptioner",
    "ConvertedCaptioner",
    "DecodingOutput",
    "MapperConfig",
    "MlpMapper",
    "PrefixLanguageModel",
    "TransformerMapper",
    "beam_search",
    "build_language_model",
    "build_mapper",
    "clap_parts",
    "clapcap_2023",
    "clapcap_2023_parts",
    "clapcap_mapper",
    "convert_clapcap",
    "evaluate_captions",
    "from_clap",
    "load_lm_tokenizer",
    "load_tokenizer",
    "mlp_mapper",
    "msclap_beam_search",
    "sample",
    "transformer_mapper",
]
