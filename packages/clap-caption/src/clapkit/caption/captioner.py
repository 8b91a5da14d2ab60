"""`ClapCaptioner`: CLAP audio embedding -> mapper -> prefix of a (frozen) GPT2 -> caption."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn
from transformers import PreTrainedModel

from clapkit.audio import AudioEncoder, build_audio_encoder
from clapkit.caption.config import CaptionerConfig
from clapkit.caption.convert import ConvertedCaptioner, convert_clapcap
from clapkit.caption.generation import MSCLAP_STOP_TEXT, CaptionGeneration
from clapkit.caption.language_model import build_language_model
from clapkit.caption.mappers import build_mapper
from clapkit.caption.parts import CaptionerParts, clap_parts
from clapkit.caption.tokenizer import TokenizerLike, load_lm_tokenizer
from clapkit.core import (
    AudioInput,
    build_projection,
    embed_audio_input,
    load_pretrained_weights,
    load_strict,
    locate_pretrained,
    named_folder,
    read_pretrained,
    write_pretrained,
)

__all__ = ["MSCLAP_STOP_TEXT", "CaptionerOutput", "ClapCaptioner"]


@dataclass
class CaptionerOutput:
    """Training forward result.

    Attributes:
        loss: Mean cross-entropy over the caption tokens (EOS included, padding and prefix not).
        logits: Next-token logits at each caption position [b, s, vocab].
        prefix: The mapper's prefix [b, p, d].
    """

    loss: Tensor
    logits: Tensor
    prefix: Tensor


class ClapCaptioner(
    CaptionGeneration,
    PyTorchModelHubMixin,
    library_name="clapkit",
    tags=["clap", "audio-captioning"],
    paper_url="https://arxiv.org/abs/2309.05767",
):
    """Audio captioner of the paper (and msclap's clapcap): only the mapper is trained.

    ``audio -> audio_encoder -> audio_projection -> L2 normalise -> mapper -> prefix [b, p, d]``,
    and the language model continues the prefix with the caption. Build one with
    :meth:`from_clap`, :func:`~clapkit.caption.builders.clapcap_2023`, :meth:`from_msclap` or
    :meth:`from_pretrained`.

    Args:
        config: the captioner config (a dict is accepted).
        tokenizer: the language model's tokenizer (object, folder or hub id).
        audio_encoder: built audio encoder; default: rebuilt from ``config.audio``.
        audio_projection: built projection; default: rebuilt from the config (or none).
        mapper: built mapper; default: rebuilt from ``config.mapper``.
        language_model: built causal LM; default: rebuilt (random) from the config.
    """

    def __init__(
        self,
        config: CaptionerConfig | dict[str, Any],
        *,
        tokenizer: TokenizerLike,
        audio_encoder: AudioEncoder | None = None,
        audio_projection: nn.Module | None = None,
        mapper: nn.Module | None = None,
        language_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = CaptionerConfig.from_dict(config)
        self.config = config
        self.tokenizer = load_lm_tokenizer(tokenizer)
        self.audio_encoder: AudioEncoder = audio_encoder or build_audio_encoder(config.audio)
        if audio_projection is None and config.projection is not None:
            audio_projection = build_projection(
                config.projection,
                int(self.audio_encoder.out_dim),
                config.projection_dim,
                dropout=config.projection_dropout,
            )
        self.audio_projection = audio_projection or nn.Identity()
        self.mapper = mapper or build_mapper(config.mapper)
        self.language_model = language_model or build_language_model(config.language_model)
        self.eos_token_id = int(self.tokenizer.eos_token_id)
        self.set_frozen(audio=config.freeze_audio, language_model=config.freeze_language_model)

    # ------------------------------------------------------------------ freezing
    def set_frozen(self, *, audio: bool, language_model: bool) -> None:
        """Freeze (no gradient, eval mode in training) the audio side and/or the language model."""
        self.config.freeze_audio, self.config.freeze_language_model = audio, language_model
        for module in (self.audio_encoder, self.audio_projection):
            module.requires_grad_(not audio)
        self.language_model.requires_grad_(not language_model)
        self.train(self.training)

    def train(self, mode: bool = True) -> ClapCaptioner:
        """Set training mode; frozen parts stay in eval mode (no dropout, fixed BatchNorm)."""
        super().train(mode)
        if self.config.freeze_audio:
            self.audio_encoder.eval()
            self.audio_projection.eval()
        if self.config.freeze_language_model:
            self.language_model.eval()
        return self

    @property
    def device(self) -> torch.device:
        """Device of the mapper's parameters."""
        return next(self.mapper.parameters()).device

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) of the waveforms the audio encoder takes."""
        return int(self.audio_encoder.frontend.sample_rate)

    # ------------------------------------------------------------------ audio -> prefix
    def encode_audio(self, waveform: Tensor) -> Tensor:
        """Audio embeddings fed to the mapper (normalised if the config says), with gradient
        unless the audio side is frozen.

        Shapes: ``waveform`` [b, t] at `sample_rate` (one clip long) -> [b, d_a].
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_audio):
            embedding = self.audio_projection(self.audio_encoder(waveform).embedding)
        if self.config.normalize_embedding:
            embedding = F.normalize(embedding, dim=-1)
        return embedding

    @torch.no_grad()
    def embed_audio(
        self,
        audio: AudioInput,
        *,
        batch_size: int = 8,
        long_audio: str = "mean",
        sample_rate: int | None = None,
    ) -> Tensor:
        """Embed waveforms, arrays or files deterministically, as ``ClapModel.embed_audio`` does.

        Short audio is filled as the front end says; longer audio is the mean of the projected
        embeddings of its clip-long windows (``long_audio="center"``: the centred clip).

        Args:
            audio: a waveform [t] or batch [b, t] (tensor or numpy array), a path, bytes, an HF
                ``datasets`` audio dict (``{"array", "sampling_rate"}``), or a list of those.
            batch_size: clips per forward pass.
            long_audio: ``"mean"`` or ``"center"``.
            sample_rate: the rate of the tensors and arrays given (default: the model's);
                they are resampled with ``clapkit.audio``'s resampling.

        Returns:
            Embeddings [n, d_a] (normalised if the config says).

        Raises:
            clapkit.audio.AudioLoadError: naming a file that cannot be decoded.
        """
        was_training = self.training
        self.eval()
        try:
            embedding = embed_audio_input(
                audio,
                lambda x: self.audio_projection(self.audio_encoder(x.to(self.device)).embedding),
                self.audio_encoder.frontend,
                batch_size=batch_size,
                long_audio=long_audio,
                num_workers=0,
                progress=False,
                sample_rate=sample_rate,
            )
        finally:
            self.train(was_training)
        return F.normalize(embedding, dim=-1) if self.config.normalize_embedding else embedding

    def prefix(self, audio_embedding: Tensor) -> Tensor:
        """Language-model prefix of audio embeddings. Shapes: [b, d_a] -> [b, p, d]."""
        return self.mapper(audio_embedding)

    # ------------------------------------------------------------------ training
    def tokenize_captions(
        self, captions: list[str], *, max_tokens: int | None = None
    ) -> dict[str, Tensor]:
        """Token ids of captions, each ending in EOS, right-padded.

        Args:
            captions: the captions.
            max_tokens: cut longer captions to this many tokens, EOS included.

        Returns:
            ``input_ids`` and ``attention_mask``, each [b, s] (on the model's device).

        Raises:
            ValueError: on an empty list or a non-string caption (named by index).
        """
        if not captions:
            raise ValueError("no captions given")
        for index, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise ValueError(f"caption {index} is {type(caption).__name__}, not a string")
        encoded = self.tokenizer(captions, add_special_tokens=False)["input_ids"]
        limit = None if max_tokens is None else max_tokens - 1
        rows = [[*ids[:limit], self.eos_token_id] for ids in encoded]
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.eos_token_id, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
        return {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
        }

    def forward(
        self,
        waveform: Tensor | None = None,
        *,
        captions: list[str] | None = None,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        audio_embedding: Tensor | None = None,
        loss_mask: Tensor | None = None,
    ) -> CaptionerOutput:
        """Teacher-forced captioning loss (paper Eq. 5): cross-entropy on caption tokens only.

        Args:
            waveform: clips [b, t] at `sample_rate`; or give ``audio_embedding`` instead.
            captions: caption strings (tokenised with EOS appended); or ``input_ids``.
            input_ids: caption token ids [b, s], EOS included, right-padded.
            attention_mask: [b, s], 1 on real tokens (default: all ones).
            audio_embedding: precomputed `encode_audio` output [b, d_a].
            loss_mask: [b, s], 1 on the tokens scored (default: every real token); a task
                prompt before the answer is read but not scored (`PrefixLanguageModel`).

        Returns:
            Loss, caption-position logits [b, s, vocab] and the prefix [b, p, d].

        Raises:
            ValueError: when audio or captions are missing.
        """
        if audio_embedding is None:
            if waveform is None:
                raise ValueError("give waveform or audio_embedding")
            audio_embedding = self.encode_audio(waveform)
        if input_ids is None:
            if captions is None:
                raise ValueError("give captions or input_ids")
            batch = self.tokenize_captions(captions)
            input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prefix = self.prefix(audio_embedding)
        b, p = prefix.shape[0], prefix.shape[1]
        token_embeds = self.language_model.get_input_embeddings()(input_ids)
        inputs = torch.cat((prefix.to(token_embeds.dtype), token_embeds), dim=1)
        mask = torch.cat((attention_mask.new_ones(b, p), attention_mask), dim=1)
        # the logit at position i predicts token i + 1: keep positions p - 1 .. p + s - 2
        logits = self.language_model(inputs_embeds=inputs, attention_mask=mask).logits[
            :, p - 1 : -1
        ]
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        if loss_mask is not None:
            labels = labels.masked_fill(loss_mask == 0, -100)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return CaptionerOutput(loss=loss, logits=logits, prefix=prefix)

    # ------------------------------------------------------------------ saving / loading
    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/``."""
        write_pretrained(
            save_directory,
            config=self.config.to_dict(),
            module=self,
            save_tokenizer=lambda folder: self.tokenizer.save_pretrained(str(folder)),
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any
    ) -> ClapCaptioner:
        """Load a captioner written by `save_pretrained` (a local folder or a hub repo id), or
        released weights by name (``"clapcap-2023"``; ``clapkit.core.list_pretrained``).

        Args:
            pretrained_model_name_or_path: the folder, a hub id such as ``"org/name"``, or a
                catalog name (downloaded, SHA-256 checked, converted and cached once).
            **kwargs: huggingface_hub's ``from_pretrained`` arguments, ``map_location=`` and,
                for a catalog name, ``tokenizer=`` (used when converting).

        Returns:
            The captioner, every weight loaded strictly.

        Raises:
            FileNotFoundError: a local-looking path that does not exist (said before any hub
                lookup), an id that is neither a folder nor a hub repo that could be fetched,
                or a folder without ``config.json`` / ``model.safetensors``.
            ValueError: a malformed ``config.json``, or one that is not a captioner config
                (the file named).
        """
        tokenizer = kwargs.get("tokenizer")

        def write(entry: Any, source: str, folder: Path) -> None:
            options = {**entry.options, **({"tokenizer": tokenizer} if tokenizer else {})}
            cls.from_msclap(source, **options).save_pretrained(folder)

        named = named_folder(pretrained_model_name_or_path, "captioner", write, kwargs)
        folder, rest = locate_pretrained(
            named or pretrained_model_name_or_path, kwargs, what="clapkit captioner"
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
        map_location: str = "cpu",
        **model_kwargs: Any,
    ) -> ClapCaptioner:
        """Rebuild from a folder or hub repo written by `save_pretrained`, loading strictly."""
        files = read_pretrained(
            model_id,
            what="clapkit captioner",
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        # the hub mixin passes config.json's entries whose names match __init__ arguments
        for name in ("config", "audio", "mapper", "language_model", "audio_projection"):
            if not isinstance(model_kwargs.get(name), nn.Module):
                model_kwargs.pop(name, None)
        config = files.typed_config(CaptionerConfig.from_dict)
        tokenizer = model_kwargs.pop("tokenizer", None) or files.tokenizer
        model = cls(config, tokenizer=tokenizer, **model_kwargs)
        load_pretrained_weights(model, files)
        return model.to(map_location).eval()

    @classmethod
    def from_parts(cls, parts: CaptionerParts, *, tokenizer: TokenizerLike) -> ClapCaptioner:
        """Assemble a captioner from built parts (see ``clapkit.caption.parts``).

        Args:
            parts: config and modules.
            tokenizer: the language model's tokenizer (object, folder or hub id).

        Returns:
            The captioner.
        """
        return cls(
            parts.config,
            tokenizer=tokenizer,
            audio_encoder=parts.audio_encoder,
            audio_projection=parts.audio_projection,
            mapper=parts.mapper,
            language_model=parts.language_model,
        )

    @classmethod
    def from_clap(cls, clap: Any, *, tokenizer: TokenizerLike, **kwargs: Any) -> ClapCaptioner:
        """A captioner on the audio side (shared, not copied) of a ``clapkit.core.ClapModel``.

        Args:
            clap: the CLAP model.
            tokenizer: the language model's tokenizer (object, folder or hub id).
            **kwargs: ``language_model``, ``mapper``, ``normalize_embedding``, ``freeze_audio``,
                ``freeze_language_model`` of `clapkit.caption.parts.clap_parts`.

        Returns:
            The captioner.

        Raises:
            ValueError: when the mapper's sizes do not fit the projection or the language model.
        """
        return cls.from_parts(clap_parts(clap, **kwargs), tokenizer=tokenizer)

    @classmethod
    def from_converted(cls, converted: ConvertedCaptioner) -> ClapCaptioner:
        """Assemble a captioner from a converter's result, loading every weight strictly.

        Args:
            converted: from `clapkit.caption.convert.convert_clapcap`.

        Returns:
            The captioner, in eval mode.

        Raises:
            clapkit.audio.CheckpointError: naming keys that do not fit.
        """
        model = cls(converted.config, tokenizer=converted.tokenizer)
        load_strict(model, converted.state_dict, source=converted.source)
        return model.eval()

    @classmethod
    def from_msclap(cls, path: str | os.PathLike[str], **kwargs: Any) -> ClapCaptioner:
        """Load msclap's ``clapcap_weights_2023.pth`` strictly.

        Args:
            path: the file (``.pth`` read with ``weights_only=True``, or ``.safetensors``).
            **kwargs: ``tokenizer``, ``language_model_config``, ``mapper_heads`` and the flags
                of `clapkit.caption.convert.convert_clapcap`.

        Returns:
            The captioner, in eval mode.
        """
        return cls.from_converted(convert_clapcap(path, **kwargs))
