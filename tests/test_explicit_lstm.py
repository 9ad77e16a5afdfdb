"""The gate-by-gate ExplicitLSTM against PyTorch's nn.LSTM, and `model.cell=explicit` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.bundle import load_bundle, save_bundle
from seq2seq.errors import UserError
from seq2seq.explicit_lstm import ExplicitLSTM, make_lstm
from seq2seq.rnn import lstm_step
from seq2seq.tasks.language_model.model import LanguageModel
from seq2seq.tokenizer import PAD_ID, SentencePieceSettings, train_or_load
from tests.helpers import TINY_REVERSAL, make_reversal_corpus, random_batch, run, run_in_process, tiny_model

INPUT, HIDDEN, BATCH = 5, 7, 4


def twins(num_layers: int, bidirectional: bool, seed: int) -> tuple[nn.LSTM, ExplicitLSTM]:
    """An nn.LSTM with random weights (biases included) and an ExplicitLSTM holding the same."""
    torch.manual_seed(seed)
    fused = nn.LSTM(INPUT, HIDDEN, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
    with torch.no_grad():
        for param in fused.parameters():
            param.normal_(0.0, 0.5)  # larger than the default init, so the gates saturate unevenly
    explicit = ExplicitLSTM(INPUT, HIDDEN, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
    explicit.load_state_dict(fused.state_dict())
    return fused, explicit


def run_and_backward(lstm: nn.Module, x: torch.Tensor, lengths: list[int] | None,
                     state: tuple[torch.Tensor, torch.Tensor] | None, probes: list[torch.Tensor]):
    """Outputs, final (h, c) and the gradients of the inputs, the initial state and every parameter."""
    x = x.clone().requires_grad_()
    if state is not None:
        state = tuple(s.clone().requires_grad_() for s in state)
    if lengths is None:
        output, (h, c) = lstm(x, state)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        packed_output, (h, c) = lstm(packed, state)
        output, _ = pad_packed_sequence(packed_output, batch_first=True, total_length=x.size(1))
    # A random linear function of everything returned, so every gradient path is exercised.
    loss = (output * probes[0][:, :, : output.size(-1)]).sum() + (h * probes[1]).sum() + (c * probes[2]).sum()
    loss.backward()
    grads = {"input": x.grad, **{name: p.grad for name, p in lstm.named_parameters()}}
    if state is not None:
        grads.update(h0=state[0].grad, c0=state[1].grad)
    return output.detach(), h.detach(), c.detach(), grads


CASES = {
    "one layer": dict(num_layers=1, bidirectional=False, lengths=None, initial_state=False),
    "three layers": dict(num_layers=3, bidirectional=False, lengths=None, initial_state=False),
    "bidirectional": dict(num_layers=1, bidirectional=True, lengths=None, initial_state=False),
    "packed": dict(num_layers=1, bidirectional=False, lengths=[3, 6, 1, 4], initial_state=False),
    "bidirectional two layers packed": dict(num_layers=2, bidirectional=True, lengths=[2, 6, 1, 6],
                                            initial_state=False),
    "initial state": dict(num_layers=2, bidirectional=False, lengths=None, initial_state=True),
    "bidirectional packed initial state": dict(num_layers=2, bidirectional=True, lengths=[5, 1, 3, 2],
                                               initial_state=True),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_same_outputs_states_and_gradients_as_nn_lstm(case):
    fused, explicit = twins(case["num_layers"], case["bidirectional"], seed=len(str(case)))
    directions = 2 if case["bidirectional"] else 1
    steps = 6
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, steps, INPUT, generator=generator)
    if case["lengths"] is not None:  # what lies past a row's end must not matter: make it loud
        for row, length in enumerate(case["lengths"]):
            x[row, length:] = 100.0
    layers = case["num_layers"] * directions
    state = None
    if case["initial_state"]:
        state = (torch.randn(layers, BATCH, HIDDEN, generator=generator),
                 torch.randn(layers, BATCH, HIDDEN, generator=generator))
    probes = [torch.randn(BATCH, steps, 2 * HIDDEN, generator=generator),
              torch.randn(layers, BATCH, HIDDEN, generator=generator),
              torch.randn(layers, BATCH, HIDDEN, generator=generator)]

    expected = run_and_backward(fused, x, case["lengths"], state, probes)
    actual = run_and_backward(explicit, x, case["lengths"], state, probes)

    for name, want, got in zip(["output", "h_n", "c_n"], expected[:3], actual[:3]):
        assert got.shape == want.shape, name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=name)
    assert set(actual[3]) == set(expected[3])
    for name, want in expected[3].items():
        torch.testing.assert_close(actual[3][name], want, rtol=1e-4, atol=1e-5, msg=f"gradient of {name}")


def test_same_parameter_names_shapes_and_order_as_nn_lstm():
    fused, explicit = twins(num_layers=2, bidirectional=True, seed=0)
    assert [(n, p.shape) for n, p in explicit.named_parameters()] == \
        [(n, p.shape) for n, p in fused.named_parameters()]


def test_one_step_inference_path_reads_the_explicit_weights():
    fused, explicit = twins(num_layers=2, bidirectional=False, seed=3)
    x = torch.randn(3, INPUT)
    state = (torch.randn(2, 3, HIDDEN), torch.randn(2, 3, HIDDEN))
    with torch.no_grad():
        want, (want_h, want_c) = fused(x.unsqueeze(1), state)
        got, (got_h, got_c) = lstm_step(explicit, x, state)
    torch.testing.assert_close(got, want.squeeze(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((got_h, got_c), (want_h, want_c), rtol=1e-5, atol=1e-6)


def test_unknown_cell_is_a_user_error():
    with pytest.raises(UserError, match="model.cell='gru' is not one of fused, explicit"):
        make_lstm("gru", 4, 4)


def seq2seq_loss(model: nn.Module, src, lengths, tgt_in, tgt_out) -> torch.Tensor:
    logits = model.project(model(src, lengths, tgt_in))
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), ignore_index=PAD_ID)


@pytest.mark.parametrize("attention", ["luong_general", "bahdanau"])  # whole-target and step-by-step decoder
def test_seq2seq_with_explicit_cell_gives_the_same_loss_and_gradients(attention):
    fused = tiny_model(attention, bidirectional=True).train()
    explicit = tiny_model(attention, bidirectional=True, cell="explicit").train()
    explicit.load_state_dict(fused.state_dict())
    assert isinstance(explicit.encoder.rnn, ExplicitLSTM) and isinstance(explicit.decoder.rnn, ExplicitLSTM)
    src, lengths = random_batch([5, 1, 7, 3], seed=4)
    tgt = torch.randint(4, 29, (4, 6), generator=torch.Generator().manual_seed(5))
    tgt[1, 3:] = PAD_ID
    losses = []
    for model in (fused, explicit):
        loss = seq2seq_loss(model, src, lengths, tgt[:, :-1], tgt[:, 1:])
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    explicit_grads = dict(explicit.named_parameters())
    for name, param in fused.named_parameters():
        torch.testing.assert_close(explicit_grads[name].grad, param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_language_model_with_explicit_cell_gives_the_same_logits():
    torch.manual_seed(0)
    fused = LanguageModel(vocab_size=20, embed_dim=6, hidden_size=8, num_layers=2, dropout=0.0).eval()
    explicit = LanguageModel(vocab_size=20, embed_dim=6, hidden_size=8, num_layers=2, dropout=0.0,
                             cell="explicit").eval()
    explicit.load_state_dict(fused.state_dict())
    tokens = torch.randint(4, 20, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (want, want_state), (got, got_state) = fused(tokens), explicit(tokens)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_state, want_state, rtol=1e-5, atol=1e-5)
    assert explicit.config["cell"] == "explicit"


def test_bundle_keeps_the_cell_and_old_bundles_load_as_fused(tmp_path):
    corpus = make_reversal_corpus(tmp_path / "corpus", {"train": 300})
    spm = train_or_load([corpus / "train.src"], tmp_path / "cache", SentencePieceSettings(vocab_size=40)).model_file
    model = tiny_model(src_vocab_size=40, tgt_vocab_size=40, cell="explicit")
    directory = save_bundle(tmp_path / "model", model, "seq2seq", {"src": spm, "tgt": spm})
    assert isinstance(load_bundle(directory).model.encoder.rnn, ExplicitLSTM)

    config_file = directory / "model.json"
    config = json.loads(config_file.read_text())
    del config["model_config"]["cell"]  # as written before the setting existed
    config_file.write_text(json.dumps(config))
    old = load_bundle(directory).model
    assert type(old.encoder.rnn) is nn.LSTM and type(old.decoder.rnn) is nn.LSTM
    src, lengths = random_batch([4, 2])
    tgt = torch.randint(4, 40, (2, 3))
    with torch.no_grad():  # the same weights in the fused layers compute the same thing
        torch.testing.assert_close(old(src, lengths, tgt), model.eval()(src, lengths, tgt), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_train_with_explicit_cell_exports_a_model_that_translates(tmp_path: Path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 200, "val": 20, "test": 20}, seed=3)
    result = run(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "model.cell=explicit",
                  "trainer.max_steps=4", "evaluate_test=false", "hydra.run.dir=run"], cwd=tmp_path)
    assert "model written to" in result.stdout
    model_dir = tmp_path / "run" / "model"
    assert json.loads((model_dir / "model.json").read_text())["model_config"]["cell"] == "explicit"
    assert isinstance(load_bundle(model_dir).model.decoder.rnn, ExplicitLSTM)

    run(["seq2seq-translate", f"model={model_dir}", "input=corpus/test.src", "output=out.tgt"], cwd=tmp_path)
    translations = (tmp_path / "out.tgt").read_text(encoding="utf-8").splitlines()
    assert len(translations) == 20


def test_unknown_cell_stops_training_with_one_line(tmp_path: Path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 50, "val": 5, "test": 5})
    result = run_in_process(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "model.cell=gru",
                  "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode == 2
    # Training logs its progress (the seed) on stderr first; the error is the last line, and one line.
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: model.cell='gru' is not one of fused, explicit", result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("pooling", ["final", "mean", "attention"])
def test_classifier_with_explicit_cell_gives_the_same_logits(pooling):
    from seq2seq.tasks.classification.model import LSTMClassifier

    torch.manual_seed(0)
    fused = LSTMClassifier(vocab_size=30, embed_dim=6, hidden_size=8, pooling=pooling, dropout=0.0).eval()
    explicit = LSTMClassifier(vocab_size=30, embed_dim=6, hidden_size=8, pooling=pooling, dropout=0.0,
                              cell="explicit").eval()
    explicit.load_state_dict(fused.state_dict())
    tokens = torch.randint(4, 30, (3, 7), generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([7, 4, 1])
    tokens[1, 4:], tokens[2, 1:] = 0, 0
    with torch.no_grad():
        torch.testing.assert_close(explicit(tokens, lengths), fused(tokens, lengths), rtol=1e-5, atol=1e-5)
    assert explicit.config["cell"] == "explicit"
