"""The exported ONNX graphs compute what the PyTorch modules compute (within 1e-4), for every
attention, decoder placement, cell and pooling, on batches of varied lengths and sizes."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from seq2seq import onnx_graphs
from seq2seq.tasks.classification.model import LSTMClassifier
from seq2seq.tasks.translation.decoder import DecoderState
from tests.helpers import random_batch, tiny_lm, tiny_model

TOLERANCE = 1e-4


def session(graph):
    return onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def outputs(sess, feeds) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def close(actual: np.ndarray, expected: torch.Tensor) -> None:
    assert actual.shape == tuple(expected.shape)
    np.testing.assert_allclose(actual, expected.detach().numpy(), atol=TOLERANCE, rtol=0)


MODELS = [
    ("luong_general", {}),
    ("luong_dot", {}),
    ("luong_concat", {"input_feeding": True}),
    ("bahdanau", {}),
    ("bahdanau", {"input_feeding": True, "decoder_layers": 1}),
    ("none", {"bidirectional": False}),
    ("luong_general", {"cell": "explicit", "tie_output_embeddings": False}),
]


@pytest.mark.parametrize(("attention", "overrides"), MODELS)
@pytest.mark.parametrize("lengths", [[7, 3, 1, 5], [2], [9, 9, 4]])
def test_encoder_and_decoder_steps_match_pytorch(attention, overrides, lengths):
    model = tiny_model(attention, **overrides)
    src, src_lengths = random_batch(lengths, seed=len(lengths))
    encoder = session(onnx_graphs.translation_encoder(model))
    step = session(onnx_graphs.translation_decoder_step(model))
    output_layer = session(onnx_graphs.translation_output_layer(model))
    with torch.no_grad():
        enc, state = model.encode(src, src_lengths)
    got = outputs(encoder, {"src": src.numpy(), "src_lengths": src_lengths.numpy()})
    real = src.numpy() != 0
    np.testing.assert_allclose(got["memory"][real], enc.memory.numpy()[real], atol=TOLERANCE, rtol=0)
    assert np.all(got["memory"][~real] == 0)  # padding positions, as pad_packed_sequence leaves them
    close(got["h"], state.h)
    close(got["c"], state.c)
    if onnx_graphs.attention_has_keys(model):
        np.testing.assert_allclose(got["keys"][real], enc.keys.numpy()[real], atol=TOLERANCE, rtol=0)

    # Three steps with a shortlist of pieces, feeding back what each side computed itself.
    vocab = np.array([0, 1, 2, 3, 5, 8, 13, 21, 28], dtype=np.int64)
    weight, bias = output_layer.run(None, {"vocab": vocab})
    projection = model.output_projection(torch.from_numpy(vocab))
    h, c = got["h"], got["c"]
    feed = np.zeros((len(lengths), model.decoder.output_size), dtype=np.float32)
    tokens = torch.full((len(lengths),), 2, dtype=torch.long)
    for _ in range(3):
        with torch.no_grad():
            logits, state, weights = model.step_logits(tokens, state, enc, projection)
        feeds = {"tokens": tokens.numpy(), "h": h, "c": c, "output_weight": weight, "output_bias": bias,
                 "k": np.array([4], dtype=np.int64)}
        if model.decoder.input_feeding:
            feeds["feed"] = feed
        if attention != "none":
            feeds.update(memory=got["memory"], mask=enc.mask.numpy())
            if "keys" in got:
                feeds["keys"] = got["keys"]
        out = outputs(step, feeds)
        close(out["logits"], logits)
        close(out["h_out"], state.h)
        close(out["c_out"], state.c)
        np.testing.assert_allclose(out["log_norm"][:, 0], torch.logsumexp(logits, -1).numpy(), atol=TOLERANCE)
        banned = logits.clone()
        banned[:, :3] = float("-inf")
        best = banned.topk(4, dim=1)
        close(out["top_scores"], best.values)
        assert (out["top_tokens"] == best.indices.numpy()).all()
        if weights is not None:
            close(out["attention"], weights)
        if model.decoder.input_feeding:
            close(out["feed_out"], state.feed)
            feed = out["feed_out"]
        h, c = out["h_out"], out["c_out"]
        tokens = torch.from_numpy(vocab[out["top_tokens"][:, 0]])
        state = DecoderState(torch.from_numpy(h), torch.from_numpy(c),
                             None if state.feed is None else torch.from_numpy(feed))


@pytest.mark.parametrize("rows", [1, 3])
def test_language_model_step_matches_pytorch(rows):
    model = tiny_lm(30).eval()
    step = session(onnx_graphs.language_model_step(model))
    state = model.initial_state(rows)
    h, c = state[0].numpy(), state[1].numpy()
    tokens = torch.arange(4, 4 + rows)
    for _ in range(4):
        with torch.no_grad():
            logits, state = model(tokens.unsqueeze(1), state)
        got = outputs(step, {"tokens": tokens.numpy(), "h": h, "c": c})
        close(got["logits"], logits[:, 0])
        close(got["h_out"], state[0])
        h, c = got["h_out"], got["c_out"]
        tokens = logits[:, 0].argmax(-1)


@pytest.mark.parametrize("pooling", ["mean", "final", "attention"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_classifier_matches_pytorch(pooling, bidirectional):
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=23, num_classes=3, embed_dim=8, hidden_size=6, num_layers=2,
                           bidirectional=bidirectional, pooling=pooling, attention_size=5, dropout=0.0).eval()
    graph = session(onnx_graphs.classifier(model))
    for lengths in ([6, 2, 4], [1], [5, 5]):
        tokens, token_lengths = random_batch(lengths, seed=sum(lengths))
        with torch.no_grad():
            logits, weights = model(tokens, token_lengths, return_weights=True)
        got = outputs(graph, {"tokens": tokens.numpy(), "lengths": token_lengths.numpy()})
        close(got["logits"], logits)
        if pooling == "attention":
            close(got["weights"], weights)
