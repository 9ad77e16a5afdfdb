"""Sentence classification: the toolkit's LSTM encoder, a pooling over its states, a linear layer.

Plain nn.Modules, metrics and the text repair that training and inference share (no Lightning,
no Hydra). `ClassificationSystem` trains an
`LSTMClassifier`; `Classifier` runs a saved one."""

from __future__ import annotations

import torch
from torch import nn

from seq2seq.dropout import Dropout
from seq2seq.encoder import Encoder
from seq2seq.errors import UserError
from seq2seq.tokenizer import PAD_ID


class FinalStatePooling(nn.Module):
    """The top layer's final hidden state: forward direction after the last real piece,
    backward direction after the first (the packed LSTM never reads padding)."""

    def forward(self, memory: torch.Tensor, final_h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        return final_h, None  # (B, D*H)


class MeanPooling(nn.Module):
    """The average of the encoder states over the real positions."""

    def forward(self, memory: torch.Tensor, final_h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        weights = mask.unsqueeze(-1).to(memory.dtype)  # (B, S, 1)
        return (memory * weights).sum(1) / weights.sum(1).clamp(min=1.0), None  # (B, D*H)


class AttentionPooling(nn.Module):
    """A learnt weighted average of the encoder states (Yang et al. 2016, "Hierarchical
    Attention Networks"): score_s = v . tanh(W m_s + b), weights = softmax over real positions.
    Also returns the weights (B, S), which show what the decision rested on."""

    def __init__(self, size: int, attention_size: int) -> None:
        super().__init__()
        self.project = nn.Linear(size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def forward(self, memory: torch.Tensor, final_h: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(self.project(memory))).squeeze(-1)  # (B, S)
        scores = scores.float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, S)
        return torch.bmm(weights.unsqueeze(1).to(memory.dtype), memory).squeeze(1), weights  # (B, D*H)


POOLING_TYPES = ("final", "mean", "attention")


class LSTMClassifier(nn.Module):
    """Embedding -> `Encoder` (bi)LSTM -> pooling (`final`, `mean` or `attention`) -> dropout -> linear.

    Constructor arguments are plain values, so a model directory rebuilds it from JSON.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int = 2,
        embed_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "mean",
        attention_size: int = 64,
        dropout: float = 0.5,
        cell: str = "fused",
    ) -> None:
        super().__init__()
        if pooling not in POOLING_TYPES:
            raise UserError(f"model.pooling={pooling!r} is not one of {', '.join(POOLING_TYPES)}")
        if num_classes < 2:
            raise UserError(f"a classifier needs at least 2 classes, got {num_classes}")
        if min(vocab_size, embed_dim, hidden_size, num_layers, attention_size) < 1:
            raise UserError("model.vocab_size, embed_dim, hidden_size, num_layers and attention_size must be positive")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.dropout={dropout} must be in [0, 1)")
        self.config = dict(vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim,
                           hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                           pooling=pooling, attention_size=attention_size, dropout=dropout, cell=cell)
        embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.encoder = Encoder(embedding, hidden_size, num_layers, bidirectional, dropout, cell=cell)
        size = self.encoder.output_size
        if pooling == "attention":
            self.pooling = AttentionPooling(size, attention_size)
        else:
            self.pooling = MeanPooling() if pooling == "mean" else FinalStatePooling()
        self.dropout = Dropout(dropout)
        self.output = nn.Linear(size, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, return_weights: bool = False):
        """(B, S) padded piece ids and (B,) lengths -> (B, C) logits (and (B, S) pooling weights)."""
        memory, (final_h, _) = self.encoder(tokens, lengths)  # (B, S, D*H), (B, D*H)
        mask = torch.arange(tokens.size(1), device=tokens.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)
        pooled, weights = self.pooling(memory, final_h, mask)
        logits = self.output(self.dropout(pooled))  # (B, C)
        return (logits, weights) if return_weights else logits
