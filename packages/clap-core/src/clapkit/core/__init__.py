"""clapkit.core: the CLAP model, its contrastive loss, zero-shot, retrieval and checkpoint loaders.

``model = build_clap(audio="htsat-22", text="gpt2-eot")``;
``model = ClapModel.from_msclap("CLAP_weights_2023.pth", version="2023", tokenizer="gpt2")``;
``probs = model.zero_shot(["a.wav"], ["dog", "cat"])``;
``pipeline("zero-shot-audio-classification", model="clap-2023")("a.wav", candidate_labels=[...])``.

Everything a package built on core (``clapkit.caption``) may use is exported here: the
long-audio embedding, the ``save_pretrained`` folder layout, strict loading and msclap's audio
side. ``CheckpointError`` is ``clapkit.audio.CheckpointError``, resolved on first access.
"""

from typing import Any

from clapkit.core.accumulation import accumulated_contrastive_step, split_micro_batches
from clapkit.core.catalog import (
    ChecksumError,
    NamedWeights,
    UnverifiedWeightsWarning,
    list_pretrained,
    named_folder,
    pretrained_audio_encoder,
    pretrained_table,
)
from clapkit.core.config import ClapConfig
from clapkit.core.convert import (
    ConvertedClap,
    MsclapAudio,
    convert_laion,
    convert_msclap,
    convert_transformers,
    export_transformers,
    split_msclap_audio,
    transformers_blockers,
)
from clapkit.core.embedding_ops import (
    LONG_AUDIO_MODES,
    AudioInput,
    RetrievalHits,
    embed_audio_input,
    ensemble_class_embeddings,
    format_prompts,
    zero_shot_scores,
)
from clapkit.core.hub_card import eval_results, model_card, push_folder_to_hub
from clapkit.core.loss import ContrastiveLoss, gather_padded_with_grad, gather_with_grad
from clapkit.core.metrics import (
    accuracy,
    f1_score,
    mean_average_precision,
    retrieval_metrics,
)
from clapkit.core.model import ClapModel, ClapOutput, build_clap
from clapkit.core.pipelines import (
    PIPELINE_TASKS,
    AudioTextRetrievalPipeline,
    Pipeline,
    ZeroShotAudioClassificationPipeline,
    as_clips,
    is_single_clip,
    pipeline,
)
from clapkit.core.pretrained import (
    HUB_ARGUMENTS,
    PretrainedFolder,
    check_pretrained_source,
    load_pretrained_weights,
    locate_pretrained,
    pretrained_folder,
    read_config_file,
    read_pretrained,
    write_pretrained,
)
from clapkit.core.projection import (
    LinearProjection,
    MlpProjection,
    MsclapProjection,
    build_projection,
)
from clapkit.core.registry import (
    create_audio_encoder,
    create_audio_tower,
    create_text_encoder,
    import_encoder_package,
    list_audio_encoders,
    list_text_encoders,
    register_audio_encoder,
    register_text_encoder,
    without_classifier,
)
from clapkit.core.state_dict import (
    check_consumed,
    check_state,
    checkpoint_error,
    drop_harmless_buffers,
    load_checkpoint,
    load_safetensors,
    load_strict,
    split_prefix,
    strip_prefix,
)

__all__ = [
    "HUB_ARGUMENTS",
    "LONG_AUDIO_MODES",
    "PIPELINE_TASKS",
    "AudioInput",
    "AudioTextRetrievalPipeline",
    "CheckpointError",
    "ChecksumError",
    "ClapConfig",
    "ClapModel",
    "ClapOutput",
    "ContrastiveLoss",
    "ConvertedClap",
    "LinearProjection",
    "MlpProjection",
    "MsclapAudio",
    "MsclapProjection",
    "NamedWeights",
    "Pipeline",
    "PretrainedFolder",
    "RetrievalHits",
    "UnverifiedWeightsWarning",
    "ZeroShotAudioClassificationPipeline",
    "accumulated_contrastive_step",
    "accuracy",
    "as_clips",
    "build_clap",
    "build_projection",
    "check_consumed",
    "check_pretrained_source",
    "check_state",
    "checkpoint_error",
    "convert_laion",
    "convert_msclap",
    "convert_transformers",
    "create_audio_encoder",
    "create_audio_tower",
    "create_text_encoder",
    "drop_harmless_buffers",
    "embed_audio_input",
    "ensemble_class_embeddings",
    "eval_results",
    "export_transformers",
    "f1_score",
    "format_prompts",
    "gather_padded_with_grad",
    "gather_with_grad",
    "import_encoder_package",
    "is_single_clip",
    "list_audio_encoders",
    "list_pretrained",
    "list_text_encoders",
    "load_checkpoint",
    "load_pretrained_weights",
    "load_safetensors",
    "load_strict",
    "locate_pretrained",
    "mean_average_precision",
    "model_card",
    "named_folder",
    "pipeline",
    "pretrained_audio_encoder",
    "pretrained_folder",
    "pretrained_table",
    "push_folder_to_hub",
    "read_config_file",
    "read_pretrained",
    "register_audio_encoder",
    "register_text_encoder",
    "retrieval_metrics",
    "split_micro_batches",
    "split_msclap_audio",
    "split_prefix",
    "strip_prefix",
    "transformers_blockers",
    "without_classifier",
    "write_pretrained",
    "zero_shot_scores",
]


def __getattr__(name: str) -> Any:
    """``CheckpointError``: ``clapkit.audio``'s, imported only when asked for.

    Raises:
        ImportError: naming what to install when ``clapkit.audio`` is missing.
        AttributeError: for any other unknown name.
    """
    if name == "CheckpointError":
        return import_encoder_package("clapkit.audio").CheckpointError
    raise AttributeError(f"module 'clapkit.core' has no attribute {name!r}")
