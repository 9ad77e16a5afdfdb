"""Lexical vocabulary shortlists: per batch, the output layer only scores the target pieces that
can plausibly appear in its translations (as in Marian).

A shortlist holds the N most frequent target pieces of the training targets and, for every source
piece, its K most probable translations. For a batch, the restricted vocabulary is the union of the
frequent pieces and the candidates of the source pieces present in the batch, plus the special ids.

Translations are estimated with IBM model 1 (Brown et al. 1993): EM over the sparse set of
(source, target) pairs that co-occur in some sentence pair, never a dense V_src x V_tgt table, so
32k vocabularies and millions of sentences fit in memory proportional to the distinct pairs. The
Dice coefficient of sentence-level co-occurrence is available as a cheaper baseline.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from seq2seq.errors import UserError
from seq2seq.tasks.translation.shortlist_file import (  # noqa: F401  (SHORTLIST_FILE: where callers look)
    _BANNED,
    FORMAT_NAME,
    FORMAT_VERSION,
    SHORTLIST_FILE,
    SPECIAL_IDS,
    _is_int,
    read_shortlist,
)
from seq2seq.text import publish
from seq2seq.tokenizer import EOS_ID, PAD_ID, file_digest

log = logging.getLogger(__name__)

METHODS = ("ibm1", "cooccurrence")

# Pair occurrences expanded at once: about 10 int64 tensors of this length live together while
# a chunk is expanded, so ~160 MB whatever the corpus size.
_PAIRS_PER_CHUNK = 1 << 21
# Up to this many pair occurrences (8 bytes each) IBM 1 keeps each occurrence's pair slot between
# EM rounds; Multi30k has about 7.6 million.
_CACHED_OCCURRENCES = 1 << 25


@dataclass(eq=False)
class Shortlist:
    frequent: torch.Tensor  # (N,) long, most frequent first; EOS is always among them when N > 0
    offsets: torch.Tensor  # (src_vocab_size + 1,) long: CSR row pointers into `candidates`
    candidates: torch.Tensor  # (total,) long: per source piece, its target pieces, most probable first
    src_vocab_size: int
    tgt_vocab_size: int
    src_tokenizer_digest: str = ""
    tgt_tokenizer_digest: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.offsets.shape != (self.src_vocab_size + 1,):
            raise ValueError(f"offsets has shape {tuple(self.offsets.shape)}, expected ({self.src_vocab_size + 1},)")
        if int(self.offsets[-1]) != self.candidates.numel():
            raise ValueError("offsets do not end at the number of candidates")

    def candidates_of(self, source_id: int) -> torch.Tensor:
        return self.candidates[self.offsets[source_id]:self.offsets[source_id + 1]]

    def to(self, device: torch.device | str) -> Shortlist:
        """A copy on `device`, so that ids_for runs where the model's batches are."""
        return replace(self, frequent=self.frequent.to(device), offsets=self.offsets.to(device),
                       candidates=self.candidates.to(device))

    def ids_for(self, src: torch.Tensor) -> torch.Tensor:
        """(B, S) padded source ids of a batch -> sorted (V',) long tensor of the target ids it may use.

        The union of the candidates of every source piece in the batch, the frequent pieces and
        always the four special ids, which being the smallest ids stay at positions 0..3: PAD, UNK,
        BOS and EOS keep their index in the restricted vocabulary.
        """
        device = self.offsets.device
        tokens = src.reshape(-1).to(device)
        present = torch.unique(tokens[tokens != PAD_ID])
        if present.numel() and (int(present[0]) < 0 or int(present[-1]) >= self.src_vocab_size):
            raise ValueError(f"source ids must lie in [0, {self.src_vocab_size}); got "
                             f"{int(present[0])}..{int(present[-1])}")
        starts = self.offsets[present]
        lengths = self.offsets[present + 1] - starts
        # Every candidate position of the present rows, without a loop: each row's start repeated
        # over its length, plus the position within the row.
        row = torch.repeat_interleave(torch.arange(present.numel(), device=device), lengths)
        first_of_row = torch.cumsum(lengths, 0) - lengths
        positions = starts[row] + torch.arange(row.numel(), device=device) - first_of_row[row]

        keep = torch.zeros(self.tgt_vocab_size, dtype=torch.bool, device=device)
        keep[list(SPECIAL_IDS)] = True
        keep[self.frequent] = True
        keep[self.candidates[positions]] = True
        return keep.nonzero().squeeze(1).to(src.device)

    def save(self, path: str | os.PathLike) -> None:
        """Write it as compact JSON, atomically: a reader never sees half a file."""
        rows = self.candidates.tolist()
        bounds = self.offsets.tolist()
        document = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "src_vocab_size": self.src_vocab_size,
            "tgt_vocab_size": self.tgt_vocab_size,
            "src_tokenizer": self.src_tokenizer_digest,
            "tgt_tokenizer": self.tgt_tokenizer_digest,
            "settings": self.settings,
            "frequent": self.frequent.tolist(),
            "candidates": [rows[start:end] for start, end in itertools.pairwise(bounds)],
        }
        target = Path(path)
        try:
            handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent,
                                                 prefix=f".{target.name}.", suffix=".tmp", delete=False)
        except OSError as error:
            raise UserError(f"{target}: cannot write the shortlist there ({error.strerror or error})") from None
        try:
            with handle:
                json.dump(document, handle, separators=(",", ":"))
            publish(handle.name, target)
        except BaseException as error:
            os.unlink(handle.name)
            if isinstance(error, OSError):  # e.g. a full disk: the old file, if any, is untouched
                raise UserError(f"{target}: writing the shortlist failed ({error.strerror or error}); "
                                "nothing was written") from None
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, src_tokenizer=None, tgt_tokenizer=None) -> Shortlist:
        """Read and validate a shortlist file; with the model's tokenizers, also check it was built
        for them (same model files, same vocabulary sizes)."""
        document = read_shortlist(path, src_tokenizer, tgt_tokenizer)
        lengths = torch.tensor([len(row) for row in document.rows], dtype=torch.long)
        return Shortlist(frequent=torch.tensor(document.frequent, dtype=torch.long),
                         offsets=torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)]),
                         candidates=torch.tensor(list(itertools.chain.from_iterable(document.rows)), dtype=torch.long),
                         src_vocab_size=document.src_vocab_size, tgt_vocab_size=document.tgt_vocab_size,
                         src_tokenizer_digest=document.src_tokenizer_digest,
                         tgt_tokenizer_digest=document.tgt_tokenizer_digest, settings=document.settings)


