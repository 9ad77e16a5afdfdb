"""Lexical shortlists: what IBM model 1 and the Dice baseline find on a toy dictionary language,
the per-batch ids, storage and the validation of stored files."""

from __future__ import annotations

import json
import random
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from seq2seq.errors import UserError
from seq2seq.tasks.translation import shortlist as shortlist_module
from seq2seq.tasks.translation.shortlist import Shortlist, build_shortlist
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, file_digest

WORDS = 40
SRC_VOCAB = 4 + WORDS  # source words are 4 .. 43
TGT_VOCAB = 15 + WORDS  # 4 is an article, 5 .. 44 translations, 45 .. 54 noise words
ARTICLE = 4


def dictionary_corpus(sentences=400, seed=0, drop=0.1, swap=0.1):
    """A toy language pair: each source word has one target word (a fixed permutation) that its
    target sentence contains, except that a `drop` share of words is left untranslated and a
    `swap` share is replaced by a random noise word. Words are Zipf-distributed; an even word is
    followed by the next odd one 80% of the time (collocations, which mislead co-occurrence);
    every target sentence has an article that translates nothing; target order is shuffled."""
    rng = random.Random(seed)
    source_words = list(range(4, 4 + WORDS))
    targets = list(range(5, 5 + WORDS))
    rng.shuffle(targets)
    translation = dict(zip(source_words, targets))
    noise_words = list(range(5 + WORDS, TGT_VOCAB))
    weights = [1 / (rank + 1) for rank in range(WORDS)]
    src_ids, tgt_ids = [], []
    for _ in range(sentences):
        sentence: list[int] = []
        while len(sentence) < rng.randint(2, 7):
            word = rng.choices(source_words, weights)[0]
            sentence.append(word)
            if word % 2 == 0 and rng.random() < 0.8:
                sentence.append(word + 1)
        target = [ARTICLE]
        for word in sentence:
            draw = rng.random()
            if draw >= drop:
                target.append(rng.choice(noise_words) if draw < drop + swap else translation[word])
        rng.shuffle(target)
        src_ids.append(sentence)
        tgt_ids.append(target)
    return src_ids, tgt_ids, translation


def top1_hits(shortlist: Shortlist, translation: dict[int, int]) -> int:
    return sum(shortlist.candidates_of(s)[:1].tolist() == [t] for s, t in translation.items())


def rows(shortlist: Shortlist) -> list[list[int]]:
    return [shortlist.candidates_of(s).tolist() for s in range(shortlist.src_vocab_size)]


@pytest.fixture(scope="module")
def toy():
    return dictionary_corpus()


@pytest.fixture(scope="module")
def toy_shortlist(toy):
    src, tgt, _ = toy
    return build_shortlist(src, tgt, SRC_VOCAB, TGT_VOCAB, frequent=5, per_source=3)


def test_ibm1_finds_every_translation_first_and_dice_does_no_better(toy, toy_shortlist):
    src, tgt, translation = toy
    assert top1_hits(toy_shortlist, translation) == WORDS
    dice = build_shortlist(src, tgt, SRC_VOCAB, TGT_VOCAB, frequent=5, per_source=3, method="cooccurrence")
    assert top1_hits(dice, translation) <= WORDS
    assert dice.settings["method"] == "cooccurrence" and toy_shortlist.settings["method"] == "ibm1"


def test_ibm1_beats_dice_on_noisy_data():
    # 30% of words untranslated, 20% replaced by noise: IBM 1 explains the collocated partner's
    # translation away, Dice cannot. Bound asserted: IBM 1 >= 38 of 40 first candidates right,
    # at least as many as Dice, and the true translation among its 3 candidates for every word.
    src, tgt, translation = dictionary_corpus(seed=2, drop=0.3, swap=0.2)
    ibm1 = build_shortlist(src, tgt, SRC_VOCAB, TGT_VOCAB, per_source=3)
    dice = build_shortlist(src, tgt, SRC_VOCAB, TGT_VOCAB, per_source=3, method="cooccurrence")
    assert top1_hits(ibm1, translation) >= 38
    assert top1_hits(ibm1, translation) >= top1_hits(dice, translation)
    assert all(t in ibm1.candidates_of(s).tolist() for s, t in translation.items())


