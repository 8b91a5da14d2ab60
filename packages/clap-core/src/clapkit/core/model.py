"""`ClapModel`: an audio encoder and a text encoder projected into one space."""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from clapkit.core.catalog import clap_writer, named_folder
from clapkit.core.config import ClapConfig
from clapkit.core.convert import (
    ConvertedClap,
    convert_laion,
    convert_msclap,
    convert_transformers,
    export_transformers,
)
from clapkit.core.embedding_ops import normalize as l2_normalize
from clapkit.core.inference import ClapInference
from clapkit.core.pretrained import (
    load_pretrained_weights,
    locate_pretrained,
    read_pretrained,
    write_pretrained,
)
from clapkit.core.projection import build_projection
from clapkit.core.registry import (
    build_audio_encoder_from_config,
    build_text_encoder_from_config,
    create_audio_tower,
    create_text_encoder,
    import_encoder_package,
    without_classifier,
)
from clapkit.core.state_dict import load_strict

__all__ = ["ClapModel", "ClapOutput", "build_clap"]

# model -> clapkit.audio.InferenceFormCache of its audio encoder; kept outside the module so that
# copying, pickling and state dicts of a model never see it
_FAST_FORMS: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


@dataclass
class ClapOutput:
    """What `ClapModel.forward` returns for training.

    Attributes:
        audio_embeds: L2-normalised audio embeddings. Shape ``[b, d]``.
        text_embeds: L2-normalised text embeddings. Shape ``[b, d]``.
        logit_scale_exp: the (clamped) logit multiplier, a scalar with gradient.
    """

    audio_embeds: Tensor
    text_embeds: Tensor
    logit_scale_exp: Tensor


