"""The networks of a model directory as ONNX graphs, written node by node from the trained weights.

Why by hand rather than with torch.onnx: the encoder reads sources through packed sequences of
any order (`enforce_sorted=False`), which the tracing exporters unroll into loops or refuse, and
inference is a loop of single decoder steps that Python drives (the search), not one graph. Written
out here, the encoder is ONNX's own LSTM operator with `sequence_lens` (the same padding
semantics as packing: real outputs and final states never see the padding), the decoder step is
its equations in plain operators, and every graph is small enough to read.

Graphs (opset `OPSET`; names of inputs and outputs are the contract with seq2seq.portable):

  translation   encoder.onnx       src (B, S) int64, src_lengths (B,) int64
                                   -> memory (B, S, K), [keys (B, S, A)], h (L, B, H), c (L, B, H)
                decoder_step.onnx  tokens (N,) int64, h, c, [feed (N, O)], [memory, mask (N, S) bool,
                                   [keys]], output_weight (O, V'), output_bias (V',)
                                   k (1,) int64
                                   -> logits (N, V'), log_norm (N, 1), top_scores (N, k) and
                                   top_tokens (N, k) (pad/unk/bos banned), h_out, c_out,
                                   [feed_out], [attention (N, S)]
                output_layer.onnx  vocab (V',) int64 -> output_weight (O, V'), output_bias (V',):
                                   the output layer over a shortlist's pieces (all: arange(V))
  language_model  lm_step.onnx     tokens (N,) int64, h, c -> logits (N, V), h_out, c_out
  classification  classifier.onnx  tokens (B, S) int64, lengths (B,) int64 -> logits (B, C),
                                   [weights (B, S)] (attention pooling)

Only inference is exported: dropout is the identity.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from seq2seq.rnn import layer_weights

# Opset 17: supported by every onnxruntime release since 1.11 and by onnxruntime-web.
OPSET = 17

FLOAT, INT64, INT32, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL


def as_array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


class GraphBuilder:
    """Collects nodes, weights, inputs and outputs; `op` returns the names of a node's outputs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0

    def _fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value: np.ndarray | torch.Tensor, stem: str = "const") -> str:
        array = as_array(value) if isinstance(value, torch.Tensor) else np.asarray(value)
        name = self._fresh(stem)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values: list[int]) -> str:
        return self.const(np.array(values, dtype=np.int64), "shape")

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attributes) -> str | list[str]:
        names = [self._fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def input(self, name: str, elem_type: int, shape: list[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, value: str, elem_type: int, shape: list[int | str]) -> None:
        self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET)]
        # The lowest IR version the opset allows, not the onnx package's newest: runtimes a release
        # behind (onnxruntime-web 1.31 reads IR 13 at most) refuse a graph stamped newer than they know.
        model = helper.make_model(graph, opset_imports=opsets, producer_name="seq2seq",
                                  ir_version=helper.find_min_ir_version_for(opsets))
        onnx.checker.check_model(model)
        return model

    # ------------------------------------------------------------------ layers
    def linear(self, x: str, weight: torch.Tensor, bias: torch.Tensor | None = None) -> str:
        """x W^T + b for a torch (out, in) weight."""
        y = self.op("MatMul", x, self.const(weight.t(), "weight"))
        return y if bias is None else self.op("Add", y, self.const(bias, "bias"))

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", x, self.ints([axis]))

    def squeeze(self, x: str, axis: int) -> str:
        return self.op("Squeeze", x, self.ints([axis]))

    def lstm_step(self, rnn: torch.nn.Module, x: str, h: str, c: str, layers: int) -> tuple[str, str, str]:
        """One step of a stacked LSTM for (N, I) inputs and (L, N, H) states: the top layer's
        output and the new (L, N, H) states (the equations of seq2seq.rnn.lstm_cell)."""
        hidden = rnn.hidden_size
        new_h, new_c = [], []
        layer_input = x
        for layer in range(layers):
            w_ih, w_hh, bias = layer_weights(rnn, layer)
            h_prev = self.op("Gather", h, self.const(np.array(layer, dtype=np.int64)), axis=0)  # (N, H)
            c_prev = self.op("Gather", c, self.const(np.array(layer, dtype=np.int64)), axis=0)
            gates = self.op("Add", self.linear(layer_input, w_ih, bias), self.linear(h_prev, w_hh))
            i, f, g, o = self.op("Split", gates, self.ints([hidden] * 4), axis=1, outputs=4)
            c_next = self.op("Add", self.op("Mul", self.op("Sigmoid", f), c_prev),
                             self.op("Mul", self.op("Sigmoid", i), self.op("Tanh", g)))
            h_next = self.op("Mul", self.op("Sigmoid", o), self.op("Tanh", c_next))
            new_h.append(self.unsqueeze(h_next, 0))
            new_c.append(self.unsqueeze(c_next, 0))
            layer_input = h_next
        return layer_input, self.stack(new_h), self.stack(new_c)

    def stack(self, parts: list[str]) -> str:
        return parts[0] if len(parts) == 1 else self.op("Concat", *parts, axis=0)

    def lstm_over_sequence(self, rnn: torch.nn.Module, embedded: str, lengths: str, layers: int,
                           bidirectional: bool) -> tuple[str, str, str]:
        """A (B, S, E) batch through a (bi)LSTM with ONNX's LSTM operator, which like packing
        stops each row at its length (and starts the backward direction there). Returns
        memory (B, S, D*H) and the top layer's final h and c as (B, D*H)."""
        hidden = rnn.hidden_size
        directions = 2 if bidirectional else 1
        x = self.op("Transpose", embedded, perm=[1, 0, 2])  # (S, B, E): the operator's default layout
        sequence_lens = self.op("Cast", lengths, to=INT32)
        # PyTorch stacks the gates i, f, g, o; ONNX expects i, o, f, c.
        order = np.concatenate([np.arange(k * hidden, (k + 1) * hidden) for k in (0, 3, 1, 2)])
        final_h = final_c = None
        for layer in range(layers):
            weights, recurrent, biases = [], [], []
            for reverse in ([False, True] if bidirectional else [False]):
                suffix = f"l{layer}_reverse" if reverse else f"l{layer}"
                w_ih, w_hh, _ = layer_weights(rnn, layer, reverse)
                weights.append(as_array(w_ih)[order])
                recurrent.append(as_array(w_hh)[order])
                biases.append(np.concatenate([as_array(getattr(rnn, f"bias_ih_{suffix}"))[order],
                                              as_array(getattr(rnn, f"bias_hh_{suffix}"))[order]]))
            y, final_h, final_c = self.op(
                "LSTM", x, self.const(np.stack(weights), "W"), self.const(np.stack(recurrent), "R"),
                self.const(np.stack(biases), "B"), sequence_lens, outputs=3, hidden_size=hidden,
                direction="bidirectional" if bidirectional else "forward")
            # (S, D, B, H) -> (S, B, D*H): both directions side by side, as nn.LSTM's output
            x = self.op("Reshape", self.op("Transpose", y, perm=[0, 2, 1, 3]), self.ints([0, 0, directions * hidden]))
        memory = self.op("Transpose", x, perm=[1, 0, 2])  # (B, S, D*H)

        def side_by_side(state: str) -> str:  # (D, B, H) -> (B, D*H)
            return self.op("Reshape", self.op("Transpose", state, perm=[1, 0, 2]), self.ints([0, directions * hidden]))

        return memory, side_by_side(final_h), side_by_side(final_c)

    def attend(self, attention: torch.nn.Module, query: str, keys: str | None, memory: str, mask: str
               ) -> tuple[str, str]:
        """(N, Hq) query over (N, S, K) memory -> context (N, K) and weights (N, S)
        (seq2seq.attention: dot, general and additive scores, masked softmax)."""
        from seq2seq.attention import AdditiveAttention

        if isinstance(attention, AdditiveAttention):
            projected = self.unsqueeze(self.linear(query, attention.query_projection.weight,
                                                   attention.query_projection.bias), 1)  # (N, 1, A)
            energy = self.op("Tanh", self.op("Add", projected, keys))  # (N, S, A)
            scores = self.squeeze(self.linear(energy, attention.energy.weight), 2)  # (N, S)
        else:  # dot and general: q . k, the keys already projected for general
            scores = self.squeeze(self.op("MatMul", keys or memory, self.unsqueeze(query, 2)), 2)  # (N, S)
        scores = self.op("Where", mask, scores, self.const(np.array(-np.inf, dtype=np.float32)))
        weights = self.op("Softmax", scores, axis=-1)
        context = self.squeeze(self.op("MatMul", self.unsqueeze(weights, 1), memory), 1)  # (N, K)
        return context, weights


