"""LSTM encoder: embeddings -> (bi)LSTM over packed sequences -> memory for attention."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.dropout import Dropout
from seq2seq.explicit_lstm import make_lstm


class Encoder(nn.Module):
    """Reads a padded source batch; padding never influences real positions (packed LSTM)."""

    def __init__(
        self,
        embedding: nn.Embedding,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        cell: str = "fused",
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.dropout = Dropout(dropout)
        self.rnn = make_lstm(cell, embedding.embedding_dim, hidden_size, num_layers, bidirectional, dropout)
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions

    def forward(
        self,
        src: torch.Tensor,  # (B, S)
        src_lengths: torch.Tensor,  # (B,)
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Returns memory (B, S, output_size) and the top layer's final (h, c), each (B, output_size)."""
        embedded = self.dropout(self.embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, (h, c) = self.rnn(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
        memory = self.dropout(memory)  # (B, S, D*H)
        batch = src.size(0)

        def top_layer(state: torch.Tensor) -> torch.Tensor:
            # (L*D, B, H) -> (B, D*H): forward and backward final states side by side
            state = state.view(-1, self.num_directions, batch, state.size(-1))[-1]
            return state.transpose(0, 1).reshape(batch, -1)

        return memory, (top_layer(h), top_layer(c))
