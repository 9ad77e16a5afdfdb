"""Checkpoints: what one needs beyond Lightning's own state for an exact resume, how they are
written (atomically) and when (last.ckpt, Ctrl-C), and the check before resuming from one."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seq2seq.bundle import load_state_dict
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

    Not Lightning's `ModelCheckpoint(save_last=True, every_n_train_steps=N)`: in Lightning 2.6 a
    step interval turns off its save after validation (`every_n_epochs` becomes 0), so the
    checkpoint a resumed run starts from would miss the last validation's schedule step and
    early-stopping state; one ModelCheckpoint cannot do both.

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
        # The whole training state (optimizer, loops, callbacks), to resume from; saying so also
        # spares the log Lightning's "`weights_only` was not set" line at every save.
        trainer.save_checkpoint(self.path, weights_only=False)
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, flushed to disk and renamed: a
    kill, a full disk or an unwritable folder during a save leaves the previous checkpoint as it was,
    and the error is one line.

    Lightning 2.6's own writer (`_atomic_save`) serializes the whole checkpoint into memory first,
    writes it to a file in the system temp folder and moves it into place, which is a copy, not an
    atomic rename, when the temp folder is on another file system; it does not fsync.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except BaseException as error:
            # Ctrl-C can land in the middle of a write too: the half-written file goes either way.
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise UserError(f"cannot save checkpoint {path} ({error.strerror or error}); "
                                "the previous checkpoint is kept") from None
            raise


class SaveOnInterrupt(L.Callback):
    """Ctrl-C: write a resumable checkpoint and say how to continue."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "interrupted.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        if trainer.is_global_zero:
            print(f"\ninterrupted at epoch {trainer.current_epoch} step {trainer.global_step}; continue with "
                  f"resume={self.path}", file=sys.stderr)


class LastValidationStep(L.Callback):
    """Remembers the optimizer step of the last validation run."""

    def __init__(self) -> None:
        self.step = -1

    def on_validation_end(self, trainer, pl_module) -> None:
        self.step = trainer.global_step


def check_resumable(path: Path, system: L.LightningModule) -> None:
    """Refuse, in one line, a checkpoint that is missing, corrupt, unsafe or of another model."""
    if not path.is_file():
        raise UserError(f"resume={path}: checkpoint not found")
    checkpoint = load_state_dict(path)  # tensors and plain data only: a planted pickle is refused
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"resume={path}: not a training checkpoint (no state_dict); use checkpoints/*.ckpt of a run")
    expected = {k: tuple(v.shape) for k, v in system.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if expected != found:
        differing = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found.get(k)]
        raise UserError(f"resume={path}: the checkpoint is of another model than this config builds "
                        f"(first difference: {differing[0]}); resume with the run's own config")
