"""Task pipelines with transformers' call convention: ``pipeline(task, model=...)(inputs, ...)``.

``clapkit.core.pipeline("zero-shot-audio-classification", model="clap-2023")(audio,
candidate_labels=["dog", "rain"])`` gives ``[{"score", "label"}]`` best first, as
``transformers.pipeline`` does for the same task. Tasks:

- ``zero-shot-audio-classification``: `ZeroShotAudioClassificationPipeline`.
- ``audio-text-retrieval``: `AudioTextRetrievalPipeline` (texts in, ranked audio out).
- ``audio-captioning``: ``clapkit.caption.AudioCaptioningPipeline``, found by name when asked
  for (clapkit-caption sits above core, which never imports it).

Audio is anything ``ClapModel.embed_audio`` takes: paths, bytes, waveforms (tensors or numpy
arrays, at ``sample_rate=`` or the model's rate), HF ``datasets`` audio dicts; transformers'
``{"raw": array, "sampling_rate": rate}`` dicts too.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clapkit.core.inference import DEFAULT_TEMPLATE
from clapkit.core.model import ClapModel

__all__ = [
    "PIPELINE_TASKS",
    "AudioTextRetrievalPipeline",
    "Pipeline",
    "ZeroShotAudioClassificationPipeline",
    "as_clips",
    "is_single_clip",
    "pipeline",
]


def is_single_clip(audio: Any) -> bool:
    """Whether ``audio`` is one clip (a path, bytes, a 1-d waveform or one dict), not a list.

    Args:
        audio: a pipeline's input.

    Returns:
        True for one clip.
    """
    if isinstance(audio, (str, bytes, os.PathLike, Mapping)):
        return True
    return isinstance(audio, (Tensor, np.ndarray)) and audio.ndim == 1


def as_clips(audio: Any) -> list[Any]:
    """A list of clips, transformers' ``{"raw", "sampling_rate"}`` dicts renamed to ``array``.

    Args:
        audio: one clip or a list (or a ``[b, t]`` batch) of clips.

    Returns:
        The clips, in order.
    """
    clips = [audio] if is_single_clip(audio) else list(audio)
    return [
        {"array": c["raw"], "sampling_rate": c["sampling_rate"]}
        if isinstance(c, Mapping) and "raw" in c and "array" not in c
        else c
        for c in clips
    ]


class Pipeline:
    """A model and a task; each subclass's ``__call__(inputs, **options)`` runs it.

    Attributes:
        task: the task name.
        model: the model (in eval mode, on ``device``).
    """

    task = ""

    def __init__(self, model: Any, *, device: str | torch.device | None = None) -> None:
        self.model = model.to(device) if device is not None else model
        self.model.eval()


class ZeroShotAudioClassificationPipeline(Pipeline):
    """Zero-shot audio classification: ``pipe(audio, candidate_labels=[...])``.

    As ``transformers.pipeline("zero-shot-audio-classification")``: one clip gives a list of
    ``{"score", "label"}`` over all labels, best first (softmax over the labels); a list of
    clips gives one such list per clip.
    """

    task = "zero-shot-audio-classification"

    def __call__(
        self,
        inputs: Any,
        *,
        candidate_labels: Sequence[str],
        hypothesis_template: str | Sequence[str] = DEFAULT_TEMPLATE,
        multilabel: bool = False,
        sample_rate: int | None = None,
        top_k: int | None = None,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Classify clips among ``candidate_labels``.

        Args:
            inputs: one clip or a list of clips (see the module docstring).
            candidate_labels: the class names.
            hypothesis_template: the prompt with ``{}``, or several (ensembled).
            multilabel: independent sigmoid scores instead of a softmax.
            sample_rate: the rate of waveforms given without one (default: the model's).
            top_k: keep the best ``top_k`` labels (default: all).

        Returns:
            ``[{"score": float, "label": str}, ...]`` best first, or a list of those.

        Raises:
            ValueError: bad labels, templates or audio (named by index), as ``zero_shot``.
        """
        probs = self.model.zero_shot(
            as_clips(inputs),
            candidate_labels,
            template=hypothesis_template,
            multilabel=multilabel,
            sample_rate=sample_rate,
            progress=False,
        ).cpu()
        k = len(candidate_labels) if top_k is None else max(1, min(top_k, len(candidate_labels)))
        top = probs.topk(k, dim=-1)
        results = [
            [{"score": float(s), "label": candidate_labels[i]} for s, i in zip(v, ix, strict=True)]
            for v, ix in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
        return results[0] if is_single_clip(inputs) else results


class AudioTextRetrievalPipeline(Pipeline):
    """Text-to-audio retrieval: ``pipe("a dog barks", audio=[...], top_k=5)``.

    One query gives a list of ``{"score", "index", "audio"}`` (cosine similarity, index in the
    bank, the bank item when it is a path), best first; a list of queries gives one list each.
    """

    task = "audio-text-retrieval"

    def __call__(
        self,
        inputs: str | Sequence[str],
        *,
        audio: Any,
        top_k: int = 5,
        sample_rate: int | None = None,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Rank the clips of ``audio`` for each text query.

        Args:
            inputs: a query or a list of queries.
            audio: the clips to search (see the module docstring), or their embeddings
                ``[n, d]`` as a tensor.
            top_k: hits per query.
            sample_rate: the rate of waveforms given without one (default: the model's).

        Returns:
            ``[{"score": float, "index": int, "audio": str | None}, ...]`` or a list of those.
        """
        queries = [inputs] if isinstance(inputs, str) else list(inputs)
        bank = audio if isinstance(audio, Tensor) and audio.ndim == 2 else as_clips(audio)
        hits = self.model.retrieve(queries, bank, k=top_k, sample_rate=sample_rate, progress=False)
        if isinstance(bank, Tensor):
            names: list[str | None] = [None] * bank.shape[0]
        else:
            names = [str(c) if isinstance(c, (str, os.PathLike)) else None for c in bank]
        results = [
            [
                {"score": float(s), "index": int(i), "audio": names[i]}
                for s, i in zip(v, ix, strict=True)
            ]
            for v, ix in zip(hits.scores.tolist(), hits.indices.tolist(), strict=True)
        ]
        return results[0] if isinstance(inputs, str) else results


PIPELINE_TASKS: dict[str, str] = {
    "zero-shot-audio-classification": "clapkit.core:ZeroShotAudioClassificationPipeline",
    "audio-text-retrieval": "clapkit.core:AudioTextRetrievalPipeline",
    # clapkit-caption is above core: named here, imported only when asked for
    "audio-captioning": "clapkit.caption:AudioCaptioningPipeline",
}
"""Task name -> ``module:class`` of its pipeline."""

_INSTALL = {"clapkit.caption": "clapkit-caption"}


def pipeline(
    task: str, model: Any, *, device: str | torch.device | None = None, **model_kwargs: Any
) -> Pipeline:
    """A task pipeline, as ``transformers.pipeline(task, model=...)``.

    Args:
        task: a name of `PIPELINE_TASKS`.
        model: a model object, or what its class's ``from_pretrained`` takes (a folder or a
            hub id; for ``audio-captioning`` a ``ClapCaptioner`` folder).
        device: where to run it (default: where the model is; ``cpu`` for loaded ones).
        **model_kwargs: passed to ``from_pretrained``.

    Returns:
        The pipeline.

    Raises:
        KeyError: an unknown task, listing the tasks.
        ImportError: the task's package is not installed, naming it.
    """
    if task not in PIPELINE_TASKS:
        raise KeyError(f"unknown task {task!r}; the tasks are {sorted(PIPELINE_TASKS)}")
    module_name, class_name = PIPELINE_TASKS[task].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        dist = _INSTALL.get(module_name, module_name)
        raise ImportError(f"the {task!r} pipeline needs {dist}: pip install {dist}") from error
    pipeline_class = getattr(module, class_name)
    if isinstance(model, (str, os.PathLike)):
        loader = getattr(pipeline_class, "model_class", ClapModel)
        model = loader.from_pretrained(model, **model_kwargs)
    return pipeline_class(model, device=device)
