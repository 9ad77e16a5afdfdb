"""LSTM encoder: embeddings -> (bi)LSTM that never lets padding reach real positions -> memory for attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.dropout import Dropout
from seq2seq.explicit_lstm import make_lstm

# Above this many distinct source lengths in a batch, the encoder packs it (see Encoder.run_rnn).
MAX_LENGTH_GROUPS = 4


class Encoder(nn.Module):
    """Reads a padded source batch; padding never influences real positions (see `run_rnn`)."""

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
        memory, (h, c) = self.run_rnn(embedded, src_lengths.cpu())
        memory = self.dropout(memory)  # (B, S, D*H)
        batch = src.size(0)

        def top_layer(state: torch.Tensor) -> torch.Tensor:
            # (L*D, B, H) -> (B, D*H): forward and backward final states side by side
            state = state.view(-1, self.num_directions, batch, state.size(-1))[-1]
            return state.transpose(0, 1).reshape(batch, -1)

        return memory, (top_layer(h), top_layer(c))

    def run_rnn(self, embedded: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The LSTM over (B, S, E) inputs with (B,) lengths on the CPU: (B, S, D*H) outputs, zero
        at padding, and the final (h, c), each (L*D, B, H).

        PyTorch runs a packed sequence on CPU one time step at a time (a matrix product per step
        and, under autocast, a weight cast per step) instead of its oneDNN kernel: a batch with
        mixed source lengths cost about twice one of a single length. So sentences of equal
        length go through the kernel together, unpacked, and are put back in batch order;
        packing remains for batches with so many distinct lengths that the groups would be tiny.
        """
        width = embedded.size(1)
        distinct = torch.unique(lengths).tolist()
        if distinct == [width]:
            return self.rnn(embedded)
        if len(distinct) > MAX_LENGTH_GROUPS or embedded.is_cuda:
            packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
            outputs, state = self.rnn(packed)
            return pad_packed_sequence(outputs, batch_first=True, total_length=width)[0], state
        rows, outputs, hs, cs = [], [], [], []
        for length in distinct:
            group = (lengths == length).nonzero().squeeze(1)
            out, (h, c) = self.rnn(embedded[group.to(embedded.device), :length])
            rows.append(group)
            outputs.append(F.pad(out, (0, 0, 0, width - length)))
            hs.append(h)
            cs.append(c)
        order = torch.argsort(torch.cat(rows)).to(embedded.device)  # group order -> batch order
        return (torch.cat(outputs).index_select(0, order),
                (torch.cat(hs, dim=1).index_select(1, order), torch.cat(cs, dim=1).index_select(1, order)))
