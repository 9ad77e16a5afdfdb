"""Labelled sentences for classification: one file per label, split by line ranges.

Each label has a file with one sentence per line (sentence polarity: `rt-polarity.neg`,
`rt-polarity.pos`); the train, validation and test splits are ranges of line numbers taken from
every file alike. Lines are checked (UTF-8, not empty), repaired (cp1252 control characters),
optionally lower-cased, encoded with a SentencePiece model trained on the training split, and
served in length-bucketed token batches.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from seq2seq.batching import ResumableLoader, TokenBatchSampler, pad_sequences, rank_info
from seq2seq.datasets import ensure_files
from seq2seq.errors import UserError
from seq2seq.text import read_lines, repair_cp1252
from seq2seq.tokenizer import SentencePieceSettings, Tokenizer, keep_with_run, refuse_sampling, train_or_load

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def repair_lines(lines: Sequence[str]) -> tuple[list[str], int]:
    """Repaired lines and how many of them changed."""
    repaired = [repair_cp1252(line) for line in lines]
    return repaired, sum(a != b for a, b in zip(lines, repaired))


def check_line_range(name: str, value: Any) -> tuple[int, int]:
    """A `[first, last]` pair of 1-based, inclusive line numbers."""
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise UserError(f"data.{name}={value!r} must be [first, last] line numbers (from 1, inclusive)")
    first, last = value
    if not 1 <= first <= last:
        raise UserError(f"data.{name}={list(value)}: need 1 <= first <= last")
    return first, last


def split_by_lines(lines: Sequence[str], ranges: dict[str, tuple[int, int]], path: Path) -> dict[str, list[str]]:
    """The lines of each split; a range past the end of the file is an error."""
    parts = {}
    for split, (first, last) in ranges.items():
        if last > len(lines):
            raise UserError(f"{path} has {len(lines)} lines, but the {split} split needs lines {first}-{last}; "
                            f"set data.{split}_lines to fit the file")
        parts[split] = list(lines[first - 1:last])
    return parts


@dataclass
class LabelledBatch:
    tokens: torch.Tensor  # (B, S) piece ids, PAD_ID after each sentence
    lengths: torch.Tensor  # (B,)
    labels: torch.Tensor  # (B,) class indices
    indices: torch.Tensor  # (B,) positions in the split


class LabelledDataset(Dataset):
    """Encoded sentences and their labels. Indexing with a list of positions returns a whole batch."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        assert len(ids) == len(labels)
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.ids]

    def __getitem__(self, positions: Sequence[int]) -> LabelledBatch:
        return LabelledBatch(
            tokens=pad_sequences([self.ids[i] for i in positions]),
            lengths=torch.tensor([max(len(self.ids[i]), 1) for i in positions], dtype=torch.long),
            labels=torch.tensor([self.labels[i] for i in positions], dtype=torch.long),
            indices=torch.tensor(list(positions), dtype=torch.long),
        )


@dataclass
class LabelledSplit:
    texts: list[str]
    labels: list[int]


