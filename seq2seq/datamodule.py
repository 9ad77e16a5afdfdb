"""LightningDataModules: parallel text for translation, a character stream for language models.

prepare_data (one process per machine): fetch missing files, check them, train the tokenizers.
setup (every rank): load the cached tokenizers, encode the corpora, build token-budget batches
sharded by rank.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from seq2seq.corpus import ChunkedTokenBatchSampler, MemmapParallelDataset, prepare_corpus, source_fingerprint
from seq2seq.data import ParallelDataset, TokenBatchSampler, encode_parallel, read_parallel, read_text
from seq2seq.datasets import ensure_files
from seq2seq.errors import UserError
from seq2seq.language_model import scoring_streams, stream_batches
from seq2seq.tokenizer import SentencePieceSettings, Tokenizer, train_or_load

log = logging.getLogger(__name__)


def rank_info(datamodule: L.LightningDataModule) -> tuple[int, int]:
    """(world size, this rank), or (1, 0) outside a trainer."""
    trainer = datamodule.trainer
    if trainer is None:
        return 1, 0
    return trainer.world_size, trainer.global_rank


def on_gpu(datamodule: L.LightningDataModule) -> bool:
    trainer = datamodule.trainer
    return trainer is not None and trainer.strategy.root_device.type == "cuda"


def loader_settings(num_workers: int | str, pin_memory: bool | str) -> tuple[int | str, bool | str]:
    """Checked `data.num_workers` (a count or auto) and `data.pin_memory` (true, false or auto)."""
    if num_workers != "auto" and not (isinstance(num_workers, int) and num_workers >= 0):
        raise UserError(f"data.num_workers={num_workers!r} must be auto or a count of 0 or more")
    if pin_memory not in ("auto", True, False):
        raise UserError(f"data.pin_memory={pin_memory!r} must be auto, true or false")
    return num_workers, pin_memory


def keep_with_run(files: set[Path], run_dir: Path | None) -> None:
    """Copy tokenizer models into the run folder: the run stays reproducible after the cache is cleared."""
    if run_dir is None:
        return
    target = run_dir / "tokenizers"
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, target / path.name)


# memory: the training corpus is read and encoded into lists at setup (small and medium corpora).
# memmap: it is encoded once into memory-mapped arrays (seq2seq-prepare or the first run) and
#         read in place, so memory does not grow with the corpus.
STORAGE = ("memory", "memmap")


class ResumableSampler(Sampler):
    """Wraps a training sampler so that one epoch can start part-way through, for exact resumption."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """The next iteration continues `epoch` after its first `batches_done` batches."""
        if batches_done >= len(self.sampler):
            epoch, batches_done = epoch + 1, 0
        self.set_epoch(epoch)
        self._skip = batches_done

    def __iter__(self):
        # Skipped batches are index lists only: no data is read or tokenized for them.
        skip, self._skip = self._skip, 0
        return itertools.islice(iter(self.sampler), skip, None)

    def __len__(self) -> int:
        return len(self.sampler)


class ResumableLoader(DataLoader):
    """Training batches whose place in the epoch travels in Lightning checkpoints.

    Lightning stores `state_dict()` of a training loader that has one and, on resume, hands it
    to `load_state_dict()` before the first batch is drawn. The resumed run then trains on
    exactly the batches the interrupted one had not, in the same order.
    """

    def __init__(self, dataset: Dataset, sampler: Sampler, datamodule: L.LightningDataModule,
                 num_workers: int = 0, pin_memory: bool = False) -> None:
        # The sampler runs in this process even with workers, and the position saved is the
        # trainer's count of finished batches, so resumption is exact however far workers read ahead.
        # The loader draws its workers' seeds from a generator of its own: from the global one it
        # would shift every later dropout mask by a draw per epoch, differently with and without
        # workers and in a resumed run.
        super().__init__(dataset, sampler=ResumableSampler(sampler), batch_size=None, num_workers=num_workers,
                         pin_memory=pin_memory, persistent_workers=num_workers > 0,
                         generator=torch.Generator().manual_seed(0))
        self.datamodule = datamodule

    def state_dict(self) -> dict[str, int]:
        # Lightning's `processed` counts batches whose optimizer work is done, including the
        # one whose on_train_batch_end writes the checkpoint; the loader itself runs a batch
        # ahead (prefetch), so its own count would skip one batch.
        progress = self.datamodule.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.sampler.epoch, "batches_done": progress.processed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume(int(state["epoch"]), int(state["batches_done"]))


class TranslationDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_dir: str,
        src_lang: str,
        tgt_lang: str,
        tokenizer: dict[str, Any],
        cache_dir: str,
        train_prefix: str = "train",
        valid_prefix: str = "val",
        test_prefix: str | None = None,
        download: str | None = None,
        max_tokens: int = 4096,
        valid_max_tokens: int = 8192,
        max_len: int | None = 100,
        seed: int = 0,
        run_dir: str | None = None,
        storage: str = "memory",
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
    ) -> None:
        super().__init__()
        if storage not in STORAGE:
            raise UserError(f"data.storage={storage!r} is not one of {', '.join(STORAGE)}")
        self.num_workers, self.pin_memory = loader_settings(num_workers, pin_memory)
        self.storage = storage
        self.data_dir = Path(data_dir)
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.prefixes = {"train": train_prefix, "valid": valid_prefix, "test": test_prefix}
        self.download = download
        self.cache_dir = Path(cache_dir)
        self.max_tokens, self.valid_max_tokens = max_tokens, valid_max_tokens
        self.max_len = max_len
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir else None
        tokenizer = dict(tokenizer)
        self.joint_vocabulary = bool(tokenizer.pop("joint", True))
        vocab_size = tokenizer.pop("vocab_size")
        src_size = tokenizer.pop("src_vocab_size", None) or vocab_size
        tgt_size = tokenizer.pop("tgt_vocab_size", None) or vocab_size
        if self.joint_vocabulary and src_size != tgt_size:
            raise UserError("tokenizer.joint=true needs src_vocab_size == tgt_vocab_size")
        self.src_settings = SentencePieceSettings(vocab_size=src_size, **tokenizer)
        self.tgt_settings = SentencePieceSettings(vocab_size=tgt_size, **tokenizer)
        self.src_tokenizer: Tokenizer | None = None
        self.tgt_tokenizer: Tokenizer | None = None
        self.train_set: ParallelDataset | None = None
        self.valid_set: ParallelDataset | None = None
        self.valid_refs: list[str] = []
        self.valid_srcs: list[str] = []

    # ----------------------------------------------------------------- files
    def path(self, split: str, lang: str) -> Path:
        prefix = self.prefixes[split]
        if prefix is None:
            raise UserError(f"no {split} split configured")
        return self.data_dir / f"{prefix}.{lang}"

    def _fetch(self) -> None:
        if self.download is None:
            return
        names = [f"{p}.{lang}" for p in self.prefixes.values() if p for lang in (self.src_lang, self.tgt_lang)]
        ensure_files(self.download, self.data_dir, names)

    @property
    def test_files(self) -> tuple[Path, Path] | None:
        if self.prefixes["test"] is None:
            return None
        src, tgt = self.path("test", self.src_lang), self.path("test", self.tgt_lang)
        return (src, tgt) if src.is_file() and tgt.is_file() else None

    # ------------------------------------------------------------ tokenizers
    def _tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        train_src, train_tgt = self.path("train", self.src_lang), self.path("train", self.tgt_lang)
        tokenizer_dir = self.cache_dir / "tokenizers"
        if self.joint_vocabulary:
            joint = train_or_load([train_src, train_tgt], tokenizer_dir, self.src_settings,
                                  name=f"{self.src_lang}{self.tgt_lang}")
            return joint, joint
        return (train_or_load([train_src], tokenizer_dir, self.src_settings, name=self.src_lang),
                train_or_load([train_tgt], tokenizer_dir, self.tgt_settings, name=self.tgt_lang))

    def tokenizer_files(self) -> dict[str, Path]:
        assert self.src_tokenizer is not None and self.tgt_tokenizer is not None
        return {"src": self.src_tokenizer.model_file, "tgt": self.tgt_tokenizer.model_file}

    # ------------------------------------------------------------- lightning
    def prepared_dir(self, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer) -> Path:
        """Where the memory-mapped training corpus lives: named by its text files and tokenizers."""
        sources = source_fingerprint([self.path("train", self.src_lang), self.path("train", self.tgt_lang)])
        key = json.dumps([sources, src_tokenizer.model_file.name, tgt_tokenizer.model_file.name])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.cache_dir / "corpora" / f"{self.prefixes['train']}.{self.src_lang}-{self.tgt_lang}-{digest}"

    def prepare_data(self) -> None:
        self._fetch()
        read_parallel(self.path("valid", self.src_lang), self.path("valid", self.tgt_lang))
        if self.storage == "memmap":
            src_tokenizer, tgt_tokenizer = self._tokenizers()
            target = self.prepared_dir(src_tokenizer, tgt_tokenizer)
            if (target / "index.json").is_file():
                log.info("reusing prepared corpus %s", target)
            else:
                prepare_corpus(self.path("train", self.src_lang), self.path("train", self.tgt_lang),
                               src_tokenizer, tgt_tokenizer, target)
            return
        # Check alignment and encoding before minutes of tokenizer training, not after.
        read_parallel(self.path("train", self.src_lang), self.path("train", self.tgt_lang))
        self._tokenizers()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.src_tokenizer, self.tgt_tokenizer = self._tokenizers()
        keep_with_run({self.src_tokenizer.model_file, self.tgt_tokenizer.model_file}, self.run_dir)
        if self.storage == "memmap":
            self.train_set = MemmapParallelDataset(self.prepared_dir(self.src_tokenizer, self.tgt_tokenizer))
        else:
            train_src, train_tgt = read_parallel(self.path("train", self.src_lang),
                                                 self.path("train", self.tgt_lang))
            self.train_set = encode_parallel(train_src, train_tgt, self.src_tokenizer, self.tgt_tokenizer,
                                             self.max_len, name="train")
        self.valid_srcs, self.valid_refs = read_parallel(
            self.path("valid", self.src_lang), self.path("valid", self.tgt_lang))
        # Validation keeps every pair (no length filter) so BLEU covers the whole set.
        self.valid_set = ParallelDataset(self.src_tokenizer.encode(self.valid_srcs),
                                         self.tgt_tokenizer.encode(self.valid_refs))

    def train_dataloader(self) -> DataLoader:
        world, rank = rank_info(self)
        if isinstance(self.train_set, MemmapParallelDataset):
            sampler = ChunkedTokenBatchSampler(self.train_set, self.max_tokens, self.max_len, seed=self.seed,
                                               num_replicas=world, rank=rank)
        else:
            sampler = TokenBatchSampler(self.train_set.src_lengths, self.train_set.tgt_lengths, self.max_tokens,
                                        shuffle=True, seed=self.seed, num_replicas=world, rank=rank)
        gpu = on_gpu(self)
        # auto: batching runs on the training thread on CPU, where a worker process would take a
        # core from the matrix products (measured on 2 cores: see README, Benchmarks), and in two
        # workers beside a GPU, which it would otherwise wait for.
        workers = (2 if gpu else 0) if self.num_workers == "auto" else self.num_workers
        pin = gpu if self.pin_memory == "auto" else self.pin_memory
        return ResumableLoader(self.train_set, sampler, self, num_workers=workers, pin_memory=pin)

    def val_dataloader(self) -> DataLoader:
        world, rank = rank_info(self)
        # Each rank decodes a distinct share of the sentences (every world-th by length, so the
        # shares cost about the same): every validation sentence is decoded exactly once, and
        # every rank has work even when the whole set fits one batch.
        lengths = self.valid_set.src_lengths
        tgt_lengths = self.valid_set.tgt_lengths  # a property that builds the list: read it once
        share = sorted(range(len(lengths)), key=lengths.__getitem__)[rank::world]
        sampler = TokenBatchSampler([lengths[i] for i in share], [tgt_lengths[i] for i in share],
                                    self.valid_max_tokens, shuffle=False)
        batches = [[share[i] for i in batch] for batch in sampler]
        return DataLoader(self.valid_set, sampler=batches, batch_size=None, num_workers=0)


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
