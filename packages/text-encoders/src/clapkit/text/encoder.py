"""`TextEncoder`: one interface over BERT, RoBERTa, CLIP text and GPT2-EOT."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from clapkit.text.architectures import Architecture, get_architecture
from clapkit.text.inputs import _short_repr as _short
from clapkit.text.inputs import check_texts
from clapkit.text.pooling import last_real_token_index, pool_at
from clapkit.text.tokenization import (
    EOT_SUFFIX_MSCLAP,
    count_trailing_special_tokens,
    encode_texts,
)


class TextTruncationWarning(UserWarning):
    """A text was longer than the encoder's ``max_length`` and was cut."""


@dataclass
class TextEncoderOutput:
    """What a `TextEncoder` returns.

    Attributes:
        embedding: One vector per text. Shape ``[b, out_dim]``.
        last_hidden_state: The transformer's last hidden states. Shape ``[b, s, d]``.
        attention_mask: 1 on real tokens, 0 on padding. Shape ``[b, s]``.
    """

    embedding: Tensor
    last_hidden_state: Tensor
    attention_mask: Tensor


def _prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, architecture: Architecture
) -> PreTrainedTokenizerBase:
    """Give GPT2 and CLIP tokenizers a real pad token (a copy; the caller's is left alone)."""
    if architecture.name not in ("gpt2-eot", "clip") or tokenizer.eos_token is None:
        return tokenizer
    # msclap pads GPT2 with "!", a real text token; pooling here reads the attention mask, so
    # the pad id never reaches an embedding, but it must not be confused with text either.
    if tokenizer.pad_token is None or tokenizer.pad_token == "!":
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _check_tokenizer(
    tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, architecture: Architecture
) -> None:
    """Fail early when tokenizer and model disagree in a way that would corrupt embeddings."""
    config = model.config
    if tokenizer.pad_token_id is None:
        raise ValueError(f"the {architecture.name} tokenizer has no pad token; set one")
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer knows {len(tokenizer)} tokens but the model's vocabulary has "
            f"{config.vocab_size}: ids past the embedding table would fail"
        )
    if architecture.name == "roberta" and tokenizer.pad_token_id != config.pad_token_id:
        raise ValueError(
            f"RoBERTa positions skip pad_token_id: the tokenizer pads with id "
            f"{tokenizer.pad_token_id} but config.pad_token_id is {config.pad_token_id}"
        )
    if architecture.name == "clip":
        eos_id = tokenizer.eos_token_id
        if config.eos_token_id == 2:
            # Old CLIP configs pool at argmax(input_ids): only right if EOT is the largest id.
            if eos_id != len(tokenizer) - 1:
                raise ValueError(
                    "config.eos_token_id == 2 makes CLIP pool at the largest id, but the "
                    f"tokenizer's end-of-text id {eos_id} is not its largest id "
                    f"{len(tokenizer) - 1}; set config.eos_token_id = {eos_id}"
                )
        elif config.eos_token_id != eos_id:
            raise ValueError(
                f"CLIP pools at config.eos_token_id={config.eos_token_id} but the tokenizer "
                f"ends texts with id {eos_id}"
            )


