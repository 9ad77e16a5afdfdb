"""Decoding strategies as functions over a `Seq2Seq`: greedy, batched beam search, sampling.

Both work on whole batches. Beam search keeps B*K hypotheses in one tensor; a sentence whose
search is over leaves the batch, so the remaining steps only pay for sentences still being
searched (long sentences do not drag a batch of short finished ones along)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from seq2seq.errors import UserError

# Shared with the numpy searches of the exported runtime, which must choose exactly as these do.
from seq2seq.portable.search import BANNED_IDS, COMPACT_FRACTION, length_penalty  # noqa: F401
from seq2seq.sampling import check_sampling, sample_tokens
from seq2seq.tokenizer import BOS_ID, EOS_ID


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # sum of token log-probabilities, divided by the length penalty (beam)
    attention: torch.Tensor | None = field(default=None, repr=False)  # (len(tokens)+1, S)


def max_output_lengths(src_lengths: torch.Tensor, max_len_ratio: float, max_len_offset: int) -> torch.Tensor:
    """Per-sentence step limit, EOS included: ceil(ratio * source length) + offset."""
    return torch.ceil(src_lengths.float() * max_len_ratio).long() + max_len_offset


@torch.no_grad()
def greedy_search(
    model,
    src: torch.Tensor,  # (B, S)
    src_lengths: torch.Tensor,  # (B,)
    max_len_ratio: float = 2.0,
    max_len_offset: int = 10,
    return_attention: bool = False,
    choose=None,
) -> list[list[Hypothesis]]:
    """Most probable token at each step (or the one `choose` picks); one hypothesis per sentence.

    `choose` maps (B, V) log-probabilities to (B,) tokens; sampling plugs in here.
    """
    enc, state = model.encode(src, src_lengths)
    batch = src.size(0)
    limits = max_output_lengths(src_lengths, max_len_ratio, max_len_offset).to(src.device)
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    alive = torch.arange(batch, device=src.device)  # original positions of rows still decoding
    tokens = [[] for _ in range(batch)]
    scores = [0.0] * batch
    attention = [[] for _ in range(batch)]
    for t in range(int(limits.max())):
        logits, state, weights = model.step_logits(prev, state, enc)
        log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B', 1), before any ban
        ban_specials(logits)
        force_eos(logits, limits[alive] - 1 == t, log_norm)
        if choose is None:
            best_logits, best = logits.max(dim=-1)
            best_scores = best_logits - log_norm.squeeze(1)
        else:
            log_probs = logits - log_norm
            best = choose(log_probs)
            best_scores = log_probs.gather(1, best.unsqueeze(1)).squeeze(1)
        for row, (sent, tok, sc) in enumerate(zip(alive.tolist(), best.tolist(), best_scores.tolist())):
            scores[sent] += sc
            if return_attention and weights is not None:
                attention[sent].append(weights[row].float().cpu())
            if tok != EOS_ID:
                tokens[sent].append(tok)
        keep = best != EOS_ID
        if not bool(keep.any()):
            break
        if not bool(keep.all()):
            index = keep.nonzero().squeeze(1)
            alive, best = alive[index], best[index]
            enc, state = enc.index_select(index), state.index_select(index)
        prev = best
    return [[Hypothesis(tokens[i], scores[i],
                        torch.stack(attention[i]) if attention[i] else None)] for i in range(batch)]


@torch.no_grad()
def beam_search(
    model,
    src: torch.Tensor,  # (B, S)
    src_lengths: torch.Tensor,  # (B,)
    beam_size: int = 5,
    nbest: int = 1,
    length_penalty_alpha: float = 1.0,
    max_len_ratio: float = 2.0,
    max_len_offset: int = 10,
    return_attention: bool = False,
    no_repeat_ngram_size: int = 0,
) -> list[list[Hypothesis]]:
    """Batched beam search; returns the `nbest` best hypotheses per sentence, best first.

    A sentence's search ends once it holds `beam_size` finished hypotheses (as in fairseq) or
    reaches its length limit, where EOS is forced.
    """
    if beam_size < 1:
        raise UserError(f"beam={beam_size} must be at least 1")
    if not 1 <= nbest <= beam_size:
        raise UserError(f"nbest={nbest} must be between 1 and the beam size ({beam_size})")
    device = src.device
    batch, k = src.size(0), beam_size
    enc, state = model.encode(src, src_lengths)
    expand = torch.arange(batch, device=device).repeat_interleave(k)  # (B*K,)
    enc, state = enc.index_select(expand), state.index_select(expand)
    limits = max_output_lengths(src_lengths, max_len_ratio, max_len_offset).to(device)

    alive = torch.arange(batch, device=device)  # original sentence of each row group
    scores = torch.zeros(batch, k, device=device)  # (B', K) summed log-probs
    scores[:, 1:] = float("-inf")  # all beams start as the same BOS; keep only one alive
    history = torch.full((batch * k, 0), BOS_ID, dtype=torch.long, device=device)  # (B'*K, t)
    attn_history = None
    prev = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int], torch.Tensor | None]]] = [[] for _ in range(batch)]
    finished_count = torch.zeros(batch, dtype=torch.long, device=device)  # len(finished[s]), on the device

    for t in range(int(limits.max())):
        # Unnormalized scores and one logsumexp per row: top-k on the logits picks the same tokens
        # as on log-probabilities, and only the 2K picked per row are normalized (no full-width
        # log-softmax written every step).
        logits, state, weights = model.step_logits(prev, state, enc)  # (B'*K, V)
        log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B'*K, 1), before any ban
        ban_specials(logits)
        if no_repeat_ngram_size > 0:
            ban_repeated_ngrams(logits, history, no_repeat_ngram_size)
        force_eos(logits, (limits[alive] - 1 == t).repeat_interleave(k), log_norm)
        # 2K candidates guarantee K that do not end here: at most K of them (one per beam) are EOS.
        # A beam adds the same running score to all its tokens, so the sentence's 2K best
        # candidates are among its beams' 2K best tokens each: two small top-k's replace one
        # over K x vocabulary sums, which is costly with a large vocabulary (README, "Benchmarks").
        width = min(2 * k, logits.size(-1))
        beam_logits, beam_tokens = logits.topk(width, dim=1)  # (B'*K, W)
        beam_scores = beam_logits - log_norm
        candidates = (scores.view(-1, 1) + beam_scores).view(len(alive), k * width)
        top_scores, top_index = candidates.topk(2 * k, dim=1)  # (B', 2K)
        top_beam = top_index // width
        top_token = beam_tokens.view(len(alive), k * width).gather(1, top_index)
        is_eos = top_token == EOS_ID

        if return_attention and weights is not None:
            step_attn = weights.float().unsqueeze(1)  # (B'*K, 1, S)
            attn_history = step_attn if attn_history is None else torch.cat([attn_history, step_attn], 1)

        # Finished hypotheses: EOS among the K best candidates of a sentence. Their sentences,
        # scores and token histories are read out in one transfer each per step.
        eos_rows, eos_cols = (is_eos[:, :k] & (top_scores[:, :k] > float("-inf"))).nonzero(as_tuple=True)
        if len(eos_rows):
            beam_rows = eos_rows * k + top_beam[eos_rows, eos_cols]
            sents = alive[eos_rows].tolist()
            raws = top_scores[eos_rows, eos_cols].tolist()
            histories = history.index_select(0, beam_rows).tolist()
            attns = attn_history.index_select(0, beam_rows).cpu() if attn_history is not None else None
            penalty = length_penalty(t + 1, length_penalty_alpha)
            added = []
            for i, (sent, raw, tokens) in enumerate(zip(sents, raws, histories)):
                if len(finished[sent]) < k:
                    finished[sent].append((raw / penalty, tokens, None if attns is None else attns[i]))
                    added.append(sent)
            added_index = torch.tensor(added, dtype=torch.long, device=device)
            finished_count.index_add_(0, added_index, torch.ones_like(added_index))

        # Continue with the K best candidates that did not end.
        masked = top_scores.masked_fill(is_eos, float("-inf"))
        next_scores, pick = masked.topk(k, dim=1)  # (B', K); order preserved among non-EOS
        next_beam = top_beam.gather(1, pick)
        next_token = top_token.gather(1, pick)
        source_rows = (torch.arange(len(alive), device=device).unsqueeze(1) * k + next_beam).view(-1)

        done = finished_count[alive] >= k
        if bool(done.all()):
            break
        leaving = int(done.sum())
        if leaving and leaving < COMPACT_FRACTION * len(alive):
            # Too few to pay for copying the encoder memory and states of the rest: the finished
            # sentences ride along, with no live hypothesis (-inf), until enough have finished.
            next_scores = next_scores.masked_fill(done.unsqueeze(1), float("-inf"))
        elif leaving:
            keep_sent = (~done).nonzero().squeeze(1)
            keep_rows = (keep_sent.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1)
            # All K rows of a sentence share its encoder memory, so reordering beams never
            # touches it; only sentences leaving the batch do.
            enc = enc.index_select(keep_rows)
            source_rows = source_rows.view(-1, k)[keep_sent].view(-1)
            next_scores, next_token = next_scores[keep_sent], next_token[keep_sent]
            alive = alive[keep_sent]
        state = state.index_select(source_rows)
        history = torch.cat([history.index_select(0, source_rows), next_token.view(-1, 1)], dim=1)
        if attn_history is not None:
            attn_history = attn_history.index_select(0, source_rows)
        scores = next_scores
        prev = next_token.view(-1)

    results = []
    for sent in range(batch):
        ranked = sorted(finished[sent], key=lambda item: item[0], reverse=True)[:nbest]
        results.append([Hypothesis(tokens, score, attn) for score, tokens, attn in ranked])
    return results


def ban_specials(scores: torch.Tensor) -> None:
    """In place: no row can choose pad, bos or unk (their scores become -inf; the others keep the
    model's, and the normalizer is taken before, so reported scores stay the model's)."""
    scores[:, list(BANNED_IDS)] = float("-inf")


def force_eos(scores: torch.Tensor, rows: torch.Tensor, log_norm: torch.Tensor | None = None) -> None:
    """In place: the (R,) `rows` that reached their length limit can only end (EOS), with
    probability 1: the EOS score becomes the row's normalizer (0 for log-probabilities)."""
    if bool(rows.any()):  # most steps: no row is at its limit, and the full-width write is skipped
        index = rows.nonzero().squeeze(1)
        scores[index] = float("-inf")
        scores[index, EOS_ID] = 0.0 if log_norm is None else log_norm[index, 0]


