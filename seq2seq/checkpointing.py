"""What a Lightning checkpoint needs beyond Lightning's own state for an exact resume."""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import numpy as np
import torch

from seq2seq.errors import UserError


def random_states() -> dict:
    """The generators dropout and sampling draw from, as tensors and plain numbers.

    Plain values keep the checkpoint loadable with torch.load(weights_only=True).
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
    }


def restore_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


class RandomStateCheckpoint(L.Callback):
    """Saves the random generators with every checkpoint and restores them when training resumes.

    Without this a resumed run draws different dropout masks than the interrupted one would
    have. They are put back at the start of training, after everything that runs between
    loading the checkpoint and the first step. Under DDP every rank is seeded alike, so rank
    0's states (the ones saved) are every rank's states.
    """

    def __init__(self) -> None:
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["random_states"] = random_states()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get("random_states")

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending is not None:
            restore_random_states(self._pending)
            self._pending = None


class LastCheckpoint(L.Callback):
    """`<dirpath>/last.ckpt`: after every validation of training, and every `every_n_train_steps`
    optimizer steps so that a killed run loses at most that many steps.

    Written only right after an optimizer step: with gradient accumulation a checkpoint taken
    between micro-batches would drop the gradients gathered so far, and the resumed run could
    not match an uninterrupted one. The writes go through the trainer's (atomic) checkpoint IO.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 250) -> None:
        if every_n_train_steps < 0:
            raise UserError(f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps} must be >= 0")
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_train_steps = every_n_train_steps
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        every = self.every_n_train_steps
        if not every or trainer.global_step % every or trainer.global_step == self._saved_step:
            return
        batches_done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        stepped = batches_done % trainer.accumulate_grad_batches == 0 or batches_done == trainer.num_training_batches
        if stepped:
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)