def reference_ibm1(src_ids, tgt_ids, src_vocab, tgt_vocab, iterations):
    """IBM model 1 the textbook way: a dense table and loops over every word of every sentence."""
    null = src_vocab
    table = torch.ones(src_vocab + 1, tgt_vocab, dtype=torch.float64)
    for _ in range(iterations):
        counts = torch.zeros_like(table)
        for src, tgt in zip(src_ids, tgt_ids):
            words = [*src, null]
            for t in tgt:
                total = sum(table[s, t] for s in words)
                for s in words:
                    counts[s, t] += table[s, t] / total
        table = counts / counts.sum(1, keepdim=True).clamp_min(1e-300)
    return table


def test_sparse_chunked_em_equals_the_dense_textbook_version(monkeypatch):
    src, tgt, _ = dictionary_corpus(sentences=60, seed=5, drop=0.2, swap=0.2)
    expected = reference_ibm1(src, tgt, SRC_VOCAB, TGT_VOCAB, iterations=3)
    # Tiny chunks and no cache: many chunks, pending merges and the recompute path all run.
    for pairs_per_chunk, cached in ((1 << 21, 1 << 25), (7, 0)):
        monkeypatch.setattr(shortlist_module, "_PAIRS_PER_CHUNK", pairs_per_chunk)
        monkeypatch.setattr(shortlist_module, "_CACHED_OCCURRENCES", cached)
        corpus = shortlist_module._Corpus.from_lists(src, tgt, SRC_VOCAB, TGT_VOCAB)
        pair_src, pair_tgt, probability = shortlist_module._ibm1(corpus, iterations=3)
        torch.testing.assert_close(probability, expected[pair_src, pair_tgt])
        assert int((expected > 0).sum()) == probability.numel()  # exactly the co-occurring pairs


def test_dice_equals_direct_counts():
    src = [[4, 5, 5], [4], [6, 5]]
    tgt = [[7, 7, 8], [8], [9]]
    shortlist = build_shortlist(src, tgt, 10, 10, per_source=5, frequent=0, method="cooccurrence")
    # c(4)=2, c(5)=2, c(6)=1; c(7)=1, c(8)=2, c(9)=1; sentence counts, repeats counted once
    assert shortlist.candidates_of(4).tolist() == [8, 7]  # dice 2*2/4 = 1.0, then 2*1/3
    assert shortlist.candidates_of(5).tolist() == [7, 9, 8]  # 2*1/3, 2*1/3 (ties in id order), 2*1/4
    assert shortlist.candidates_of(6).tolist() == [9]  # 2*1/2 = 1.0
    assert shortlist.candidates_of(7).tolist() == []


def test_candidate_order_threshold_and_unseen_pieces(toy):
    src, tgt, _ = toy
    everything = build_shortlist(src, tgt, SRC_VOCAB + 5, TGT_VOCAB, per_source=1000, frequent=0)
    assert all(everything.candidates_of(s).numel() == 0 for s in (0, 1, 2, 3, *range(SRC_VOCAB, SRC_VOCAB + 5)))
    few = build_shortlist(src, tgt, SRC_VOCAB, TGT_VOCAB, per_source=2, frequent=0)
    strict = build_shortlist(src, tgt, SRC_VOCAB, TGT_VOCAB, per_source=1000, frequent=0, threshold=0.2)
    for s in range(4, SRC_VOCAB):
        full = everything.candidates_of(s).tolist()
        assert few.candidates_of(s).tolist() == full[:2]  # the best two, best first
        kept = strict.candidates_of(s).tolist()
        assert 1 <= len(kept) < len(full) and kept == full[:len(kept)]


def test_frequent_pieces_are_the_most_frequent_with_eos_first(toy, toy_shortlist):
    _, tgt, _ = toy
    counts = torch.bincount(torch.tensor([t for sentence in tgt for t in sentence]), minlength=TGT_VOCAB)
    frequent = toy_shortlist.frequent.tolist()
    assert frequent[0] == EOS_ID and frequent[1] == ARTICLE and len(frequent) == 5
    others = [int(c) for i, c in enumerate(counts) if i not in frequent]
    assert min(int(counts[i]) for i in frequent[1:]) >= max(others)
    # fewer pieces seen than asked for: only the seen ones
    assert build_shortlist([[4]], [[5, 6]], 8, 8, frequent=100).frequent.tolist() == [EOS_ID, 5, 6]


