"""Batched embedding and scoring operations behind `ClapInference` (`clapkit.core.inference`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from clapkit.core.audio_items import AudioInput, as_audio_items, load_item
from clapkit.core.registry import import_encoder_package

__all__ = [
    "LONG_AUDIO_MODES",
    "AudioInput",
    "RetrievalHits",
    "as_audio_items",
    "clip_windows",
    "embed_audio_input",
    "format_prompts",
    "zero_shot_scores",
]

LONG_AUDIO_MODES = ("mean", "center")
# show a progress bar by default from this many items on
PROGRESS_FROM = 64


@dataclass(frozen=True)
class RetrievalHits:
    """The ``k`` best bank items of each query, best first.

    Attributes:
        scores: cosine similarities. Shape ``[q, k]``.
        indices: bank indices. Shape ``[q, k]``.
    """

    scores: Tensor
    indices: Tensor


def clip_windows(wave: Tensor, clip_samples: int, fill: str, long_audio: str) -> Tensor:
    """The encoder inputs of one waveform: filled if short, windowed or centre-cropped if long.

    Audio up to one clip long is filled as the front end says (``fill``). Longer audio gives,
    with ``long_audio="mean"``, consecutive clip-long windows covering all of it (the last one
    aligned to the end; their embeddings are averaged by the caller), or with ``"center"`` the
    one centred clip. Both are deterministic.

    Args:
        wave: one waveform. Shape ``[t]``.
        clip_samples: encoder clip length in samples.
        fill: the front end's fill mode (``"repeat"``, ``"repeatpad"``, ``"pad"``).
        long_audio: ``"mean"`` or ``"center"``.

    Returns:
        Windows. Shape ``[w, clip_samples]`` (``w = 1`` unless long audio with ``"mean"``).

    Raises:
        ValueError: for an unknown ``long_audio`` mode or an empty waveform.
    """
    audio = import_encoder_package("clapkit.audio")
    if long_audio not in LONG_AUDIO_MODES:
        raise ValueError(f"long_audio must be one of {LONG_AUDIO_MODES}, got {long_audio!r}")
    if wave.shape[-1] == 0:
        raise ValueError("cannot embed an empty waveform (0 samples)")
    if wave.shape[-1] <= clip_samples:
        return audio.fit_length(wave, clip_samples, fill).unsqueeze(0)
    if long_audio == "center":
        return audio.fit_length(wave, clip_samples, "center_crop", fill=fill).unsqueeze(0)
    return audio.windows(wave, clip_samples, clip_samples)


def _iter_loaded(
    items: list[Any],
    sample_rate: int,
    chunk: int,
    num_workers: int,
) -> Iterator[list[Tensor]]:
    """Decode items chunk by chunk, the next chunk decoding in threads while the caller computes.

    Args:
        items: from ``as_audio_items`` (paths, bytes, waveforms with their rates).
        sample_rate: rate to decode or resample to.
        chunk: items per yielded list.
        num_workers: decoding threads (0 = decode in the calling thread).

    Yields:
        Lists of ``[t]`` float32 waveforms, in input order.
    """

    def load(item: Any) -> Tensor:
        return load_item(item, sample_rate)

    starts = range(0, len(items), chunk)
    if num_workers <= 0:
        for start in starts:
            yield [load(item) for item in items[start : start + chunk]]
        return
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        pending: list[Future[Tensor]] | None = None
        for start in starts:
            submitted = [pool.submit(load, item) for item in items[start : start + chunk]]
            if pending is not None:
                yield [f.result() for f in pending]
            pending = submitted
        if pending is not None:
            yield [f.result() for f in pending]


def _embed_windows_mean(
    waves: list[Tensor],
    to_windows: Callable[[Tensor], Tensor],
    encode: Callable[[Tensor], Tensor],
    batch_size: int,
) -> Tensor:
    """Embed each waveform as the mean of its windows' embeddings, batching windows.

    Args:
        waves: waveforms. Each shape ``[t]``.
        to_windows: waveform -> ``[w, n]`` windows.
        encode: ``[b, n]`` windows -> ``[b, d]`` embeddings.
        batch_size: windows per forward pass.

    Returns:
        One embedding per waveform. Shape ``[len(waves), d]``.
    """
    windows = [to_windows(wave) for wave in waves]
    counts = torch.tensor([w.shape[0] for w in windows])
    stacked = torch.cat(windows)
    embeds = torch.cat(
        [encode(stacked[i : i + batch_size]) for i in range(0, len(stacked), batch_size)]
    )
    owner = torch.repeat_interleave(torch.arange(len(waves)), counts).to(embeds.device)
    sums = torch.zeros(len(waves), embeds.shape[1], device=embeds.device, dtype=embeds.dtype)
    sums.index_add_(0, owner, embeds)
    return sums / counts.to(embeds.device, embeds.dtype)[:, None]


def embed_audio_input(
    audio: AudioInput,
    encode: Callable[[Tensor], Tensor],
    frontend: Any,
    *,
    batch_size: int = 16,
    long_audio: str = "mean",
    num_workers: int = 2,
    progress: bool | None = None,
    sample_rate: int | None = None,
) -> Tensor:
    """Embed waveforms or audio files deterministically, whatever their length.

    The one implementation behind ``ClapModel.embed_audio`` and ``ClapCaptioner.embed_audio``. Files
    are decoded to mono at the front end's rate (``clapkit.audio.load_audio``); waveforms and arrays
    at another rate (``sample_rate=``, or an audio dict's ``sampling_rate``) are resampled to it
    with ``clapkit.audio``'s resampling. Audio up to one clip long is filled as the front end says;
    longer audio is the mean of the embeddings of consecutive clip-long windows, the last aligned to
    the end (``long_audio="mean"``), or the embedding of the centred clip (``"center"``). The result
    does not depend on ``batch_size``. The caller sets eval mode and no-grad.

    Args:
        audio: a waveform ``[t]`` or batch ``[b, t]`` (tensor or numpy array), a path, bytes,
            an HF ``datasets`` audio dict (``{"array", "sampling_rate"}``), or a list of those
            (waveforms of any lengths).
        encode: clip-long windows ``[w, clip_samples]`` (CPU) -> embeddings ``[w, d]``; it
            moves them to its device.
        frontend: the encoder's ``clapkit.audio.FrontendConfig`` (rate, clip length, fill).
        batch_size: windows per ``encode`` call and items decoded per chunk.
        long_audio: ``"mean"`` or ``"center"``.
        num_workers: threads decoding the next files while ``encode`` runs (0: none).
        progress: show a progress bar (default: from 64 items on).
        sample_rate: the rate of the tensors and arrays given (default: the front end's).

    Returns:
        One (unnormalised) embedding per item. Shape ``[n, d]``.

    Raises:
        clapkit.audio.AudioLoadError: naming a file that cannot be decoded, or a waveform
            holding NaN or inf (by its index).
        ValueError: for bad shapes, an empty input or waveform, a bad rate, an audio dict
            without ``array`` / ``sampling_rate``, ``batch_size < 1`` or an unknown
            ``long_audio``.
        TypeError: ``audio`` or one of its items is of another type, or integer samples.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if long_audio not in LONG_AUDIO_MODES:
        raise ValueError(f"long_audio must be one of {LONG_AUDIO_MODES}, got {long_audio!r}")
    items = as_audio_items(audio, sample_rate)
    clip = int(frontend.clip_samples)

    def to_windows(wave: Tensor) -> Tensor:
        return clip_windows(wave, clip, frontend.fill, long_audio)

    outputs = []
    with progress_bar(len(items), progress, "embed audio") as bar:
        for waves in _iter_loaded(items, int(frontend.sample_rate), batch_size, num_workers):
            outputs.append(_embed_windows_mean(waves, to_windows, encode, batch_size))
            bar.update(len(waves))
    return torch.cat(outputs)


def check_labels(labels: Sequence[str]) -> None:
    """Check class names: a non-empty list of non-blank strings.

    Args:
        labels: the class names.

    Raises:
        TypeError: ``labels`` is a single string (``"seven"`` would be seven one-letter classes)
            or not a sequence, or an item is not a string (its index named).
        ValueError: no labels, or a blank label (its index named).
    """
    if isinstance(labels, (str, bytes)):
        raise TypeError(
            f"labels must be a list of class names, got the string {labels!r}; "
            f"for one class write [{labels!r}]"
        )
    if not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a list of class names, got {type(labels).__name__}")
    if not labels:
        raise ValueError("no labels given")
    for index, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"labels[{index}] is a {type(label).__name__} ({label!r}), not a str")
        if not label.strip():
            raise ValueError(f"labels[{index}] is blank")


def format_prompts(labels: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Fill every template with every label.

    Args:
        labels: class names.
        templates: strings with one ``{}`` (e.g. ``"this is a sound of {}"``).

    Returns:
        ``prompts[i][j]`` = template ``i`` filled with label ``j``.

    Raises:
        ValueError: for no labels, no templates, or a template without ``{}``.
    """
    check_labels(labels)
    if isinstance(templates, str):
        templates = [templates]
    if not templates:
        raise ValueError("no templates given")
    for index, template in enumerate(templates):
        if not isinstance(template, str):
            raise TypeError(
                f"templates[{index}] is a {type(template).__name__} ({template!r}), not a str"
            )
        if "{}" not in template:
            raise ValueError(f"template {template!r} has no '{{}}' for the label")
    return [[template.replace("{}", str(label)) for label in labels] for template in templates]


def ensemble_class_embeddings(prompt_embeds: Tensor) -> Tensor:
    """Class embeddings from their prompts' embeddings: the mean over templates, renormalised.

    The one prompt-ensembling rule of clapkit (as open_clip's zero-shot classifier): used by
    ``ClapModel.class_embeddings`` and by evaluation code that embeds (and caches) the prompts
    itself.

    Args:
        prompt_embeds: L2-normalised embeddings of ``format_prompts(labels, templates)``.
            Shape ``[t, c, d]`` (template, class, dim).

    Returns:
        Unit-norm class embeddings. Shape ``[c, d]``.

    Raises:
        ValueError: if ``prompt_embeds`` is not 3-d.
    """
    if prompt_embeds.dim() != 3:
        raise ValueError(
            f"prompt embeddings must be [templates, classes, dim], got {tuple(prompt_embeds.shape)}"
        )
    return normalize(prompt_embeds.float().mean(dim=0))


def zero_shot_scores(
    audio_embeds: Tensor, class_embeds: Tensor, logit_scale_exp: Tensor | float, multilabel: bool
) -> Tensor:
    """Class probabilities from normalised embeddings (paper section 2.3).

    Args:
        audio_embeds: L2-normalised audio embeddings. Shape ``[b, d]``.
        class_embeds: L2-normalised class (prompt) embeddings. Shape ``[c, d]``.
        logit_scale_exp: the model's logit multiplier.
        multilabel: sigmoid per class (multilabel) instead of softmax over classes.

    Returns:
        Probabilities. Shape ``[b, c]``.
    """
    logits = logit_scale_exp * audio_embeds @ class_embeds.T
    return torch.sigmoid(logits) if multilabel else logits.softmax(dim=-1)


def normalize(x: Tensor) -> Tensor:
    """L2-normalise rows (``[n, d]``)."""
    return F.normalize(x, dim=-1)


def progress_bar(total: int, progress: bool | None, desc: str) -> Any:
    """A tqdm bar, shown when ``progress`` is true or (``None``) for long inputs."""
    show = total >= PROGRESS_FROM if progress is None else progress
    return tqdm(total=total, disable=not show, desc=desc, unit="item")
