"""clapkit.core: the CLAP model, its contrastive loss, zero-shot, retrieval and checkpoint loaders.

``model = build_clap(audio="htsat-22", text="gpt2-eot")``;
``model = ClapModel.from_msclap("CLAP_weights_2023.pth", version="2023", tokenizer="gpt2")``;
``probs = model.zero_shot(["a.wav"], ["dog", "cat"])``.
"""

from clapkit.core.config import ClapConfig
from clapkit.core.inference import RetrievalHits, zero_shot_scores
from clapkit.core.loss import ContrastiveLoss, gather_with_grad
from clapkit.core.model import ClapModel, ClapOutput, build_clap
from clapkit.core.projection import (
    LinearProjection,
    MlpProjection,
    MsclapProjection,
    build_projection,
)
from clapkit.core.registry import (
    create_audio_encoder,
    create_text_encoder,
    list_audio_encoders,
    list_text_encoders,
    register_audio_encoder,
    register_text_encoder,
)
from clapkit.core.state_dict import CheckpointError

__all__ = [
    "CheckpointError",
    "ClapConfig",
    "ClapModel",
    "ClapOutput",
    "ContrastiveLoss",
    "LinearProjection",
    "MlpProjection",
    "MsclapProjection",
    "RetrievalHits",
    "build_clap",
    "build_projection",
    "create_audio_encoder",
    "create_text_encoder",
    "gather_with_grad",
    "list_audio_encoders",
    "list_text_encoders",
    "register_audio_encoder",
    "register_text_encoder",
    "zero_shot_scores",
]