# ---------------------------------------------------------------------- translation
def attention_has_keys(model) -> bool:
    """Whether the decoder reads projected keys besides the memory (general and additive)."""
    attention = model.decoder.attention
    return attention is not None and hasattr(attention, "key_projection")


def translation_encoder(model) -> onnx.ModelProto:
    g = GraphBuilder("seq2seq_encoder")
    encoder, decoder = model.encoder, model.decoder
    src = g.input("src", INT64, ["batch", "source"])
    lengths = g.input("src_lengths", INT64, ["batch"])
    embedded = g.op("Gather", g.const(encoder.embedding.weight, "src_embedding"), src, axis=0)
    memory, final_h, final_c = g.lstm_over_sequence(encoder.rnn, embedded, lengths, encoder.rnn.num_layers,
                                                    encoder.num_directions == 2)
    size, layers, hidden = decoder.num_layers * decoder.hidden_size, decoder.num_layers, decoder.hidden_size
    bridge_w, bridge_b = decoder.bridge.weight, decoder.bridge.bias
    h = g.op("Tanh", g.linear(final_h, bridge_w[:size], bridge_b[:size]))  # (B, L*H)
    c = g.linear(final_c, bridge_w[size:], bridge_b[size:])

    def per_layer(state: str) -> str:  # (B, L*H) -> (L, B, H)
        return g.op("Transpose", g.op("Reshape", state, g.ints([0, layers, hidden])), perm=[1, 0, 2])

    memory_width = encoder.output_size
    g.output("memory", memory, FLOAT, ["batch", "source", memory_width])
    if attention_has_keys(model):
        key_projection = decoder.attention.key_projection.weight
        g.output("keys", g.linear(memory, key_projection), FLOAT, ["batch", "source", key_projection.size(0)])
    g.output("h", per_layer(h), FLOAT, [layers, "batch", hidden])
    g.output("c", per_layer(c), FLOAT, [layers, "batch", hidden])
    return g.model()


