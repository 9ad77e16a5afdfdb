"""precision=int8: dynamic int8 decoding keeps the stepwise path, matches fp32 closely, and never
changes the loaded model or its directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from seq2seq.errors import UserError
from seq2seq.metrics import score_corpus
from seq2seq.quantization import Int8StepLSTM, quantize_for_decoding
from seq2seq.rnn import lstm_step, plain_lstm_step
from seq2seq.tasks.translation.api import Translator
from seq2seq.tasks.translation.search import decode
from seq2seq.text import read_lines
from tests.helpers import random_batch, tiny_model


def directory_hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fuse_gates", [False, True])
def test_int8_step_is_close_to_the_fp32_step_and_is_what_lstm_step_runs(fuse_gates):
    torch.manual_seed(0)
    rnn = nn.LSTM(16, 32, num_layers=2, batch_first=True).eval()
    quantized = Int8StepLSTM(rnn, fuse_gates)
    x = torch.randn(5, 16)
    state = (torch.randn(2, 5, 32).tanh(), torch.randn(2, 5, 32))
    with torch.no_grad():
        expected, (h, c) = plain_lstm_step(rnn, x, state)
        got, (h8, c8) = lstm_step(quantized, x, state)
    assert got.shape == expected.shape and h8.shape == h.shape and c8.shape == c.shape
    assert (got - expected).abs().max() < 0.05
    assert (c8 - c).abs().max() < 0.1
    assert not torch.equal(got, expected)  # the int8 products did run
    # A whole sequence through forward() is the same function stepped.
    seq = torch.randn(5, 3, 16)
    with torch.no_grad():
        out, _ = quantized(seq, state)
        ref, _ = rnn(seq, state)
    assert (out - ref).abs().max() < 0.1


def test_quantized_copy_leaves_the_model_alone_and_decodes():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_for_decoding(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.decoder.rnn, nn.LSTM) and isinstance(quantized.decoder.rnn, Int8StepLSTM)
    assert model.generator.weight is model.decoder.embedding.weight  # still tied in the fp32 model
    assert type(quantized.generator).__module__ == "torch.ao.nn.quantized.dynamic.modules.linear"
    assert isinstance(quantized.encoder.rnn, nn.LSTM)  # fp32 by default: the int8 LSTM is slower
    everything = quantize_for_decoding(model, quantize_encoder=True, fuse_gates=True)
    assert type(everything.encoder.rnn).__module__ == "torch.ao.nn.quantized.dynamic.modules.rnn"
    src, lengths = random_batch([5, 3, 1])
    for candidate in (quantized, everything):
        for beam in (1, 3):
            results = decode(candidate, src, lengths, beam_size=beam, max_len_offset=4)
            assert len(results) == 3 and all(len(hyps) == 1 for hyps in results)


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong_dot"])
def test_other_attentions_quantize_and_stay_close(attention):
    model = tiny_model(attention)
    quantized = quantize_for_decoding(model)
    src, lengths = random_batch([4, 2])
    with torch.no_grad():
        enc, state = model.encode(src, lengths)
        enc8, state8 = quantized.encode(src, lengths)
        prev = torch.tensor([1, 1])
        log_probs, _, _ = model.decode_step(prev, state, enc)
        log_probs8, _, _ = quantized.decode_step(prev, state8, enc8)
    assert (log_probs.exp() - log_probs8.exp()).abs().max() < 0.05


def test_int8_translations_match_fp32_and_the_model_directory_is_unchanged(trained_reversal):
    model_dir = trained_reversal / "run" / "model"
    hashes = directory_hashes(model_dir)
    sources = read_lines(trained_reversal / "corpus" / "test.src")
    refs = read_lines(trained_reversal / "corpus" / "test.tgt")
    fp32 = Translator.load(model_dir, device="cpu")
    int8 = Translator.load(model_dir, device="cpu", precision="int8")
    weights = {k: v.clone() for k, v in int8.bundle.model.state_dict().items()}
    for beam in (1, 5):
        expected = fp32.translate(sources, beam=beam)
        got = int8.translate(sources, beam=beam)
        same = sum(a == b for a, b in zip(expected, got))
        assert same >= 0.9 * len(sources), f"beam {beam}: only {same}/{len(sources)} translations agree"
        bleu = score_corpus(expected, refs, ("bleu",))["bleu"].score
        bleu8 = score_corpus(got, refs, ("bleu",))["bleu"].score
        assert abs(bleu - bleu8) <= 2.0, (beam, bleu, bleu8)
    assert all(torch.equal(v, int8.bundle.model.state_dict()[k]) for k, v in weights.items())
    assert directory_hashes(model_dir) == hashes


def test_int8_is_cpu_only(trained_reversal):
    with pytest.raises(UserError, match="precision=int8 runs on the CPU only"):
        Translator.load(trained_reversal / "run" / "model", device="meta", precision="int8")
