"""TranslationDataModule: parallel files on disk -> validated lines -> tokenizers trained (or
reused from the cache) -> encoded pairs (in memory or memory-mapped) -> token-budget batches,
sharded by rank."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from seq2seq.batching import (
    ResumableLoader,
    TokenBatchSampler,
    loader_settings,
    on_gpu,
    rank_info,
)
from seq2seq.datasets import ensure_files
from seq2seq.errors import UserError
from seq2seq.tasks.translation.corpus import (
    ChunkedTokenBatchSampler,
    MemmapParallelDataset,
    ParallelDataset,
    encode_parallel,
    prepare_corpus,
    source_fingerprint,
)
from seq2seq.tasks.translation.subword_sampling import EpochTaggedBatches, SampledParallelDataset
from seq2seq.text import read_parallel
from seq2seq.tokenizer import (
    SentencePieceSettings,
    SubwordSampling,
    Tokenizer,
    file_digest,
    keep_with_run,
    train_or_load,
)

log = logging.getLogger(__name__)










# memory: the training corpus is read and encoded into lists at setup (small and medium corpora).
# memmap: it is encoded once into memory-mapped arrays (seq2seq-prepare or the first run) and
#         read in place, so memory does not grow with the corpus.
STORAGE = ("memory", "memmap")


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
        self.sampling = SubwordSampling.from_settings(tokenizer.pop("sampling", None),
                                                      tokenizer.get("model_type", "unigram"))
        if self.sampling and storage == "memmap":
            raise UserError("tokenizer.sampling needs data.storage=memory: a memory-mapped corpus is "
                            "encoded once and keeps no text to sample segmentations from")
        self.reused_tokenizers = tokenizer.pop("files", None)  # {"src": path, "tgt": path}: init_from
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
        if self.reused_tokenizers:
            return Tokenizer(self.reused_tokenizers["src"]), Tokenizer(self.reused_tokenizers["tgt"])
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
        """Where the memory-mapped training corpus lives: named by its text files and the tokenizers'
        bytes (a reused tokenizer's file name, `src.spm.model`, says nothing of its pieces)."""
        sources = source_fingerprint([self.path("train", self.src_lang), self.path("train", self.tgt_lang)])
        key = json.dumps([sources, file_digest(src_tokenizer.model_file), file_digest(tgt_tokenizer.model_file)])
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
            if self.sampling:
                self.train_set = SampledParallelDataset(
                    self.train_set, train_src, train_tgt, (self.src_tokenizer, self.tgt_tokenizer),
                    self.sampling, self.seed, self.max_len)
                log.info("subword regularization of the training split: alpha %g, nbest_size %d",
                         self.sampling.alpha, self.sampling.nbest_size)
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
        # core from the matrix products (README, "Scale out: processes, GPUs, nodes, mixed
        # precision, large corpora", Data loading), and in two workers beside a GPU, which it
        # would otherwise wait for.
        workers = (2 if gpu else 0) if self.num_workers == "auto" else self.num_workers
        pin = gpu if self.pin_memory == "auto" else self.pin_memory
        if isinstance(self.train_set, SampledParallelDataset):
            sampler = EpochTaggedBatches(sampler)
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
