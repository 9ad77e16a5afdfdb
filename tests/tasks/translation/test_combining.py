"""Checkpoint averaging, ensembles, forced scoring, special ids never produced, significance tests."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seq2seq.averaging import average, average_states
from seq2seq.bundle import load_state_dict, save_bundle
from seq2seq.errors import UserError
from seq2seq.metrics import compare_systems
from seq2seq.tasks.translation.api import Translator
from seq2seq.tasks.translation.ensemble import Ensemble
from seq2seq.tasks.translation.search import BANNED_IDS, decode, forced_scores, greedy_search
from seq2seq.tokenizer import EOS_ID, SentencePieceSettings, train_or_load
from tests.helpers import make_reversal_corpus, random_batch, run, tiny_model

SETTINGS = SentencePieceSettings(vocab_size=24, model_type="word")


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("vocab")
    make_reversal_corpus(work, {"train": 200}, seed=1)
    src = train_or_load([work / "train.src"], work / "cache", SETTINGS, name="src")
    tgt = train_or_load([work / "train.tgt"], work / "cache", SETTINGS, name="tgt")
    return {"src": src.model_file, "tgt": tgt.model_file}


def perturbed(seed: int, **overrides) -> torch.nn.Module:
    """The tiny model with every weight moved by seeded noise: another point of the same model."""
    model = tiny_model(src_vocab_size=24, tgt_vocab_size=24, **overrides)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def write_model(directory: Path, model, tokenizer_files) -> Path:
    return save_bundle(directory, model, "seq2seq", tokenizer_files, {"trained": {"steps": 1}})


# ------------------------------------------------------------------------------ averaging
def test_averaging_copies_gives_the_same_weights_and_two_models_their_mean(tmp_path, tokenizer_files):
    a = write_model(tmp_path / "a", perturbed(1), tokenizer_files)
    b = write_model(tmp_path / "b", perturbed(2), tokenizer_files)
    average([a, a, a], tmp_path / "aaa")
    average([a, b], tmp_path / "ab")
    weights_a, weights_b = load_state_dict(a / "weights.pt"), load_state_dict(b / "weights.pt")
    copies, mean = load_state_dict(tmp_path / "aaa" / "weights.pt"), load_state_dict(tmp_path / "ab" / "weights.pt")
    assert copies.keys() == weights_a.keys() == mean.keys()
    for key in weights_a:
        assert torch.equal(copies[key], weights_a[key]), key
        expected = ((weights_a[key].double() + weights_b[key].double()) / 2).float()
        assert torch.equal(mean[key], expected), key
        assert not torch.equal(weights_a[key], weights_b[key]) or weights_a[key].abs().sum() == 0
    config = json.loads((tmp_path / "ab" / "model.json").read_text())
    assert config["averaged_from"] == [str(a.resolve()), str(b.resolve())]
    assert config["trained"] == {"steps": 1}  # the template's extras are kept
    assert (tmp_path / "ab" / "src.spm.model").read_bytes() == Path(tokenizer_files["src"]).read_bytes()
    # The averaged directory loads and translates.
    assert len(Translator.load(tmp_path / "ab", device="cpu").translate(["red dog"], beam=2)) == 1


def test_averaging_lightning_checkpoints_and_a_folder_of_them(tmp_path, tokenizer_files):
    run_dir = tmp_path / "run"
    write_model(run_dir / "model", perturbed(1), tokenizer_files)
    states = [perturbed(seed).state_dict() for seed in (3, 4, 5)]
    (run_dir / "checkpoints").mkdir()
    for index, state in enumerate(states):
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "global_step": index},
                   run_dir / "checkpoints" / f"epoch{index:03d}.ckpt")
    torch.save({"state_dict": {f"model.{k}": v for k, v in perturbed(9).state_dict().items()}},
               run_dir / "checkpoints" / "last.ckpt")  # not one of the kept best: left out
    average([run_dir / "checkpoints"], tmp_path / "averaged")  # config and tokenizers from run/model
    averaged = load_state_dict(tmp_path / "averaged" / "weights.pt")
    for key, value in average_states(states).items():
        assert torch.equal(averaged[key], value), key
    config = json.loads((tmp_path / "averaged" / "model.json").read_text())
    assert [Path(p).name for p in config["averaged_from"]] == ["epoch000.ckpt", "epoch001.ckpt", "epoch002.ckpt"]


def test_averaging_refuses_other_models_in_one_line(tmp_path, tokenizer_files):
    a = write_model(tmp_path / "a", perturbed(1), tokenizer_files)
    wide = write_model(tmp_path / "wide", perturbed(2, embed_dim=10), tokenizer_files)
    with pytest.raises(UserError, match="another model config"):
        average([a, wide], tmp_path / "out")
    with pytest.raises(UserError, match="no such checkpoint"):
        average([a, tmp_path / "missing"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_seq2seq_average_command(tmp_path, tokenizer_files):
    a = write_model(tmp_path / "a", perturbed(1), tokenizer_files)
    b = write_model(tmp_path / "b", perturbed(2), tokenizer_files)
    result = subprocess.run([sys.executable, "-m", "seq2seq.cli.average", f"inputs=[{a},{b}]", "output=avg"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "averaged 2 checkpoints into avg" in result.stdout
    assert (tmp_path / "avg" / "weights.pt").is_file()
    missing = subprocess.run([sys.executable, "-m", "seq2seq.cli.average", f"inputs=[{a}]"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: output= is required: the model directory to write"


# ------------------------------------------------------------------------------ ensembles
@pytest.mark.parametrize("options", [dict(beam_size=1), dict(beam_size=4, nbest=2)])
def test_an_ensemble_of_one_is_that_model_and_of_a_model_with_itself_the_same_translations(options):
    model = tiny_model()
    with torch.no_grad():  # peaked distributions: an untrained model's near-ties would let
        model.generator.bias.normal_(0.0, 3.0)  # rounding (1e-7) pick between equal hypotheses
    src, lengths = random_batch([5, 3, 7, 1])
    alone = decode(model, src, lengths, **options)
    one = decode(Ensemble([model]), src, lengths, **options)
    twice = decode(Ensemble([model, model]), src, lengths, **options)
    for a, b, c in zip(alone, one, twice):
        assert [h.tokens for h in a] == [h.tokens for h in b] == [h.tokens for h in c]
        assert [h.score for h in a] == [h.score for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in c], abs=1e-4)


def test_an_ensemble_step_is_the_renormalized_mean_of_its_members_log_probabilities():
    first, second = tiny_model(), tiny_model()
    torch.manual_seed(5)
    for param in second.parameters():
        param.data.normal_(0, 0.3)
    src, lengths = random_batch([4, 2])
    ensemble = Ensemble([first, second])
    enc, state = ensemble.encode(src, lengths)
    prev = torch.full((2,), 2)
    log_probs, _, attention = ensemble.decode_step(prev, state, enc)
    members = []
    for model in (first, second):
        e, s = model.encode(src, lengths)
        members.append(model.decode_step(prev, s, e))
    expected = torch.log_softmax((members[0][0] + members[1][0]) / 2, dim=-1)
    assert torch.allclose(log_probs, expected, atol=1e-6)
    assert torch.allclose(attention, (members[0][2] + members[1][2]) / 2)


# ------------------------------------------------------------------------------ specials
def special_loving_model():
    model = tiny_model()
    with torch.no_grad():
        model.generator.bias[list(BANNED_IDS)] = 50.0  # pad, bos, unk: by far the likeliest
    return model


def test_sampling_greedy_and_beam_never_produce_pad_bos_or_unk():
    model = special_loving_model()
    src, lengths = random_batch([5, 3, 6])
    enc, state = model.encode(src, lengths)
    log_probs, _, _ = model.decode_step(torch.full((3,), 2), state, enc)
    assert set(log_probs.argmax(-1).tolist()) <= set(BANNED_IDS)  # the model itself wants them
    generator = torch.Generator().manual_seed(0)
    results = [
        *decode(model, src, lengths, sampling=True, nbest=50, generator=generator),
        *decode(model, src, lengths, sampling=True, nbest=20, temperature=5.0, top_p=0.99, generator=generator),
        *decode(model, src, lengths, beam_size=1),
        *decode(model, src, lengths, beam_size=5, nbest=5),
        *decode(Ensemble([model, tiny_model()]), src, lengths, sampling=True, nbest=20, generator=generator),
    ]
    produced = {token for hyps in results for h in hyps for token in h.tokens}
    assert produced and not produced & set(BANNED_IDS)


# ------------------------------------------------------------------------------ scoring
def test_forced_scores_of_greedy_output_equal_the_scores_greedy_reported():
    model = tiny_model()
    src, lengths = random_batch([5, 3, 7, 2, 6], seed=3)
    hyps = [h[0] for h in greedy_search(model, src, lengths, max_len_ratio=50.0, max_len_offset=50)]
    assert all(len(h.tokens) < 50 for h in hyps)  # each ended with its own EOS, not a forced one
    tgt = torch.zeros(len(hyps), max(len(h.tokens) for h in hyps) or 1, dtype=torch.long)
    for row, h in enumerate(hyps):
        tgt[row, :len(h.tokens)] = torch.tensor(h.tokens, dtype=torch.long)
    scores = forced_scores(model, src, lengths, tgt, torch.tensor([len(h.tokens) for h in hyps]))
    assert scores.tolist() == pytest.approx([h.score for h in hyps], abs=1e-4)
    # An ensemble scores the same way.
    scores = forced_scores(Ensemble([model]), src, lengths, tgt, torch.tensor([len(h.tokens) for h in hyps]))
    assert scores.tolist() == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_forced_score_of_an_empty_target_is_the_eos_probability():
    model = tiny_model()
    src, lengths = random_batch([4])
    enc, state = model.encode(src, lengths)
    log_probs, _, _ = model.decode_step(torch.full((1,), 2), state, enc)
    score = forced_scores(model, src, lengths, torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))
    assert score.item() == pytest.approx(log_probs[0, EOS_ID].item(), abs=1e-6)


# ------------------------------------------------------------------------------ trained model
@pytest.fixture(scope="module")
def trained(trained_reversal) -> Path:
    return trained_reversal


SENTENCES = ["red dog runs", "big house sun moon", "cat sits on the hill", "fish"]


def test_translator_ensemble_and_score_on_a_trained_model(trained, tmp_path, tokenizer_files):
    model_dir = trained / "run" / "model"
    single = Translator.load(model_dir, device="cpu")
    pair = Translator.load([model_dir, model_dir], device="cpu")
    for beam in (1, 4):
        assert pair.translate(SENTENCES, beam=beam) == single.translate(SENTENCES, beam=beam)
    hyps = single.translate(SENTENCES, beam=1, return_hypotheses=True)
    texts = [h[0].text for h in hyps]
    assert single.score(SENTENCES, texts) == pytest.approx([h[0].score for h in hyps], abs=1e-4)
    beam_hyps = single.translate(SENTENCES, beam=4, length_penalty=0.0, return_hypotheses=True)
    assert single.score(SENTENCES, [h[0].text for h in beam_hyps]) == pytest.approx(
        [h[0].score for h in beam_hyps], abs=1e-4)
    # A wrong translation is less probable than the model's own.
    wrong = single.score(SENTENCES, ["A B C"] * len(SENTENCES))
    assert all(w < s for w, s in zip(wrong, single.score(SENTENCES, texts)))
    # Other target vocabulary: refused in one line.
    other = write_model(tmp_path / "other", tiny_model(src_vocab_size=24, tgt_vocab_size=24), tokenizer_files)
    with pytest.raises(UserError, match="their target vocabularies differ"):
        Translator.load([model_dir, other], device="cpu")


@pytest.mark.slow
def test_evaluate_ensemble_score_ref_and_comparison(trained, tmp_path):
    common = ["src=corpus/test.src", "ref=corpus/test.tgt", "beam=3"]
    ensemble = run(["seq2seq-evaluate", "model=[run/model,run/model]", *common, f"json={tmp_path}/e.json"],
                   cwd=trained)
    single = run(["seq2seq-evaluate", "model=run/model", *common, f"json={tmp_path}/s.json"], cwd=trained)
    assert ensemble.stdout == single.stdout
    e, s = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "es")
    assert e["bleu"]["score"] == s["bleu"]["score"] > 90 and e["model"] == ["run/model", "run/model"]

    scored = run(["seq2seq-evaluate", "model=run/model", *common, "score_ref=true", f"output={tmp_path}/ref.scores"],
                 cwd=trained)
    values = [float(v) for v in (tmp_path / "ref.scores").read_text().split()]
    assert len(values) == 100 and all(v <= 0 for v in values)
    assert "100 references scored" in scored.stderr and "per piece" in scored.stderr

    (tmp_path / "bad.txt").write_text("X\n" * 100)
    compared = run(["seq2seq-evaluate", f"systems=[run/model,[run/model,run/model],{tmp_path}/bad.txt]", *common,
                    "bootstrap_samples=200", "ar_trials=500", f"json={tmp_path}/c.json"], cwd=trained)
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["systems"] == ["run/model", "run/model+run/model", f"{tmp_path}/bad.txt"]
    bleu = report["BLEU"]
    assert bleu[1]["score"] == bleu[0]["score"] and bleu[2]["score"] < 5
    assert bleu[2]["p_bootstrap"] == pytest.approx(1 / 201) and bleu[2]["p_ar"] == pytest.approx(1 / 501)
    assert "p (AR)" in compared.stdout and "bootstrap mean (95% CI)" in compared.stdout
    assert set(report["decode_seconds"]) == {"run/model", "run/model+run/model"}


def test_compare_systems_finds_a_real_difference_and_not_a_chance_one():
    refs = [f"sentence number {i} about a red dog" for i in range(200)]
    bad = [f"number {i} a dog" for i in range(200)]
    rng = random.Random(0)
    # Two systems of the same quality: each gets a random half of the sentences right.
    coin_a = [ref if rng.random() < 0.5 else wrong for ref, wrong in zip(refs, bad)]
    coin_b = [ref if rng.random() < 0.5 else wrong for ref, wrong in zip(refs, bad)]
    report = compare_systems([("bad", bad), ("good", refs), ("coin", coin_a)], refs,
                             bootstrap_samples=200, ar_trials=500)
    assert report["systems"] == ["bad", "good", "coin"]
    for row in report["BLEU"][1:]:
        assert row["p_bootstrap"] < 0.01 and row["p_ar"] < 0.01
    report = compare_systems([("coin a", coin_a), ("coin b", coin_b)], refs, bootstrap_samples=200, ar_trials=500)
    json.dumps(report)  # plain numbers
    assert report["BLEU"][1]["p_ar"] > 0.05 and report["BLEU"][1]["p_bootstrap"] > 0.05
