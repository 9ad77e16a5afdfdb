"""Several translation models decoding as one: at every step the members' log-probabilities are
averaged (and renormalized), so greedy, beam search and sampling run over an ensemble unchanged.

An `Ensemble` has the interface the search functions use (`encode`, `decode_step`), with the
members' encoder memories and decoder states kept side by side; beams reorder and sentences
leave the batch through the same `index_select` as for one model. The members share the
source and target vocabularies (checked when loading: `Translator.load([dir1, dir2])`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Members:
    """One encoder memory or decoder state per member, selected together."""

    parts: list

    def index_select(self, index: torch.Tensor) -> Members:
        return Members([part.index_select(index) for part in self.parts])


class Ensemble(nn.Module):
    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[Members, Members]:
        encoded = [model.encode(src, src_lengths) for model in self.members]
        return Members([enc for enc, _ in encoded]), Members([state for _, state in encoded])

    def decode_step(self, prev_tokens: torch.Tensor, state: Members, enc: Members
                    ) -> tuple[torch.Tensor, Members, torch.Tensor | None]:
        """(B,) previous tokens -> (B, V) log of the normalized geometric mean of the members'
        distributions (their mean log-probability, renormalized), new states, mean attention."""
        steps = [model.decode_step(prev_tokens, s, e) for model, s, e in zip(self.members, state.parts, enc.parts)]
        log_probs = torch.stack([log_p for log_p, _, _ in steps]).mean(0)
        if len(steps) > 1:
            log_probs = torch.log_softmax(log_probs, dim=-1)
        weights = [w for _, _, w in steps if w is not None]
        attention = torch.stack(weights).mean(0) if weights else None
        return log_probs, Members([s for _, s, _ in steps]), attention