class TextEncoder(nn.Module):
    """A transformers text model, its tokenizer and a pooling rule, as one module.

    Build one through `bert`, `roberta`, `clip_text`, `gpt2_eot` or `build_text_encoder`.
    ``encoder(texts)`` tokenises with padding to the longest text in the batch;
    ``encoder(**encoder.tokenize(texts))`` gives the same result.

    Args:
        model: The transformers base model (``BertModel``, ``RobertaModel``,
            ``CLIPTextModelWithProjection`` or ``GPT2Model``).
        tokenizer: The matching transformers tokenizer. GPT2 and CLIP tokenizers without a
            pad token (or with msclap's "!") get a copy padded with the end-of-text token.
        architecture: "bert", "roberta", "clip" or "gpt2-eot".
        pooling: "cls" or "pooler" (BERT, RoBERTa), "eot-projection" (CLIP), "eot"
            (GPT2); None = the architecture's first.
        max_length: Longest token sequence, special tokens and suffix included; longer texts
            are cut keeping their final special token(s). None = the architecture's default.
        eot_suffix: GPT2-EOT only: text appended to every text, ending with the end-of-text
            token: ``" <|endoftext|>"`` (msclap, the default) or ``"<|endoftext|>"``.

    Raises:
        TypeError: If the model is not the architecture's class or the tokenizer is not a
            transformers tokenizer.
        ValueError: If pooling, max_length or eot_suffix do not fit the architecture, or the
            tokenizer does not fit the model.
    """

    def __init__(
        self,
        *,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        architecture: str,
        pooling: str | None = None,
        max_length: int | None = None,
        eot_suffix: str | None = None,
    ) -> None:
        super().__init__()
        spec = get_architecture(architecture)
        if not isinstance(model, spec.model_class):
            raise TypeError(
                f"{architecture} needs a {spec.model_class.__name__}, got {type(model).__name__}"
            )
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer)}")
        pooling = spec.poolings[0] if pooling is None else pooling
        if pooling not in spec.poolings:
            raise ValueError(
                f"{architecture} supports pooling {', '.join(map(repr, spec.poolings))}; "
                f"got {pooling!r}"
            )
        max_length = spec.default_max_length if max_length is None else max_length
        limit = spec.max_positions(model.config)
        if not isinstance(max_length, int) or not 2 <= max_length <= limit:
            raise ValueError(f"max_length must be an int in [2, {limit}], got {max_length!r}")
        tokenizer = _prepare_tokenizer(tokenizer, spec)
        _check_tokenizer(tokenizer, model, spec)

        suffix = self._check_suffix(tokenizer, spec, eot_suffix)
        suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
        tail_length = count_trailing_special_tokens(tokenizer) + len(suffix_ids)
        if tail_length >= max_length:
            raise ValueError(f"max_length {max_length} leaves no room beside {tail_length} end ids")

        self.model = model
        self.tokenizer = tokenizer
        self.architecture = spec.name
        self.pooling = pooling
        self.max_length = max_length
        self.eot_suffix = suffix
        self.out_dim = spec.embedding_dim(model.config)
        self._tail_length = tail_length
        self._warned_truncation = False
        self.unfreeze()
        # GPT2's states at real tokens never see right padding (it is causal), so the model gets
        # the causal mask alone, as a ready 4-D mask: transformers reads a 2-D mask's values on
        # the host to simplify it (a GPU sync every forward) and leaves a 4-D one as it is.
        # Pooling still reads the padding mask.
        self._causal_only = spec.name == "gpt2-eot" and tokenizer.padding_side == "right"

    @staticmethod
    def _check_suffix(
        tokenizer: PreTrainedTokenizerBase, spec: Architecture, eot_suffix: str | None
    ) -> str:
        if spec.name != "gpt2-eot":
            if eot_suffix:
                raise ValueError(f"eot_suffix is for gpt2-eot only, not {spec.name}")
            return ""
        suffix = EOT_SUFFIX_MSCLAP if eot_suffix is None else eot_suffix
        ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
        if not ids or ids[-1] != tokenizer.eos_token_id:
            raise ValueError(
                f"eot_suffix {suffix!r} must end with the end-of-text token "
                f"{tokenizer.eos_token!r} (id {tokenizer.eos_token_id}); it tokenises to {ids}"
            )
        return suffix

    def extra_repr(self) -> str:
        suffix = f", eot_suffix={self.eot_suffix!r}" if self.eot_suffix else ""
        return (
            f"architecture={self.architecture!r}, pooling={self.pooling!r}, "
            f"max_length={self.max_length}, out_dim={self.out_dim}{suffix}"
        )

    def tokenize(
        self, texts: Iterable[str], *, pad_to_multiple_of: int | None = None
    ) -> dict[str, Tensor]:
        """Tokenise texts, padded to the longest one in the batch (or further, to a bucket).

        GPT2-EOT appends ``eot_suffix`` first. Texts longer than ``max_length`` tokens are cut
        keeping their final special token(s) (warns once per encoder with
        `TextTruncationWarning`). Blank texts become "" (see `check_texts`).

        Args:
            texts: The texts.
            pad_to_multiple_of: pad the length up to a multiple of this (at most
                ``max_length``): a compiled model then sees a few fixed shapes, not one per batch.

        Returns:
            ``{"input_ids": [b, s], "attention_mask": [b, s]}`` long tensors on the CPU.

        Raises:
            TypeError: If ``texts`` is a single string or an item is not a string.
            ValueError: If ``texts`` is empty.
        """
        checked = check_texts(texts)
        batch = encode_texts(
            self.tokenizer,
            checked,
            suffix=self.eot_suffix,
            max_length=self.max_length,
            tail_length=self._tail_length,
            pad_token_id=int(self.tokenizer.pad_token_id),
        )
        if batch.truncated and not self._warned_truncation:
            self._warned_truncation = True
            first = batch.truncated[0]
            kept = batch.input_ids[first][batch.attention_mask[first].bool()]
            tail = self.tokenizer.decode(kept[-self._tail_length :].tolist())
            head = self.max_length - self._tail_length
            warnings.warn(
                f"{len(batch.truncated)} text(s) (first: texts[{first}], "
                f"{_short(checked[first])}) are longer than max_length={self.max_length} "
                f"tokens: each keeps its first {head} tokens and its end marker {tail!r} "
                f"(what the {self.pooling!r} pooling reads), the rest is dropped; this warning "
                "is shown once per encoder",
                TextTruncationWarning,
                stacklevel=2,
            )
        ids, mask = batch.input_ids, batch.attention_mask
        if pad_to_multiple_of:
            length = min(
                -(-ids.shape[1] // pad_to_multiple_of) * pad_to_multiple_of, self.max_length
            )
            extra = max(length - ids.shape[1], 0)
            side = (extra, 0) if self.tokenizer.padding_side == "left" else (0, extra)
            ids = torch.nn.functional.pad(ids, side, value=int(self.tokenizer.pad_token_id))
            mask = torch.nn.functional.pad(mask, side, value=0)
        return {"input_ids": ids, "attention_mask": mask}

    def forward(
        self,
        texts: Iterable[str] | None = None,
        *,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> TextEncoderOutput:
        """Embed texts, or an already tokenised batch.

        Args:
            texts: Texts to tokenise and embed. Give either these or ``input_ids``.
            input_ids: Token ids, right-padded. Shape ``[b, s]``.
            attention_mask: 1 on real tokens, 0 on padding; None = no padding. Shape ``[b, s]``.

        Returns:
            `TextEncoderOutput` with ``embedding [b, out_dim]``,
            ``last_hidden_state [b, s, d]`` and ``attention_mask [b, s]``.

        Raises:
            TypeError: For bad texts (see `tokenize`).
            ValueError: If both or neither of texts and input_ids are given, shapes disagree,
                or a row of the mask has no real token.
        """
        device = next(self.model.parameters()).device
        if texts is not None:
            if input_ids is not None or attention_mask is not None:
                raise ValueError("give either texts or input_ids (+ attention_mask), not both")
            batch = self.tokenize(texts)
            input_ids = batch["input_ids"].to(device)
            attention_mask = batch["attention_mask"].to(device)
        elif input_ids is None:
            raise ValueError("give texts or input_ids")
        else:
            input_ids, attention_mask = _check_token_batch(input_ids, attention_mask, device)

        extra: dict[str, Any] = {"use_cache": False} if self.architecture == "gpt2-eot" else {}
        model_mask = self._causal_mask(input_ids) if self._causal_only else attention_mask
        outputs = self.model(
            input_ids=input_ids, attention_mask=model_mask, return_dict=True, **extra
        )
        hidden = outputs.last_hidden_state
        if self.pooling == "cls":
            embedding = hidden[:, 0]
        elif self.pooling == "pooler":
            embedding = outputs.pooler_output
        elif self.pooling == "eot-projection":
            embedding = outputs.text_embeds
        else:
            embedding = pool_at(hidden, last_real_token_index(attention_mask))
        return TextEncoderOutput(
            embedding=embedding, last_hidden_state=hidden, attention_mask=attention_mask
        )

    def _causal_mask(self, input_ids: Tensor) -> Tensor:
        """``[b, 1, s, s]`` causal mask in the form the model's attention takes (bool for SDPA
        and flash kernels, additive float for eager attention)."""
        rows, length = input_ids.shape
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        mask = causal.expand(rows, 1, length, length)
        if getattr(self.model.config, "_attn_implementation", "sdpa") != "eager":
            return mask
        dtype = next(self.model.parameters()).dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer layer in the backward pass instead of storing it.

        Args:
            enable: True to switch checkpointing on, False to switch it off.
        """
        model = self.model
        if enable:
            # transformers 5 renamed the call; 4.x only has gradient_checkpointing_enable.
            switch_on = getattr(model, "activation_checkpointing_enable", None)
            if switch_on is None:
                switch_on = model.gradient_checkpointing_enable
            switch_on({"use_reentrant": False})
            # Non-reentrant checkpointing needs no grad on the inputs; transformers 5 still adds
            # a hook for it, which would make a frozen tower's output require grad for nothing.
            if getattr(model, "_require_grads_hooks", None) or hasattr(
                model, "_require_grads_hook"
            ):
                model.disable_input_require_grads()
        else:
            switch_off = getattr(model, "activation_checkpointing_disable", None)
            if switch_off is None:
                switch_off = model.gradient_checkpointing_disable
            switch_off()

    def freeze(self) -> TextEncoder:
        """Stop gradients into every weight of the text model (dropout still follows train/eval).

        Returns:
            This encoder.
        """
        self.model.requires_grad_(False)
        return self

    def unfreeze(self) -> TextEncoder:
        """Let every weight of the text model that reaches the embedding train again.

        BERT's and RoBERTa's pooler layer reaches it only with ``pooling="pooler"``; otherwise
        it stays frozen (kept so that weight files load; DDP refuses parameters that never get
        a gradient).

        Returns:
            This encoder.
        """
        self.model.requires_grad_(True)
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module) and self.pooling != "pooler":
            pooler.requires_grad_(False)
        return self

    def get_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this encoder with `build_text_encoder`, as JSON types.

        Returns:
            ``{"architecture", "model_config", "pooling", "max_length", "eot_suffix",
            "out_dim"}``; ``model_config`` is the transformers config as a dict.
        """
        return {
            "architecture": self.architecture,
            "model_config": self.model.config.to_dict(),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "eot_suffix": self.eot_suffix,
            "out_dim": self.out_dim,
        }

    def save_tokenizer(self, directory: str | Path) -> Path:
        """Write the tokenizer (pad token included) to a folder transformers can load.

        Args:
            directory: Target folder; created when missing.

        Returns:
            The folder.
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path))
        return path


def _check_token_batch(
    input_ids: Tensor, attention_mask: Tensor | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Validate a caller's id batch, default the mask to all ones, move both to ``device``."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [b, s], got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape "
            f"{tuple(input_ids.shape)}"
        )
    # checked without reading the mask back to the host (a GPU would stop queueing work): an
    # asynchronous assert, which on the CPU raises at once and there names the rows
    try:
        torch._assert_async(attention_mask.ne(0).any(dim=-1).all(), "a row has no real token")
    except RuntimeError:
        empty_rows = (attention_mask == 0).all(dim=-1).nonzero().flatten().tolist()
        raise ValueError(f"attention_mask rows {empty_rows} have no real token") from None
    return input_ids.to(device, non_blocking=True), attention_mask.to(device, non_blocking=True)
