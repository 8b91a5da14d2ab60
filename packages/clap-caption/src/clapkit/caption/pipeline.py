"""The ``audio-captioning`` pipeline: ``clapkit.core.pipeline("audio-captioning", model=...)``.

Core names this class by ``module:class`` (``clapkit.core.PIPELINE_TASKS``) and imports it only
when the task is asked for: clapkit-caption sits above core.
"""

from __future__ import annotations

from typing import Any

from clapkit.caption.captioner import ClapCaptioner
from clapkit.core import Pipeline, as_clips, is_single_clip

__all__ = ["AudioCaptioningPipeline"]


class AudioCaptioningPipeline(Pipeline):
    """Audio captioning: ``pipe(audio)`` -> ``[{"generated_text": caption}]``.

    As transformers' captioning pipelines (``image-to-text``): one clip gives a list holding one
    ``{"generated_text"}``; a list of clips gives one such list per clip.
    """

    task = "audio-captioning"
    model_class = ClapCaptioner

    def __call__(
        self,
        inputs: Any,
        *,
        beam_size: int = 5,
        max_new_tokens: int = 67,
        strategy: str = "beam",
        sample_rate: int | None = None,
        **generate_kwargs: Any,
    ) -> list[dict[str, str]] | list[list[dict[str, str]]]:
        """Caption one clip or a list of clips.

        Args:
            inputs: what ``clapkit.core.ZeroShotAudioClassificationPipeline`` takes: paths,
                bytes, waveforms (tensors or numpy arrays), audio dicts, one or a list.
            beam_size: beams per clip.
            max_new_tokens: most tokens per caption.
            strategy: ``"beam"``, ``"greedy"`` or ``"sample"``.
            sample_rate: the rate of waveforms given without one (default: the model's).
            **generate_kwargs: further arguments of ``ClapCaptioner.generate``.

        Returns:
            ``[{"generated_text": str}]``, or a list of those.
        """
        clips = as_clips(inputs)
        captions = self.model.generate(
            clips,
            beam_size=beam_size,
            max_new_tokens=max_new_tokens,
            strategy=strategy,
            sample_rate=sample_rate,
            **generate_kwargs,
        )
        results = [[{"generated_text": caption}] for caption in captions]
        return results[0] if is_single_clip(inputs) else results