def test_frequent_only_shortlist(toy, toy_shortlist):
    src, tgt, _ = toy
    for method in ("ibm1", "cooccurrence"):
        only = build_shortlist(src, tgt, SRC_VOCAB, TGT_VOCAB, frequent=5, per_source=0, method=method)
        assert only.candidates.numel() == 0 and not only.offsets.any()
        assert torch.equal(only.frequent, toy_shortlist.frequent)
        assert only.to("cpu").ids_for(torch.tensor([[4, 5]])).tolist() == sorted({0, 1, 2, 3, *only.frequent.tolist()})


def test_pad_bos_unk_never_stored_even_when_the_data_has_them():
    src = [[4, 1, 5], [5, 6], [4, 2]]
    tgt = [[UNK_ID, 7, PAD_ID, BOS_ID], [BOS_ID, 8, UNK_ID], [7, UNK_ID, EOS_ID]]
    for method in ("ibm1", "cooccurrence"):
        shortlist = build_shortlist(src, tgt, 10, 10, method=method, frequent=10, per_source=10)
        stored = torch.cat([shortlist.frequent, shortlist.candidates])
        assert not torch.isin(stored, torch.tensor([PAD_ID, BOS_ID, UNK_ID])).any()
        assert EOS_ID in shortlist.frequent.tolist() and EOS_ID in shortlist.candidates_of(4).tolist()


def test_ids_for_the_union_of_present_pieces_candidates_and_frequent(toy_shortlist):
    batch = torch.tensor([[4, 9, 9, 0, 0], [17, 4, 30, 3, 0]])  # PAD positions and an EOS in the source
    ids = toy_shortlist.ids_for(batch)
    assert ids.dtype == torch.long and ids[:4].tolist() == [PAD_ID, UNK_ID, BOS_ID, EOS_ID]
    assert ids.tolist() == sorted(set(ids.tolist()))
    expected = {0, 1, 2, 3, *toy_shortlist.frequent.tolist()}
    for piece in (4, 9, 17, 30, 3):
        expected |= set(toy_shortlist.candidates_of(piece).tolist())
    assert set(ids.tolist()) == expected
    absent_only = set().union(*(toy_shortlist.candidates_of(s).tolist() for s in range(4, SRC_VOCAB)
                                if s not in (4, 9, 17, 30))) - expected
    assert absent_only and not absent_only & set(ids.tolist())


def test_ids_for_ignores_a_pad_row_and_rejects_unknown_source_ids():
    # PAD_ID's row has a candidate here (a hand-made table): padding must still not bring it in.
    shortlist = Shortlist(frequent=torch.tensor([3], dtype=torch.long), offsets=torch.tensor([0, 1, 1, 1, 1, 2, 3]),
                          candidates=torch.tensor([9, 7, 8]), src_vocab_size=6, tgt_vocab_size=10)
    assert shortlist.ids_for(torch.tensor([[4, 0, 0]])).tolist() == [0, 1, 2, 3, 7]
    assert shortlist.ids_for(torch.tensor([[0]])).tolist() == [0, 1, 2, 3]
    assert shortlist.ids_for(torch.zeros(0, 0, dtype=torch.long)).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="source ids"):
        shortlist.ids_for(torch.tensor([[6]]))


def test_save_load_round_trip(tmp_path, toy_shortlist):
    path = tmp_path / shortlist_module.SHORTLIST_FILE
    toy_shortlist.save(path)
    document = json.loads(path.read_text())
    assert document["format"] == "seq2seq-shortlist" and document["format_version"] == 1
    assert len(document["candidates"]) == SRC_VOCAB and "\n" not in path.read_text()
    loaded = Shortlist.load(path)
    for name in ("frequent", "offsets", "candidates"):
        assert torch.equal(getattr(loaded, name), getattr(toy_shortlist, name)), name
    for name in ("src_vocab_size", "tgt_vocab_size", "src_tokenizer_digest", "tgt_tokenizer_digest", "settings"):
        assert getattr(loaded, name) == getattr(toy_shortlist, name), name
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_save_leaves_the_old_file_when_writing_fails(tmp_path, toy_shortlist, monkeypatch):
    path = tmp_path / "shortlist.json"
    toy_shortlist.save(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shortlist_module.json, "dump", fail)
    with pytest.raises(UserError, match="No space left on device.*nothing was written"):
        toy_shortlist.save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    with pytest.raises(UserError, match="cannot write the shortlist there"):
        toy_shortlist.save(tmp_path / "no such folder" / "shortlist.json")


def _document(shortlist: Shortlist, tmp_path) -> dict:
    shortlist.save(tmp_path / "good.json")
    return json.loads((tmp_path / "good.json").read_text())


