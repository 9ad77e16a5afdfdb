"""Attention over encoder states: Luong dot and general, and additive (Bahdanau / Luong concat).

Every attention takes a query (B, T, Hq) and an encoder memory (B, S, Hk) with its padding mask
(B, S) and returns a context (B, T, Hk) and weights (B, T, S) that sum to 1 over real source
positions. T is 1 while decoding step by step and the whole target length when the decoder can
attend to all steps at once (Luong style without input feeding).

Keys are computed from the memory once per sentence (`precompute_keys`) rather than at every
decoder step: for `general` and additive scores that projection is the costly part.

References: Bahdanau et al. 2015 (additive), Luong et al. 2015 (dot, general, concat).
"""

from __future__ import annotations

import torch
from torch import nn

from seq2seq.errors import UserError

ATTENTION_TYPES = ("none", "bahdanau", "luong_dot", "luong_general", "luong_concat")


class Attention(nn.Module):
    """Shared masking, softmax and weighted sum; subclasses define keys and scores."""

    def precompute_keys(self, memory: torch.Tensor) -> torch.Tensor:
        return memory

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(B, T, Hq), (B, S, *) -> (B, T, S) unnormalized scores."""
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,  # (B, T, Hq)
        keys: torch.Tensor,  # (B, S, *) from precompute_keys
        memory: torch.Tensor,  # (B, S, Hk)
        mask: torch.Tensor,  # (B, S) True at real source positions
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(query, keys)  # (B, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, T, S)
        context = torch.bmm(weights.to(memory.dtype), memory)  # (B, T, Hk)
        return context, weights


class DotAttention(Attention):
    """score(q, k) = q . k  (needs Hq == Hk)."""

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        if query_size != key_size:
            raise UserError(
                f"luong_dot attention needs the decoder hidden size ({query_size}) to equal the "
                f"encoder output size ({key_size}); use luong_general or change the sizes"
            )

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, keys.transpose(1, 2))


class GeneralAttention(Attention):
    """score(q, k) = q . W k."""

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.key_projection = nn.Linear(key_size, query_size, bias=False)

    def precompute_keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key_projection(memory)  # (B, S, Hq)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, keys.transpose(1, 2))


class AdditiveAttention(Attention):
    """score(q, k) = v . tanh(W_q q + W_k k)  (Bahdanau's "additive", Luong's "concat")."""

    def __init__(self, query_size: int, key_size: int, attention_size: int | None = None) -> None:
        super().__init__()
        attention_size = attention_size or query_size
        self.key_projection = nn.Linear(key_size, attention_size, bias=False)
        self.query_projection = nn.Linear(query_size, attention_size)
        self.energy = nn.Linear(attention_size, 1, bias=False)

    def precompute_keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key_projection(memory)  # (B, S, A)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        q = self.query_projection(query)  # (B, T, A)
        hidden = torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1))  # (B, T, S, A)
        return self.energy(hidden).squeeze(-1)  # (B, T, S)


def make_attention(kind: str, query_size: int, key_size: int) -> Attention | None:
    """The attention module for a config name; `none` gives None."""
    if kind == "none":
        return None
    if kind == "luong_dot":
        return DotAttention(query_size, key_size)
    if kind == "luong_general":
        return GeneralAttention(query_size, key_size)
    if kind in ("bahdanau", "luong_concat"):
        return AdditiveAttention(query_size, key_size)
    raise UserError(f"model.attention={kind!r} is not one of {', '.join(ATTENTION_TYPES)}")
