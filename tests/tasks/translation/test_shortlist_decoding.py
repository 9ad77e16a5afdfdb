"""Decoding with a vocabulary shortlist: the model directory's shortlist.json from training, the
shortlist=auto|true|false setting, bad files, ensembles, averaging and the seq2seq-shortlist command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from seq2seq import Translator
from seq2seq.batching import pad_sequences
from seq2seq.errors import UserError
from seq2seq.tasks.translation.shortlist import SHORTLIST_FILE, Shortlist
from seq2seq.text import read_lines
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from tests.helpers import run_in_process


@pytest.fixture(scope="module")
def model_dir(trained_reversal) -> Path:
    return trained_reversal / "run" / "model"


@pytest.fixture(scope="module")
def sources(trained_reversal) -> list[str]:
    return read_lines(trained_reversal / "corpus" / "test.src")


@pytest.fixture(scope="module")
def translator(model_dir) -> Translator:
    return Translator.load(model_dir, device="cpu")


@pytest.fixture(scope="module")
def narrow_model(model_dir, tmp_path_factory) -> Path:
    """The reversal model with a shortlist narrower than its 24-piece vocabulary (training's
    default, 100 frequent pieces, holds all of it): EOS and 3 frequent pieces, 2 per source word."""
    directory = copy_model(model_dir, tmp_path_factory.mktemp("narrow") / "model")
    built = run_in_process(["seq2seq-shortlist", f"model={directory}", "frequent=4", "per_source=2"],
                           cwd=directory.parent)
    assert built.returncode == 0, built.stderr
    return directory


def copy_model(model_dir: Path, target: Path) -> Path:
    shutil.copytree(model_dir, target)
    return target


def whole_vocabulary(shortlist: Shortlist) -> Shortlist:
    """The same model's shortlist, but holding every piece a search may produce."""
    return Shortlist(frequent=torch.arange(EOS_ID, shortlist.tgt_vocab_size),
                     offsets=torch.zeros(shortlist.src_vocab_size + 1, dtype=torch.long),
                     candidates=torch.zeros(0, dtype=torch.long), src_vocab_size=shortlist.src_vocab_size,
                     tgt_vocab_size=shortlist.tgt_vocab_size, src_tokenizer_digest=shortlist.src_tokenizer_digest,
                     tgt_tokenizer_digest=shortlist.tgt_tokenizer_digest, settings={"method": "test"})


def test_training_writes_a_shortlist_without_pad_bos_or_unk(model_dir, translator):
    shortlist = Shortlist.load(model_dir / SHORTLIST_FILE, translator.src_tokenizer, translator.tgt_tokenizer)
    stored = set(shortlist.frequent.tolist()) | set(shortlist.candidates.tolist())
    assert EOS_ID in stored and not stored & {PAD_ID, BOS_ID, UNK_ID}
    assert shortlist.settings["method"] == "ibm1" and shortlist.settings["sentences"] > 0
    assert len(shortlist.frequent) <= shortlist.settings["frequent"]


def test_shortlisted_translations_equal_full_vocabulary_ones_on_nearly_every_sentence(narrow_model, sources):
    translator = Translator.load(narrow_model, device="cpu")
    # The restriction is real: a batch of five sentences may produce fewer pieces than exist.
    src = pad_sequences(translator.src_tokenizer.encode(sources[:5]))
    ids = translator.batch_vocabulary(translator.shortlists_for(translator.options()), src)
    assert len(ids) < translator.tgt_tokenizer.vocab_size
    # Bound: at least 95% of the 100 test sentences identical, beam 5 and greedy.
    for beam in (5, 1):
        full = translator.translate(sources, beam=beam, shortlist="false")
        shortlisted = translator.translate(sources, beam=beam, shortlist="true")
        assert translator.translate(sources, beam=beam) == shortlisted  # auto: the directory has one
        same = sum(a == b for a, b in zip(full, shortlisted))
        assert same >= 0.95 * len(sources), (beam, same)


