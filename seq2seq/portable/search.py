"""Greedy search, batched beam search and sampling in numpy over an exported translation model.

The same algorithms, step for step, as seq2seq.tasks.translation.search (written for torch
tensors; it takes its constants from here): one logsumexp per row, top-k on the raw scores, EOS
forced at each sentence's length limit, finished sentences leaving the batch once they are
COMPACT_FRACTION of it, and the same scores. So an exported model translates as the PyTorch one
does (tests/portable). A model here is anything with `encode(src, lengths) -> (memory, state)`
and `step_logits(tokens, state, memory) -> (logits, state, attention)` over numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from seq2seq.errors import UserError
from seq2seq.portable.sampling import check_sampling, logsumexp, sample_tokens
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

# Finished sentences leave a beam-search batch once they are at least this share of it (0: as
# soon as one finishes): removing them copies the encoder memory and states of all the others,
# which a few finished rows do not pay for. Measured in benchmarks/decode_speed.py (`_compactnow`);
# figures in the README, "Translate".
COMPACT_FRACTION = 0.25

# Never produced by a search: padding, the start symbol, and the unknown piece (the tokenizer
# would drop them from the text silently, so the output would lose a word unannounced).
BANNED_IDS = (PAD_ID, BOS_ID, UNK_ID)
NEG_INF = np.float32(-np.inf)


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # sum of token log-probabilities, divided by the length penalty (beam)
    attention: np.ndarray | None = field(default=None, repr=False)  # (len(tokens)+1, S)


def max_output_lengths(src_lengths: np.ndarray, max_len_ratio: float, max_len_offset: int) -> np.ndarray:
    """Per-sentence step limit, EOS included: ceil(ratio * source length) + offset (in float32,
    as the PyTorch search computes it)."""
    return np.ceil(src_lengths.astype(np.float32) * np.float32(max_len_ratio)).astype(np.int64) + max_len_offset


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + |Y|) / 6) ** alpha (Wu et al. 2016); alpha=0 turns it off."""
    return ((5.0 + length) / 6.0) ** alpha


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row, largest first, and their columns; among equal scores the
    lower column first."""
    if k < scores.shape[1] // 4:  # a partial selection first where the rows are wide (the vocabulary)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part.sort(axis=1)  # lower columns first, so that the stable sort below breaks ties by column
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        index = np.take_along_axis(part, order, 1)
    else:
        index = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, index, 1), index


def ban_specials(scores: np.ndarray) -> None:
    scores[:, list(BANNED_IDS)] = NEG_INF


def force_eos(scores: np.ndarray, rows: np.ndarray, log_norm: np.ndarray) -> None:
    """In place: rows at their length limit can only end, with probability 1."""
    if rows.any():
        index = np.nonzero(rows)[0]
        scores[index] = NEG_INF
        scores[index, EOS_ID] = log_norm[index, 0]


def ban_repeated_ngrams(scores: np.ndarray, history: np.ndarray, n: int) -> None:
    """Forbid, in place, each token that would complete an n-gram already in its row's history."""
    t = history.shape[1]
    if t < n:
        return
    for r, tokens in enumerate(history.tolist()):
        prefix = tokens[t - n + 1:] if n > 1 else []
        for start in range(t - n + 1):
            if tokens[start:start + n - 1] == prefix:
                scores[r, tokens[start + n - 1]] = NEG_INF


def step_candidates(model, prev: np.ndarray, state, memory, width: int, at_limit: np.ndarray,
                    history: np.ndarray | None = None, no_repeat_ngram_size: int = 0):
    """The `width` best allowed pieces of each row: (R, W) raw scores and ids (EOS alone where a
    row is at its length limit), the (R, 1) normalizer, the new state and the attention.

    The model's graph picks them itself unless n-grams are blocked, which needs each row's
    history: then the full scores come out and are picked here."""
    if not no_repeat_ngram_size and hasattr(model, "step_top"):
        scores, tokens, log_norm, state, weights = model.step_top(prev, state, memory, width)
        if at_limit.any():
            index = np.nonzero(at_limit)[0]
            scores[index] = NEG_INF
            scores[index, 0], tokens[index, 0] = log_norm[index, 0], EOS_ID
        return scores, tokens, log_norm, state, weights
    logits, state, weights = model.step_logits(prev, state, memory)
    log_norm = logsumexp(logits)
    ban_specials(logits)
    if no_repeat_ngram_size:
        ban_repeated_ngrams(logits, history, no_repeat_ngram_size)
    force_eos(logits, at_limit, log_norm)
    scores, tokens = top_k(logits, width)
    return scores, tokens, log_norm, state, weights


