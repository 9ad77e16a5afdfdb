import pytest
import torch

from seq2seq.errors import UserError
from seq2seq.search import beam_search, greedy_search, max_output_lengths
from seq2seq.tokenizer import EOS_ID

from conftest import random_batch, tiny_model


def trained_ish_model(attention="luong_general"):
    """A tiny model with larger random weights, so its outputs vary and EOS comes at varied times."""
    model = tiny_model(attention)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)
    return model


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong_general"])
def test_beam_one_equals_greedy(attention):
    model = trained_ish_model(attention)
    src, lengths = random_batch([5, 3, 6, 2], seed=3)
    greedy = greedy_search(model, src, lengths)
    beam = beam_search(model, src, lengths, beam_size=1, length_penalty_alpha=0.0)
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam]
    for g, b in zip(greedy, beam):
        assert g[0].score == pytest.approx(b[0].score, abs=1e-4)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
def test_batched_beam_equals_per_sentence(attention):
    model = trained_ish_model(attention)
    src, lengths = random_batch([5, 3, 6, 2, 4], seed=4)
    batched = beam_search(model, src, lengths, beam_size=4, nbest=3)
    for i in range(len(lengths)):
        alone = beam_search(model, src[i:i + 1, : lengths[i]], lengths[i:i + 1], beam_size=4, nbest=3)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[i]], abs=1e-4)


def test_nbest_sorted_and_within_length_limit():
    model = trained_ish_model()
    src, lengths = random_batch([5, 2, 7], seed=5)
    results = beam_search(model, src, lengths, beam_size=5, nbest=5, max_len_ratio=1.0, max_len_offset=2)
    limits = max_output_lengths(lengths, 1.0, 2)
    for hyps, limit in zip(results, limits.tolist()):
        assert len(hyps) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert all(len(h.tokens) + 1 <= limit for h in hyps)  # +1 for EOS
        assert all(EOS_ID not in h.tokens for h in hyps)
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)


def test_beam_finds_at_least_as_good_as_greedy_without_penalty():
    model = trained_ish_model()
    src, lengths = random_batch([6, 4, 5], seed=6)
    greedy = greedy_search(model, src, lengths)
    beam = beam_search(model, src, lengths, beam_size=5, length_penalty_alpha=0.0)
    for g, b in zip(greedy, beam):
        assert b[0].score >= g[0].score - 1e-4


def test_attention_is_returned_per_target_step():
    model = trained_ish_model()
    src, lengths = random_batch([4, 6], seed=7)
    for hyps in beam_search(model, src, lengths, beam_size=3, return_attention=True):
        attn = hyps[0].attention
        assert attn.shape == (len(hyps[0].tokens) + 1, 6)
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.size(0)))


def test_bad_beam_settings():
    model = tiny_model()
    src, lengths = random_batch([3])
    with pytest.raises(UserError):
        beam_search(model, src, lengths, beam_size=0)
    with pytest.raises(UserError):
        beam_search(model, src, lengths, beam_size=2, nbest=3)
