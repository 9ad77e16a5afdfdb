"""TextDataModule: one text file, split into training text and held-out text, encoded into
parallel streams read in BPTT windows."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from seq2seq.batching import ResumableLoader, rank_info
from seq2seq.datasets import ensure_files
from seq2seq.errors import UserError
from seq2seq.tasks.language_model.model import scoring_streams, stream_batches
from seq2seq.text import read_text
from seq2seq.tokenizer import SentencePieceSettings, Tokenizer, keep_with_run, refuse_sampling, train_or_load

log = logging.getLogger(__name__)


class TextWindows(Dataset):
    """Consecutive windows of `bptt` steps over B parallel streams: item i is (inputs, targets)."""

    def __init__(self, streams: torch.Tensor, bptt: int) -> None:
        if bptt < 1:
            raise UserError(f"data.bptt={bptt} must be positive")
        self.streams, self.bptt = streams, bptt

    def __len__(self) -> int:
        return math.ceil((self.streams.size(1) - 1) / self.bptt)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.bptt
        end = min(start + self.bptt, self.streams.size(1) - 1)
        return self.streams[:, start:end], self.streams[:, start + 1:end + 1]


class TextDataModule(L.LightningDataModule):
    """One text file as a character stream for a language model.

    The held-out text is a separate file, or by default the last `valid_fraction` of the
    characters (the usual 90/10 split of Tiny Shakespeare). Training reads the text as
    `batch_streams` contiguous streams per rank, in windows of `bptt` characters, in order.
    """

    def __init__(
        self,
        data_dir: str,
        train_file: str,
        tokenizer: dict[str, Any],
        cache_dir: str,
        valid_file: str | None = None,
        valid_fraction: float = 0.1,
        download: str | None = None,
        batch_streams: int = 64,
        bptt: int = 128,
        valid_streams: int = 16,
        valid_warmup: int = 256,
        run_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.train_file, self.valid_file = train_file, valid_file
        if valid_file is None and not 0.0 < valid_fraction < 1.0:
            raise UserError(f"data.valid_fraction={valid_fraction} must be in (0, 1) when no valid_file is given")
        if batch_streams < 1 or valid_streams < 1:
            raise UserError("data.batch_streams and data.valid_streams must be positive")
        self.valid_fraction = valid_fraction
        self.download = download
        self.cache_dir = Path(cache_dir)
        self.batch_streams, self.bptt = batch_streams, bptt
        self.valid_streams, self.valid_warmup = valid_streams, valid_warmup
        self.run_dir = Path(run_dir) if run_dir else None
        tokenizer = dict(tokenizer)
        self.reused_tokenizer = (tokenizer.pop("files", None) or {}).get("text")  # init_from: a model's own
        refuse_sampling(tokenizer.pop("sampling", None), tokenizer.get("model_type", "unigram"))
        for ignored in ("joint", "src_vocab_size", "tgt_vocab_size"):
            tokenizer.pop(ignored, None)
        tokenizer["preserve_text"] = True
        self.settings = SentencePieceSettings(**tokenizer)
        self.tokenizer: Tokenizer | None = None
        self.train_ids: torch.Tensor | None = None
        self.valid_ids: torch.Tensor | None = None
        self.valid_text = ""
        self._split: tuple[str, str] | None = None

    def _texts(self) -> tuple[str, str]:
        """(training text, held-out text), read and checked once per process."""
        if self._split is None:
            self._split = self._read_and_split()
        return self._split

    def _read_and_split(self) -> tuple[str, str]:
        if self.download is not None:
            names = [self.train_file] + ([self.valid_file] if self.valid_file else [])
            ensure_files(self.download, self.data_dir, names)
        train_path = self.data_dir / self.train_file
        text = read_text(train_path)
        if self.valid_file is not None:
            train, valid = text, read_text(self.data_dir / self.valid_file)
        else:
            cut = int(len(text) * (1.0 - self.valid_fraction))
            train, valid = text[:cut], text[cut:]
        if len(train.strip()) == 0:
            raise UserError(f"{train_path}: no text to train on")
        if len(valid) < 2:
            raise UserError(f"{train_path}: the held-out part has {len(valid)} characters; "
                            "give more text or a valid_file")
        return train, valid

    def _tokenizer(self, train_text: str) -> Tokenizer:
        if self.reused_tokenizer:
            return Tokenizer(self.reused_tokenizer)
        # SentencePiece trains from files: the training part goes into a content-named file.
        digest = hashlib.sha256(train_text.encode("utf-8")).hexdigest()[:16]
        text_dir = self.cache_dir / "text"
        text_dir.mkdir(parents=True, exist_ok=True)
        train_copy = text_dir / f"{Path(self.train_file).stem}-{digest}.txt"
        if not train_copy.is_file():
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=text_dir, delete=False) as tmp:
                tmp.write(train_text)
            os.replace(tmp.name, train_copy)
        return train_or_load([train_copy], self.cache_dir / "tokenizers", self.settings, name="chars")

    def tokenizer_files(self) -> dict[str, Path]:
        assert self.tokenizer is not None
        return {"text": self.tokenizer.model_file}

    def prepare_data(self) -> None:
        self._tokenizer(self._texts()[0])

    def setup(self, stage: str | None = None) -> None:
        if self.train_ids is not None:
            return
        train, self.valid_text = self._texts()
        self.tokenizer = self._tokenizer(train)
        keep_with_run({self.tokenizer.model_file}, self.run_dir)
        self.train_ids = torch.tensor(self.tokenizer.encode_text(train), dtype=torch.long)
        self.valid_ids = torch.tensor(self.tokenizer.encode_text(self.valid_text), dtype=torch.long)
        log.info("text: %s training and %s held-out characters, %d symbols",
                 f"{self.train_ids.numel():,}", f"{self.valid_ids.numel():,}", self.tokenizer.vocab_size)

    def train_dataloader(self) -> DataLoader:
        world, rank = rank_info(self)
        # Every rank reads its own `batch_streams` of the world's streams: distinct text, one pass.
        streams = stream_batches(self.train_ids, self.batch_streams * world)[rank::world]
        windows = TextWindows(streams, self.bptt)
        return ResumableLoader(windows, SequentialSampler(windows), self)

    def val_dataloader(self) -> DataLoader:
        world, rank = rank_info(self)
        data = scoring_streams(self.valid_ids, self.valid_streams * world, self.valid_warmup)
        rows = list(range(rank, data.inputs.size(0), world))
        return DataLoader([data.rows(rows)], batch_size=None, collate_fn=lambda item: item)