def greedy_search(model, src: np.ndarray, src_lengths: np.ndarray, max_len_ratio: float = 2.0,
                  max_len_offset: int = 10, return_attention: bool = False,
                  choose: Callable[[np.ndarray], np.ndarray] | None = None) -> list[list[Hypothesis]]:
    """The most probable token at each step (or the one `choose` draws from (B, V) log-probabilities)."""
    memory, state = model.encode(src, src_lengths)
    batch = src.shape[0]
    limits = max_output_lengths(src_lengths, max_len_ratio, max_len_offset)
    prev = np.full(batch, BOS_ID, dtype=np.int64)
    alive = np.arange(batch)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    scores = [0.0] * batch
    attention: list[list[np.ndarray]] = [[] for _ in range(batch)]
    for t in range(int(limits.max())):
        if choose is None:
            scores_1, tokens_1, log_norm, state, weights = step_candidates(model, prev, state, memory, 1,
                                                                           limits[alive] - 1 == t)
            best, best_scores = tokens_1[:, 0], scores_1[:, 0] - log_norm[:, 0]
        else:
            logits, state, weights = model.step_logits(prev, state, memory)
            log_norm = logsumexp(logits)
            ban_specials(logits)
            force_eos(logits, limits[alive] - 1 == t, log_norm)
            log_probs = logits - log_norm
            best = choose(log_probs)
            best_scores = log_probs[np.arange(len(best)), best]
        for row, (sent, tok, score) in enumerate(zip(alive.tolist(), best.tolist(), best_scores.tolist())):
            scores[sent] += score
            if return_attention and weights is not None:
                attention[sent].append(weights[row])
            if tok != EOS_ID:
                tokens[sent].append(tok)
        keep = best != EOS_ID
        if not keep.any():
            break
        if not keep.all():
            index = np.nonzero(keep)[0]
            alive, best = alive[index], best[index]
            memory, state = memory.take(index), state.take(index)
        prev = best
    return [[Hypothesis(tokens[i], scores[i], np.stack(attention[i]) if attention[i] else None)]
            for i in range(batch)]


