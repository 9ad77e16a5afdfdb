"""Corpora on disk -> validated lines -> encoded pairs -> length-bucketed token batches.

Everything here is independent of Lightning: the DataModule in `datamodule.py` wires it up.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from seq2seq.errors import UserError
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

log = logging.getLogger(__name__)


def read_lines(path: str | os.PathLike) -> list[str]:
    """All lines of a UTF-8 text file, without line endings.

    Refuses missing files, directories, empty files and invalid UTF-8, naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a text file with one sentence per line")
    lines = []
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise UserError(
                        f"{path}:{number}: invalid UTF-8 (byte {error.start} of the line); "
                        "convert the file to UTF-8, e.g. with iconv"
                    ) from None
                lines.append(text.rstrip("\r\n"))
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    if not lines:
        raise UserError(f"{path}: file is empty")
    return lines


def read_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Aligned source and target lines; different line counts are an error."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise UserError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
            "parallel files must be aligned line by line"
        )
    return src, tgt


@dataclass
class Batch:
    """A padded batch of sentence pairs. `indices` are positions in the corpus."""

    src: torch.Tensor  # (B, S) source ids, PAD_ID after each sentence
    src_lengths: torch.Tensor  # (B,)
    tgt_in: torch.Tensor  # (B, T) BOS + target ids
    tgt_out: torch.Tensor  # (B, T) target ids + EOS
    indices: torch.Tensor  # (B,)

    @property
    def num_tgt_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    def pin_memory(self) -> "Batch":
        """Page-locked copies, which the DataLoader's pin_memory calls, for faster copies to a GPU."""
        return Batch(*(getattr(self, f.name).pin_memory() for f in fields(self)))


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    """(B, max_len) LongTensor, right-padded."""
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), max(width, 1)), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


class ParallelDataset(Dataset):
    """Encoded sentence pairs. Indexing with a list of positions returns a whole `Batch`.

    Indexing by batch (not by sentence) keeps Python work per step at one call; the sampler
    hands out lists of positions.
    """

    def __init__(self, src_ids: list[list[int]], tgt_ids: list[list[int]],
                 keep: Sequence[int] | None = None) -> None:
        assert len(src_ids) == len(tgt_ids)
        self.src_ids = src_ids
        self.tgt_ids = tgt_ids
        # `keep` maps dataset positions to corpus line numbers (after filtering).
        self.corpus_index = list(keep) if keep is not None else list(range(len(src_ids)))

    def __len__(self) -> int:
        return len(self.src_ids)

    @property
    def src_lengths(self) -> list[int]:
        return [len(s) for s in self.src_ids]

    @property
    def tgt_lengths(self) -> list[int]:
        return [len(t) + 1 for t in self.tgt_ids]  # +1 for BOS/EOS

    def __getitem__(self, positions: Sequence[int]) -> Batch:
        return make_batch([self.src_ids[i] for i in positions], [self.tgt_ids[i] for i in positions],
                          [self.corpus_index[i] for i in positions])


def make_batch(src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], indices: Sequence[int]) -> Batch:
    """Pad encoded pairs into a `Batch`; `indices` are their corpus positions."""
    return Batch(
        src=pad_sequences(src),
        src_lengths=torch.tensor([max(len(s), 1) for s in src], dtype=torch.long),
        tgt_in=pad_sequences([[BOS_ID, *t] for t in tgt]),
        tgt_out=pad_sequences([[*t, EOS_ID] for t in tgt]),
        indices=torch.tensor(indices, dtype=torch.long),
    )


def encode_parallel(
    src_lines: Sequence[str],
    tgt_lines: Sequence[str],
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    max_len: int | None = None,
    name: str = "corpus",
) -> ParallelDataset:
    """Encode pairs; drop empty pairs and (when `max_len` is set) pairs longer than it.

    The number of pairs dropped for each reason is logged, so a filter never eats data silently.
    """
    src_ids = src_tokenizer.encode(src_lines)
    tgt_ids = tgt_tokenizer.encode(tgt_lines)
    keep, empty, too_long = [], 0, 0
    for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        if not s or not t:
            empty += 1
        elif max_len is not None and (len(s) > max_len or len(t) > max_len):
            too_long += 1
        else:
            keep.append(i)
    if not keep:
        raise UserError(f"{name}: no usable sentence pairs (empty: {empty}, over {max_len} pieces: {too_long})")
    if empty or too_long:
        log.info("%s: kept %d of %d pairs (dropped %d empty, %d longer than %s pieces)",
                 name, len(keep), len(src_ids), empty, too_long, max_len)
    else:
        log.info("%s: %d pairs", name, len(keep))
    return ParallelDataset([src_ids[i] for i in keep], [tgt_ids[i] for i in keep], keep)


class TokenBatchSampler(Sampler[list[int]]):
    """Batches of similar-length pairs holding at most `max_tokens` padded tokens each.

    The batches are cut once: positions are shuffled (by `seed`), sorted by length, and cut by
    padded token count, so neighbours have similar lengths and padding stays low. Every epoch
    shuffles the order of those batches (by `seed + epoch`). Keeping the batches fixed keeps
    their number fixed, which Lightning relies on: it reads the epoch length once and plans
    validation by it (fairseq fixes its batches the same way).

    Under DDP each rank takes every `num_replicas`-th batch; the list is first padded by
    repetition to a multiple of `num_replicas` so every rank runs the same number of steps
    (a rank that ran out early would leave the others waiting in an all-reduce).
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if max_tokens <= 0:
            raise UserError(f"data.max_tokens={max_tokens} must be positive")
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        n = len(src_lengths)
        order = list(range(n))
        if shuffle:
            # Random order first, then a stable sort: equal-length pairs land in random batches.
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        order.sort(key=lambda i: (src_lengths[i], tgt_lengths[i]))
        self.batches = cut_batches(order, src_lengths, tgt_lengths, max_tokens)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_batches(self) -> list[list[int]]:
        batches = self.batches
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
        if self.num_replicas > 1:
            batches = batches + batches[: -len(batches) % self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._epoch_batches()[self.rank::self.num_replicas]

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.num_replicas)


def cut_batches(order, src_lengths, tgt_lengths, max_tokens: int) -> list[list[int]]:
    """Cut positions, taken in `order`, into consecutive batches of at most `max_tokens` padded
    tokens (batch size x longest side); a pair longer than the budget gets a batch of its own."""
    if isinstance(order, np.ndarray):
        order, src_lengths, tgt_lengths = order.tolist(), src_lengths.tolist(), tgt_lengths.tolist()
    batches, current, width = [], [], 0
    for i in order:
        longest = max(width, src_lengths[i], tgt_lengths[i])
        if current and longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], max(src_lengths[i], tgt_lengths[i])
        current.append(i)
        width = longest
    if current:
        batches.append(current)
    return batches


def padding_ratio(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Fraction of padded positions across `batches` for one side's `lengths`."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    return 1.0 - real / padded if padded else 0.0


def read_text(path: str | os.PathLike) -> str:
    """A whole UTF-8 text file; a bad byte names its line."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a text file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserError(f"{path}:{line}: invalid UTF-8 (byte {error.start} of the file)") from None

