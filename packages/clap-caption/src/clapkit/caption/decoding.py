"""Decoding a language model from a prefix of input embeddings: beam search, greedy, sampling.

Every strategy runs the whole batch at once with a key/value cache: the prefix is encoded once
per clip, then each step feeds one token per live sequence. A clip whose search is over leaves
the batch (its cache rows are dropped), so the cost follows the clips still decoding.

``use_cache=False`` recomputes the whole sequence at every step instead (as msclap does); it
exists to check that the cache changes nothing and for parity runs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedModel


@dataclass
class DecodingOutput:
    """What a decoder returns.

    Attributes:
        token_ids: The chosen continuation of each clip (stop token excluded, except in the
            msclap-compatible search, which keeps it as msclap does).
        scores: Score of each chosen continuation [b] (beam search: the length-normalised
            log-probability; greedy and sampling: the summed log-probability).
    """

    token_ids: list[list[int]]
    scores: Tensor


class _PrefixDecoder:
    """Runs a causal LM over ``prefix`` + the tokens fed so far, for a changing set of rows."""

    def __init__(self, language_model: PreTrainedModel, prefix: Tensor, use_cache: bool) -> None:
        self.language_model = language_model
        self.embed_tokens: nn.Module = language_model.get_input_embeddings()
        self.use_cache = use_cache
        self.cache = DynamicCache() if use_cache else None
        self.sequence = prefix  # the full input sequence, kept only without a cache
        self.pending = prefix  # inputs not yet seen by the model
        # transformers renamed `past_key_values` to `cache` (5.x); older ones lack logits_to_keep
        parameters = inspect.signature(type(language_model).forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.keeps_last_logits = "logits_to_keep" in parameters

    def next_logits(self) -> Tensor:
        """Logits of the next token for every row, in float32. Shapes: -> [n, vocab]."""
        inputs = self.pending if self.cache is not None else self.sequence
        kwargs: dict[str, object] = {self.cache_argument: self.cache, "use_cache": self.use_cache}
        if self.keeps_last_logits:
            kwargs["logits_to_keep"] = 1
        out = self.language_model(inputs_embeds=inputs, **kwargs)
        return out.logits[:, -1].float()

    def select(self, rows: Tensor) -> None:
        """Keep (and reorder, or repeat) the given rows: [n_new] indices into the current rows."""
        if self.cache is not None:
            self.cache.reorder_cache(rows)  # type: ignore[arg-type]
        else:
            self.sequence = self.sequence.index_select(0, rows)

    def feed(self, token_ids: Tensor) -> None:
        """Append one token to every row. Shapes: ``token_ids`` [n]."""
        embedded = self.embed_tokens(token_ids).unsqueeze(1)
        self.pending = embedded
        if self.cache is None:
            self.sequence = torch.cat((self.sequence, embedded), dim=1)


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    return F.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)


@torch.no_grad()
def beam_search(
    language_model: PreTrainedModel,
    prefix: Tensor,
    *,
    beam_size: int = 5,
    max_new_tokens: int = 67,
    eos_token_id: int,
    length_penalty: float = 1.0,
    temperature: float = 1.0,
    use_cache: bool = True,
) -> DecodingOutput:
    """Batched beam search stopping at ``eos_token_id``, scored by length-normalised log-prob.

    Canonical beam search: each step ranks the ``2 * beam_size`` best continuations by summed
    log-probability; those ending in EOS among the top ``beam_size`` become finished
    hypotheses, scored ``sum_logprob / length ** length_penalty`` (length counts the EOS); the
    best others stay live. A clip is done when it has ``beam_size`` finished hypotheses and no
    live beam could still beat the worst of them, or at ``max_new_tokens``. This is what
    transformers' ``generate(num_beams=k, early_stopping="never")`` computes.

    Args:
        language_model: A causal LM taking ``inputs_embeds`` (e.g. ``GPT2LMHeadModel``).
        prefix: Prefix embeddings [b, p, d].
        beam_size: Beams per clip.
        max_new_tokens: Most tokens generated per clip (EOS included).
        eos_token_id: Token that ends a caption.
        length_penalty: Exponent of the length in the score (1.0 = mean log-prob per token).
        temperature: Divides the logits before the softmax.
        use_cache: Reuse keys/values between steps (same result, much faster).

    Returns:
        The best hypothesis of each clip (EOS removed) and its score.

    Raises:
        ValueError: On ``beam_size`` or ``max_new_tokens`` below 1.
    """
    if beam_size < 1 or max_new_tokens < 1:
        raise ValueError(
            f"beam_size and max_new_tokens must be >= 1, got {beam_size}, {max_new_tokens}"
        )
    b, k, device = prefix.shape[0], beam_size, prefix.device
    decoder = _PrefixDecoder(language_model, prefix, use_cache)
    log_probs = _log_probs(decoder.next_logits(), temperature)  # [b, V]
    vocab = log_probs.shape[-1]
    # all k beams start identical: only beam 0 may be extended at the first step
    running = torch.full((b, k), float("-inf"), device=device)
    running[:, 0] = 0.0
    log_probs = log_probs.unsqueeze(1).expand(b, k, vocab)
    decoder.select(torch.arange(b, device=device).repeat_interleave(k))
    tokens = torch.zeros(b, k, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    active = list(range(b))  # clips still decoding, in the order of the decoder's rows
    for step in range(max_new_tokens):
        length = step + 1
        candidates = (running.unsqueeze(-1) + log_probs).view(len(active), k * vocab)
        top_scores, top_index = candidates.topk(2 * k, dim=-1)
        top_source, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == eos_token_id
        for row, clip in enumerate(active):
            for rank in range(k):  # EOS beyond the first k ranks is ignored
                if is_eos[row, rank]:
                    hypothesis = tokens[row, top_source[row, rank]].tolist()
                    score = top_scores[row, rank].item() / length**length_penalty
                    finished[clip].append((score, hypothesis))
            finished[clip] = sorted(finished[clip], key=lambda h: -h[0])[:k]
        # the best k non-EOS continuations stay live
        live_scores = top_scores.masked_fill(is_eos, float("-inf"))
        live_scores, order = live_scores.topk(k, dim=-1)
        live_source = top_source.gather(1, order)
        live_token = top_token.gather(1, order)
        rows = torch.arange(len(active), device=device).unsqueeze(1)
        tokens = torch.cat((tokens[rows, live_source], live_token.unsqueeze(-1)), dim=-1)
        running = live_scores
        if length == max_new_tokens:
            break
        bound_length = max_new_tokens if length_penalty > 0 else length
        best_possible = running[:, 0] / bound_length**length_penalty
        keep = [
            row
            for row, clip in enumerate(active)
            if len(finished[clip]) < k or finished[clip][-1][0] < best_possible[row].item()
        ]
        beam_rows = (rows * k + live_source).view(-1)
        if len(keep) < len(active):
            keep_index = torch.tensor(keep, dtype=torch.long, device=device)
            beam_rows = beam_rows.view(len(active), k)[keep_index].view(-1)
            tokens, running, live_token = (
                tokens[keep_index],
                running[keep_index],
                live_token[keep_index],
            )
            active = [active[row] for row in keep]
        if not active:
            break
        decoder.select(beam_rows)
        decoder.feed(live_token.reshape(-1))
        log_probs = _log_probs(decoder.next_logits(), temperature).view(len(active), k, vocab)
    # clips that reached max_new_tokens: live beams compete with the finished ones
    for row, clip in enumerate(active):
        for beam in range(k):
            score = running[row, beam].item() / max_new_tokens**length_penalty
            finished[clip].append((score, tokens[row, beam].tolist()))
        finished[clip] = sorted(finished[clip], key=lambda h: -h[0])[:k]
    best = [pool[0] for pool in finished]
    return DecodingOutput(token_ids=[h for _, h in best], scores=torch.tensor([s for s, _ in best]))


@torch.no_grad()
def msclap_beam_search(
    language_model: PreTrainedModel,
    prefix: Tensor,
    *,
    beam_size: int = 5,
    max_new_tokens: int = 67,
    stop_token_id: int = 220,
    temperature: float = 1.0,
    use_cache: bool = True,
) -> DecodingOutput:
    """msclap's (ClipCap's) beam search, batched and cached, for parity with its captions.

    Its rules, kept: beams are ranked by the mean log-probability of their tokens; a beam that
    emits ``stop_token_id`` (msclap: 220, the space before ``<|endoftext|>``) stays in the beam
    with a frozen score and length, padded with token 0; a clip ends when all its beams have
    stopped or after ``max_new_tokens`` tokens; the answer is the best mean, stop token included.

    Args:
        language_model: A causal LM taking ``inputs_embeds``.
        prefix: Prefix embeddings [b, p, d].
        beam_size: Beams per clip (>= 2, as msclap's code requires).
        max_new_tokens: Most tokens per clip (msclap: ``entry_length=67``).
        stop_token_id: Token that stops a beam.
        temperature: Divides the logits before the softmax.
        use_cache: Reuse keys/values between steps.

    Returns:
        The best beam of each clip (up to and including the stop token) and its mean log-prob.

    Raises:
        ValueError: On ``beam_size`` < 2 or ``max_new_tokens`` < 1.
    """
    if beam_size < 2 or max_new_tokens < 1:
        raise ValueError("msclap's beam search needs beam_size >= 2 and max_new_tokens >= 1")
    b, k, device = prefix.shape[0], beam_size, prefix.device
    decoder = _PrefixDecoder(language_model, prefix, use_cache)
    log_probs = _log_probs(decoder.next_logits(), temperature)  # [b, V]
    vocab = log_probs.shape[-1]
    scores, first = log_probs.topk(k, dim=-1)  # [b, k]
    tokens = first.unsqueeze(-1)
    lengths = torch.ones(b, k, device=device)
    stopped = first == stop_token_id
    final_tokens: list[Tensor] = [tokens[0]] * b
    final_scores = torch.zeros(b, k, device=device)
    final_lengths = torch.ones(b, k, device=device)
    active = torch.arange(b, device=device)
    decoder.select(active.repeat_interleave(k))
    for _ in range(1, max_new_tokens):
        done = stopped.all(dim=1)
        if done.any():
            for row in done.nonzero().flatten().tolist():
                clip = int(active[row])
                final_tokens[clip], final_scores[clip], final_lengths[clip] = (
                    tokens[row],
                    scores[row],
                    lengths[row],
                )
            keep = (~done).nonzero().flatten()
            active, tokens, scores = active[keep], tokens[keep], scores[keep]
            lengths, stopped = lengths[keep], stopped[keep]
            decoder.select((keep.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1))
            if active.numel() == 0:
                break
        n = active.numel()
        decoder.feed(tokens[:, :, -1].reshape(-1))
        log_probs = _log_probs(decoder.next_logits(), temperature).view(n, k, vocab)
        log_probs = log_probs.masked_fill(stopped.unsqueeze(-1), float("-inf"))
        log_probs[..., 0] = torch.where(stopped, 0.0, log_probs[..., 0])
        sums = scores.unsqueeze(-1) + log_probs
        lengths = lengths + (~stopped).float()
        means = sums / lengths.unsqueeze(-1)
        top_means, top_index = means.view(n, k * vocab).topk(k, dim=-1)
        source, token = top_index // vocab, top_index % vocab
        rows = torch.arange(n, device=device).unsqueeze(1)
        lengths = lengths.gather(1, source)
        tokens = torch.cat((tokens[rows, source], token.unsqueeze(-1)), dim=-1)
        scores = top_means * lengths
        stopped = stopped.gather(1, source) | (token == stop_token_id)
        decoder.select((rows * k + source).view(-1))
    for row, clip in enumerate(active.tolist()):
        final_tokens[clip], final_scores[clip], final_lengths[clip] = (
            tokens[row],
            scores[row],
            lengths[row],
        )
    token_ids, best_scores = [], []
    for clip in range(b):
        means = final_scores[clip] / final_lengths[clip]
        best = int(means.argmax())
        token_ids.append(final_tokens[clip][best, : int(final_lengths[clip][best])].tolist())
        best_scores.append(means[best])
    return DecodingOutput(token_ids=token_ids, scores=torch.stack(best_scores).cpu())


@torch.no_grad()
def sample(
    language_model: PreTrainedModel,
    prefix: Tensor,
    *,
    max_new_tokens: int = 67,
    eos_token_id: int,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> DecodingOutput:
    """Greedy decoding or ancestral sampling (temperature, top-k, nucleus), stopping at EOS.

    Args:
        language_model: A causal LM taking ``inputs_embeds``.
        prefix: Prefix embeddings [b, p, d].
        max_new_tokens: Most tokens generated per clip (EOS included).
        eos_token_id: Token that ends a caption.
        greedy: Take the most likely token instead of sampling.
        temperature: Divides the logits (sampling only).
        top_k: Sample among the ``top_k`` most likely tokens (0 = all).
        top_p: Sample within the smallest set of tokens whose probability reaches ``top_p``.
        generator: Seeded generator for reproducible samples.
        use_cache: Reuse keys/values between steps.

    Returns:
        One continuation per clip (EOS removed) and its summed log-probability (under the
        temperature-scaled distribution).

    Raises:
        ValueError: On a bad ``top_p``, ``top_k``, ``temperature`` or ``max_new_tokens``.
    """
    if not 0 < top_p <= 1 or top_k < 0 or temperature <= 0 or max_new_tokens < 1:
        raise ValueError(
            "need 0 < top_p <= 1, top_k >= 0, temperature > 0, max_new_tokens >= 1; got "
            f"top_p={top_p}, top_k={top_k}, temperature={temperature}, "
            f"max_new_tokens={max_new_tokens}"
        )
    b, device = prefix.shape[0], prefix.device
    decoder = _PrefixDecoder(language_model, prefix, use_cache)
    outputs: list[list[int]] = [[] for _ in range(b)]
    totals = torch.zeros(b)
    active = torch.arange(b, device=device)
    for step in range(max_new_tokens):
        logits = decoder.next_logits()
        if greedy:
            log_probs = F.log_softmax(logits, dim=-1)
            token = log_probs.argmax(dim=-1)
        else:
            logits = logits / temperature
            if top_k > 0:
                kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p < 1:
                sorted_logits, sorted_index = logits.sort(dim=-1, descending=True)
                cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
                # drop a token once the mass before it already reaches top_p
                drop = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
                logits = logits.scatter(
                    1, sorted_index, sorted_logits.masked_fill(drop, float("-inf"))
                )
            log_probs = F.log_softmax(logits, dim=-1)
            token = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(1)
        chosen = log_probs.gather(1, token.unsqueeze(1)).squeeze(1).cpu()
        ended = token == eos_token_id
        for row, clip in enumerate(active.tolist()):
            totals[clip] += chosen[row]
            if not ended[row]:
                outputs[clip].append(int(token[row]))
        if step == max_new_tokens - 1:
            break
        keep = (~ended).nonzero().flatten()
        if keep.numel() == 0:
            break
        if keep.numel() < active.numel():
            active, token = active[keep], token[keep]
            decoder.select(keep)
        decoder.feed(token)
    return DecodingOutput(token_ids=outputs, scores=totals)
