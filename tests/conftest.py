"""Shared fixtures: tiny models and small corpora that the tests generate themselves."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from seq2seq.models import Seq2Seq

WORDS = ["red", "blue", "green", "dog", "cat", "runs", "sits", "big", "small", "tree",
         "house", "river", "sun", "moon", "car", "bird", "fish", "stone", "hill", "road"]


def make_reversal_corpus(directory: Path, sizes: dict[str, int], seed: int = 0,
                         min_len: int = 3, max_len: int = 7) -> Path:
    """<split>.src holds random word sequences, <split>.tgt the same words reversed and upper-cased."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        src, tgt = [], []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(min_len, max_len))]
            src.append(" ".join(words))
            tgt.append(" ".join(reversed(words)).upper())
        (directory / f"{split}.src").write_text("\n".join(src) + "\n", encoding="utf-8")
        (directory / f"{split}.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return directory


def tiny_model(attention: str = "luong_general", **overrides) -> Seq2Seq:
    torch.manual_seed(0)
    settings = dict(src_vocab_size=23, tgt_vocab_size=29, embed_dim=8, encoder_hidden_size=6,
                    encoder_layers=2, decoder_hidden_size=12, decoder_layers=2, attention=attention,
                    dropout=0.0)
    if attention == "luong_dot":
        settings["decoder_hidden_size"] = 12  # = 2 directions x 6
    settings.update(overrides)
    return Seq2Seq(**settings).eval()


def random_batch(lengths: list[int], vocab: int = 23, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) padded source ids (no specials) and their lengths."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, n in enumerate(lengths):
        src[row, :n] = torch.randint(4, vocab, (n,), generator=generator)
    return src, torch.tensor(lengths)


@pytest.fixture
def reversal_corpus(tmp_path: Path) -> Path:
    return make_reversal_corpus(tmp_path / "corpus", {"train": 400, "val": 40, "test": 40})
