"""Batches by token budget: length-sorted batches of at most N padded tokens, padding, and the
resumable loader that lets a resumed run continue mid-epoch on the same batches."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from seq2seq.errors import UserError
from seq2seq.portable.batches import length_sorted_batches  # noqa: F401  (also the PyTorch code's)
from seq2seq.tokenizer import PAD_ID

# Only named in annotations: translating or classifying with a model directory pads its batches
# here and must not pay for importing Lightning.
if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    """(B, max_len) LongTensor, right-padded."""
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), max(width, 1)), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


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