def build_shortlist(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    src_vocab_size: int,
    tgt_vocab_size: int,
    *,
    frequent: int = 100,
    per_source: int = 25,
    iterations: int = 5,
    threshold: float = 0.0,
    method: str = "ibm1",
    src_tokenizer_digest: str = "",
    tgt_tokenizer_digest: str = "",
) -> Shortlist:
    """A shortlist from encoded sentence pairs (ids without bos/eos).

    `frequent`: how many of the most frequent target pieces every batch gets, EOS counted as the
    first. `per_source`: how many candidates each source piece keeps, the most probable first,
    those scored below `threshold` dropped. `method`: "ibm1" ranks by IBM model 1's p(t | s) after
    `iterations` EM rounds; "cooccurrence" by the Dice coefficient of sentence-level co-occurrence.
    """
    settings = _checked_settings(frequent=frequent, per_source=per_source, iterations=iterations,
                                 threshold=threshold, method=method)
    if len(src_ids) != len(tgt_ids):
        raise UserError(f"shortlist: {len(src_ids)} source sentences but {len(tgt_ids)} target sentences")
    corpus = _Corpus.from_lists(src_ids, tgt_ids, src_vocab_size, tgt_vocab_size)
    return _build(corpus, settings, src_tokenizer_digest, tgt_tokenizer_digest)