def ban_repeated_ngrams(log_probs: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Forbid, in place, each token that would complete an n-gram already in its row's history.

    log_probs: (R, V); history: (R, t) tokens so far. The (n-1) last tokens are the prefix;
    every earlier occurrence of that prefix bans the token that followed it.
    """
    t = history.size(1)
    if t < n:
        return
    rows = history.tolist()
    for r, tokens in enumerate(rows):
        prefix = tokens[t - n + 1:] if n > 1 else []
        for start in range(t - n + 1):
            if tokens[start:start + n - 1] == prefix:
                log_probs[r, tokens[start + n - 1]] = float("-inf")


@torch.no_grad()
def sample(
    model,
    src: torch.Tensor,  # (B, S)
    src_lengths: torch.Tensor,  # (B,)
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_len_ratio: float = 2.0,
    max_len_offset: int = 10,
    generator: torch.Generator | None = None,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Ancestral sampling: `num_samples` independent draws per sentence, highest score first.

    The distribution is p^(1/temperature), restricted to the `top_k` most probable tokens
    and/or the smallest set whose probability reaches `top_p` (nucleus sampling, Holtzman et al.
    2020). Scores are the sampled tokens' log-probabilities under the model, unmodified.
    """
    check_sampling(temperature, top_k, top_p)
    batch = src.size(0)
    expand = torch.arange(batch, device=src.device).repeat_interleave(num_samples)
    results = greedy_search(model, src.index_select(0, expand), src_lengths.index_select(0, expand),
                            max_len_ratio, max_len_offset, return_attention,
                            choose=lambda log_probs: sample_tokens(log_probs, temperature, top_k, top_p, generator))
    grouped = []
    for sent in range(batch):
        draws = [results[sent * num_samples + j][0] for j in range(num_samples)]
        grouped.append(sorted(draws, key=lambda h: h.score, reverse=True))
    return grouped


@torch.no_grad()
def forced_scores(model, src: torch.Tensor, src_lengths: torch.Tensor, tgt: torch.Tensor,
                  tgt_lengths: torch.Tensor) -> torch.Tensor:
    """(B,) summed log-probabilities of given translations (forced decoding), EOS included.

    tgt: (B, T) target ids without BOS/EOS, padded. The same `decode_step` as the searches, so
    the score of a search's own output is the score the search reported (greedy, or beam search
    with length_penalty=0).
    """
    enc, state = model.encode(src, src_lengths)
    batch, steps = tgt.shape
    rows = torch.arange(batch, device=src.device)
    totals = torch.zeros(batch, dtype=torch.float64, device=src.device)
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    for t in range(steps + 1):
        log_probs, state, _ = model.decode_step(prev, state, enc)
        column = tgt[:, t] if t < steps else torch.full_like(prev, EOS_ID)
        target = torch.where(tgt_lengths == t, torch.full_like(column, EOS_ID), column)
        picked = log_probs[rows, target].double()
        totals += torch.where(t <= tgt_lengths, picked, torch.zeros_like(picked))
        prev = target
    return totals


def decode(model, src: torch.Tensor, src_lengths: torch.Tensor, beam_size: int = 1, **options
           ) -> list[list[Hypothesis]]:
    """The searches by keyword (tests, validation during training); `search` takes the options type.

    Sampling when `sampling=True` (nbest = number of samples); greedy for beam 1 without
    n-best or n-gram blocking; batched beam search otherwise.
    """
    sampling = options.pop("sampling", False)
    temperature = options.pop("temperature", 1.0)
    top_k, top_p = options.pop("top_k", 0), options.pop("top_p", 1.0)
    generator = options.pop("generator", None)
    if sampling:
        options.pop("length_penalty_alpha", None)
        options.pop("no_repeat_ngram_size", None)
        return sample(model, src, src_lengths, num_samples=options.pop("nbest", 1), temperature=temperature,
                      top_k=top_k, top_p=top_p, generator=generator, **options)
    if beam_size == 1 and options.get("nbest", 1) == 1 and not options.get("no_repeat_ngram_size"):
        for unused in ("nbest", "length_penalty_alpha", "no_repeat_ngram_size"):
            options.pop(unused, None)
        return greedy_search(model, src, src_lengths, **options)
    return beam_search(model, src, src_lengths, beam_size=beam_size, **options)


class Shortlisted:
    """A model (or ensemble) whose output layer covers only the target pieces `ids` (sorted, with
    the special pieces first, so that pad/unk/bos/eos keep their ids): the searches run over
    positions in `ids`, and `decode_options` maps the chosen tokens back. The restricted output
    layer is built once per batch."""

    def __init__(self, model, ids: torch.Tensor) -> None:
        if ids[:EOS_ID + 1].tolist() != list(range(EOS_ID + 1)):
            raise ValueError("a shortlist's ids must start with the special pieces 0..3")
        self.model, self.ids = model, ids
        self.projection = model.output_projection(ids)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor):
        return self.model.encode(src, src_lengths)

    def step_logits(self, prev_tokens: torch.Tensor, state, enc):
        return self.model.step_logits(self.ids[prev_tokens], state, enc, self.projection)


def decode_options(model, src: torch.Tensor, src_lengths: torch.Tensor, options, *,
                   generator: torch.Generator | None = None, return_attention: bool = False,
                   target_ids: torch.Tensor | None = None) -> list[list[Hypothesis]]:
    """One batch decoded as a `DecodingOptions` says (every front end comes through here).

    `target_ids`: the batch's shortlist; scores are then log-probabilities over the shortlist."""
    searched = model if target_ids is None else Shortlisted(model, target_ids)
    results = decode(searched, src, src_lengths, beam_size=options.beam, nbest=options.nbest,
                     length_penalty_alpha=options.length_penalty, max_len_ratio=options.max_len_ratio,
                     max_len_offset=options.max_len_offset, return_attention=return_attention,
                     no_repeat_ngram_size=options.no_repeat_ngram_size, sampling=options.sampling,
                     temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
                     generator=generator)
    if target_ids is not None:
        ids = target_ids.tolist()
        for hyps in results:
            for hyp in hyps:
                hyp.tokens = [ids[token] for token in hyp.tokens]
    return results
