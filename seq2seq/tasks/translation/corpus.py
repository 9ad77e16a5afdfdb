"""Parallel corpora as datasets of token ids: in memory (`ParallelDataset`, `encode_parallel`) or,
for corpora larger than memory, encoded once into memory-mapped token arrays.

Layout of a prepared corpus directory:
  index.json              format, number of pairs, token dtype, where the text came from
  src.tokens, tgt.tokens  every sentence's piece ids, back to back (uint16, or int32 for
                          vocabularies over 65,535 pieces)
  src.offsets, tgt.offsets int64, pairs + 1 entries: sentence i is tokens[offsets[i]:offsets[i+1]]

Every line is kept, empty ones included, so position i is line i + 1 of the text files;
filters (empty pairs, overlong pairs) are applied when batches are cut, not here.
Preparing streams: it holds one chunk of lines at a time, so it works on any corpus size.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from seq2seq.batching import (
    cut_batches,
    pad_sequences,
)
from seq2seq.errors import UserError
from seq2seq.text import read_utf8_lines
from seq2seq.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Tokenizer,
)

log = logging.getLogger(__name__)

FORMAT_NAME = "seq2seq-corpus"
FORMAT_VERSION = 1
SIDES = ("src", "tgt")


def _chunks(src_path: Path, tgt_path: Path, lines_per_chunk: int) -> Iterator[tuple[list[str], list[str]]]:
    """Aligned chunks of lines from both files; a different line count is an error."""
    for path in (src_path, tgt_path):
        if not path.is_file():
            raise UserError(f"{path}: file not found")
    with open(src_path, "rb") as src_handle, open(tgt_path, "rb") as tgt_handle:
        src_lines, tgt_lines = read_utf8_lines(src_handle, str(src_path)), read_utf8_lines(tgt_handle, str(tgt_path))
        count = 0
        while src := list(itertools.islice(src_lines, lines_per_chunk)):
            tgt = list(itertools.islice(tgt_lines, len(src)))
            count += len(tgt)
            if len(tgt) < len(src):
                raise UserError(f"{tgt_path} has {count} lines but {src_path} has more: "
                                "parallel files must be aligned line by line")
            yield src, tgt
        if next(tgt_lines, None) is not None:
            raise UserError(f"{src_path} has {count} lines but {tgt_path} has more: "
                            "parallel files must be aligned line by line")
        if count == 0:
            raise UserError(f"{src_path}: file is empty")


def source_fingerprint(paths: Sequence[Path]) -> list[dict]:
    """What a prepared corpus was made from: a changed file makes it stale."""
    return [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in paths]


def prepare_corpus(src_path: str | os.PathLike, tgt_path: str | os.PathLike, src_tokenizer: Tokenizer,
                   tgt_tokenizer: Tokenizer, out_dir: str | os.PathLike, lines_per_chunk: int = 50_000) -> Path:
    """Encode an aligned pair of text files into `out_dir`, written atomically (complete or absent)."""
    src_path, tgt_path, out_dir = Path(src_path), Path(tgt_path), Path(out_dir)
    tokenizers = {"src": src_tokenizer, "tgt": tgt_tokenizer}
    dtypes = {side: np.uint16 if tok.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
              for side, tok in tokenizers.items()}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        totals = {side: 0 for side in SIDES}
        pairs = 0
        with contextlib.ExitStack() as stack:
            files = {(side, kind): stack.enter_context(open(staging / f"{side}.{kind}", "wb"))
                     for side in SIDES for kind in ("tokens", "offsets")}
            for side in SIDES:
                files[side, "offsets"].write(np.zeros(1, dtype=np.int64).tobytes())
            for src_lines, tgt_lines in _chunks(src_path, tgt_path, lines_per_chunk):
                for side, lines in (("src", src_lines), ("tgt", tgt_lines)):
                    ids = tokenizers[side].encode(lines)
                    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
                    flat = np.array(list(itertools.chain.from_iterable(ids)), dtype=dtypes[side])
                    files[side, "tokens"].write(flat.tobytes())
                    files[side, "offsets"].write((totals[side] + np.cumsum(lengths)).tobytes())
                    totals[side] += int(lengths.sum())
                pairs += len(src_lines)
                if pairs % 1_000_000 < lines_per_chunk:
                    log.info("prepared %s pairs", f"{pairs:,}")
        index = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "pairs": pairs,
            "dtype": {side: np.dtype(dtype).name for side, dtype in dtypes.items()},
            "tokens": totals,
            "sources": source_fingerprint([src_path, tgt_path]),
            "tokenizers": {side: str(tok.model_file) for side, tok in tokenizers.items()},
        }
        (staging / "index.json").write_text(json.dumps(index, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("prepared %s: %s pairs, %s source and %s target pieces", out_dir, f"{pairs:,}",
             f"{totals['src']:,}", f"{totals['tgt']:,}")
    return out_dir


def read_index(directory: str | os.PathLike) -> dict:
    directory = Path(directory)
    try:
        index = json.loads((directory / "index.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{directory}: not a prepared corpus (no index.json); run seq2seq-prepare") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{directory}/index.json: unreadable ({error})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME or index.get("version") != FORMAT_VERSION:
        raise UserError(f"{directory}/index.json: not a {FORMAT_NAME} v{FORMAT_VERSION} index")
    return index


class MemmapParallelDataset(Dataset):
    """A prepared corpus read in place: indexing with a list of positions returns a `Batch`.

    Only the pages of the sentences asked for are read, so memory does not grow with the corpus.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        index = read_index(self.directory)
        self.num_pairs = int(index["pairs"])
        self.tokens, self.offsets = {}, {}
        for side in SIDES:
            expected = {"tokens": int(index["tokens"][side]) * np.dtype(index["dtype"][side]).itemsize,
                        "offsets": (self.num_pairs + 1) * 8}
            for kind, size in expected.items():
                path = self.directory / f"{side}.{kind}"
                if not path.is_file() or path.stat().st_size != size:
                    raise UserError(f"{path}: missing or truncated ({size:,} bytes expected); prepare the corpus again")
            self.offsets[side] = np.memmap(self.directory / f"{side}.offsets", dtype=np.int64, mode="r")
            if int(index["tokens"][side]):
                self.tokens[side] = np.memmap(self.directory / f"{side}.tokens", dtype=index["dtype"][side], mode="r")
            else:
                self.tokens[side] = np.zeros(0, dtype=index["dtype"][side])

    def __len__(self) -> int:
        return self.num_pairs

    def sentence(self, side: str, position: int) -> list[int]:
        start, end = self.offsets[side][position], self.offsets[side][position + 1]
        return self.tokens[side][start:end].tolist()

    def lengths(self, side: str, start: int, stop: int) -> np.ndarray:
        """Lengths of sentences start..stop-1, read with a plain file read (nothing stays mapped)."""
        with open(self.directory / f"{side}.offsets", "rb") as handle:
            handle.seek(start * 8)
            offsets = np.fromfile(handle, dtype=np.int64, count=stop - start + 1)
        return np.diff(offsets)

    def __getitem__(self, positions: Sequence[int]) -> Batch:
        return make_batch([self.sentence("src", i) for i in positions], [self.sentence("tgt", i) for i in positions],
                          list(positions))