def build_from_dataset(dataset, src_tokenizer, tgt_tokenizer, settings: Mapping[str, Any]) -> Shortlist:
    """A shortlist from an encoded training set (in memory or memory-mapped) for these tokenizers.

    `settings`: build_shortlist's keyword settings (frequent, per_source, iterations, threshold,
    method); missing ones take its defaults. A memory-mapped corpus is read chunk by chunk, never
    whole.
    """
    unknown = sorted(set(settings) - set(_DEFAULTS))
    if unknown:
        raise UserError(f"unknown shortlist setting(s) {', '.join(unknown)}; known: {', '.join(_DEFAULTS)}")
    checked = _checked_settings(**(_DEFAULTS | dict(settings)))
    src_size, tgt_size = src_tokenizer.vocab_size, tgt_tokenizer.vocab_size
    if hasattr(dataset, "src_ids"):
        corpus = _Corpus.from_lists(dataset.src_ids, dataset.tgt_ids, src_size, tgt_size)
    else:  # MemmapParallelDataset: token arrays plus (pairs + 1,) offsets per side
        corpus = _Corpus(dataset.tokens["src"], torch.tensor(dataset.offsets["src"][:]), dataset.tokens["tgt"],
                         torch.tensor(dataset.offsets["tgt"][:]), src_size, tgt_size)
    return _build(corpus, checked, file_digest(src_tokenizer.model_file), file_digest(tgt_tokenizer.model_file))


_DEFAULTS: dict[str, Any] = {"frequent": 100, "per_source": 25, "iterations": 5, "threshold": 0.0, "method": "ibm1"}


def _checked_settings(*, frequent: Any, per_source: Any, iterations: Any, threshold: Any, method: Any
                      ) -> dict[str, Any]:
    if method not in METHODS:
        raise UserError(f"shortlist method={method!r} is not one of {', '.join(METHODS)}")
    for name, value in (("frequent", frequent), ("per_source", per_source)):
        if not _is_int(value) or value < 0:
            raise UserError(f"shortlist {name}={value!r} must be an integer >= 0")
    if method == "ibm1" and (not _is_int(iterations) or iterations < 1):
        raise UserError(f"shortlist iterations={iterations!r} must be an integer >= 1")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise UserError(f"shortlist threshold={threshold!r} must be in [0, 1]")
    # Dice does not iterate: record 0 so the settings say how it was really built.
    return {"method": method, "frequent": frequent, "per_source": per_source,
            "iterations": iterations if method == "ibm1" else 0, "threshold": float(threshold)}


def _build(corpus: _Corpus, settings: dict[str, Any], src_digest: str, tgt_digest: str) -> Shortlist:
    start = time.perf_counter()
    if settings["per_source"] == 0:  # frequent pieces only: nothing to estimate
        pair_src = pair_tgt = torch.zeros(0, dtype=torch.long)
        score = torch.zeros(0, dtype=torch.float64)
    elif settings["method"] == "ibm1":
        pair_src, pair_tgt, score = _ibm1(corpus, settings["iterations"])
    else:
        pair_src, pair_tgt, score = _dice(corpus)
    offsets, candidates = _top_per_source(pair_src, pair_tgt, score, corpus.src_vocab_size, settings["per_source"],
                                          settings["threshold"])
    shortlist = Shortlist(
        frequent=_most_frequent(corpus.tgt_counts, settings["frequent"]),
        offsets=offsets,
        candidates=candidates,
        src_vocab_size=corpus.src_vocab_size,
        tgt_vocab_size=corpus.tgt_vocab_size,
        src_tokenizer_digest=src_digest,
        tgt_tokenizer_digest=tgt_digest,
        settings=settings | {"sentences": corpus.sentence_count},
    )
    log.info("built %s shortlist from %d sentence pairs in %.1f s: %d frequent, %d candidates over %d source pieces",
             settings["method"], corpus.sentence_count, time.perf_counter() - start, shortlist.frequent.numel(),
             shortlist.candidates.numel(), int((offsets[1:] > offsets[:-1]).sum()))
    return shortlist


