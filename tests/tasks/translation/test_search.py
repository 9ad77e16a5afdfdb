import pytest
import torch

from seq2seq.errors import UserError
from seq2seq.sampling import sample_tokens
from seq2seq.tasks.translation.search import (
    ban_repeated_ngrams,
    beam_search,
    decode,
    greedy_search,
    max_output_lengths,
    sample,
)
from seq2seq.tokenizer import EOS_ID
from tests.helpers import random_batch, tiny_model


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


def test_no_repeat_ngram_blocks_repeats():
    model = trained_ish_model()
    src, lengths = random_batch([6, 5, 7], seed=8)
    for n in (1, 2):
        for hyps in beam_search(model, src, lengths, beam_size=3, nbest=3, no_repeat_ngram_size=n,
                                max_len_offset=15):
            for h in hyps:
                grams = [tuple(h.tokens[i:i + n]) for i in range(len(h.tokens) - n + 1)]
                assert len(grams) == len(set(grams))


def test_ban_repeated_ngrams_is_exact():
    log_probs = torch.zeros(1, 10)
    ban_repeated_ngrams(log_probs, torch.tensor([[5, 6, 7, 5]]), 2)
    assert torch.isinf(log_probs[0]).nonzero().squeeze(1).tolist() == [6]  # "5 6" already seen


def test_sampling_restricts_to_top_k_and_top_p():
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, 4)
    generator = torch.Generator().manual_seed(0)
    top1 = sample_tokens(log_probs, 1.0, 1, 1.0, generator)
    assert set(top1.tolist()) == {0}
    nucleus = sample_tokens(log_probs, 1.0, 0, 0.75, generator)
    assert set(nucleus.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.75; 2 and 3 never drawn
    counts = torch.bincount(sample_tokens(log_probs, 1.0, 0, 1.0, generator), minlength=4).float() / 2000
    assert torch.allclose(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.04)
    cold = sample_tokens(log_probs, 0.05, 0, 1.0, generator)
    assert (cold == 0).float().mean() > 0.99


def test_samples_per_sentence_and_bad_settings():
    model = trained_ish_model()
    src, lengths = random_batch([4, 6], seed=9)
    results = sample(model, src, lengths, num_samples=4, generator=torch.Generator().manual_seed(1))
    assert [len(r) for r in results] == [4, 4]
    for hyps in results:
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    for bad in ({"temperature": 0.0}, {"top_k": -1}, {"top_p": 1.5}, {"top_p": 0.0}):
        with pytest.raises(UserError):
            sample(model, src, lengths, **bad)


@pytest.mark.parametrize("copies", [1, 20])  # under and over the 16 rows where the fused step takes over
def test_searches_run_under_bf16_autocast(copies):
    # The fp32 gate-table step is not taken under autocast (its in-place products mixed dtypes).
    from seq2seq.precision import cpu_runs_bf16_lstm

    if not cpu_runs_bf16_lstm()[0]:  # AVX2-only CPUs: oneDNN has no bf16 LSTM; bf16 is refused there
        pytest.skip(cpu_runs_bf16_lstm()[1])
    model = tiny_model().eval()
    src, lengths = random_batch([5, 3, 7, 1])
    src, lengths = src.repeat(copies, 1), lengths.repeat(copies)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for beam in (1, 4):
            results = decode(model, src, lengths, beam_size=beam)
            assert len(results) == len(src) and all(len(hyps) == 1 for hyps in results)
