"""Batched, deterministic inference on top of a CLAP model's encode functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from clapkit.core import embedding_ops
from clapkit.core.embedding_ops import AudioInput, RetrievalHits

__all__ = ["DEFAULT_TEMPLATE", "ClapInference"]

DEFAULT_TEMPLATE = "this is a sound of {}"


class ClapInference(nn.Module):
    """``embed_audio``, ``embed_text``, ``zero_shot`` and ``retrieve`` for a CLAP model.

    Subclasses (`ClapModel`) provide `encode_audio`, `encode_text`, `frontend`, `device`,
    `logit_scale_exp` and a ``text_encoder`` with ``tokenize``. Every method here runs in eval
    mode without gradient and restores the training flag afterwards.
    """

    text_encoder: Any

    @property
    def frontend(self) -> Any:
        """The audio front-end contract (``clapkit.audio.FrontendConfig``)."""
        raise NotImplementedError

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) of the waveforms the model takes."""
        return int(self.frontend.sample_rate)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        raise NotImplementedError

    @property
    def logit_scale_exp(self) -> Tensor:
        """The logit multiplier."""
        raise NotImplementedError

    def encode_audio(
        self, waveform: Tensor, *, normalize: bool = False, fast: bool | None = False
    ) -> Tensor:
        """Projected audio embeddings of clip-long waveforms ``[b, t]`` -> ``[b, d]``; ``fast``
        runs the encoder's fast inference form (``None``: the model's default)."""
        raise NotImplementedError

    def encode_text(
        self,
        texts: Sequence[str] | None = None,
        *,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        normalize: bool = False,
    ) -> Tensor:
        """Projected text embeddings ``[b, d]``."""
        raise NotImplementedError

    @torch.no_grad()
    def embed_audio(
        self,
        audio: AudioInput,
        *,
        normalize: bool = True,
        batch_size: int = 16,
        long_audio: str = "mean",
        num_workers: int = 2,
        progress: bool | None = None,
        fast: bool | None = None,
        sample_rate: int | None = None,
    ) -> Tensor:
        """Embed waveforms, arrays or audio files, deterministically, in eval mode.

        Files are decoded to mono at the model's `sample_rate` (``clapkit.audio.load_audio``);
        tensors and numpy arrays at another rate (``sample_rate=``) and HF ``datasets`` audio dicts
        (``{"array", "sampling_rate"}``) are resampled to it. Audio up to one clip long is filled as
        the front end says (msclap: repeat; LAION: repeat + pad). Longer audio is embedded whole:
        the mean of the (projected, unnormalised) embeddings of consecutive clip-long windows, the
        last window aligned to the end (``long_audio="mean"``); ``long_audio="center"`` embeds only
        the centred clip. The result does not depend on the batch.

        Args:
            audio: a waveform ``[t]`` or batch ``[b, t]`` (tensor or numpy array), a path,
                bytes, an audio dict, or a list of those (waveforms of any lengths).
            normalize: L2-normalise the embeddings.
            batch_size: clips per forward pass.
            long_audio: ``"mean"`` or ``"center"`` (see above).
            num_workers: threads decoding the next files while the model runs (0: none).
            progress: show a progress bar (default: from 64 items on).
            fast: on the CPU, run the audio encoder's fast inference form
                (``clapkit.audio.InferenceFormCache``; same numbers within float rounding);
                default the model's ``fast_audio`` (True).
            sample_rate: the rate of the tensors and arrays given (default: the model's).

        Returns:
            One embedding per item. Shape ``[n, projection_dim]`` (on the model's device).

        Raises:
            clapkit.audio.AudioLoadError: naming a file that cannot be decoded, or a waveform
                holding NaN or inf (by its index).
            ValueError: for bad shapes, an empty input or waveform, a bad rate, an audio dict
                without ``array`` or ``sampling_rate``, or an unknown ``long_audio``.
            TypeError: ``audio`` or one of its items is of another type, or integer samples.
        """
        was_training = self.training
        self.eval()
        try:
            embeds = embedding_ops.embed_audio_input(
                audio,
                lambda windows: self.encode_audio(windows.to(self.device), fast=fast),
                self.frontend,
                batch_size=batch_size,
                long_audio=long_audio,
                num_workers=num_workers,
                progress=progress,
                sample_rate=sample_rate,
            )
        finally:
            self.train(was_training)
        return embedding_ops.normalize(embeds) if normalize else embeds

    @torch.no_grad()
    def embed_text(
        self,
        texts: str | Sequence[str],
        *,
        normalize: bool = True,
        batch_size: int = 256,
        progress: bool | None = None,
    ) -> Tensor:
        """Embed texts in eval mode (batched by length, so little padding is computed).

        Args:
            texts: a string or strings.
            normalize: L2-normalise the embeddings.
            batch_size: texts per forward pass.
            progress: show a progress bar (default: from 64 texts on).

        Returns:
            Shape ``[n, projection_dim]``, in input order.

        Raises:
            TypeError: ``texts`` is neither a string nor a list of them, or an item is not a
                string (its index named).
            ValueError: for an empty list or ``batch_size < 1``.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, Iterable) and not isinstance(texts, (bytes, bytearray)):
            texts = list(texts)
        else:
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        if not texts:
            raise ValueError("no texts given (empty list)")
        for index, text in enumerate(texts):  # before sorting by length, which needs str
            if not isinstance(text, str):
                shown = repr(text) if len(repr(text)) <= 60 else repr(text)[:57] + "..."
                raise TypeError(f"texts[{index}] is a {type(text).__name__}, not a str: {shown}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        was_training = self.training
        self.eval()
        try:
            parts = []
            with embedding_ops.progress_bar(len(texts), progress, "embed text") as bar:
                for start in range(0, len(order), batch_size):
                    chunk = [texts[i] for i in order[start : start + batch_size]]
                    batch = {
                        k: v.to(self.device) for k, v in self.text_encoder.tokenize(chunk).items()
                    }
                    parts.append(self.encode_text(**batch))
                    bar.update(len(chunk))
        finally:
            self.train(was_training)
        sorted_embeds = torch.cat(parts)
        embeds = torch.empty_like(sorted_embeds)
        embeds[torch.tensor(order, device=embeds.device)] = sorted_embeds
        return embedding_ops.normalize(embeds) if normalize else embeds

    def class_embeddings(self, labels: Sequence[str], templates: str | Sequence[str]) -> Tensor:
        """Normalised class embeddings for zero-shot classification.

        Each label is put into every template; the normalised prompt embeddings are averaged
        over templates and renormalised (prompt ensembling, as open_clip).

        Args:
            labels: class names.
            templates: one template or several, each with one ``{}``.

        Returns:
            Shape ``[c, projection_dim]``.

        Raises:
            ValueError: for no labels/templates or a template without ``{}``.
        """
        templates = [templates] if isinstance(templates, str) else list(templates)
        prompts = embedding_ops.format_prompts(labels, templates)
        flat = [prompt for per_template in prompts for prompt in per_template]
        embeds = self.embed_text(flat, normalize=True, progress=False)
        embeds = embeds.reshape(len(templates), len(labels), -1)
        return embedding_ops.ensemble_class_embeddings(embeds)

    @torch.no_grad()
    def zero_shot(
        self,
        audio: AudioInput,
        labels: Sequence[str],
        *,
        template: str | Sequence[str] = DEFAULT_TEMPLATE,
        multilabel: bool = False,
        batch_size: int = 16,
        long_audio: str = "mean",
        fast: bool | None = None,
        sample_rate: int | None = None,
        progress: bool | None = None,
    ) -> Tensor:
        """Zero-shot class probabilities (paper section 2.3).

        Args:
            audio: as `embed_audio`.
            labels: class names.
            template: a prompt template with ``{}``, or several (embeddings averaged).
            multilabel: sigmoid per class instead of softmax over classes.
            batch_size: clips per forward pass.
            long_audio: as `embed_audio`.
            fast: as `embed_audio`.
            sample_rate: as `embed_audio`.
            progress: as `embed_audio` (the prompts are embedded without a bar).

        Returns:
            Probabilities. Shape ``[n, c]``.
        """
        class_embeds = self.class_embeddings(labels, template)
        audio_embeds = self.embed_audio(
            audio,
            batch_size=batch_size,
            long_audio=long_audio,
            fast=fast,
            sample_rate=sample_rate,
            progress=progress,
        )
        return embedding_ops.zero_shot_scores(
            audio_embeds, class_embeds, self.logit_scale_exp, multilabel
        )

    @torch.no_grad()
    def retrieve(
        self,
        queries: Sequence[str] | Tensor,
        bank: AudioInput,
        k: int = 10,
        *,
        sample_rate: int | None = None,
        batch_size: int = 16,
        long_audio: str = "mean",
        progress: bool | None = None,
    ) -> RetrievalHits:
        """The ``k`` bank items most similar (cosine) to each query.

        Args:
            queries: texts (embedded with `embed_text`) or embeddings ``[q, d]`` of either
                modality.
            bank: audio (paths, a list of waveforms or arrays, audio dicts: anything
                `embed_audio` takes but a tensor) or embeddings ``[n, d]``; a tensor is always
                taken as embeddings. To search texts, pass `embed_text` output.
            k: hits per query (at most the bank size).
            sample_rate: as `embed_audio`, for a bank of waveforms.
            batch_size: as `embed_audio`.
            long_audio: as `embed_audio`.
            progress: as `embed_audio`.

        Returns:
            `RetrievalHits` with ``scores`` and ``indices``, each ``[q, min(k, n)]``.

        Raises:
            ValueError: if ``k < 1`` or the embedding sizes differ.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        query_embeds = (
            embedding_ops.normalize(queries.to(self.device).float())
            if isinstance(queries, Tensor)
            else self.embed_text(queries)
        )
        bank_embeds = (
            embedding_ops.normalize(bank.to(self.device).float())
            if isinstance(bank, Tensor)
            else self.embed_audio(
                bank,
                sample_rate=sample_rate,
                batch_size=batch_size,
                long_audio=long_audio,
                progress=progress,
            )
        )
        if query_embeds.shape[-1] != bank_embeds.shape[-1]:
            raise ValueError(
                f"query embeddings have {query_embeds.shape[-1]} dims, bank {bank_embeds.shape[-1]}"
            )
        scores, indices = (query_embeds @ bank_embeds.T).topk(min(k, bank_embeds.shape[0]), dim=-1)
        return RetrievalHits(scores=scores, indices=indices)