class _Corpus:
    """Sentence pairs as two flat id arrays with per-sentence offsets, read a chunk at a time.

    A flat array is a torch tensor (from lists: int32 halves the copy, and the lists themselves
    take several times more) or a memory-mapped numpy array, of which only the chunk at hand is
    ever read.
    """

    def __init__(self, src_flat, src_offsets: torch.Tensor, tgt_flat, tgt_offsets: torch.Tensor,
                 src_vocab_size: int, tgt_vocab_size: int) -> None:
        if src_vocab_size < 1 or tgt_vocab_size <= EOS_ID:
            raise ValueError(f"vocabulary sizes {src_vocab_size}, {tgt_vocab_size} are too small")
        if src_offsets.shape != tgt_offsets.shape:
            raise UserError(f"shortlist: {src_offsets.numel() - 1} source sentences but "
                            f"{tgt_offsets.numel() - 1} target sentences")
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.sentence_count = src_offsets.numel() - 1
        self._flat = {"src": src_flat, "tgt": tgt_flat}
        self._offsets = {"src": src_offsets.long(), "tgt": tgt_offsets.long()}
        self.src_lengths = self._offsets["src"].diff()
        self.tgt_lengths = self._offsets["tgt"].diff()
        self._count("src", src_vocab_size)  # only to refuse ids out of range
        self.tgt_counts = self._count("tgt", tgt_vocab_size)

    @classmethod
    def from_lists(cls, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], src_vocab_size: int,
                   tgt_vocab_size: int) -> _Corpus:
        def flat_and_offsets(sentences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
            lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
            flat = torch.tensor(list(itertools.chain.from_iterable(sentences)), dtype=torch.long)
            if flat.numel() and (int(flat.min()) < -2**31 or int(flat.max()) >= 2**31):
                raise ValueError("ids do not fit in 32 bits")
            return flat.int(), torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])

        return cls(*flat_and_offsets(src_ids), *flat_and_offsets(tgt_ids), src_vocab_size, tgt_vocab_size)

    def chunks(self, pairs_per_sentence: torch.Tensor) -> list[tuple[int, int]]:
        """Consecutive sentence ranges [first, end) of about _PAIRS_PER_CHUNK pair occurrences each."""
        if pairs_per_sentence.numel() == 0:
            return []
        before = torch.cumsum(pairs_per_sentence, 0) - pairs_per_sentence
        _, sizes = torch.unique_consecutive(before // _PAIRS_PER_CHUNK, return_counts=True)
        ends = torch.cumsum(sizes, 0).tolist()
        return list(zip([0, *ends[:-1]], ends))

    def sentences(self, first: int, end: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat ids (long) and lengths of sentences [first, end) of one side."""
        offsets = self._offsets[side]
        return self.tokens(side, int(offsets[first]), int(offsets[end])), offsets[first:end + 1].diff()

    def tokens(self, side: str, start: int, stop: int) -> torch.Tensor:
        part = self._flat[side][start:stop]
        # torch.tensor copies a numpy slice (a read-only memmap cannot be shared)
        return (part if isinstance(part, torch.Tensor) else torch.tensor(part)).long()

    def _count(self, side: str, vocab_size: int, block: int = 1 << 24) -> torch.Tensor:
        """Occurrences of each id on one side, read block by block; refuses ids outside [0, vocab_size)."""
        first, total = int(self._offsets[side][0]), int(self._offsets[side][-1])
        counts = torch.zeros(vocab_size, dtype=torch.long)
        for start in range(first, total, block):
            ids = self.tokens(side, start, min(start + block, total))
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= vocab_size:
                name = "source" if side == "src" else "target"
                raise ValueError(f"{name} ids must lie in [0, {vocab_size}); got {low}..{high}")
            counts += torch.bincount(ids, minlength=vocab_size)
        return counts


def _expand_pairs(src_flat: torch.Tensor, src_lengths: torch.Tensor, tgt_flat: torch.Tensor,
                  tgt_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (source position, target position) pair within each sentence pair, vectorized.

    Returns the source id, the target id and the target position (index into tgt_flat) of each
    pair, source-major within a sentence.
    """
    pairs = src_lengths * tgt_lengths
    sentence = torch.repeat_interleave(torch.arange(pairs.numel()), pairs)
    within = torch.arange(sentence.numel()) - (torch.cumsum(pairs, 0) - pairs)[sentence]
    width = tgt_lengths[sentence]  # > 0 wherever a pair exists
    src_position = (torch.cumsum(src_lengths, 0) - src_lengths)[sentence] + within // width
    tgt_position = (torch.cumsum(tgt_lengths, 0) - tgt_lengths)[sentence] + within % width
    return src_flat[src_position], tgt_flat[tgt_position], tgt_position


def _with_null(src_flat: torch.Tensor, src_lengths: torch.Tensor, null_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each source sentence with the NULL word appended (IBM 1 lets a target piece align to nothing)."""
    sentence = torch.repeat_interleave(torch.arange(src_lengths.numel()), src_lengths)
    extended = torch.full((src_flat.numel() + src_lengths.numel(),), null_id, dtype=torch.long)
    # Token k of sentence b moves b places right: one NULL was appended to each earlier sentence.
    extended[torch.arange(src_flat.numel()) + sentence] = src_flat
    return extended, src_lengths + 1


def _distinct_per_sentence(flat: torch.Tensor, lengths: torch.Tensor, vocab_size: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sentence's distinct ids (sorted) and their counts per sentence."""
    sentence = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    keys = torch.unique(sentence * vocab_size + flat)
    return keys % vocab_size, torch.bincount(keys // vocab_size, minlength=lengths.numel())


class _PairCounter:
    """Sums values per distinct int64 key over many chunks.

    Chunk results wait in a list and are merged only once they are as large as the merged table,
    so each key is re-sorted O(log chunks) times rather than once per chunk.
    """

    def __init__(self) -> None:
        self.keys = torch.zeros(0, dtype=torch.long)
        self.values = torch.zeros(0, dtype=torch.float64)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_size = 0

    def add(self, keys: torch.Tensor, values: torch.Tensor | None = None) -> None:
        distinct, inverse = torch.unique(keys, return_inverse=True)
        sums = torch.zeros(distinct.numel(), dtype=torch.float64)
        sums.index_add_(0, inverse, values.double() if values is not None else torch.ones(keys.numel(),
                                                                                          dtype=torch.float64))
        self._pending.append((distinct, sums))
        self._pending_size += distinct.numel()
        if self._pending_size >= max(self.keys.numel(), _PAIRS_PER_CHUNK):
            self._merge()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._merge()
        return self.keys, self.values

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = torch.cat([self.keys, *(k for k, _ in self._pending)])
        values = torch.cat([self.values, *(v for _, v in self._pending)])
        self.keys, inverse = torch.unique(keys, return_inverse=True)
        self.values = torch.zeros(self.keys.numel(), dtype=torch.float64).index_add_(0, inverse, values)
        self._pending, self._pending_size = [], 0


def _ibm1(corpus: _Corpus, iterations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IBM model 1 p(t | s) for every co-occurring (s, t), with a NULL source word (id src_vocab_size)."""
    null_id, width = corpus.src_vocab_size, corpus.tgt_vocab_size
    chunks = corpus.chunks((corpus.src_lengths + 1) * corpus.tgt_lengths)

    def occurrences(first: int, end: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Pair keys s * V_tgt + t of the chunk's sentences, each target token's position, and the
        chunk's number of target tokens."""
        src, src_lengths = _with_null(*corpus.sentences(first, end, "src"), null_id)
        tgt, tgt_lengths = corpus.sentences(first, end, "tgt")
        s, t, tgt_position = _expand_pairs(src, src_lengths, tgt, tgt_lengths)
        return s * width + t, tgt_position, tgt.numel()

    # The pair index: one slot per distinct co-occurring (s, t), keys sorted, so every
    # occurrence finds its slot by binary search.
    index = _PairCounter()
    for first, end in chunks:
        index.add(occurrences(first, end)[0])
    keys, _ = index.result()
    pair_src = keys // width
    # Uniform initialization: any constant gives the same first E step.
    probability = torch.ones(keys.numel(), dtype=torch.float64)
    # Expanding a chunk and searching its slots costs most of an E step: small corpora keep the
    # result for the later rounds (int32, bounded by _CACHED_OCCURRENCES), large ones redo it.
    total_occurrences = int(((corpus.src_lengths + 1) * corpus.tgt_lengths).sum())
    cache: dict[int, tuple[torch.Tensor, torch.Tensor, int]] | None = (
        {} if total_occurrences <= _CACHED_OCCURRENCES and keys.numel() < 2**31 else None)
    for _ in range(iterations):
        expected = torch.zeros_like(probability)
        for first, end in chunks:
            if cache is not None and first in cache:
                slot, tgt_position, tgt_tokens = cache[first]
            else:
                pair_keys, tgt_position, tgt_tokens = occurrences(first, end)
                slot = torch.searchsorted(keys, pair_keys)
                if cache is not None:
                    slot, tgt_position = slot.int(), tgt_position.int()
                    cache[first] = slot, tgt_position, tgt_tokens
            p = probability[slot]
            # E step: each target token spreads one count over the source words (and NULL) of
            # its sentence in proportion to p(t | s).
            normalizer = torch.zeros(tgt_tokens, dtype=torch.float64).index_add_(0, tgt_position, p)
            expected.index_add_(0, slot, p / normalizer[tgt_position])
        # M step: p(t | s) = c(s, t) / sum over t' of c(s, t').
        per_source = torch.zeros(null_id + 1, dtype=torch.float64).index_add_(0, pair_src, expected)
        probability = expected / per_source[pair_src]
    return pair_src, keys % width, probability


def _dice(corpus: _Corpus) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dice coefficient 2 c(s, t) / (c(s) + c(t)) over sentence-level co-occurrence counts."""
    width = corpus.tgt_vocab_size
    src_in = torch.zeros(corpus.src_vocab_size, dtype=torch.float64)
    tgt_in = torch.zeros(corpus.tgt_vocab_size, dtype=torch.float64)
    together = _PairCounter()
    # Distinct pieces per sentence have at most as many pairs as the raw ones: the raw counts bound a chunk.
    for first, end in corpus.chunks(corpus.src_lengths * corpus.tgt_lengths):
        src, src_lengths = _distinct_per_sentence(*corpus.sentences(first, end, "src"), corpus.src_vocab_size)
        tgt, tgt_lengths = _distinct_per_sentence(*corpus.sentences(first, end, "tgt"), width)
        src_in.index_add_(0, src, torch.ones(src.numel(), dtype=torch.float64))
        tgt_in.index_add_(0, tgt, torch.ones(tgt.numel(), dtype=torch.float64))
        s, t, _ = _expand_pairs(src, src_lengths, tgt, tgt_lengths)
        together.add(s * width + t)
    keys, counts = together.result()
    pair_src, pair_tgt = keys // width, keys % width
    return pair_src, pair_tgt, 2 * counts / (src_in[pair_src] + tgt_in[pair_tgt])


def _top_per_source(pair_src: torch.Tensor, pair_tgt: torch.Tensor, score: torch.Tensor, src_vocab_size: int,
                    per_source: int, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR rows of each source piece's `per_source` best-scored target pieces, best first."""
    keep = (pair_src < src_vocab_size) & ~torch.isin(pair_tgt, torch.tensor(_BANNED)) & (score >= threshold)
    pair_src, pair_tgt, score = pair_src[keep], pair_tgt[keep], score[keep]
    # By score descending, then stably by source: rows grouped, best first, ties by target id
    # (the pairs arrive sorted by (s, t)).
    by_score = torch.sort(score, descending=True, stable=True).indices
    order = by_score[torch.sort(pair_src[by_score], stable=True).indices]
    sorted_src = pair_src[order]
    row_sizes = torch.bincount(sorted_src, minlength=src_vocab_size)
    rank = torch.arange(order.numel()) - (torch.cumsum(row_sizes, 0) - row_sizes)[sorted_src]
    chosen = rank < per_source
    candidates = pair_tgt[order][chosen]
    kept_sizes = torch.bincount(sorted_src[chosen], minlength=src_vocab_size)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(kept_sizes, 0)])
    return offsets, candidates


def _most_frequent(tgt_counts: torch.Tensor, how_many: int) -> torch.Tensor:
    """The `how_many` most frequent target pieces seen, EOS first (the data has none, every
    translation needs it), never pad/bos/unk."""
    counts = tgt_counts.double()
    counts[list(_BANNED)] = 0
    counts[EOS_ID] = float("inf")
    seen = int((counts > 0).sum())
    # stable sort: equally frequent pieces in id order, so builds are reproducible
    order = torch.sort(counts, descending=True, stable=True).indices
    return order[:min(how_many, seen)].clone()
