"""LSTM decoder with optional attention and input feeding.

Two placements of attention (Luong et al. 2015 vs Bahdanau et al. 2015):
- after the LSTM (`attend_before_rnn=False`): the current state h_t queries the source and
  o_t = tanh(W [h_t; c_t]) is the attentional output. Without input feeding every step's
  LSTM input is known in advance, so teacher-forced training runs the fused LSTM over the whole
  target at once and attends for all steps in one batched product: the fast path.
- before the LSTM (`attend_before_rnn=True`, Bahdanau): the previous state queries the source and
  the context joins the LSTM input, so training must step through time.
Input feeding (Luong) feeds o_{t-1} into the next step's LSTM input; it too forces stepping.

With no attention the decoder is conditioned only on its initial state (the bridge from the
encoder's final state), the classic Sutskever et al. 2014 set-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.attention import Attention
from seq2seq.dropout import Dropout, dropout
from seq2seq.explicit_lstm import make_lstm
from seq2seq.rnn import layer_weights, lstm_cell, lstm_step, lstm_step_from_gates, uses_fused_step

# Above this many table entries (vocabulary x 4 x hidden) the per-token gate table of
# `Decoder.embedding_gates` costs more memory than it is worth (256 MB in fp32); the decoder then
# multiplies at every step instead. The recipes' 8k x 2048 table is 64 MB.
MAX_GATE_TABLE_ENTRIES = 64 * 1024 * 1024


@dataclass
class EncoderMemory:
    """What the decoder reads at every step, for a batch of B sentences (or B*K beams)."""

    memory: torch.Tensor  # (B, S, Hk)
    keys: torch.Tensor | None  # (B, S, *) precomputed attention keys
    mask: torch.Tensor  # (B, S) True at real source positions

    def index_select(self, index: torch.Tensor) -> EncoderMemory:
        return EncoderMemory(
            self.memory.index_select(0, index),
            None if self.keys is None else self.keys.index_select(0, index),
            self.mask.index_select(0, index),
        )


@dataclass
class DecoderState:
    h: torch.Tensor  # (L, B, H)
    c: torch.Tensor  # (L, B, H)
    feed: torch.Tensor | None  # (B, O) previous attentional output, with input feeding

    def index_select(self, index: torch.Tensor) -> DecoderState:
        return DecoderState(
            self.h.index_select(1, index),
            self.c.index_select(1, index),
            None if self.feed is None else self.feed.index_select(0, index),
        )


class Decoder(nn.Module):
    def __init__(
        self,
        embedding: nn.Embedding,
        hidden_size: int,
        encoder_size: int,
        output_size: int,
        attention: Attention | None = None,
        num_layers: int = 1,
        input_feeding: bool = False,
        attend_before_rnn: bool = False,
        dropout: float = 0.0,
        cell: str = "fused",
    ) -> None:
        super().__init__()
        if attend_before_rnn and attention is None:
            raise ValueError("attend_before_rnn needs an attention module")
        self.embedding = embedding
        self.attention = attention
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.output_size = output_size
        self.input_feeding = input_feeding
        self.attend_before_rnn = attend_before_rnn
        self.dropout = Dropout(dropout)

        rnn_input = embedding.embedding_dim
        if input_feeding:
            rnn_input += output_size
        if attend_before_rnn:
            rnn_input += encoder_size
        self.rnn = make_lstm(cell, rnn_input, hidden_size, num_layers, dropout=dropout)
        # Bridge: encoder final state -> initial (h, c) of every decoder layer.
        self.bridge = nn.Linear(encoder_size, 2 * num_layers * hidden_size)
        context_size = encoder_size if attention is not None else 0
        self.output_layer = nn.Linear(hidden_size + context_size, output_size)
        # Per-token first-layer gates for inference, dropped by train()/eval() and rebuilt when
        # the weights' version counters change (load_state_dict): (their versions, table).
        self._gate_table: tuple[tuple, torch.Tensor] | None = None
        # Set by the int8 copy (seq2seq.quantization), whose LSTM no longer holds fp32 weights.
        self.frozen_gate_table: torch.Tensor | None = None

    @property
    def steps_in_parallel(self) -> bool:
        """Whether teacher-forced training can run all target steps in one LSTM call."""
        return not (self.input_feeding or self.attend_before_rnn)

    def init_state(self, final_h: torch.Tensor, final_c: torch.Tensor) -> DecoderState:
        """Initial state from the encoder's final (h, c), each (B, Hk)."""
        batch, size = final_h.size(0), self.num_layers * self.hidden_size
        # One bridge layer whose first half of outputs maps h and second half maps c (c carries
        # most of an LSTM's memory); each half is applied only to its own input.
        weight, bias = self.bridge.weight, self.bridge.bias
        h = torch.tanh(F.linear(final_h, weight[:size], bias[:size]))  # (B, L*H)
        c = F.linear(final_c, weight[size:], bias[size:])  # (B, L*H)
        h = h.view(batch, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        c = c.view(batch, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        feed = h.new_zeros(batch, self.output_size) if self.input_feeding else None
        return DecoderState(h, c, feed)

    def _attentional_output(self, rnn_out: torch.Tensor, enc: EncoderMemory,
                            context: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """o = tanh(W [h; context]) for (B, T, H) LSTM outputs; returns o and attention weights."""
        weights = None
        if self.attention is not None and context is None:
            context, weights = self.attention(rnn_out, enc.keys, enc.memory, enc.mask)
        features = rnn_out if context is None else torch.cat([rnn_out, context], dim=-1)
        return torch.tanh(self.output_layer(features)), weights  # (B, T, O)

    def train(self, mode: bool = True) -> Decoder:
        # Weights change in training, and the version counters of the cache key do not see every
        # optimizer's in-place update (fused Adam's did not: validation then decoded with the
        # previous epoch's table), so every switch between training and eval drops the table.
        self._gate_table = None
        return super().train(mode)

    def embedding_gates(self) -> torch.Tensor | None:
        """(V, 4H) table: each token's embedding times the first layer's input weights, plus both
        biases, for inference; None where the table would be too large (MAX_GATE_TABLE_ENTRIES)."""
        if self.frozen_gate_table is not None:
            return self.frozen_gate_table
        w_ih, _, _ = layer_weights(self.rnn, 0)
        weight = self.embedding.weight
        if weight.size(0) * w_ih.size(0) > MAX_GATE_TABLE_ENTRIES:
            return None
        sources = (weight, w_ih, self.rnn.bias_ih_l0, self.rnn.bias_hh_l0)
        key = tuple((t.data_ptr(), t._version) for t in sources)
        if self._gate_table is None or self._gate_table[0] != key:
            self._gate_table = (key, self.compute_gate_table())
        return self._gate_table[1]

    @torch.no_grad()
    def compute_gate_table(self) -> torch.Tensor:
        w_ih, _, bias = layer_weights(self.rnn, 0)
        width = self.embedding.embedding_dim
        return torch.addmm(bias.float(), self.embedding.weight.float(), w_ih[:, :width].float().t())

    def step(self, prev_tokens: torch.Tensor, state: DecoderState, enc: EncoderMemory
             ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One step for (B,) previous tokens: (B, O) output, new state, (B, S) attention weights."""
        # The table path is fp32 (bf16 autocast keeps the step as it was: measured there, and its
        # in-place products would mix dtypes).
        if not self.training and not torch.is_autocast_enabled(state.h.device.type) and not uses_fused_step(state.h[0]):
            table = self.embedding_gates()
            if table is not None:
                return self._step_from_table(table, prev_tokens, state, enc)
        inputs = [self.embedding(prev_tokens).unsqueeze(1)]  # (B, 1, E)
        context, weights = None, None
        if self.attend_before_rnn:
            query = state.h[-1].unsqueeze(1)  # (B, 1, H)
            context, weights = self.attention(query, enc.keys, enc.memory, enc.mask)
            inputs.append(context)
        if self.input_feeding:
            inputs.append(state.feed.unsqueeze(1))
        rnn_in = self.dropout(torch.cat(inputs, dim=-1) if len(inputs) > 1 else inputs[0])
        if self.training:
            rnn_out, (h, c) = self.rnn(rnn_in, (state.h, state.c))  # (B, 1, H)
        else:
            rnn_out, (h, c) = lstm_step(self.rnn, rnn_in.squeeze(1), (state.h, state.c))
            rnn_out = rnn_out.unsqueeze(1)
        output, after_weights = self._attentional_output(rnn_out, enc, context)
        output = output.squeeze(1)  # (B, O)
        if after_weights is not None:
            weights = after_weights
        new_state = DecoderState(h, c, output if self.input_feeding else None)
        return self.dropout(output), new_state, None if weights is None else weights.squeeze(1)

    def _step_from_table(self, table: torch.Tensor, prev_tokens: torch.Tensor, state: DecoderState,
                         enc: EncoderMemory) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """`step` at inference (no dropout) with the embedding's share of the gates looked up."""
        extra, context, weights = [], None, None
        if self.attend_before_rnn:
            context, weights = self.attention(state.h[-1].unsqueeze(1), enc.keys, enc.memory, enc.mask)
            extra.append(context.squeeze(1))
        if self.input_feeding:
            extra.append(state.feed)
        fed = torch.cat(extra, dim=-1) if len(extra) > 1 else (extra[0] if extra else None)
        rnn_out, (h, c) = lstm_step_from_gates(self.rnn, table.index_select(0, prev_tokens), fed,
                                               (state.h, state.c))
        output, after_weights = self._attentional_output(rnn_out.unsqueeze(1), enc, context)
        output = output.squeeze(1)
        if after_weights is not None:
            weights = after_weights
        new_state = DecoderState(h, c, output if self.input_feeding else None)
        return output, new_state, None if weights is None else weights.squeeze(1)

    def forward(self, tgt_in: torch.Tensor, state: DecoderState, enc: EncoderMemory
                ) -> torch.Tensor:
        """Teacher-forced outputs (B, T, O) for (B, T) target inputs."""
        if self.steps_in_parallel:
            embedded = self.dropout(self.embedding(tgt_in))  # (B, T, E)
            rnn_out, _ = self.rnn(embedded, (state.h, state.c))  # (B, T, H)
            output, _ = self._attentional_output(rnn_out, enc)
            return self.dropout(output)
        return self._forward_stepwise(tgt_in, state, enc)

    def _forward_stepwise(self, tgt_in: torch.Tensor, state: DecoderState, enc: EncoderMemory
                          ) -> torch.Tensor:
        """Teacher forcing step by step (input feeding, Bahdanau), with nothing in the loop that
        could be done once: the embeddings, their dropout and their share of the first layer's
        gates (x W_ih[:, :E] + b for every step: one matrix product) come before it, and each step
        adds only what depends on the previous one: the context or fed-back output (its dropout
        and W_ih columns), the recurrent products, the cell, attention and the output layer.
        A single-step call of the fused nn.LSTM per time step cost more than the step itself on
        CPU. The cell state is kept in fp32 under bf16 autocast. Same function as `step` in a loop.
        """
        embedded = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        w_ih, w_hh, bias = layer_weights(self.rnn, 0)
        width = embedded.size(-1)
        gates_from_inputs = F.linear(embedded, w_ih[:, :width], bias)  # (B, T, 4H)
        w_fed = w_ih[:, width:]  # columns of the context (Bahdanau) and the fed-back output
        h = list(state.h.unbind(0))
        c = [layer_c.float() for layer_c in state.c.unbind(0)]
        feed = state.feed
        outputs = []
        for t in range(tgt_in.size(1)):
            extra, context = [], None
            if self.attend_before_rnn:
                context, _ = self.attention(h[-1].unsqueeze(1), enc.keys, enc.memory, enc.mask)  # (B, 1, Hk)
                extra.append(context.squeeze(1))
            if self.input_feeding:
                extra.append(feed)
            fed = self.dropout(torch.cat(extra, dim=-1) if len(extra) > 1 else extra[0])
            gates = gates_from_inputs[:, t] + F.linear(fed, w_fed) + F.linear(h[0], w_hh)
            h[0], c[0] = lstm_cell(gates.float(), c[0])
            for layer in range(1, self.num_layers):
                below = dropout(h[layer - 1], self.rnn.dropout, self.training)
                layer_w_ih, layer_w_hh, layer_bias = layer_weights(self.rnn, layer)
                gates = F.linear(below, layer_w_ih, layer_bias) + F.linear(h[layer], layer_w_hh)
                h[layer], c[layer] = lstm_cell(gates.float(), c[layer])
            output, _ = self._attentional_output(h[-1].unsqueeze(1), enc, context)
            feed = output.squeeze(1)  # (B, O)
            outputs.append(self.dropout(feed))
        return torch.stack(outputs, dim=1)
