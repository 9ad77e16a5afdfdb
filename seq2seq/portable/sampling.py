"""Drawing the next token in numpy: temperature, top-k and top-p (nucleus), as seq2seq.sampling
does with torch (the streams of random numbers differ, the distributions do not)."""

from __future__ import annotations

import numpy as np

from seq2seq.errors import UserError

NEG_INF = np.float32(-np.inf)


def logsumexp(scores: np.ndarray) -> np.ndarray:
    """(R, V) -> (R, 1), stable."""
    top = scores.max(axis=1, keepdims=True)
    return top + np.log(np.exp(scores - top).sum(axis=1, keepdims=True))


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if not temperature > 0:
        raise UserError(f"temperature={temperature} must be greater than 0")
    if top_k < 0:
        raise UserError(f"top_k={top_k} must be 0 (off) or positive")
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p={top_p} must be in (0, 1]")


def sample_tokens(log_probs: np.ndarray, temperature: float, top_k_count: int, top_p: float,
                  rng: np.random.Generator) -> np.ndarray:
    """(R, V) log-probabilities -> (R,) drawn ids: temperature, then top-k and/or nucleus (top-p)
    restriction, as seq2seq.sampling does."""
    logits = log_probs / np.float32(temperature)
    if 0 < top_k_count < logits.shape[1]:
        kth = -np.partition(-logits, top_k_count - 1, axis=1)[:, top_k_count - 1:top_k_count]
        logits = np.where(logits < kth, NEG_INF, logits)
    if top_p < 1.0:
        order = np.argsort(-logits, axis=1, kind="stable")
        sorted_logits = np.take_along_axis(logits, order, 1)
        probs = np.exp(sorted_logits - logsumexp(sorted_logits))
        drop = np.cumsum(probs, axis=1) - probs >= top_p  # the first token always stays
        restricted = np.where(drop, NEG_INF, sorted_logits)
        logits = np.empty_like(logits)
        np.put_along_axis(logits, order, restricted, 1)
    probs = np.exp(logits - logsumexp(logits)).astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    draws = rng.random(len(probs))[:, None]
    return np.minimum((np.cumsum(probs, axis=1) < draws).sum(axis=1), probs.shape[1] - 1)
