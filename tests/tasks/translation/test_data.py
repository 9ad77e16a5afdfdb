import pytest

from seq2seq.batching import TokenBatchSampler, padding_ratio
from seq2seq.errors import UserError
from seq2seq.tasks.translation.corpus import ParallelDataset
from seq2seq.text import read_lines, read_parallel
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID


def test_read_lines_strips_line_endings(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("Ein Hund\r\nläuft\n\nim Park".encode())
    assert read_lines(path) == ["Ein Hund", "läuft", "", "im Park"]


@pytest.mark.parametrize("case, message", [
    ("missing", "file not found"),
    ("directory", "is a directory"),
    ("empty", "file is empty"),
    ("invalid", r"bad\.txt:3: invalid UTF-8"),
])
def test_read_lines_refuses_bad_files(tmp_path, case, message):
    path = tmp_path / "bad.txt"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "invalid":
        path.write_bytes(b"ok\nfine\nbroken \xff\xfe here\n")
    with pytest.raises(UserError, match=message):
        read_lines(path)


def test_misaligned_parallel_files_name_both(tmp_path):
    (tmp_path / "x.de").write_text("a\nb\nc\n")
    (tmp_path / "x.en").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"x\.de has 3 lines but .*x\.en has 2"):
        read_parallel(tmp_path / "x.de", tmp_path / "x.en")


def test_dataset_batches_add_bos_and_eos():
    data = ParallelDataset([[5, 6, 7], [8]], [[9], [10, 11]])
    batch = data[[0, 1]]
    assert batch.src.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [3, 1]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID], [BOS_ID, 10, 11]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, PAD_ID], [10, 11, EOS_ID]]
    assert batch.num_tgt_tokens == 5


def lengths(n=500, seed=0):
    import random
    rng = random.Random(seed)
    return [rng.randint(1, 40) for _ in range(n)], [rng.randint(1, 40) for _ in range(n)]


def test_token_batches_respect_budget_and_cover_corpus_once():
    src, tgt = lengths()
    sampler = TokenBatchSampler(src, tgt, max_tokens=300, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert max(max(src[i], tgt[i]) for i in b) * len(b) <= 300
    # Length bucketing keeps padding low compared with random batches of the same sizes.
    assert padding_ratio(batches, src) < 0.35


def test_token_batches_deterministic_per_seed_and_epoch():
    src, tgt = lengths()
    a = TokenBatchSampler(src, tgt, max_tokens=300, seed=1)
    b = TokenBatchSampler(src, tgt, max_tokens=300, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert len(list(a)) == len(a) == len(list(b))  # Lightning plans each epoch by len()
    assert list(TokenBatchSampler(src, tgt, max_tokens=300, seed=2)) != list(b)


@pytest.mark.parametrize("world", [2, 3])
def test_token_batches_shard_across_ranks(world):
    src, tgt = lengths(503)
    shards = [list(TokenBatchSampler(src, tgt, max_tokens=250, seed=3, num_replicas=world, rank=r))
              for r in range(world)]
    # Every rank runs the same number of steps (no rank waits forever in an all-reduce).
    assert len({len(s) for s in shards}) == 1
    assert all(len(TokenBatchSampler(src, tgt, 250, seed=3, num_replicas=world, rank=r)) == len(shards[0])
               for r in range(world))
    single = list(TokenBatchSampler(src, tgt, max_tokens=250, seed=3))
    union = [b for s in shards for b in s]
    # Ranks see distinct batches; together they cover the corpus (a few repeated to even out).
    assert {tuple(b) for b in union} == {tuple(b) for b in single}
    assert len(union) - len(single) < world


def test_zero_budget_is_a_user_error():
    with pytest.raises(UserError, match="max_tokens"):
        TokenBatchSampler([1], [1], max_tokens=0)
