"""int8 decoding: a copy of a translation model whose LSTM and linear products run in int8.

Dynamic quantization (weights stored as int8 once; each product quantizes its activations on
the fly, accumulates in int32 and returns fp32) through PyTorch's own API,
`torch.ao.quantization.quantize_dynamic` and the modules it makes (`torch.ao.nn.quantized.dynamic`
Linear and LSTM, fbgemm/x86 kernels). No kernel here is hand-written.

The problem it solves: beam search and greedy decoding step the decoder one token at a time
through `seq2seq.rnn.lstm_step`, which multiplies by the LSTM's weight tensors directly (two
plain products beat a one-step call of the fused nn.LSTM on CPU). `quantize_dynamic` only swaps
whole modules, so a quantized nn.LSTM would speed the encoder and leave the stepwise decoder in
fp32. So the decoder's LSTM becomes an `Int8StepLSTM`: per layer, the input product (with both
biases folded in) and the recurrent product are `DynamicQuantizedLinear` modules made by
`quantize_dynamic` from nn.Linear modules holding those weights, and `lstm_step` calls its
`int8_step` (the cell update, in fp32, is `seq2seq.rnn.lstm_cell`, as in the fp32 model).
Everything else is quantized as whole modules:

    encoder LSTM (fused nn.LSTM)         -> stays fp32 (oneDNN) by default: PyTorch's dynamic
                                            int8 LSTM is slower (quantize_encoder=True)
    attention key projection             -> dynamic int8 Linear (once per batch)
    decoder LSTM, one step               -> Int8StepLSTM: int8 gate products, fp32 cell
    attentional output layer, generator  -> dynamic int8 Linear (every step; the generator is
                                            the largest product: output size x vocabulary)

What stays fp32: embeddings, the bridge (once per sentence), the attention scores and context
(batched matrix-vector products over the source), log-softmax and the search itself. Weights are
quantized per output channel (one scale per row: the four gates of an LSTM have different
ranges), activations per tensor.

Speed depends on the CPU's int8 dot-product instructions (`machine_summary()["cpu_int8_dot_product"]`).
Without them the int8 products gain little over the fp32 products they replace, and the
products are only part of beam search (top-k, log-softmax, beam reordering, the encoder and
attention are the rest), so int8 decoding there gains little.
VNNI or AMX-INT8 makes the int8 products several times faster; that is where `precision=int8`
pays (figures: README, "Translate").

The loaded model is never changed: `quantize_for_decoding` works on a deep copy, and nothing is
written to the model directory. The int8 copy is for decoding (`decode_step`, `encode`);
teacher-forced training through it is not supported.

API status (torch 2.13): `torch.ao.quantization` warns that it is deprecated in favour of
torchao's `quantize_` (a separate package whose CPU int8 path relies on torch.compile), and the
quantized dtypes it builds on (qint8) warn likewise (pytorch/pytorch#184982), but both are
present and working in 2.13; the warnings are silenced here, in this one place. When they go,
`_quantize_linear` (and `_quantize_lstm`) are what to port.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from seq2seq.rnn import LSTMState, layer_weights, lstm_cell

QUANTIZED_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


def int8_supported() -> bool:
    """Whether this PyTorch build has a CPU engine for dynamic int8 products."""
    return any(engine in torch.backends.quantized.supported_engines for engine in QUANTIZED_ENGINES)


def _quantize(module: nn.Module, types: dict) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantized tensor creation|"
                                r"quantize_per_tensor).*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return quantize_dynamic(nn.Sequential(module), types, inplace=False)[0]


def _quantize_linear(module: nn.Linear) -> nn.Module:
    """An nn.Linear as a dynamic int8 Linear with per-output-channel weight scales."""
    from torch.ao.quantization import per_channel_dynamic_qconfig

    return _quantize(module, {nn.Linear: per_channel_dynamic_qconfig})


def _quantize_lstm(module: nn.LSTM) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig

    return _quantize(module, {nn.LSTM: default_dynamic_qconfig})


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    layer = nn.Linear(weight.size(1), weight.size(0), bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return _quantize_linear(layer)


class Int8StepLSTM(nn.Module):
    """The decoder's LSTM for stepwise inference with int8 gate products.

    For layer l: gates = Q(W_ih) x + Q(W_hh) h + (b_ih + b_hh), then the fp32 LSTM cell, with Q
    dynamic int8 quantization. Two products per layer rather than one over [x; h]: each input
    gets its own activation scale (embeddings and hidden states have different ranges).
    """

    def __init__(self, rnn: nn.Module, fuse_gates: bool = False, table_columns: int = 0) -> None:
        """`table_columns`: the first layer's leading input columns (the embedding) whose share of
        the gates, biases included, the caller looks up (`int8_step(..., input_gates=)`); the
        first layer then multiplies only the remaining columns, in int8."""
        super().__init__()
        self.fuse_gates = fuse_gates
        if getattr(rnn, "bidirectional", False) or not getattr(rnn, "batch_first", True):
            raise ValueError("Int8StepLSTM needs a unidirectional, batch-first LSTM (a decoder's)")
        self.num_layers, self.hidden_size = rnn.num_layers, rnn.hidden_size
        self.batch_first, self.bidirectional, self.dropout = True, False, float(rnn.dropout)
        inputs, recurrent = [], []
        for layer in range(rnn.num_layers):
            w_ih, w_hh, bias = (t.detach().float() for t in layer_weights(rnn, layer))
            if fuse_gates:  # one product over [x; h]: one call, one activation scale for both
                inputs.append(_linear(torch.cat([w_ih, w_hh], dim=1), bias))
            else:
                inputs.append(_linear(w_ih, bias))
                recurrent.append(_linear(w_hh, None))
        self.input_products = nn.ModuleList(inputs)
        self.recurrent_products = nn.ModuleList(recurrent)
        self.table_columns = table_columns
        self.fed_product = None  # layer 0's product over the columns after the table's, no bias
        if table_columns:
            w_ih, w_hh, _ = (t.detach().float() for t in layer_weights(rnn, 0))
            self.recurrent_0 = _linear(w_hh, None)
            if w_ih.size(1) > table_columns:
                self.fed_product = _linear(w_ih[:, table_columns:].contiguous(), None)

    def int8_step(self, x: torch.Tensor | None, state: LSTMState, input_gates: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, LSTMState]:
        """(B, I) inputs -> (B, H) top-layer output and the new (h, c), each (L, B, H).

        With `input_gates` (B, 4H), the embedding's looked-up share of the first layer's gates, `x`
        holds only the remaining input columns (None when there are none)."""
        h, c = state
        hs, cs = [], []
        layer_input = None if x is None else x.float()
        for layer in range(self.num_layers):
            if layer == 0 and input_gates is not None:
                gates = input_gates + self.recurrent_0(h[0].float())
                if layer_input is not None:
                    gates = gates + self.fed_product(layer_input)
            elif self.fuse_gates:
                gates = self.input_products[layer](torch.cat([layer_input, h[layer].float()], dim=1))
            else:
                gates = self.input_products[layer](layer_input) + self.recurrent_products[layer](h[layer].float())
            h_new, c_new = lstm_cell(gates, c[layer].float())
            hs.append(h_new)
            cs.append(c_new)
            layer_input = h_new
        return layer_input, (torch.stack(hs), torch.stack(cs))

    def forward(self, input: torch.Tensor, hx: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """A (B, T, I) batch step by step (what nn.LSTM would return, for callers that use it)."""
        outputs, state = [], hx
        for t in range(input.size(1)):
            output, state = self.int8_step(input[:, t], state)
            outputs.append(output)
        return torch.stack(outputs, dim=1), state


def quantize_for_decoding(model: nn.Module, quantize_encoder: bool = False, fuse_gates: bool = False) -> nn.Module:
    """An eval-mode int8 copy of a `seq2seq.tasks.translation.model.Seq2Seq` for CPU decoding; `model` is untouched.

    The encoder's LSTM stays fp32 unless `quantize_encoder`: PyTorch's dynamic int8 LSTM runs
    its cell as separate element-wise ops per step, which is slower than the fused fp32 (oneDNN)
    LSTM over a whole batch of sources (README, "Translate").
    """
    if not int8_supported():
        from seq2seq.errors import UserError

        raise UserError("precision=int8 needs a PyTorch build with a quantized CPU engine (x86/fbgemm/onednn/qnnpack)")
    quantized = copy.deepcopy(model).cpu().eval()
    encoder, decoder = quantized.encoder, quantized.decoder
    if quantize_encoder and isinstance(encoder.rnn, nn.LSTM):
        encoder.rnn = _quantize_lstm(encoder.rnn)
    attention = decoder.attention
    if attention is not None:
        for name in ("key_projection", "query_projection"):
            if isinstance(getattr(attention, name, None), nn.Linear):
                setattr(attention, name, _quantize_linear(getattr(attention, name)))
    # The embedding's share of the first layer's gates is looked up from a table built from the
    # fp32 weights (exact, and no product at all), as the fp32 decoder does.
    table = decoder.embedding_gates()
    if table is not None:
        decoder.frozen_gate_table = table.detach().clone()
    decoder.rnn = Int8StepLSTM(decoder.rnn, fuse_gates,
                               table_columns=decoder.embedding.embedding_dim if table is not None else 0)
    decoder.output_layer = _quantize_linear(decoder.output_layer)
    # Tied to the target embeddings in the fp32 model; the embedding lookup keeps the fp32 table.
    # The fp32 layer stays beside it: a shortlist quantizes its rows per batch (`restricted_linear`).
    quantized.float_generator = quantized.generator
    quantized.generator = _quantize_linear(quantized.generator)
    return quantized


def restricted_linear(layer: nn.Module, ids: torch.Tensor, int8: bool) -> nn.Module:
    """The output rows `ids` of an nn.Linear, as a new Linear (dynamic int8 with `int8`).

    Quantization is per output row, so the int8 rows equal those of the whole quantized layer."""
    # skip_init: the rows are copied in next; a random init would cost a millisecond per batch.
    restricted = torch.nn.utils.skip_init(nn.Linear, layer.in_features, len(ids), bias=layer.bias is not None,
                                          device=layer.weight.device)
    with torch.no_grad():
        restricted.weight.copy_(layer.weight.index_select(0, ids))
        if layer.bias is not None:
            restricted.bias.copy_(layer.bias.index_select(0, ids))
    return _quantize_linear(restricted) if int8 else restricted