@dataclass
class _Chunk:
    start: int
    stop: int
    batches: int


class ChunkedTokenBatchSampler(Sampler[list[int]]):
    """Token-budget batches over a corpus too large to sort whole.

    The corpus is read in chunks of `chunk_size` consecutive pairs. Each epoch visits the chunks
    in a random order, `pool_chunks` at a time: every chunk is shuffled, sorted by length and
    cut like `TokenBatchSampler` cuts a whole corpus, and the batches of a pool are shuffled
    together. Memory is one pool of positions, whatever the corpus size. The number of batches
    does not depend on the shuffle (a chunk's sorted lengths are the same in any order), so it
    is counted once, and a resumed epoch can skip batches without reading any data.

    Pairs with an empty side or a side over `max_len` pieces are left out and counted. Under DDP
    each rank takes every `num_replicas`-th batch of the same sequence, padded by repetition
    to a multiple of `num_replicas` as in `TokenBatchSampler`.
    """

    def __init__(self, dataset: MemmapParallelDataset, max_tokens: int, max_len: int | None = None,
                 seed: int = 0, chunk_size: int = 1 << 16, pool_chunks: int = 4,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if max_tokens <= 0:
            raise UserError(f"data.max_tokens={max_tokens} must be positive")
        self.dataset, self.max_tokens, self.max_len = dataset, max_tokens, max_len
        self.seed, self.chunk_size, self.pool_chunks = seed, chunk_size, max(1, pool_chunks)
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.chunks: list[_Chunk] = []
        kept = 0
        for start in range(0, len(dataset), chunk_size):
            stop = min(start + chunk_size, len(dataset))
            src, tgt, keep = self._lengths(start, stop)
            order = np.lexsort((tgt[keep], src[keep]))
            self.chunks.append(_Chunk(start, stop, len(cut_batches(order, src[keep], tgt[keep], max_tokens))))
            kept += int(keep.sum())
        if kept == 0:
            raise UserError(f"{dataset.directory}: no usable sentence pairs (all empty or over {max_len} pieces)")
        self.total_batches = sum(c.batches for c in self.chunks)
        log.info("%s: %s of %s pairs in %s batches (dropped %s empty or over %s pieces)", dataset.directory,
                 f"{kept:,}", f"{len(dataset):,}", f"{self.total_batches:,}", f"{len(dataset) - kept:,}", max_len)

    def _lengths(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = self.dataset.lengths("src", start, stop)
        tgt = self.dataset.lengths("tgt", start, stop) + 1  # BOS or EOS
        keep = (src > 0) & (tgt > 1)
        if self.max_len is not None:
            keep &= (src <= self.max_len) & (tgt - 1 <= self.max_len)
        return src, tgt, keep

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunk_batches(self, chunk: _Chunk, generator: torch.Generator) -> list[list[int]]:
        src, tgt, keep = self._lengths(chunk.start, chunk.stop)
        positions = np.flatnonzero(keep)
        # Random order first, then a stable sort: equal-length pairs land in random batches.
        positions = positions[torch.randperm(len(positions), generator=generator).numpy()]
        order = positions[np.lexsort((tgt[positions], src[positions]))]
        return [[chunk.start + int(i) for i in batch] for batch in cut_batches(order, src, tgt, self.max_tokens)]

    def _global_batches(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        chunk_order = torch.randperm(len(self.chunks), generator=generator).tolist()
        for first in range(0, len(chunk_order), self.pool_chunks):
            pool = [b for c in chunk_order[first:first + self.pool_chunks]
                    for b in self._chunk_batches(self.chunks[c], generator)]
            for j in torch.randperm(len(pool), generator=generator).tolist():
                yield pool[j]

    def __iter__(self) -> Iterator[list[int]]:
        world, padding = self.num_replicas, -self.total_batches % self.num_replicas
        repeats: list[list[int]] = []
        for number, batch in enumerate(self._global_batches()):
            if number < padding:
                repeats.append(batch)
            if number % world == self.rank:
                yield batch
        for number, batch in enumerate(repeats, start=self.total_batches):
            if number % world == self.rank:
                yield batch

    def __len__(self) -> int:
        return math.ceil(self.total_batches / self.num_replicas)


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

    def pin_memory(self) -> Batch:
        """Page-locked copies, which the DataLoader's pin_memory calls, for faster copies to a GPU."""
        return Batch(*(getattr(self, f.name).pin_memory() for f in fields(self)))


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
