"""Memory-mapped corpora: prepare once, read back exactly, batch without sorting the whole corpus."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from seq2seq.batching import ResumableSampler, padding_ratio
from seq2seq.errors import UserError
from seq2seq.tasks.translation.corpus import (
    ChunkedTokenBatchSampler,
    MemmapParallelDataset,
    prepare_corpus,
)
from seq2seq.tokenizer import SentencePieceSettings, train_or_load
from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run, run_in_process

SCRIPTS = ["the cat sat on the mat", "Привет, как дела?", "日本語の文を書きます。", "مرحبا بالعالم",
           "emoji 🙂 and ümlauts", "Ελληνικά γράμματα", "한국어 문장"]


def mixed_corpus(directory: Path, pairs: int = 300, seed: int = 0) -> tuple[Path, Path, list[str], list[str]]:
    """Lines in several scripts, with empty lines on either side and some very long lines."""
    rng = random.Random(seed)
    src, tgt = [], []
    for i in range(pairs):
        a, b = rng.choice(SCRIPTS), rng.choice(SCRIPTS)
        if i % 37 == 0:
            a = ""
        if i % 41 == 0:
            b = ""
        if i % 53 == 0:
            a = " ".join([a or "long"] * 400)
        src.append(a)
        tgt.append(b)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.src").write_text("\n".join(src) + "\n", encoding="utf-8")
    (directory / "train.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return directory / "train.src", directory / "train.tgt", src, tgt


@pytest.fixture
def tokenizer(tmp_path):
    src, tgt, _, _ = mixed_corpus(tmp_path / "text")
    return train_or_load([src, tgt], tmp_path / "tok", SentencePieceSettings(vocab_size=120, model_type="char"))


def test_the_dataset_returns_exactly_the_encoded_sentences_in_order(tmp_path, tokenizer):
    src_path, tgt_path, src, tgt = mixed_corpus(tmp_path / "text")
    # Small chunks so that sentences straddle chunk boundaries.
    directory = prepare_corpus(src_path, tgt_path, tokenizer, tokenizer, tmp_path / "prepared", lines_per_chunk=7)
    dataset = MemmapParallelDataset(directory)
    assert len(dataset) == len(src) == 300
    assert [dataset.sentence("src", i) for i in range(len(src))] == tokenizer.encode(src)
    assert [dataset.sentence("tgt", i) for i in range(len(tgt))] == tokenizer.encode(tgt)
    assert dataset.sentence("src", 37) == [] and dataset.sentence("tgt", 41) == []
    assert max(len(dataset.sentence("src", i)) for i in range(300)) > 2000
    assert tokenizer.decode([dataset.sentence("tgt", 2)]) == [tgt[2]]
    batch = dataset[[5, 1, 3]]
    assert batch.indices.tolist() == [5, 1, 3]
    assert batch.src[1, : len(dataset.sentence("src", 1))].tolist() == dataset.sentence("src", 1)


def test_bad_corpora_are_refused_in_one_line_and_leave_nothing_behind(tmp_path, tokenizer):
    directory = tmp_path / "bad"
    directory.mkdir()
    (directory / "a.src").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (directory / "a.tgt").write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(UserError, match="a.tgt has 2 lines but .*a.src has more.*aligned"):
        prepare_corpus(directory / "a.src", directory / "a.tgt", tokenizer, tokenizer, tmp_path / "out")
    with pytest.raises(UserError, match="a.tgt has 2 lines but .*a.src has more.*aligned"):  # source shorter
        prepare_corpus(directory / "a.tgt", directory / "a.src", tokenizer, tokenizer, tmp_path / "out")
    (directory / "b.src").write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(UserError, match=r"b.src:2: invalid UTF-8"):
        prepare_corpus(directory / "b.src", directory / "a.src", tokenizer, tokenizer, tmp_path / "out")
    (directory / "empty.src").write_bytes(b"")
    with pytest.raises(UserError, match="file is empty"):
        prepare_corpus(directory / "empty.src", directory / "empty.src", tokenizer, tokenizer, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "text", "tok"]  # no partial output

    src_path, tgt_path, _, _ = mixed_corpus(tmp_path / "text")
    prepared = prepare_corpus(src_path, tgt_path, tokenizer, tokenizer, tmp_path / "prepared")
    tokens = prepared / "tgt.tokens"
    tokens.write_bytes(tokens.read_bytes()[:-10])
    with pytest.raises(UserError, match="tgt.tokens: missing or truncated"):
        MemmapParallelDataset(prepared)
    with pytest.raises(UserError, match="not a prepared corpus"):
        MemmapParallelDataset(tmp_path / "bad")


@pytest.fixture
def reversal_dataset(tmp_path):
    corpus = make_reversal_corpus(tmp_path / "rev", {"train": 1000}, seed=2, min_len=1, max_len=12)
    tokenizer = train_or_load([corpus / "train.src", corpus / "train.tgt"], tmp_path / "tok2",
                              SentencePieceSettings(vocab_size=44, model_type="word"))
    return MemmapParallelDataset(prepare_corpus(corpus / "train.src", corpus / "train.tgt", tokenizer, tokenizer,
                                                tmp_path / "rev_prepared"))


def test_chunked_batches_cover_each_pair_once_per_epoch_within_the_budget(reversal_dataset):
    dataset = reversal_dataset
    sampler = ChunkedTokenBatchSampler(dataset, max_tokens=120, seed=1, chunk_size=128, pool_chunks=2)
    src_lengths = dataset.lengths("src", 0, len(dataset)).tolist()
    tgt_lengths = (dataset.lengths("tgt", 0, len(dataset)) + 1).tolist()
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == sampler.total_batches
        assert sorted(i for b in batches for i in b) == list(range(len(dataset)))
        for b in batches:
            assert len(b) == 1 or max(max(src_lengths[i], tgt_lengths[i]) for i in b) * len(b) <= 120
        orders.append(batches)
        assert padding_ratio(batches, src_lengths) < 0.1
    assert orders[0] != orders[1] != orders[2]


@pytest.mark.parametrize("world", [2, 3])
def test_chunked_batches_shard_across_ranks(reversal_dataset, world):
    single = list(ChunkedTokenBatchSampler(reversal_dataset, 120, seed=4, chunk_size=100))
    shards = [list(ChunkedTokenBatchSampler(reversal_dataset, 120, seed=4, chunk_size=100, num_replicas=world,
                                            rank=r)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    interleaved = [shards[n % world][n // world] for n in range(len(shards[0]) * world)]
    assert interleaved[: len(single)] == single  # distinct batches: the epoch, in order, once
    assert interleaved[len(single):] == single[: len(interleaved) - len(single)]  # padding repeats the first


def test_overlong_and_empty_pairs_are_left_out(tmp_path, tokenizer):
    src_path, tgt_path, src, tgt = mixed_corpus(tmp_path / "text")
    dataset = MemmapParallelDataset(prepare_corpus(src_path, tgt_path, tokenizer, tokenizer, tmp_path / "p"))
    sampler = ChunkedTokenBatchSampler(dataset, max_tokens=4000, max_len=100, chunk_size=64)
    used = {i for b in sampler for i in b}
    expected = {i for i, (s, t) in enumerate(zip(tokenizer.encode(src), tokenizer.encode(tgt)))
                if s and t and len(s) <= 100 and len(t) <= 100}
    assert used == expected and 0 < len(expected) < 300


def test_a_resumed_epoch_continues_with_the_batches_not_yet_trained(reversal_dataset):
    sampler = ResumableSampler(ChunkedTokenBatchSampler(reversal_dataset, 120, seed=3, chunk_size=100))
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume(epoch=2, batches_done=7)
    assert list(sampler) == full[7:]
    assert list(sampler) == full  # only the first iteration after resume skips
    sampler.resume(epoch=2, batches_done=len(full))  # a checkpoint at the end of epoch 2
    assert sampler.epoch == 3 and len(list(sampler)) == len(full)


@pytest.mark.slow
def test_prepare_then_train_from_the_memory_mapped_corpus(tmp_path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 400, "val": 20, "test": 10})
    settings = [*TINY_REVERSAL, "data.data_dir=corpus"]
    prepared = run(["seq2seq-prepare", *settings], cwd=tmp_path)
    assert "400 pairs" in prepared.stdout
    assert len(list((tmp_path / "cache" / "corpora").iterdir())) == 1
    trained = run(["seq2seq-train", *settings, "data.storage=memmap", "trainer.max_epochs=2", "hydra.run.dir=run"],
                  cwd=tmp_path)
    assert "model written to" in trained.stdout
    assert "reusing prepared corpus" in trained.stderr + trained.stdout
    bad = run_in_process(["seq2seq-train", *settings, "data.storage=disk", "hydra.run.dir=run2"], cwd=tmp_path)
    assert bad.returncode == 2 and "data.storage='disk' is not one of memory, memmap" in bad.stderr
