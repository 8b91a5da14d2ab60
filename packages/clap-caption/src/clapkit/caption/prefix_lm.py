"""`PrefixLanguageModel`: Pengi's audio language model, the model behind HTSAT-22 pretraining.

``audio -> audio encoder (trained) -> projection -> L2 normalise -> mapper -> prefix [b, p, d]``;
the causal language model (frozen) reads ``[prefix][task prompt][answer][EOS]`` and the loss is
the cross-entropy of the answer tokens and the EOS only: the prompt is read, never scored
(Elizalde et al., arXiv 2309.05767, Eq. 5; Deshmukh et al., Pengi, arXiv 2305.11834).

It is a `ClapCaptioner` whose audio side trains and whose text carries a prompt: the same
config, ``save_pretrained`` folder, forward pass and decoders, with prompted tokenisation and
prompted generation added. Prompt and answer are packed per row (no padding between them), so
the answer sits at the same positions in training and in generation::

    model = PrefixLanguageModel.build(audio_encoder=htsat_22(), mapper=mapper,
                                      language_model="gpt2", tokenizer="gpt2")
    batch = model.tokenize_prompted(["this is a sound of"], ["dog barking"])
    loss = model(waveform, **batch).loss
    model.generate_answers(waveform, ["this is a sound of"])     # ["dog barking"]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from clapkit.audio import AudioEncoder
from clapkit.caption import decoding
from clapkit.caption.captioner import ClapCaptioner
from clapkit.caption.config import CaptionerConfig
from clapkit.caption.language_model import LanguageModelLike, resolve_language_model
from clapkit.caption.mappers import MapperConfig
from clapkit.caption.tokenizer import TokenizerLike
from clapkit.core import AudioInput

__all__ = ["PrefixLanguageModel"]


def _check_texts(name: str, texts: Sequence[Any]) -> None:
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name} {index} is {type(text).__name__}, not a string")


class PrefixLanguageModel(ClapCaptioner):
    """Audio prefix + task prompt + answer through a causal LM (build it with :meth:`build`).

    Everything of `ClapCaptioner` holds (``forward`` takes ``loss_mask``, ``embed_audio``,
    ``generate`` without a prompt, ``save_pretrained`` / ``from_pretrained``); the config's
    ``freeze_audio`` is False by default here: the audio encoder is what this model trains.
    """

    @classmethod
    def build(
        cls,
        *,
        audio_encoder: AudioEncoder,
        mapper: nn.Module,
        language_model: LanguageModelLike,
        tokenizer: TokenizerLike,
        projection: str | None = "msclap",
        projection_dim: int = 1024,
        projection_dropout: float = 0.5,
        normalize_embedding: bool = True,
        freeze_audio: bool = False,
        freeze_language_model: bool = True,
    ) -> PrefixLanguageModel:
        """Assemble the model from built parts (Pengi: HTSAT, msclap projection to 1024, a
        40-token 8-layer transformer mapper, GPT2 base frozen).

        Args:
            audio_encoder: the audio encoder (trained unless ``freeze_audio``).
            mapper: a mapper whose ``embed_dim`` is the projection's output (or the encoder's
                ``out_dim`` without a projection) and whose ``width`` is the LM's.
            language_model: a causal LM, a transformers config (random init) or a hub id/folder.
            tokenizer: the LM's tokenizer (object, folder or hub id).
            projection: ``"msclap"``, ``"mlp"``, ``"linear"`` or ``None`` (the encoder's
                embedding goes to the mapper as it is).
            projection_dim: the projection's output size.
            projection_dropout: dropout of an ``"msclap"`` projection.
            normalize_embedding: L2-normalise the embedding before the mapper (Pengi: yes).
            freeze_audio: keep the audio side fixed (HTSAT-22 pretraining: no).
            freeze_language_model: keep the LM fixed (the paper: yes).

        Returns:
            The model.

        Raises:
            ValueError: the mapper's input size does not fit the audio side, or its width the LM.
        """
        lm = resolve_language_model(language_model)
        mapper_config = MapperConfig.from_dict(mapper.get_config())  # type: ignore[operator]
        audio_dim = projection_dim if projection is not None else int(audio_encoder.out_dim)
        if mapper_config.embed_dim != audio_dim:
            raise ValueError(
                f"mapper takes {mapper_config.embed_dim}-d embeddings, the audio side gives "
                f"{audio_dim} (projection {projection!r})"
            )
        config = CaptionerConfig(
            audio=audio_encoder.get_config(),
            mapper=mapper_config.to_dict(),
            language_model=lm.config.to_dict(),
            projection=projection,
            projection_dim=projection_dim,
            projection_dropout=projection_dropout,
            normalize_embedding=normalize_embedding,
            freeze_audio=freeze_audio,
            freeze_language_model=freeze_language_model,
        )
        return cls(
            config, tokenizer=tokenizer, audio_encoder=audio_encoder, mapper=mapper,
            language_model=lm,
        )  # fmt: skip

    def prompt_token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of task prompts (no special tokens)."""
        _check_texts("prompt", prompts)
        ids: list[list[int]] = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return ids

    def tokenize_prompted(
        self,
        prompts: Sequence[str],
        answers: Sequence[str],
        *,
        max_answer_tokens: int | None = None,
    ) -> dict[str, Tensor]:
        """Pack ``prompt + answer + EOS`` per row, right-padded, with the answer's loss mask.

        The answer is tokenised after a space when there is a prompt (``"this is a sound of"``
        + ``" dog"``), so GPT2's BPE reads the pair as one text.

        Args:
            prompts: one task prompt per clip (``""``: none, plain captioning).
            answers: one answer per clip.
            max_answer_tokens: cut longer answers to this many tokens, EOS included.

        Returns:
            ``input_ids``, ``attention_mask`` and ``loss_mask`` (1 on the answer and its EOS),
            each [b, s] on the model's device.

        Raises:
            ValueError: no clip, unequal counts, a non-string text (named by index), or
                ``max_answer_tokens`` below 1.
        """
        if not answers:
            raise ValueError("no answers given")
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts for {len(answers)} answers")
        if max_answer_tokens is not None and max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
        _check_texts("answer", answers)
        prompt_ids = self.prompt_token_ids(prompts)
        texts = [f" {a}" if p else a for p, a in zip(prompts, answers, strict=True)]
        answer_ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        limit = None if max_answer_tokens is None else max_answer_tokens - 1
        rows, scored = [], []
        for prompt, answer in zip(prompt_ids, answer_ids, strict=True):
            kept = [*answer[:limit], self.eos_token_id]
            rows.append([*prompt, *kept])
            scored.append([0] * len(prompt) + [1] * len(kept))
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.eos_token_id, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        loss_mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, (row, mask) in enumerate(zip(rows, scored, strict=True)):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
            loss_mask[i, : len(row)] = torch.tensor(mask)
        device = self.device
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "loss_mask": loss_mask.to(device),
        }

    def prompted_prefix(self, audio_embedding: Tensor, prompt_ids: Tensor) -> Tensor:
        """The LM's input before the answer: the audio prefix, then the prompt's embeddings.

        Shapes: ``audio_embedding`` [b, d_a], ``prompt_ids`` [b, q] -> [b, p + q, d].
        """
        prefix = self.prefix(audio_embedding)
        if prompt_ids.shape[1] == 0:
            return prefix
        tokens = self.language_model.get_input_embeddings()(prompt_ids.to(prefix.device))
        return torch.cat((prefix.to(tokens.dtype), tokens), dim=1)

    @torch.no_grad()
    def generate_answers(
        self,
        audio: AudioInput,
        prompts: Sequence[str],
        *,
        strategy: Literal["greedy", "beam"] = "greedy",
        beam_size: int = 3,
        max_new_tokens: int = 30,
        length_penalty: float = 1.0,
        batch_size: int = 8,
        long_audio: str = "mean",
    ) -> list[str]:
        """Answer each clip's prompt: decode after ``[audio prefix][prompt]``.

        Clips whose prompts have the same token count decode together (no padding inside the
        input, as in training).

        Args:
            audio: a waveform [t] or batch [b, t] at `sample_rate`, a path, or a list of those.
            prompts: one prompt per clip.
            strategy: ``"greedy"`` or ``"beam"`` (Pengi: beam 3).
            beam_size: beams per clip (``strategy="beam"``).
            max_new_tokens: most tokens generated per clip (EOS included).
            length_penalty: exponent of the length dividing beam scores.
            batch_size: clips embedded and decoded together.
            long_audio: how audio longer than a clip is embedded (``"mean"`` or ``"center"``).

        Returns:
            One answer per clip, special tokens removed.

        Raises:
            ValueError: prompts and clips differ in number, or an unknown strategy.
            clapkit.audio.AudioLoadError: naming a file that cannot be decoded.
        """
        if strategy not in ("greedy", "beam"):
            raise ValueError(f"strategy must be 'greedy' or 'beam', got {strategy!r}")
        embeddings = self.embed_audio(audio, batch_size=batch_size, long_audio=long_audio)
        if len(prompts) != embeddings.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for {embeddings.shape[0]} clips")
        prompt_ids = self.prompt_token_ids(prompts)
        groups: dict[int, list[int]] = defaultdict(list)
        for row, ids in enumerate(prompt_ids):
            groups[len(ids)].append(row)
        answers: list[list[int]] = [[] for _ in prompt_ids]
        was_training = self.training
        self.eval()
        try:
            for rows in groups.values():
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start : start + batch_size]
                    chunk_ids = torch.tensor([prompt_ids[r] for r in chunk], dtype=torch.long)
                    prefix = self.prompted_prefix(embeddings[chunk].to(self.device), chunk_ids)
                    if strategy == "beam":
                        out = decoding.beam_search(
                            self.language_model, prefix, beam_size=beam_size,
                            max_new_tokens=max_new_tokens, eos_token_id=self.eos_token_id,
                            length_penalty=length_penalty,
                        )  # fmt: skip
                    else:
                        out = decoding.sample(
                            self.language_model, prefix, max_new_tokens=max_new_tokens,
                            eos_token_id=self.eos_token_id, greedy=True,
                        )  # fmt: skip
                    for row, tokens in zip(chunk, out.token_ids, strict=True):
                        answers[row] = tokens
        finally:
            self.train(was_training)
        return self.decode(answers)