def translation_decoder_step(model) -> onnx.ModelProto:
    g = GraphBuilder("seq2seq_decoder_step")
    decoder = model.decoder
    layers, hidden, out_size = decoder.num_layers, decoder.hidden_size, decoder.output_size
    attention = decoder.attention
    tokens = g.input("tokens", INT64, ["rows"])
    h = g.input("h", FLOAT, [layers, "rows", hidden])
    c = g.input("c", FLOAT, [layers, "rows", hidden])
    feed = g.input("feed", FLOAT, ["rows", out_size]) if decoder.input_feeding else None
    memory = mask = keys = None
    if attention is not None:
        memory = g.input("memory", FLOAT, ["rows", "source", model.encoder.output_size])
        mask = g.input("mask", BOOL, ["rows", "source"])
        if attention_has_keys(model):
            keys = g.input("keys", FLOAT, ["rows", "source", attention.key_projection.weight.size(0)])
    output_weight = g.input("output_weight", FLOAT, [out_size, "vocab"])
    output_bias = g.input("output_bias", FLOAT, ["vocab"])
    width = g.input("k", INT64, [1])

    inputs = [g.op("Gather", g.const(decoder.embedding.weight, "tgt_embedding"), tokens, axis=0)]  # (N, E)
    context = weights = None
    if decoder.attend_before_rnn:  # Bahdanau: the previous top state asks, the context joins the input
        top = g.op("Gather", h, g.const(np.array(layers - 1, dtype=np.int64)), axis=0)
        context, weights = g.attend(attention, top, keys, memory, mask)
        inputs.append(context)
    if feed is not None:
        inputs.append(feed)
    rnn_in = inputs[0] if len(inputs) == 1 else g.op("Concat", *inputs, axis=1)
    top, h_out, c_out = g.lstm_step(decoder.rnn, rnn_in, h, c, layers)
    if attention is not None and context is None:  # Luong: the new state asks
        context, weights = g.attend(attention, top, keys, memory, mask)
    features = top if context is None else g.op("Concat", top, context, axis=1)
    output = g.op("Tanh", g.linear(features, decoder.output_layer.weight, decoder.output_layer.bias))  # (N, O)
    logits = g.op("Add", g.op("MatMul", output, output_weight), output_bias)
    # The searches' part of the step, so that only k candidates per row leave the graph: the
    # normalizer (before any ban), then the k best pieces with pad, unk and bos banned (ids 0..2
    # in any shortlist too). TopK puts the lower id first among equal scores, as the searches do.
    log_norm = g.op("ReduceLogSumExp", logits, axes=[1], keepdims=1)
    columns = g.op("Range", g.const(np.array(0, dtype=np.int64)),
                   g.op("Gather", g.op("Shape", logits), g.const(np.array(1, dtype=np.int64)), axis=0),
                   g.const(np.array(1, dtype=np.int64)))
    banned = g.op("Where", g.op("Less", columns, g.const(np.array(3, dtype=np.int64))),
                  g.const(np.array(-np.inf, dtype=np.float32)), logits)
    top_scores, top_tokens = g.op("TopK", banned, width, axis=1, largest=1, sorted=1, outputs=2)

    g.output("logits", logits, FLOAT, ["rows", "vocab"])
    g.output("log_norm", log_norm, FLOAT, ["rows", 1])
    g.output("top_scores", top_scores, FLOAT, ["rows", "k"])
    g.output("top_tokens", top_tokens, INT64, ["rows", "k"])
    g.output("h_out", h_out, FLOAT, [layers, "rows", hidden])
    g.output("c_out", c_out, FLOAT, [layers, "rows", hidden])
    if feed is not None:
        g.output("feed_out", output, FLOAT, ["rows", out_size])
    if weights is not None:
        g.output("attention", weights, FLOAT, ["rows", "source"])
    return g.model()