class ClapModel(
    ClapInference,
    PyTorchModelHubMixin,
    library_name="clapkit",
    tags=["clap", "audio", "zero-shot-audio-classification"],
    repo_url="https://github.com/clapkit/clapkit",
    paper_url="https://arxiv.org/abs/2309.05767",
):
    """Contrastive Language-Audio Pretraining model (Elizalde, Deshmukh, Wang, arXiv 2309.05767).

    Holds ``audio_encoder`` (``clapkit.audio`` interface), ``text_encoder`` (``clapkit.text``
    interface), ``audio_projection``/``text_projection`` and the learnable ``logit_scale``
    (stored as ``ln`` of the multiplier; see `ClapConfig` for the temperature convention).
    Build one with `build_clap`, `from_pretrained`, `from_msclap`, `from_laion` or
    `from_transformers`.

    Args:
        config: the model config (a dict is accepted: the hub mixin hands one back when the
            annotation is a string).
        audio_encoder: an already-built audio encoder; default: rebuilt from ``config.audio``.
        text_encoder: an already-built text encoder; default: rebuilt from ``config.text``
            with ``tokenizer``.
        tokenizer: tokenizer object or folder, needed only to rebuild the text encoder.

    Raises:
        ValueError: if the text encoder must be rebuilt and no tokenizer is given.
    """

    # the encoders follow the clapkit.audio / clapkit.text interfaces (duck-typed: core does not
    # import those packages)
    audio_encoder: Any
    text_encoder: Any
    audio_projection: nn.Module
    text_projection: nn.Module
    #: run `embed_audio` (and zero-shot, retrieval, the CLI) through the audio encoder's fast
    #: CPU inference form (``clapkit.audio.InferenceFormCache``); set False to turn it off
    fast_audio: bool = True

    def __init__(
        self,
        config: ClapConfig | dict[str, Any],
        *,
        audio_encoder: Any = None,
        text_encoder: Any = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = ClapConfig.from_dict(config)
        self.config = config
        if audio_encoder is None:
            audio_encoder = build_audio_encoder_from_config(config.audio)
        if text_encoder is None:
            if tokenizer is None:
                raise ValueError("rebuilding the text encoder from its config needs tokenizer=")
            text_encoder = build_text_encoder_from_config(config.text, tokenizer)
        self.audio_encoder = audio_encoder
        self.text_encoder = text_encoder
        self.audio_projection = build_projection(
            config.projection,
            int(audio_encoder.out_dim),
            config.projection_dim,
            dropout=config.projection_dropout,
        )
        self.text_projection = build_projection(
            config.projection,
            int(text_encoder.out_dim),
            config.projection_dim,
            dropout=config.projection_dropout,
        )
        self.logit_scale = nn.Parameter(torch.tensor(config.initial_logit_scale))

    # ------------------------------------------------------------------ properties
    @property
    def frontend(self) -> Any:
        """The audio encoder's ``FrontendConfig`` (rate, clip length, fill, ...)."""
        return self.audio_encoder.frontend

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return self.logit_scale.device

    @property
    def logit_scale_exp(self) -> Tensor:
        """``exp(logit_scale)``, clamped to ``config.max_logit_scale``; carries gradient."""
        limit = self.config.max_log_logit_scale
        scale = self.logit_scale if limit is None else self.logit_scale.clamp(max=limit)
        return scale.exp()

    # ------------------------------------------------------------------ training path
    def encode_audio(
        self, waveform: Tensor, *, normalize: bool = False, fast: bool | None = False
    ) -> Tensor:
        """Projected audio embeddings (with gradient unless ``fast`` applies).

        Args:
            waveform: clip-long waveforms at `sample_rate`. Shape ``[b, t]``.
            normalize: L2-normalise the result.
            fast: run the encoder's fast inference form (see `inference_audio_encoder`;
                ``None``: `fast_audio`). It applies only on the CPU in eval mode without
                autograd; otherwise the plain encoder runs.

        Returns:
            Shape ``[b, projection_dim]``.
        """
        encoder = self.inference_audio_encoder(fast) if fast is not False else self.audio_encoder
        embeds = self.audio_projection(encoder(waveform).embedding)
        return l2_normalize(embeds) if normalize else embeds

    def inference_audio_encoder(self, fast: bool | None = None) -> nn.Module:
        """The audio encoder that inference runs: its cached fast form where one applies.

        The form (``clapkit.audio.inference_form``: folded batch norms, fused kernels; same
        numbers within float rounding) is a snapshot of the weights, held in a
        ``clapkit.audio.InferenceFormCache`` that rebuilds it after a weight load, an optimiser
        step, a ``train()``/``eval()`` switch or a device/dtype change.

        Args:
            fast: use the fast form (``None``: `fast_audio`).

        Returns:
            The fast form on the CPU, in eval mode, without autograd; else ``audio_encoder``.
        """
        use = self.fast_audio if fast is None else fast
        if not use or self.training or torch.is_grad_enabled() or self.device.type != "cpu":
            return self.audio_encoder
        return self.audio_inference_cache().get()

    def audio_inference_cache(self) -> Any:
        """The ``clapkit.audio.InferenceFormCache`` of ``audio_encoder`` (made on first use).

        Returns:
            The cache (call ``invalidate()`` after editing weights in place without an
            optimiser).
        """
        cache = _FAST_FORMS.get(self)
        if cache is None or cache.encoder is not self.audio_encoder:
            audio = import_encoder_package("clapkit.audio")
            cache = audio.InferenceFormCache(self.audio_encoder)
            _FAST_FORMS[self] = cache
        return cache

    def encode_text(
        self,
        texts: Sequence[str] | None = None,
        *,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        normalize: bool = False,
    ) -> Tensor:
        """Projected text embeddings, with gradient.

        Args:
            texts: strings (tokenised by the text encoder), or
            input_ids: token ids. Shape ``[b, s]``.
            attention_mask: 1 for real tokens. Shape ``[b, s]``.
            normalize: L2-normalise the result.

        Returns:
            Shape ``[b, projection_dim]``.
        """
        if texts is not None:
            out = self.text_encoder(list(texts))
        else:
            out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        embeds = self.text_projection(out.embedding)
        return l2_normalize(embeds) if normalize else embeds

    def forward(
        self,
        waveform: Tensor,
        texts: Sequence[str] | None = None,
        *,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> ClapOutput:
        """Normalised embeddings of matching pairs and the logit multiplier, for the loss.

        Args:
            waveform: clip-long waveforms. Shape ``[b, t]``.
            texts: their captions, or
            input_ids: tokenised captions. Shape ``[b, s]``.
            attention_mask: Shape ``[b, s]``.

        Returns:
            `ClapOutput` (feed it to `ContrastiveLoss`).
        """
        return ClapOutput(
            audio_embeds=self.encode_audio(waveform, normalize=True),
            text_embeds=self.encode_text(
                texts, input_ids=input_ids, attention_mask=attention_mask, normalize=True
            ),
            logit_scale_exp=self.logit_scale_exp,
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Switch gradient checkpointing on or off in both encoders."""
        self.audio_encoder.set_grad_checkpointing(enable)
        self.text_encoder.set_grad_checkpointing(enable)

    # ------------------------------------------------------------------ saving / loading
    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/``."""
        write_pretrained(
            save_directory,
            config=self.config.to_dict(),
            module=self,
            save_tokenizer=self.text_encoder.save_tokenizer,
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any
    ) -> ClapModel:
        """Load a model written by `save_pretrained` (a local folder or a hub repo id), or
        released weights by name (``"msclap-2023"``; `clapkit.core.list_pretrained`).

        A name downloads the official file once, checks its SHA-256, converts it once and
        caches the converted folder (`clapkit.core.catalog`).

        Args:
            pretrained_model_name_or_path: the folder, a hub id such as ``"org/name"``, or a
                catalog name.
            **kwargs: huggingface_hub's ``from_pretrained`` arguments (``revision``,
                ``cache_dir``, ``force_download``, ``local_files_only``, ``token``) and
                ``tokenizer=`` / ``map_location=``.

        Returns:
            The model in eval mode, every weight loaded strictly.

        Raises:
            FileNotFoundError: a local-looking path that does not exist (said before any hub
                lookup), an id that is neither a folder nor a hub repo that could be fetched,
                or a folder without ``config.json`` / ``model.safetensors``.
            ValueError: a malformed ``config.json``, or one that is not a clapkit config (the
                file named).
            CheckpointError: missing or unexpected weights, by name.
        """
        writer = clap_writer(cls, {"tokenizer": kwargs.get("tokenizer")})
        named = named_folder(pretrained_model_name_or_path, "clap", writer, kwargs)
        folder, rest = locate_pretrained(
            named or pretrained_model_name_or_path, kwargs, what="clapkit model"
        )
        return super().from_pretrained(os.fspath(folder), **rest)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: ClapConfig | dict[str, Any] | None = None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ) -> ClapModel:
        """Rebuild from a folder or hub repo written by `save_pretrained`, loading strictly."""
        files = read_pretrained(
            model_id,
            what="clapkit model",
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        parsed = files.typed_config(ClapConfig.from_dict)
        tokenizer = model_kwargs.pop("tokenizer", None) or files.tokenizer
        model = cls(config or parsed, tokenizer=tokenizer, **model_kwargs)
        load_pretrained_weights(model, files)
        return model.to(map_location).eval()

    @classmethod
    def from_converted(cls, converted: ConvertedClap) -> ClapModel:
        """Assemble a model from a converter's result, loading every weight strictly.

        Args:
            converted: from ``clapkit.core.convert.convert_msclap`` / ``convert_laion`` /
                ``convert_transformers``.

        Returns:
            The model, in eval mode.

        Raises:
            clapkit.audio.CheckpointError: naming keys that do not fit (e.g. projections).
        """
        model = cls(converted.config, tokenizer=converted.tokenizer)
        load_strict(model, converted.state_dict, source=converted.source)
        return model.eval()

    @classmethod
    def from_msclap(cls, path: str | os.PathLike[str], **kwargs: Any) -> ClapModel:
        """Load a Microsoft CLAP checkpoint (2022 or 2023), strictly.

        Args:
            path: ``CLAP_weights_2022.pth`` / ``CLAP_weights_2023.pth`` or a safetensors copy.
            **kwargs: ``version``, ``tokenizer``, ``text_config`` of
                `clapkit.core.convert.convert_msclap`.

        Returns:
            The model, in eval mode.
        """
        return cls.from_converted(convert_msclap(path, **kwargs))

    @classmethod
    def from_laion(cls, path: str | os.PathLike[str], **kwargs: Any) -> ClapModel:
        """Load a LAION-CLAP checkpoint, strictly.

        Args:
            path: the ``.pt`` file or a safetensors copy.
            **kwargs: ``audio``, ``text``, ``tokenizer``, ``text_config``, ``max_length`` of
                `clapkit.core.convert.convert_laion`.

        Returns:
            The model, in eval mode.
        """
        return cls.from_converted(convert_laion(path, **kwargs))

    @classmethod
    def from_transformers(cls, model_or_path: Any, **kwargs: Any) -> ClapModel:
        """Load a transformers ``ClapModel`` (object, folder or hub id), strictly.

        Args:
            model_or_path: see `clapkit.core.convert.convert_transformers`.
            **kwargs: ``tokenizer``, ``frontend``, ``max_length``.

        Returns:
            The model, in eval mode.
        """
        return cls.from_converted(convert_transformers(model_or_path, **kwargs))

    def to_transformers(self, save_directory: str | os.PathLike[str] | None = None) -> Any:
        """This model as a transformers ``ClapModel`` (HTSAT + RoBERTa-pooler + mlp only).

        Args:
            save_directory: also write it there with its feature extractor and tokenizer, for
                ``transformers.pipeline("zero-shot-audio-classification", model=folder)``.

        Returns:
            The transformers model; see `clapkit.core.convert.export_transformers`.

        Raises:
            ValueError: naming what transformers' ``ClapModel`` cannot hold.
        """
        return export_transformers(self, save_directory)


def build_clap(
    audio: str | nn.Module = "htsat-22",
    text: str | nn.Module = "gpt2-eot",
    *,
    projection_dim: int = 1024,
    projection: str = "msclap",
    projection_dropout: float = 0.5,
    init_temperature: float = 0.007,
    max_logit_scale: float | None = 100.0,
    audio_kwargs: dict[str, Any] | None = None,
    text_kwargs: dict[str, Any] | None = None,
) -> ClapModel:
    """Compose any registered (or given) audio and text encoder into a `ClapModel`.

    The defaults are the paper's model: HTSAT-22 + GPT2 with end-of-text pooling, msclap
    projections into 1024 dimensions, temperature initialised to the paper's 0.007 (which starts
    the logit multiplier at its clamp of 100; see `ClapConfig`).

    Args:
        audio: registry name (`list_audio_encoders`) or a built encoder.
        text: registry name (`list_text_encoders`) or a built encoder.
        projection_dim: joint-space size.
        projection: ``"msclap"``, ``"mlp"`` or ``"linear"``.
        projection_dropout: dropout of the ``"msclap"`` projection.
        init_temperature: initial temperature (logits = cosine / temperature); the paper's
            0.007 starts at the clamp (see `ClapConfig`), msclap's code used 0.07.
        max_logit_scale: clamp of ``exp(logit_scale)``; ``None`` for no clamp.
        audio_kwargs: keyword arguments of the audio builder (e.g. ``weights=``); the audio
            tower is built without a classifier head (`create_audio_tower`): a head no loss
            reaches would leave DDP with parameters that never get a gradient.
        text_kwargs: keyword arguments of the text builder (e.g. ``pretrained=``).

    Returns:
        The model (random projections; encoders as their builders made them).

    Raises:
        KeyError: for an unknown encoder name.
        ImportError: when an encoder package is missing.
        ValueError: for bad numbers (see `ClapConfig`).
    """
    audio_encoder: Any = without_classifier(
        create_audio_tower(audio, **(audio_kwargs or {})) if isinstance(audio, str) else audio
    )
    text_encoder: Any = (
        create_text_encoder(text, **(text_kwargs or {})) if isinstance(text, str) else text
    )
    config = ClapConfig(
        audio=audio_encoder.get_config(),
        text=text_encoder.get_config(),
        projection=projection,
        projection_dim=projection_dim,
        projection_dropout=projection_dropout,
        init_temperature=init_temperature,
        max_logit_scale=max_logit_scale,
    )
    return ClapModel(config, audio_encoder=audio_encoder, text_encoder=text_encoder)