CORRUPTIONS = {
    "wrong format": (lambda d: d | {"format": "marian-lex"}, "not a shortlist file"),
    "not an object": (lambda d: [1, 2], "not a shortlist file"),
    "newer version": (lambda d: d | {"format_version": 2}, "newer"),
    "version a string": (lambda d: d | {"format_version": "1"}, "format_version"),
    "vocab size a bool": (lambda d: d | {"src_vocab_size": True}, "src_vocab_size"),
    "digest not a string": (lambda d: d | {"tgt_tokenizer": 5}, "tgt_tokenizer"),
    "settings not an object": (lambda d: d | {"settings": []}, "settings"),
    "frequent with a float": (lambda d: d | {"frequent": [3, 4.0]}, "frequent"),
    "candidates not lists": (lambda d: d | {"candidates": [5] * SRC_VOCAB}, "candidates"),
    "id out of range": (lambda d: d | {"candidates": [[TGT_VOCAB]] + d["candidates"][1:]}, "outside"),
    "negative id": (lambda d: d | {"frequent": [-1]}, "outside"),
    "too few lists": (lambda d: d | {"candidates": d["candidates"][:-1]}, f"{SRC_VOCAB - 1} lists"),
    "too many lists": (lambda d: d | {"candidates": d["candidates"] + [[]]}, f"{SRC_VOCAB + 1} lists"),
    "PAD in candidates": (lambda d: d | {"candidates": [[PAD_ID]] + d["candidates"][1:]}, "pad, bos or unk"),
    "BOS in frequent": (lambda d: d | {"frequent": [3, BOS_ID]}, "pad, bos or unk"),
    "UNK in candidates": (lambda d: d | {"candidates": d["candidates"][:-1] + [[UNK_ID]]}, "pad, bos or unk"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_invalid_files_are_refused_in_one_line(tmp_path, toy_shortlist, case):
    corrupt, expected = CORRUPTIONS[case]
    path = tmp_path / "shortlist.json"
    path.write_text(json.dumps(corrupt(_document(toy_shortlist, tmp_path))))
    with pytest.raises(UserError, match=expected) as error:
        Shortlist.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_unreadable_files_are_refused_in_one_line(tmp_path, toy_shortlist):
    toy_shortlist.save(tmp_path / "whole.json")
    text = (tmp_path / "whole.json").read_bytes()
    (tmp_path / "truncated.json").write_bytes(text[: len(text) // 2])
    (tmp_path / "latin1.json").write_bytes(b'{"format": "caf\xe9"}')
    for name, expected in (("truncated.json", "invalid JSON at line 1"), ("latin1.json", "not UTF-8"),
                           ("missing.json", "not found")):
        with pytest.raises(UserError, match=expected) as error:
            Shortlist.load(tmp_path / name)
        assert name in str(error.value) and "\n" not in str(error.value)
    # EOS is a valid stored id
    document = _document(toy_shortlist, tmp_path) | {"frequent": [EOS_ID]}
    (tmp_path / "eos.json").write_text(json.dumps(document))
    assert Shortlist.load(tmp_path / "eos.json").frequent.tolist() == [EOS_ID]


def memmapped(directory, src_ids, tgt_ids):
    """What MemmapParallelDataset exposes: per side a memory-mapped token array and (pairs + 1,) offsets."""
    tokens, offsets = {}, {}
    for side, sentences in (("src", src_ids), ("tgt", tgt_ids)):
        flat = np.array([i for sentence in sentences for i in sentence], dtype=np.uint16)
        flat.tofile(directory / f"{side}.tokens")
        np.cumsum([0, *map(len, sentences)], dtype=np.int64).tofile(directory / f"{side}.offsets")
        tokens[side] = np.memmap(directory / f"{side}.tokens", dtype=np.uint16, mode="r")
        offsets[side] = np.memmap(directory / f"{side}.offsets", dtype=np.int64, mode="r")
    return SimpleNamespace(tokens=tokens, offsets=offsets)


def test_build_from_datasets_in_memory_and_memory_mapped(tmp_path, toy, monkeypatch):
    src, tgt, _ = toy
    (tmp_path / "src.model").write_bytes(b"source tokenizer")
    (tmp_path / "tgt.model").write_bytes(b"target tokenizer")
    src_tokenizer = SimpleNamespace(model_file=tmp_path / "src.model", vocab_size=SRC_VOCAB)
    tgt_tokenizer = SimpleNamespace(model_file=tmp_path / "tgt.model", vocab_size=TGT_VOCAB)
    settings = {"frequent": 7, "per_source": 4, "method": "ibm1"}
    expected = build_shortlist(src, tgt, SRC_VOCAB, TGT_VOCAB, **settings, src_tokenizer_digest=file_digest(
        tmp_path / "src.model"), tgt_tokenizer_digest=file_digest(tmp_path / "tgt.model"))
    monkeypatch.setattr(shortlist_module, "_PAIRS_PER_CHUNK", 500)  # many chunks read from the memmap
    for dataset in (SimpleNamespace(src_ids=src, tgt_ids=tgt), memmapped(tmp_path, src, tgt)):
        built = shortlist_module.build_from_dataset(dataset, src_tokenizer, tgt_tokenizer, settings)
        for name in ("frequent", "offsets", "candidates"):
            assert torch.equal(getattr(built, name), getattr(expected, name)), name
        assert built.settings == expected.settings | {"iterations": 5, "threshold": 0.0}
        assert built.tgt_tokenizer_digest == file_digest(tmp_path / "tgt.model")
    with pytest.raises(UserError, match="unknown shortlist setting.*per_sorce"):
        shortlist_module.build_from_dataset(dataset, src_tokenizer, tgt_tokenizer, {"per_sorce": 3})


def test_tokenizer_digest_and_size_must_match(tmp_path):
    model_a, model_b = tmp_path / "a.model", tmp_path / "b.model"
    model_a.write_bytes(b"tokenizer model A")
    model_b.write_bytes(b"tokenizer model B")
    src, tgt, _ = dictionary_corpus(sentences=50)
    shortlist = build_shortlist(src, tgt, SRC_VOCAB, TGT_VOCAB, src_tokenizer_digest=file_digest(model_a),
                                tgt_tokenizer_digest=file_digest(model_b))
    path = tmp_path / "shortlist.json"
    shortlist.save(path)
    src_tokenizer = SimpleNamespace(model_file=model_a, vocab_size=SRC_VOCAB)
    tgt_tokenizer = SimpleNamespace(model_file=model_b, vocab_size=TGT_VOCAB)
    assert Shortlist.load(path, src_tokenizer, tgt_tokenizer).src_tokenizer_digest == file_digest(model_a)

    swapped = SimpleNamespace(model_file=model_a, vocab_size=TGT_VOCAB)
    with pytest.raises(UserError, match="built for another target vocabulary.*rebuild it with seq2seq-shortlist"):
        Shortlist.load(path, src_tokenizer, swapped)
    resized = SimpleNamespace(model_file=model_a, vocab_size=SRC_VOCAB + 1)
    with pytest.raises(UserError, match="another source vocabulary") as error:
        Shortlist.load(path, src_tokenizer=resized)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("settings", "expected"), [
    ({"method": "ibm2"}, "method"), ({"frequent": -1}, "frequent"), ({"per_source": 2.5}, "per_source"),
    ({"iterations": 0}, "iterations"), ({"threshold": 1.5}, "threshold"), ({"threshold": "0.1"}, "threshold"),
])
def test_bad_settings_are_user_errors(settings, expected):
    with pytest.raises(UserError, match=expected):
        build_shortlist([[4]], [[5]], 8, 8, **settings)


def test_mismatched_corpus_and_out_of_range_ids():
    with pytest.raises(UserError, match="1 source sentences but 2 target"):
        build_shortlist([[4]], [[5], [6]], 8, 8)
    with pytest.raises(ValueError, match="target ids"):
        build_shortlist([[4]], [[8]], 8, 8)


def test_large_vocabularies_build_without_a_dense_table():
    # A dense 50,000 x 50,000 float64 table would take 20 GB: built sparsely it takes no time.
    rng = random.Random(0)
    src = [[rng.randrange(4, 50_000) for _ in range(12)] for _ in range(300)]
    tgt = [[(s * 7919) % 49_996 + 4 for s in sentence] for sentence in src]
    start = time.perf_counter()
    for method in ("ibm1", "cooccurrence"):
        shortlist = build_shortlist(src, tgt, 50_000, 50_000, method=method, per_source=20)
        assert shortlist.offsets.numel() == 50_001
        first = src[0][0]
        assert (first * 7919) % 49_996 + 4 in shortlist.candidates_of(first).tolist()
        ids = shortlist.ids_for(torch.tensor(src[:10]))
        assert ids.numel() <= 4 + 100 + 10 * 12 * 20
    assert time.perf_counter() - start < 20
