"""Caption generation on a captioner: decoding strategies, msclap compatibility, text."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from clapkit.caption import decoding
from clapkit.core import AudioInput

__all__ = ["MSCLAP_STOP_TEXT", "CaptionGeneration"]

MSCLAP_STOP_TEXT = " <|endoftext|>"


class CaptionGeneration(nn.Module):
    """``generate_tokens``, ``decode`` and ``generate`` of `ClapCaptioner`.

    The captioner provides ``prefix``, ``embed_audio``, ``language_model``, ``tokenizer``,
    ``eos_token_id`` and ``device``.
    """

    language_model: Any
    tokenizer: Any
    eos_token_id: int

    @property
    def device(self) -> torch.device:
        """Device of the captioner's parameters."""
        raise NotImplementedError

    def prefix(self, audio_embedding: Tensor) -> Tensor:
        """Language-model prefix of audio embeddings. Shapes: [b, d_a] -> [b, p, d]."""
        raise NotImplementedError

    def embed_audio(
        self,
        audio: AudioInput,
        *,
        batch_size: int = 8,
        long_audio: str = "mean",
        sample_rate: int | None = None,
    ) -> Tensor:
        """Audio embeddings fed to the mapper, [n, d_a]."""
        raise NotImplementedError

    @torch.no_grad()
    def generate_tokens(
        self,
        audio_embedding: Tensor,
        *,
        strategy: Literal["beam", "greedy", "sample"] = "beam",
        compatibility: Literal["clapkit", "msclap"] = "clapkit",
        beam_size: int = 5,
        max_new_tokens: int = 67,
        length_penalty: float = 1.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> decoding.DecodingOutput:
        """Decode token ids from audio embeddings; see :meth:`generate` for the arguments.

        Shapes: ``audio_embedding`` [b, d_a].
        """
        was_training = self.training
        self.eval()
        try:
            prefix = self.prefix(audio_embedding.to(self.device))
            lm = self.language_model
            if compatibility == "msclap":
                if strategy != "beam":
                    raise ValueError("compatibility='msclap' decodes by beam search only")
                return decoding.msclap_beam_search(
                    lm,
                    prefix,
                    beam_size=beam_size,
                    max_new_tokens=max_new_tokens,
                    stop_token_id=self.tokenizer.encode(MSCLAP_STOP_TEXT)[0],
                    temperature=temperature,
                    use_cache=use_cache,
                )
            if compatibility != "clapkit":
                raise ValueError(
                    f"compatibility must be 'clapkit' or 'msclap', got {compatibility!r}"
                )
            if strategy == "beam":
                return decoding.beam_search(
                    lm,
                    prefix,
                    beam_size=beam_size,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=self.eos_token_id,
                    length_penalty=length_penalty,
                    temperature=temperature,
                    use_cache=use_cache,
                )
            if strategy in ("greedy", "sample"):
                return decoding.sample(
                    lm,
                    prefix,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=self.eos_token_id,
                    greedy=strategy == "greedy",
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    generator=generator,
                    use_cache=use_cache,
                )
            raise ValueError(f"strategy must be 'beam', 'greedy' or 'sample', got {strategy!r}")
        finally:
            self.train(was_training)

    def decode(self, token_ids: list[list[int]], *, compatibility: str = "clapkit") -> list[str]:
        """Token ids -> captions (msclap: stop token kept, then ``str.capitalize()``)."""
        if compatibility == "msclap":
            return [self.tokenizer.decode(ids).capitalize() for ids in token_ids]
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in token_ids]

    def generate(
        self,
        audio: AudioInput,
        *,
        beam_size: int = 5,
        max_new_tokens: int = 67,
        strategy: Literal["beam", "greedy", "sample"] = "beam",
        compatibility: Literal["clapkit", "msclap"] = "clapkit",
        length_penalty: float = 1.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        batch_size: int = 8,
        long_audio: str = "mean",
        sample_rate: int | None = None,
    ) -> list[str]:
        """Caption audio: batched decoding with a key/value cache.

        Default: beam search ranked by log-probability per token (``length_penalty`` = 1),
        stopping at ``<|endoftext|>``. ``compatibility="msclap"`` reproduces msclap's
        ``generate_caption`` instead: its beam ranking, its stop token (id 220, the space
        before ``<|endoftext|>``), the stop token kept in the text, and ``str.capitalize()``.

        Args:
            audio: anything `embed_audio` takes: waveforms (tensors or numpy arrays, any
                lengths), paths, bytes, HF ``datasets`` audio dicts.
            beam_size: beams per clip (``strategy="beam"``).
            max_new_tokens: most tokens generated per clip.
            strategy: ``"beam"``, ``"greedy"`` or ``"sample"``.
            compatibility: ``"clapkit"`` (default, correct stop token) or ``"msclap"``.
            length_penalty: exponent of the length dividing beam scores.
            temperature: divides the logits.
            top_k: sampling among the k most likely tokens (0 = all).
            top_p: nucleus sampling mass.
            generator: seeded generator for sampling.
            use_cache: reuse keys/values between steps (same tokens, faster).
            batch_size: clips decoded together.
            long_audio: how audio longer than a clip is embedded (``"mean"`` or ``"center"``).
            sample_rate: the rate of the tensors and arrays given (default: the model's).

        Returns:
            One caption per clip.

        Raises:
            ValueError: on an unknown strategy or compatibility, or bad decoding settings.
            clapkit.audio.AudioLoadError: naming a file that cannot be decoded.
        """
        embeddings = self.embed_audio(
            audio, batch_size=batch_size, long_audio=long_audio, sample_rate=sample_rate
        )
        captions: list[str] = []
        for start in range(0, embeddings.shape[0], batch_size):
            out = self.generate_tokens(
                embeddings[start : start + batch_size],
                strategy=strategy,
                compatibility=compatibility,
                beam_size=beam_size,
                max_new_tokens=max_new_tokens,
                length_penalty=length_penalty,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                use_cache=use_cache,
            )
            captions += self.decode(out.token_ids, compatibility=compatibility)
        return captions