class ClassificationDataModule(L.LightningDataModule):
    """Labelled sentences from `label_files` ({label: file}, in class order), split by line ranges."""

    def __init__(
        self,
        data_dir: str,
        label_files: dict[str, str],
        tokenizer: dict[str, Any],
        cache_dir: str,
        train_lines: Sequence[int],
        valid_lines: Sequence[int],
        test_lines: Sequence[int] | None = None,
        download: str | None = None,
        lowercase: bool = False,
        max_tokens: int = 1024,
        valid_max_tokens: int = 8192,
        seed: int = 0,
        run_dir: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(label_files, dict) or len(label_files) < 2:
            raise UserError(f"data.label_files={label_files!r} must map at least two labels to files")
        self.data_dir = Path(data_dir)
        self.labels = [str(label) for label in label_files]
        self.label_files = {str(label): str(name) for label, name in label_files.items()}
        self.ranges = {"train": check_line_range("train_lines", train_lines),
                       "valid": check_line_range("valid_lines", valid_lines)}
        if test_lines is not None:
            self.ranges["test"] = check_line_range("test_lines", test_lines)
        ordered = sorted(self.ranges.items(), key=lambda item: item[1])
        for (a, (_, a_last)), (b, (b_first, _)) in zip(ordered, ordered[1:]):
            if b_first <= a_last:
                raise UserError(f"data.{a}_lines and data.{b}_lines overlap: a sentence would be in two splits")
        self.download = download
        self.lowercase = lowercase
        self.cache_dir = Path(cache_dir)
        self.max_tokens, self.valid_max_tokens = max_tokens, valid_max_tokens
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir else None
        tokenizer = dict(tokenizer)
        self.reused_tokenizer = (tokenizer.pop("files", None) or {}).get("text")  # init_from: a model's own
        refuse_sampling(tokenizer.pop("sampling", None), tokenizer.get("model_type", "unigram"))
        for ignored in ("joint", "src_vocab_size", "tgt_vocab_size"):
            tokenizer.pop(ignored, None)
        self.settings = SentencePieceSettings(**tokenizer)
        self.tokenizer: Tokenizer | None = None
        self.train_set: LabelledDataset | None = None
        self.valid_set: LabelledDataset | None = None
        self._splits: dict[str, LabelledSplit] | None = None

    # ----------------------------------------------------------------- files
    def path(self, label: str) -> Path:
        return self.data_dir / self.label_files[label]

    def splits(self) -> dict[str, LabelledSplit]:
        """Every split's texts (repaired, normalized, empty lines dropped) and labels; read once per process."""
        if self._splits is None:
            self._splits = self._read_splits()
        return self._splits

    def _read_splits(self) -> dict[str, LabelledSplit]:
        if self.download is not None:
            ensure_files(self.download, self.data_dir, list(self.label_files.values()))
        splits = {name: LabelledSplit([], []) for name in self.ranges}
        for label_index, label in enumerate(self.labels):
            path = self.path(label)
            lines, repaired = repair_lines(read_lines(path))
            if repaired:
                log.info("%s: repaired cp1252 control characters (quotes, dashes) in %d lines", path, repaired)
            for name, texts in split_by_lines(lines, self.ranges, path).items():
                texts = [self.normalize(t) for t in texts]
                kept = [t for t in texts if t.strip()]
                if not kept:
                    first, last = self.ranges[name]
                    raise UserError(f"{path}: lines {first}-{last} (the {name} split) are all empty")
                if len(kept) < len(texts):
                    log.info("%s, %s split: dropped %d empty lines", path, name, len(texts) - len(kept))
                splits[name].texts.extend(kept)
                splits[name].labels.extend([label_index] * len(kept))
        return splits

    def normalize(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    # ------------------------------------------------------------ tokenizer
    def _tokenizer(self) -> Tokenizer:
        if self.reused_tokenizer:
            return Tokenizer(self.reused_tokenizer)
        # SentencePiece trains from files. The cache key is the file's name and bytes, so a
        # fixed name in a throw-away folder still finds the tokenizer of the same training text.
        with tempfile.TemporaryDirectory() as tmp:
            train_text = Path(tmp) / "labelled-train.txt"
            train_text.write_text("\n".join(self.splits()["train"].texts) + "\n", encoding="utf-8")
            return train_or_load([train_text], self.cache_dir / "tokenizers", self.settings, name="classify")

    def tokenizer_files(self) -> dict[str, Path]:
        assert self.tokenizer is not None
        return {"text": self.tokenizer.model_file}

    def bundle_extra(self) -> dict[str, Any]:
        """What a model directory keeps of the data: label names, input normalization, provenance."""
        return {"labels": self.labels, "lowercase": self.lowercase,
                "data": {"data_dir": str(self.data_dir.resolve()), "label_files": self.label_files,
                         "ranges": {name: list(r) for name, r in self.ranges.items()}}}

    # ------------------------------------------------------------- lightning
    def prepare_data(self) -> None:
        self._tokenizer()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.tokenizer = self._tokenizer()
        keep_with_run({self.tokenizer.model_file}, self.run_dir)
        splits = self.splits()
        self.train_set = self.encode(splits["train"])
        self.valid_set = self.encode(splits["valid"])
        log.info("sentences: %s", ", ".join(f"{name} {len(s.texts):,}" for name, s in splits.items()))

    def encode(self, split: LabelledSplit) -> LabelledDataset:
        return LabelledDataset(self.tokenizer.encode(split.texts), split.labels)

    def train_dataloader(self) -> DataLoader:
        world, rank = rank_info(self)
        lengths = self.train_set.lengths
        sampler = TokenBatchSampler(lengths, lengths, self.max_tokens, shuffle=True, seed=self.seed,
                                    num_replicas=world, rank=rank)
        return ResumableLoader(self.train_set, sampler, self)  # a resumed run continues mid-epoch exactly

    def val_dataloader(self) -> DataLoader:
        world, rank = rank_info(self)
        lengths = self.valid_set.lengths
        sampler = TokenBatchSampler(lengths, lengths, self.valid_max_tokens, shuffle=False)
        # Each rank takes a distinct slice of the batches: every sentence is scored exactly once.
        return DataLoader(self.valid_set, sampler=list(sampler)[rank::world], batch_size=None, num_workers=0)
