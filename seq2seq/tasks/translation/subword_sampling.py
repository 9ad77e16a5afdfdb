"""Subword regularization of the training split: every batch is segmented afresh when drawn.

Batches are still cut once, on the corpus's deterministic segmentation (their number stays fixed,
which Lightning plans an epoch by); only the pieces inside them change. The draw for a batch is
seeded by (data seed, epoch, the batch's first position), all of which a checkpoint restores, so
a resumed run sees the segmentations the interrupted one would have, and under DDP each rank
draws for its own shard's batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from seq2seq.tasks.translation.corpus import Batch, ParallelDataset, make_batch
from seq2seq.tokenizer import SubwordSampling, Tokenizer


def batch_generator(seed: int, epoch: int, first_position: int, side: str) -> np.random.Generator:
    key = f"{seed}/{epoch}/{first_position}/{side}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


class SampledParallelDataset(ParallelDataset):
    """A `ParallelDataset` that also holds its text and, indexed with (epoch, positions) by
    `EpochTaggedBatches`, returns a batch of freshly sampled segmentations."""

    def __init__(self, encoded: ParallelDataset, src_lines: Sequence[str], tgt_lines: Sequence[str],
                 tokenizers: tuple[Tokenizer, Tokenizer], sampling: SubwordSampling, seed: int,
                 max_len: int | None) -> None:
        super().__init__(encoded.src_ids, encoded.tgt_ids, encoded.corpus_index)
        # Only the kept pairs' text, in dataset order.
        self.src_lines = [src_lines[i] for i in self.corpus_index]
        self.tgt_lines = [tgt_lines[i] for i in self.corpus_index]
        self.src_tokenizer, self.tgt_tokenizer = tokenizers
        self.sampling, self.seed, self.max_len = sampling, seed, max_len

    def sampled(self, epoch: int, positions: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
        """The batch's sampled (source, target) ids; a sample that comes out longer than max_len
        keeps the deterministic segmentation, so no pair is dropped or cut."""
        sides = []
        for side, tokenizer, lines, fixed in (("src", self.src_tokenizer, self.src_lines, self.src_ids),
                                              ("tgt", self.tgt_tokenizer, self.tgt_lines, self.tgt_ids)):
            generator = batch_generator(self.seed, epoch, positions[0], side)
            draws = tokenizer.sample_encode([lines[i] for i in positions], self.sampling, generator)
            sides.append([ids if ids and (self.max_len is None or len(ids) <= self.max_len) else fixed[i]
                          for ids, i in zip(draws, positions)])
        return sides[0], sides[1]

    def __getitem__(self, key: tuple[int, Sequence[int]] | Sequence[int]) -> Batch:
        if not isinstance(key, tuple):  # plain positions: the deterministic segmentation
            return super().__getitem__(key)
        epoch, positions = key
        src, tgt = self.sampled(epoch, positions)
        return make_batch(src, tgt, [self.corpus_index[i] for i in positions])


class EpochTaggedBatches(Sampler):
    """Hands out (epoch, batch) instead of batch, so that the dataset, which may live in a worker
    process that never hears of `set_epoch`, knows which epoch's draw to make."""

    def __init__(self, sampler: Sampler[list[int]]) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        epoch = self.epoch
        return ((epoch, batch) for batch in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
