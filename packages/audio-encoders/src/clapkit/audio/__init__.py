"""clapkit.audio: log-mel front end, CNN14 and HTSAT audio encoders, weight loaders, audio I/O.

Example:
    >>> from clapkit.audio import htsat_msclap_2023, load_audio, fit_length
    >>> encoder = htsat_msclap_2023().eval()
    >>> wave = fit_length(load_audio("dog.flac", 44100), encoder.frontend.clip_samples, "repeat")
    >>> encoder(wave[None]).embedding.shape
    torch.Size([1, 768])
"""

from clapkit.audio.base import AudioEncoder, AudioEncoderOutput
from clapkit.audio.builders import (
    HTSAT_22_FRONTEND,
    HTSAT_AUDIOSET_FRONTEND,
    LAION_FRONTEND,
    MSCLAP_2022_FRONTEND,
    MSCLAP_2023_FRONTEND,
    NAMED_ENCODERS,
    PANNS_FRONTEND,
    build_audio_encoder,
    cnn14,
    cnn14_encoder,
    cnn14_msclap_2022,
    htsat,
    htsat_22,
    htsat_encoder,
    htsat_msclap_2023,
    load_audio_encoder,
)
from clapkit.audio.cnn14 import Cnn14
from clapkit.audio.config import FrontendConfig
from clapkit.audio.errors import CheckpointError
from clapkit.audio.fast import InferenceFormCache, has_inference_form, inference_form
from clapkit.audio.frontend import LogMelFrontend, mel_filterbank
from clapkit.audio.htsat import HTSAT
from clapkit.audio.io import AudioLoadError, fit_length, load_audio, load_crop, windows
from clapkit.audio.resampling import resample
from clapkit.audio.weights import (
    check_mel_filterbank,
    identify_state_dict,
    load_reference_state_dict,
    load_weights,
    save_weights,
)

__all__ = [
    "HTSAT",
    "HTSAT_22_FRONTEND",
    "HTSAT_AUDIOSET_FRONTEND",
    "LAION_FRONTEND",
    "MSCLAP_2022_FRONTEND",
    "MSCLAP_2023_FRONTEND",
    "NAMED_ENCODERS",
    "PANNS_FRONTEND",
    "AudioEncoder",
    "AudioEncoderOutput",
    "AudioLoadError",
    "CheckpointError",
    "Cnn14",
    "FrontendConfig",
    "InferenceFormCache",
    "LogMelFrontend",
    "build_audio_encoder",
    "check_mel_filterbank",
    "cnn14",
    "cnn14_encoder",
    "cnn14_msclap_2022",
    "fit_length",
    "has_inference_form",
    "htsat",
    "htsat_22",
    "htsat_encoder",
    "htsat_msclap_2023",
    "identify_state_dict",
    "inference_form",
    "load_audio",
    "load_audio_encoder",
    "load_crop",
    "load_reference_state_dict",
    "load_weights",
    "mel_filterbank",
    "resample",
    "save_weights",
    "windows",
]
