"""Batches of sentences as numpy arrays, longest first (shared with the PyTorch code)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seq2seq.errors import UserError
from seq2seq.tokenizer import PAD_ID


def length_sorted_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Positions grouped longest first into batches of at most `batch_tokens` padded tokens."""
    if batch_tokens <= 0:
        raise UserError(f"batch_tokens={batch_tokens} must be positive")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current, width = [], [], 0
    for i in order:
        w = max(width, lengths[i], 1)
        if current and w * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, w = [], max(lengths[i], 1)
        current.append(i)
        width = w
    if current:
        batches.append(current)
    return batches


def padded(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> np.ndarray:
    """(B, max_len) int64 array, right-padded (at least one column)."""
    width = max((len(s) for s in sequences), default=0)
    out = np.full((len(sequences), max(width, 1)), pad_id, dtype=np.int64)
    for row, seq in enumerate(sequences):
        out[row, :len(seq)] = seq
    return out
