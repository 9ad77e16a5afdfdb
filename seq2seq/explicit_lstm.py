"""The LSTM written out gate by gate, and `make_lstm`, which picks it or PyTorch's fused nn.LSTM.

`model.cell=explicit` swaps every LSTM of a model for `ExplicitLSTM`: same parameters, same
results, but the equations are Python a reader can follow, print from or change (a peephole,
another gate nonlinearity, a coupled input/forget gate) without touching PyTorch's kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seq2seq.dropout import dropout
from seq2seq.errors import UserError
from seq2seq.rnn import LSTMState, layer_weights, lstm_cell

LSTM_CELLS = ("fused", "explicit")


class ExplicitLSTM(nn.Module):
    """A multi-layer, optionally bidirectional LSTM from the textbook equations.

    For every layer and direction, at step t, with x_t the layer's input (the embeddings for the
    first layer, the previous layer's h_t for the others) and sigma the logistic sigmoid:

        f_t = sigma(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
        i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
        g_t = tanh (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     candidate cell
        c_t = f_t * c_{t-1} + i_t * g_t                        cell update
        o_t = sigma(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
        h_t = o_t * tanh(c_t)                                  hidden state, the output at t

    (* is the element-wise product.) The cell update is `seq2seq.rnn.lstm_cell`, shared with the
    one-step inference path. The gates' weights are stacked in nn.LSTM's order i, f, g, o under
    nn.LSTM's names and shapes: weight_ih_l{k}[_reverse] (4H, in), weight_hh_l{k} (4H, H),
    bias_ih_l{k} and bias_hh_l{k} (4H,), so state dicts move between the two unchanged.

    Speed: the input terms W_i* x_t + b of all time steps (and both directions) of a layer are
    one matrix product; each step then adds one fused (B, H) x (H, 4H) product for all four gates.

    Inputs and outputs are those of nn.LSTM: a (B, T, in) tensor with batch_first=True, (T, B, in)
    otherwise, or a PackedSequence; an optional initial (h_0, c_0), each (layers * directions, B, H);
    returns (output, (h_n, c_n)). With packed (variable-length) input a row's state freezes after
    its last real step, and the reverse direction starts at each row's last real token, so
    padding never changes real outputs or final states. Dropout applies between layers in training.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout, self.bidirectional = batch_first, float(dropout), bidirectional
        self.num_directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes(layer):
                self.register_parameter(f"weight_ih_{suffix}", nn.Parameter(torch.empty(4 * hidden_size, layer_input)))
                self.register_parameter(f"weight_hh_{suffix}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
                self.register_parameter(f"bias_ih_{suffix}", nn.Parameter(torch.empty(4 * hidden_size)))
                self.register_parameter(f"bias_hh_{suffix}", nn.Parameter(torch.empty(4 * hidden_size)))
        self.reset_parameters()

    def _suffixes(self, layer: int) -> list[str]:
        return [f"l{layer}", f"l{layer}_reverse"][: self.num_directions]

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation: every parameter uniform in +-1/sqrt(H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, bidirectional={self.bidirectional}")

    def forward(self, input: torch.Tensor | PackedSequence, hx: LSTMState | None = None
                ) -> tuple[torch.Tensor | PackedSequence, LSTMState]:
        if isinstance(input, PackedSequence):
            x, lengths = pad_packed_sequence(input)  # (T, B, in), rows in the caller's order
        else:
            if input.dim() != 3:
                raise ValueError(f"ExplicitLSTM expects a 3-D batch, got shape {tuple(input.shape)}")
            x, lengths = (input.transpose(0, 1) if self.batch_first else input), None
        steps, batch = x.shape[:2]
        if hx is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            hx = (zeros, zeros)
        real = None  # (T, B, 1) True at real steps
        if lengths is not None:
            real = (torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1).to(x.device)
        reverse_index = _reverse_within_lengths(steps, batch, lengths, x.device) if self.bidirectional else None

        final_h, final_c = [], []
        layer_input = x
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                layer_input = dropout(layer_input, self.dropout, self.training)
            weights = [layer_weights(self, layer, reverse) for reverse in (False, True)[: self.num_directions]]
            # One product gives every step's input term for all directions: (T, B, D * 4H).
            projected = F.linear(layer_input, torch.cat([w_ih for w_ih, _, _ in weights]),
                                 torch.cat([bias for _, _, bias in weights]))
            outputs = []
            for direction, (_, w_hh, _) in enumerate(weights):
                index = layer * self.num_directions + direction
                inputs = projected[..., direction * 4 * self.hidden_size:(direction + 1) * 4 * self.hidden_size]
                if direction == 1:
                    inputs = _gather_steps(inputs, reverse_index)
                output, h, c = _scan(inputs, w_hh, hx[0][index], hx[1][index], real)
                outputs.append(output if direction == 0 else _gather_steps(output, reverse_index))
                final_h.append(h)
                final_c.append(c)
            layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]  # (T, B, D*H)

        state = (torch.stack(final_h), torch.stack(final_c))
        if isinstance(input, PackedSequence):
            return _packed_like(input, layer_input, lengths), state
        return (layer_input.transpose(0, 1) if self.batch_first else layer_input), state


def _scan(inputs: torch.Tensor, w_hh: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
          real: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run one direction over (T, B, 4H) precomputed input terms; (T, B, H) outputs, final h and c."""
    w_hh_t = w_hh.t()
    # Steps before the shortest row ends are real for every row: no masking needed there.
    all_real_until = inputs.size(0) if real is None else int(real.squeeze(-1).all(dim=1).sum())
    outputs = []
    # unbind, not inputs[t]: the backward of T unbound slices is one stack, where that of T
    # indexed slices fills a zero (T, B, 4H) tensor per step, which is slower (README, "Train").
    for t, input_terms in enumerate(inputs.unbind(0)):
        gates = torch.addmm(input_terms, h, w_hh_t)  # (B, 4H): one product for the four gates
        h_new, c_new = lstm_cell(gates, c)
        if t >= all_real_until:  # past a row's end its state stays as it was
            h_new, c_new = torch.where(real[t], h_new, h), torch.where(real[t], c_new, c)
        h, c = h_new, c_new
        outputs.append(h)
    return torch.stack(outputs), h, c


def _reverse_within_lengths(steps: int, batch: int, lengths: torch.Tensor | None,
                            device: torch.device) -> torch.Tensor:
    """(T, B) step index that reverses each row's real steps and leaves its padding in place."""
    t = torch.arange(steps).unsqueeze(1).expand(steps, batch)
    if lengths is None:
        return (steps - 1 - t).to(device)
    lengths = lengths.unsqueeze(0)
    return torch.where(t < lengths, lengths - 1 - t, t).to(device)


def _gather_steps(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[index[t, b], b] for (T, B, F) values: reordering applied to itself is the identity."""
    return values.gather(0, index.unsqueeze(-1).expand_as(values))


def _packed_like(packed: PackedSequence, padded: torch.Tensor, lengths: torch.Tensor) -> PackedSequence:
    """Pack (T, B, F) outputs (rows in the caller's order) with the batch layout of `packed`."""
    if packed.sorted_indices is not None:
        padded = padded.index_select(1, packed.sorted_indices)
        lengths = lengths[packed.sorted_indices.cpu()]
    data = pack_padded_sequence(padded, lengths, enforce_sorted=True).data
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)


def make_lstm(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
              bidirectional: bool = False, dropout: float = 0.0) -> nn.Module:
    """A batch-first LSTM: PyTorch's fused nn.LSTM, or the gate-by-gate ExplicitLSTM."""
    if cell not in LSTM_CELLS:
        raise UserError(f"model.cell={cell!r} is not one of {', '.join(LSTM_CELLS)}")
    lstm_class = nn.LSTM if cell == "fused" else ExplicitLSTM
    # Dropout acts between layers only; nn.LSTM warns when it is set for a single layer.
    return lstm_class(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                      dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