def beam_search(model, src: np.ndarray, src_lengths: np.ndarray, beam_size: int = 5, nbest: int = 1,
                length_penalty_alpha: float = 1.0, max_len_ratio: float = 2.0, max_len_offset: int = 10,
                no_repeat_ngram_size: int = 0) -> list[list[Hypothesis]]:
    """Batched beam search; the `nbest` best hypotheses per sentence, best first. A sentence's
    search ends once it holds `beam_size` finished hypotheses or reaches its length limit."""
    if beam_size < 1:
        raise UserError(f"beam={beam_size} must be at least 1")
    if not 1 <= nbest <= beam_size:
        raise UserError(f"nbest={nbest} must be between 1 and the beam size ({beam_size})")
    batch, k = src.shape[0], beam_size
    memory, state = model.encode(src, src_lengths)
    expand = np.repeat(np.arange(batch), k)
    memory, state = memory.take(expand), state.take(expand)
    limits = max_output_lengths(src_lengths, max_len_ratio, max_len_offset)

    alive = np.arange(batch)
    scores = np.zeros((batch, k), dtype=np.float32)
    scores[:, 1:] = NEG_INF  # all beams start as the same BOS; keep only one alive
    history = np.zeros((batch * k, 0), dtype=np.int64)
    prev = np.full(batch * k, BOS_ID, dtype=np.int64)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    finished_count = np.zeros(batch, dtype=np.int64)
    # 2K candidates per beam guarantee K that do not end here (at most K of them are EOS).
    width = min(2 * k, model.vocabulary_size())

    for t in range(int(limits.max())):
        beam_logits, beam_tokens, log_norm, state, _ = step_candidates(
            model, prev, state, memory, width, np.repeat(limits[alive] - 1 == t, k), history, no_repeat_ngram_size)
        beam_scores = beam_logits - log_norm
        candidates = (scores.reshape(-1, 1) + beam_scores).reshape(len(alive), k * width)
        top_scores, top_index = top_k(candidates, min(2 * k, k * width))
        top_beam = top_index // width
        top_token = np.take_along_axis(beam_tokens.reshape(len(alive), k * width), top_index, 1)
        is_eos = top_token == EOS_ID

        eos_rows, eos_cols = np.nonzero(is_eos[:, :k] & (top_scores[:, :k] > NEG_INF))
        if len(eos_rows):
            penalty = length_penalty(t + 1, length_penalty_alpha)
            beam_rows = eos_rows * k + top_beam[eos_rows, eos_cols]
            for row, col, beam_row in zip(eos_rows.tolist(), eos_cols.tolist(), beam_rows.tolist()):
                sent = int(alive[row])
                if len(finished[sent]) < k:
                    finished[sent].append((float(top_scores[row, col]) / penalty, history[beam_row].tolist()))
                    finished_count[sent] += 1

        masked = np.where(is_eos, NEG_INF, top_scores)
        next_scores, pick = top_k(masked, k)  # order kept among the candidates that did not end
        next_beam = np.take_along_axis(top_beam, pick, 1)
        next_token = np.take_along_axis(top_token, pick, 1)
        source_rows = (np.arange(len(alive))[:, None] * k + next_beam).reshape(-1)

        done = finished_count[alive] >= k
        if done.all():
            break
        leaving = int(done.sum())
        if leaving and leaving < COMPACT_FRACTION * len(alive):
            next_scores = np.where(done[:, None], NEG_INF, next_scores)
        elif leaving:
            keep_sent = np.nonzero(~done)[0]
            keep_rows = (keep_sent[:, None] * k + np.arange(k)).reshape(-1)
            memory = memory.take(keep_rows)
            source_rows = source_rows.reshape(-1, k)[keep_sent].reshape(-1)
            next_scores, next_token = next_scores[keep_sent], next_token[keep_sent]
            alive = alive[keep_sent]
        state = state.take(source_rows)
        history = np.concatenate([history[source_rows], next_token.reshape(-1, 1)], axis=1)
        scores = next_scores
        prev = next_token.reshape(-1)

    results = []
    for sent in range(batch):
        ranked = sorted(finished[sent], key=lambda item: item[0], reverse=True)[:nbest]
        results.append([Hypothesis(tokens, score) for score, tokens in ranked])
    return results


def sample(model, src: np.ndarray, src_lengths: np.ndarray, num_samples: int, temperature: float, top_k_count: int,
           top_p: float, rng: np.random.Generator, max_len_ratio: float = 2.0, max_len_offset: int = 10,
           return_attention: bool = False) -> list[list[Hypothesis]]:
    """`num_samples` independent draws per sentence, highest score first (scores are the model's
    log-probabilities of the drawn tokens)."""
    check_sampling(temperature, top_k_count, top_p)
    batch = src.shape[0]
    expand = np.repeat(np.arange(batch), num_samples)
    results = greedy_search(model, src[expand], src_lengths[expand], max_len_ratio, max_len_offset, return_attention,
                            choose=lambda log_probs: sample_tokens(log_probs, temperature, top_k_count, top_p, rng))
    return [sorted((results[sent * num_samples + j][0] for j in range(num_samples)),
                   key=lambda h: h.score, reverse=True) for sent in range(batch)]


def decode_options(model, src: np.ndarray, src_lengths: np.ndarray, options, rng: np.random.Generator | None = None,
                   return_attention: bool = False) -> list[list[Hypothesis]]:
    """One batch decoded as a `DecodingOptions` says: sampling, greedy (beam 1, one answer, no
    n-gram blocking) or beam search, as the PyTorch `decode` chooses."""
    if options.sampling:
        return sample(model, src, src_lengths, options.nbest, options.temperature, options.top_k, options.top_p,
                      rng if rng is not None else np.random.default_rng(), options.max_len_ratio,
                      options.max_len_offset, return_attention)
    if options.beam == 1 and options.nbest == 1 and not options.no_repeat_ngram_size:
        return greedy_search(model, src, src_lengths, options.max_len_ratio, options.max_len_offset, return_attention)
    return beam_search(model, src, src_lengths, options.beam, options.nbest, options.length_penalty,
                       options.max_len_ratio, options.max_len_offset, options.no_repeat_ngram_size)
