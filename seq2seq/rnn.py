"""One LSTM time step at inference, the fastest way for the situation.

Decoding and generation call the LSTM once per token. PyTorch's fused nn.LSTM pays a fixed cost
per call that dominates one small step in fp32 on CPU; two plain matrix products per layer do
not. In bf16 autocast the fused kernel's bf16 path outweighs that cost once a batch has enough
rows (README, "Benchmarks"). So the plain step is used except where the fused kernel wins: on
GPUs, and in bf16 autocast for batches of 16 rows or more.
"""

from __future__ import annotations

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (layers, B, H)


def layer_weights(rnn: nn.Module, layer: int, reverse: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(4H, I) input weights, (4H, H) recurrent weights and the summed (4H,) bias of one layer.

    `rnn` is an nn.LSTM or anything with its parameter names (seq2seq.explicit_lstm.ExplicitLSTM).
    """
    suffix = f"l{layer}_reverse" if reverse else f"l{layer}"
    bias = getattr(rnn, f"bias_ih_{suffix}") + getattr(rnn, f"bias_hh_{suffix}")
    return getattr(rnn, f"weight_ih_{suffix}"), getattr(rnn, f"weight_hh_{suffix}"), bias


def lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> LSTMState:
    """The new (h, c) from the (B, 4H) gate pre-activations, stacked i, f, g, o as in nn.LSTM.

    c' = s(f)*c + s(i)*tanh(g), h' = s(o)*tanh(c'), with s the logistic sigmoid.
    """
    i, f, g, o = gates.chunk(4, dim=1)
    forget, remember, candidate = torch.sigmoid(f), torch.sigmoid(i), torch.tanh(g)
    c_new = forget * c + remember * candidate
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


def plain_lstm_step(rnn: nn.Module, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
    """(B, I) inputs -> (B, H) top-layer output and the new state, with the weights of `rnn`."""
    h, c = state
    hs, cs = [], []
    layer_input = x
    for layer in range(rnn.num_layers):
        w_ih, w_hh, bias = layer_weights(rnn, layer)
        gates = torch.addmm(bias, layer_input, w_ih.t()) + torch.mm(h[layer], w_hh.t())  # (B, 4H)
        h_new, c_new = lstm_cell(gates, c[layer])
        hs.append(h_new)
        cs.append(c_new)
        layer_input = h_new
    return layer_input, (torch.stack(hs), torch.stack(cs))


def lstm_step_from_gates(rnn: nn.Module, input_gates: torch.Tensor, fed: torch.Tensor | None, state: LSTMState
                         ) -> tuple[torch.Tensor, LSTMState]:
    """One inference step whose first layer's share of the input is already in `input_gates`.

    The decoder's input is [embedding of the previous token; fed], and the embedding's product
    with the first layer's weights (plus both biases) depends only on the token: it is looked up
    from a table (`Decoder.embedding_gates`) instead of multiplied at every step. `fed` (B, F)
    is the rest of the input (attention context, fed-back output), the last F input columns;
    None when there is none.
    """
    int8_step = getattr(rnn, "int8_step", None)
    if int8_step is not None:
        return int8_step(fed, state, input_gates=input_gates)
    h, c = state
    hs, cs = [], []
    layer_input = None
    for layer in range(rnn.num_layers):
        w_ih, w_hh, bias = layer_weights(rnn, layer)
        if layer == 0:
            gates = torch.addmm(input_gates, h[0], w_hh.t())
            if fed is not None:
                gates = gates.addmm_(fed, w_ih[:, w_ih.size(1) - fed.size(1):].t())
        else:
            gates = torch.addmm(bias, layer_input, w_ih.t()).addmm_(h[layer], w_hh.t())
        h_new, c_new = lstm_cell(gates, c[layer])
        hs.append(h_new)
        cs.append(c_new)
        layer_input = h_new
    return layer_input, (torch.stack(hs), torch.stack(cs))


def uses_fused_step(x: torch.Tensor) -> bool:
    """Whether one inference step goes through the fused nn.LSTM kernel (see the module text)."""
    return x.is_cuda or (torch.is_autocast_enabled(x.device.type) and x.size(0) >= 16)


def lstm_step(rnn: nn.Module, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
    """One inference step of a batch-first `rnn` for (B, I) inputs; (B, H) output and new state."""
    int8_step = getattr(rnn, "int8_step", None)  # precision=int8: seq2seq.quantization.Int8StepLSTM
    if int8_step is not None:
        return int8_step(x, state)
    if uses_fused_step(x):
        output, state = rnn(x.unsqueeze(1), state)
        return output.squeeze(1), state
    return plain_lstm_step(rnn, x, state)
