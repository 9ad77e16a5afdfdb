import pytest
import torch

from seq2seq.errors import UserError
from seq2seq.tasks.translation.model import Seq2Seq
from seq2seq.tokenizer import BOS_ID, PAD_ID
from tests.helpers import random_batch, tiny_model

ATTENTIONS = ["none", "bahdanau", "luong_dot", "luong_general", "luong_concat"]


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("input_feeding", [False, True])
def test_forward_shapes(attention, input_feeding):
    model = tiny_model(attention, input_feeding=input_feeding)
    src, lengths = random_batch([5, 3, 1])
    tgt_in = torch.randint(4, 29, (3, 6))
    outputs = model(src, lengths, tgt_in)
    assert outputs.shape == (3, 6, 8)  # tied: output size = embedding size
    assert model.project(outputs).shape == (3, 6, 29)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("input_feeding", [False, True])
def test_padding_never_leaks(attention, input_feeding):
    """A sentence's outputs are the same alone and batched with longer sentences."""
    model = tiny_model(attention, input_feeding=input_feeding)
    src, lengths = random_batch([3, 7, 5], seed=1)
    tgt_in = torch.randint(4, 29, (3, 6), generator=torch.Generator().manual_seed(2))
    tgt_in[0, 2:] = PAD_ID  # the first sentence has a 2-token target
    with torch.no_grad():
        batched = model(src, lengths, tgt_in)
        alone = model(src[:1, :3], lengths[:1], tgt_in[:1, :2])
    torch.testing.assert_close(batched[0, :2], alone[0], rtol=1e-5, atol=1e-6)


def test_step_by_step_decoding_matches_teacher_forcing():
    """The parallel training path and the step function compute the same thing."""
    model = tiny_model("luong_general")
    assert model.decoder.steps_in_parallel
    src, lengths = random_batch([4, 6])
    tgt_in = torch.randint(4, 29, (2, 5))
    assert_steps_match_teacher_forcing(model, src, lengths, tgt_in)


def assert_steps_match_teacher_forcing(model, src, lengths, tgt_in) -> None:
    with torch.no_grad():
        parallel = model.project(model(src, lengths, tgt_in)).log_softmax(-1)
        enc, state = model.encode(src, lengths)
        for t in range(tgt_in.size(1)):
            log_probs, state, _ = model.decode_step(tgt_in[:, t], state, enc)
            torch.testing.assert_close(log_probs, parallel[:, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["luong_general", "bahdanau"])
def test_decoding_after_training_steps_uses_the_new_weights(attention):
    """The per-token gate table of inference is rebuilt after the weights change, whichever way
    the optimizer writes them (fused Adam, plain SGD) and with validation between steps."""
    model = tiny_model(attention).eval()
    src, lengths = random_batch([4, 6])
    tgt_in = torch.randint(4, 29, (2, 5))
    for optimizer in (torch.optim.Adam(model.parameters(), lr=0.05, fused=True),
                      torch.optim.SGD(model.parameters(), lr=0.5)):
        with torch.no_grad():
            enc, state = model.encode(src, lengths)
            model.decode_step(tgt_in[:, 0], state, enc)  # builds the table from the current weights
        model.train()
        model.project(model(src, lengths, tgt_in)).logsumexp(-1).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        model.eval()
        assert_steps_match_teacher_forcing(model, src, lengths, tgt_in)


def test_tied_and_shared_embeddings():
    model = Seq2Seq(30, 30, embed_dim=8, encoder_hidden_size=4, decoder_hidden_size=8,
                    share_embeddings=True, tie_output_embeddings=True)
    assert model.generator.weight is model.decoder.embedding.weight
    assert model.encoder.embedding is model.decoder.embedding
    untied = Seq2Seq(30, 31, embed_dim=8, encoder_hidden_size=4, decoder_hidden_size=8,
                     tie_output_embeddings=False)
    assert untied.generator.weight is not untied.decoder.embedding.weight
    assert untied.generator.weight.shape == (31, 8)


def test_shared_embeddings_need_one_vocabulary():
    with pytest.raises(UserError, match="joint vocabulary"):
        Seq2Seq(30, 31, share_embeddings=True)


def test_gradients_reach_every_parameter():
    model = tiny_model("bahdanau", input_feeding=True).train()
    src, lengths = random_batch([4, 2])
    tgt_in = torch.full((2, 3), BOS_ID)
    model.project(model(src, lengths, tgt_in)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def step_by_step(model, src, lengths, tgt_in):
    """Teacher forcing through `Decoder.step` in a loop: the reference for the stepwise path."""
    enc, state = model.encode(src, lengths)
    outputs = []
    for t in range(tgt_in.size(1)):
        output, state, _ = model.decoder.step(tgt_in[:, t], state, enc)
        outputs.append(output)
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("cell", ["fused", "explicit"])
@pytest.mark.parametrize("attention,input_feeding", [("luong_general", True), ("bahdanau", False),
                                                     ("bahdanau", True), ("none", True)])
def test_stepwise_teacher_forcing_equals_the_step_loop_outputs_and_gradients(attention, input_feeding, cell):
    model = tiny_model(attention, input_feeding=input_feeding, cell=cell)
    assert not model.decoder.steps_in_parallel
    src, lengths = random_batch([5, 3, 4], seed=5)
    tgt_in = torch.randint(4, 29, (3, 6), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():  # eval: the loop runs the inference step (plain products)
        torch.testing.assert_close(model(src, lengths, tgt_in), step_by_step(model, src, lengths, tgt_in),
                                   rtol=1e-5, atol=1e-6)
    model.train()  # dropout is 0; the loop now runs nn.LSTM (or ExplicitLSTM) one step at a time
    grads = []
    for forward in (lambda: model(src, lengths, tgt_in), lambda: step_by_step(model, src, lengths, tgt_in)):
        model.zero_grad()
        model.project(forward()).log_softmax(-1).sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)
