"""LightningDataModule for parallel text.

prepare_data (one process per machine): fetch missing files, check them, train the tokenizers.
setup (every rank): load the cached tokenizers, encode the corpora, build token-budget batches
sharded by rank.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from seq2seq.data import ParallelDataset, TokenBatchSampler, encode_parallel, read_parallel
from seq2seq.datasets import ensure_files
from seq2seq.errors import UserError
from seq2seq.tokenizer import SentencePieceSettings, Tokenizer, train_or_load

log = logging.getLogger(__name__)


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
    ) -> None:
        super().__init__()
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
    def prepare_data(self) -> None:
        self._fetch()
        # Check alignment and encoding before minutes of tokenizer training, not after.
        read_parallel(self.path("train", self.src_lang), self.path("train", self.tgt_lang))
        read_parallel(self.path("valid", self.src_lang), self.path("valid", self.tgt_lang))
        self._tokenizers()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.src_tokenizer, self.tgt_tokenizer = self._tokenizers()
        if self.run_dir is not None:
            # Keep a copy with the run so it stays reproducible after the cache is cleared.
            target = self.run_dir / "tokenizers"
            target.mkdir(parents=True, exist_ok=True)
            for tok in {self.src_tokenizer.model_file, self.tgt_tokenizer.model_file}:
                shutil.copyfile(tok, target / tok.name)
        train_src, train_tgt = read_parallel(self.path("train", self.src_lang), self.path("train", self.tgt_lang))
        self.train_set = encode_parallel(train_src, train_tgt, self.src_tokenizer, self.tgt_tokenizer,
                                         self.max_len, name="train")
        self.valid_srcs, self.valid_refs = read_parallel(
            self.path("valid", self.src_lang), self.path("valid", self.tgt_lang))
        # Validation keeps every pair (no length filter) so BLEU covers the whole set.
        self.valid_set = ParallelDataset(self.src_tokenizer.encode(self.valid_srcs),
                                         self.tgt_tokenizer.encode(self.valid_refs))

    def _rank_info(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        world, rank = self._rank_info()
        sampler = TokenBatchSampler(self.train_set.src_lengths, self.train_set.tgt_lengths, self.max_tokens,
                                    shuffle=True, seed=self.seed, num_replicas=world, rank=rank)
        return DataLoader(self.train_set, sampler=sampler, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        world, rank = self._rank_info()
        sampler = TokenBatchSampler(self.valid_set.src_lengths, self.valid_set.tgt_lengths, self.valid_max_tokens,
                                    shuffle=False, num_replicas=1, rank=0)
        # Each rank takes a distinct slice of the (unpadded) batch list: every validation
        # sentence is decoded exactly once across ranks.
        batches = list(sampler)[rank::world]
        return DataLoader(self.valid_set, sampler=batches, batch_size=None, num_workers=0)

