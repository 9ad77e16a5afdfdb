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

    def output_projection(self, ids: torch.Tensor | None = None) -> list:
        return [model.output_projection(ids) for model in self.members]

    def step_logits(self, prev_tokens: torch.Tensor, state: Members, enc: Members, projection: list | None = None
                    ) -> tuple[torch.Tensor, Members, torch.Tensor | None]:
        """(B,) previous tokens -> (B, V) mean of the members' log-probabilities (the log of their
        geometric mean, unnormalized), new states, mean attention."""
        projection = projection or [None] * len(self.members)
        steps = [model.step_logits(prev_tokens, s, e, p)
                 for model, s, e, p in zip(self.members, state.parts, enc.parts, projection)]
        if len(steps) == 1:  # one member decodes as itself, to the last bit
            scores = steps[0][0]
        else:
            # Normalized as the searches normalize one model (logits minus their logsumexp), so that
            # an ensemble of a model with itself scores as that model does, to rounding.
            scores = torch.stack([logits - torch.logsumexp(logits, dim=-1, keepdim=True)
                                  for logits, _, _ in steps]).mean(0)
        weights = [w for _, _, w in steps if w is not None]
        attention = torch.stack(weights).mean(0) if weights else None
        return scores, Members([s for _, s, _ in steps]), attention

    def decode_step(self, prev_tokens: torch.Tensor, state: Members, enc: Members
                    ) -> tuple[torch.Tensor, Members, torch.Tensor | None]:
        """(B,) previous tokens -> (B, V) log of the normalized geometric mean of the members'
        distributions (their mean log-probability, renormalized), new states, mean attention."""
        scores, states, attention = self.step_logits(prev_tokens, state, enc)
        return torch.log_softmax(scores, dim=-1), states, attention
