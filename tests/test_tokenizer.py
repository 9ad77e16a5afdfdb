import os

import pytest

from seq2seq.errors import UserError
from seq2seq.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    SentencePieceSettings,
    Tokenizer,
    train_or_load,
)

SENTENCES = [
    "Ein Hund läuft im Park.", "Zwei Männer spielen Fußball auf einer Wiese.",
    "A dog runs in the park.", "Two men are playing soccer on a field.",
    "Eine Frau mit einem roten Hut liest ein Buch.", "A woman in a red hat reads a book.",
] * 20


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_round_trip_is_exact(tmp_path, corpus, model_type):
    tok = train_or_load([corpus], tmp_path / "cache", SentencePieceSettings(vocab_size=60, model_type=model_type))
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert len(tok) == 60
    ids = tok.encode(SENTENCES[:6])
    assert all(min(seq) > EOS_ID for seq in ids)
    assert tok.decode(ids) == SENTENCES[:6]
    # Special ids are dropped on decoding.
    assert tok.decode([[BOS_ID] + ids[0] + [EOS_ID, PAD_ID]]) == [SENTENCES[0]]


def test_cached_by_content_and_settings(tmp_path, corpus):
    cache = tmp_path / "cache"
    first = train_or_load([corpus], cache, SentencePieceSettings(vocab_size=60))
    mtime = os.stat(first.model_file).st_mtime_ns
    again = train_or_load([corpus], cache, SentencePieceSettings(vocab_size=60))
    assert again.model_file == first.model_file
    assert os.stat(again.model_file).st_mtime_ns == mtime  # reused, not retrained
    other = train_or_load([corpus], cache, SentencePieceSettings(vocab_size=55))
    assert other.model_file != first.model_file
    corpus.write_text("\n".join(SENTENCES[::-1]) + "\nnoch ein Satz\n", encoding="utf-8")
    edited = train_or_load([corpus], cache, SentencePieceSettings(vocab_size=60))
    assert edited.model_file != first.model_file
    assert len(list(cache.glob("*.model"))) == 3


def test_unknown_characters_map_to_unk(tmp_path, corpus):
    tok = train_or_load([corpus], tmp_path / "cache",
                        SentencePieceSettings(vocab_size=60, character_coverage=1.0))
    ids = tok.encode(["Ein Hund 🐕 läuft"])[0]
    assert UNK_ID in ids


def test_bad_settings_and_files(tmp_path, corpus):
    with pytest.raises(UserError, match="model_type"):
        SentencePieceSettings(model_type="wordpiece")
    with pytest.raises(UserError, match="not found"):
        train_or_load([tmp_path / "nope.txt"], tmp_path / "cache", SentencePieceSettings())
    with pytest.raises(UserError, match="Vocabulary size too high"):
        train_or_load([corpus], tmp_path / "cache", SentencePieceSettings(vocab_size=5000))
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load SentencePiece model"):
        Tokenizer(tmp_path / "junk.model")