def translation_output_layer(model) -> onnx.ModelProto:
    g = GraphBuilder("seq2seq_output_layer")
    vocab = g.input("vocab", INT64, ["vocab"])
    rows = g.op("Gather", g.const(model.generator.weight, "generator_weight"), vocab, axis=0)  # (V', O)
    g.output("output_weight", g.op("Transpose", rows, perm=[1, 0]), FLOAT, [model.decoder.output_size, "vocab"])
    g.output("output_bias", g.op("Gather", g.const(model.generator.bias, "generator_bias"), vocab, axis=0),
             FLOAT, ["vocab"])
    return g.model()


# ------------------------------------------------------------------- other tasks
def language_model_step(model) -> onnx.ModelProto:
    g = GraphBuilder("lstm_lm_step")
    layers, hidden = model.num_layers, model.hidden_size
    tokens = g.input("tokens", INT64, ["rows"])
    h = g.input("h", FLOAT, [layers, "rows", hidden])
    c = g.input("c", FLOAT, [layers, "rows", hidden])
    embedded = g.op("Gather", g.const(model.embedding.weight, "embedding"), tokens, axis=0)
    top, h_out, c_out = g.lstm_step(model.lstm, embedded, h, c, layers)
    g.output("logits", g.linear(top, model.output.weight, model.output.bias), FLOAT, ["rows", model.vocab_size])
    g.output("h_out", h_out, FLOAT, [layers, "rows", hidden])
    g.output("c_out", c_out, FLOAT, [layers, "rows", hidden])
    return g.model()


def classifier(model) -> onnx.ModelProto:
    from seq2seq.tasks.classification.model import AttentionPooling, MeanPooling

    g = GraphBuilder("lstm_classifier")
    encoder = model.encoder
    tokens = g.input("tokens", INT64, ["batch", "length"])
    lengths = g.input("lengths", INT64, ["batch"])
    embedded = g.op("Gather", g.const(encoder.embedding.weight, "embedding"), tokens, axis=0)
    memory, final_h, _ = g.lstm_over_sequence(encoder.rnn, embedded, lengths, encoder.rnn.num_layers,
                                              encoder.num_directions == 2)
    # mask[b, s] = s < lengths[b]
    positions = g.op("Range", g.const(np.array(0, dtype=np.int64)),
                     g.op("Gather", g.op("Shape", tokens), g.const(np.array(1, dtype=np.int64)), axis=0),
                     g.const(np.array(1, dtype=np.int64)))
    mask = g.op("Less", g.unsqueeze(positions, 0), g.unsqueeze(lengths, 1))  # (B, S)
    weights = None
    pooling = model.pooling
    if isinstance(pooling, AttentionPooling):
        energy = g.op("Tanh", g.linear(memory, pooling.project.weight, pooling.project.bias))
        scores = g.squeeze(g.linear(energy, pooling.score.weight), 2)
        scores = g.op("Where", mask, scores, g.const(np.array(-np.inf, dtype=np.float32)))
        weights = g.op("Softmax", scores, axis=-1)
        pooled = g.squeeze(g.op("MatMul", g.unsqueeze(weights, 1), memory), 1)
    elif isinstance(pooling, MeanPooling):
        real = g.unsqueeze(g.op("Cast", mask, to=FLOAT), 2)  # (B, S, 1)
        total = g.op("ReduceSum", g.op("Mul", memory, real), g.ints([1]), keepdims=0)
        count = g.op("Max", g.op("ReduceSum", real, g.ints([1]), keepdims=0),
                     g.const(np.array(1.0, dtype=np.float32)))
        pooled = g.op("Div", total, count)
    else:
        pooled = final_h
    g.output("logits", g.linear(pooled, model.output.weight, model.output.bias), FLOAT,
             ["batch", model.output.out_features])
    if weights is not None:
        g.output("weights", weights, FLOAT, ["batch", "length"])
    return g.model()