def test_a_shortlist_of_the_whole_vocabulary_translates_exactly_as_without(model_dir, translator, sources, tmp_path):
    whole = copy_model(model_dir, tmp_path / "whole")
    whole_vocabulary(Shortlist.load(model_dir / SHORTLIST_FILE)).save(whole / SHORTLIST_FILE)
    restricted = Translator.load(whole, device="cpu")
    for options in ({"beam": 5, "nbest": 3}, {"beam": 1}):
        full = translator.translate(sources, shortlist="false", return_hypotheses=True, **options)
        same = restricted.translate(sources, shortlist="true", return_hypotheses=True, **options)
        for a, b in zip(full, same):
            assert [h.tokens for h in a] == [h.tokens for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


def test_a_directory_without_one_decodes_as_before_and_shortlist_true_asks_for_one(model_dir, translator,
                                                                                   sources, tmp_path):
    bare = copy_model(model_dir, tmp_path / "bare")
    (bare / SHORTLIST_FILE).unlink()
    plain = Translator.load(bare, device="cpu")
    assert plain.translate(sources, beam=5) == translator.translate(sources, beam=5, shortlist="false")
    with pytest.raises(UserError, match=f"shortlist=true but {bare} has no shortlist.json; build one with "
                                        f"seq2seq-shortlist model={bare}"):
        plain.translate(sources[:1], shortlist="true")
    # The command builds the same shortlist as training did (same corpus, settings, tokenizers).
    built = run_in_process(["seq2seq-shortlist", f"model={bare}"], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    rebuilt, trained = Shortlist.load(bare / SHORTLIST_FILE), Shortlist.load(model_dir / SHORTLIST_FILE)
    assert torch.equal(rebuilt.frequent, trained.frequent) and torch.equal(rebuilt.candidates, trained.candidates)
    assert oct((bare / SHORTLIST_FILE).stat().st_mode & 0o777) == oct((bare / "model.json").stat().st_mode & 0o777)


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_text('{"format": "seq2seq-shortl'), "shortlist.json"),
    (lambda path: path.write_text(json.dumps(json.loads(path.read_text()) | {"src_tokenizer": "0" * 64})),
     "another source vocabulary"),
])
def test_a_corrupt_or_mismatched_shortlist_is_one_line_and_exit_2(model_dir, tmp_path, damage, message):
    broken = copy_model(model_dir, tmp_path / "broken")
    damage(broken / SHORTLIST_FILE)
    (tmp_path / "in.txt").write_text("red dog runs\n")
    result = run_in_process(["seq2seq-translate", f"model={broken}", "input=in.txt"], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    # Left alone, the setting that ignores the file still translates.
    ignored = run_in_process(["seq2seq-translate", f"model={broken}", "input=in.txt", "shortlist=false"],
                             cwd=tmp_path)
    assert ignored.returncode == 0 and ignored.stdout.strip() == "RUNS DOG RED"


def test_an_ensemble_restricts_to_the_union_of_its_members_shortlists(model_dir, narrow_model, translator,
                                                                      tmp_path):
    whole = copy_model(model_dir, tmp_path / "whole")
    whole_vocabulary(Shortlist.load(model_dir / SHORTLIST_FILE)).save(whole / SHORTLIST_FILE)
    ensemble = Translator.load([narrow_model, whole], device="cpu")
    shortlists = ensemble.shortlists_for(ensemble.options(shortlist="true"))
    src = torch.tensor([translator.src_tokenizer.encode(["red dog runs"])[0]])
    union = ensemble.batch_vocabulary(shortlists, src)
    assert torch.equal(union, torch.arange(translator.tgt_tokenizer.vocab_size))
    narrow = Translator.load(narrow_model, device="cpu")
    own = narrow.batch_vocabulary(narrow.shortlists_for(narrow.options()), src)
    assert len(own) < len(union) and set(own.tolist()) <= set(union.tolist())
    # One member without a shortlist: auto leaves the ensemble unrestricted.
    bare = copy_model(model_dir, tmp_path / "bare")
    (bare / SHORTLIST_FILE).unlink()
    mixed = Translator.load([model_dir, bare], device="cpu")
    assert mixed.shortlists_for(mixed.options()) is None


def test_averaging_keeps_the_shortlist(model_dir, tmp_path):
    result = run_in_process(["seq2seq-average", f"inputs=[{model_dir},{model_dir}]", "output=avg"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "avg" / SHORTLIST_FILE).read_bytes() == (model_dir / SHORTLIST_FILE).read_bytes()
