"""What every task's LightningModule shares: the `optim` settings as one object, the optimizer
and learning-rate schedule built from them, and the guard that skips non-finite steps."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import lightning as L
import torch

from seq2seq.errors import UserError
from seq2seq.runtime import peak_resident_memory_mb, release_freed_memory, resident_memory_mb
from seq2seq.tasks import task_named

log = logging.getLogger(__name__)


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULERS = ("none", "plateau", "inverse_sqrt")


@dataclass(frozen=True)
class Optimization:
    """The `optim` config group: optimizer, learning-rate schedule and the non-finite-step guard.

    Every task's LightningModule takes it as one argument, so a new setting is added here once.
    """

    optimizer: str = "adam"
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    scheduler: str = "plateau"  # none | plateau (on the task's validation metric) | inverse_sqrt
    warmup_steps: int = 1000
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    min_lr: float = 1e-5
    # Steps whose gradients are NaN/inf are skipped; this many in a row stop training with an error.
    max_nonfinite_steps: int = 20

    def __post_init__(self) -> None:
        lr = self.lr
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise UserError(f"optim.lr={lr} must be a positive number")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optim.optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"optim.scheduler={self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if self.max_nonfinite_steps < 1:
            raise UserError(f"optim.max_nonfinite_steps={self.max_nonfinite_steps} must be at least 1")
        object.__setattr__(self, "betas", tuple(self.betas))


def inverse_sqrt_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up to the peak LR, then decay with 1/sqrt(step) (Vaswani et al. 2017)."""
    step = step + 1
    if warmup_steps <= 0:
        return 1.0
    return min(step / warmup_steps, math.sqrt(warmup_steps / step))


class SkipsNonFiniteSteps:
    """Skips an optimizer step whose gradients hold NaN or infinity, and counts it.

    The check runs with gradient-norm clipping, after backward (and, under DDP, after the
    gradient all-reduce, so every rank takes the same decision). After `max_nonfinite_steps` such
    steps in a row training stops and `stopped_reason` says why; the weights never took a bad update.
    """

    optimization: Optimization
    nonfinite_steps = 0
    nonfinite_in_a_row = 0
    stopped_reason: str | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["nonfinite_steps"] = [self.nonfinite_steps, self.nonfinite_in_a_row]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.nonfinite_steps, self.nonfinite_in_a_row = checkpoint.get("nonfinite_steps", [0, 0])

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Lightning calls this after backward (and unscaling) on every step, clipping or not: one
        # pass over the gradients gives the norm for both the finiteness check and the clipping.
        if gradient_clip_algorithm == "value":
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        if bool(torch.isfinite(norm)):
            self.nonfinite_in_a_row = 0
            # Scaling by a factor of 1 would still cost a pass over every gradient.
            if gradient_clip_val and gradient_clip_algorithm != "value" and float(norm) > gradient_clip_val:
                torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm, foreach=True)
            return
        for param in self.model.parameters():
            param.grad = None  # the optimizer leaves parameters without gradients untouched
        self.nonfinite_steps += 1
        self.nonfinite_in_a_row += 1
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            # fp16 loss scaling overflows now and then by design; the scaler lowers the scale.
            log.info("step %d: fp16 gradients overflowed at loss scale %g, update skipped (%d in a row)",
                     self.global_step, scaler.get_scale(), self.nonfinite_in_a_row)
        else:
            log.warning("step %d: non-finite loss or gradients, update skipped (%d in a row, %d in all)",
                        self.global_step, self.nonfinite_in_a_row, self.nonfinite_steps)
        limit = self.optimization.max_nonfinite_steps
        if self.nonfinite_in_a_row >= limit:
            self.stopped_reason = (
                f"training stopped at step {self.global_step}: {self.nonfinite_in_a_row} steps in a row had a "
                f"non-finite loss (optim.max_nonfinite_steps={limit}); lower optim.lr or "
                "check the data")
            self.trainer.should_stop = True


class TaskSystem(SkipsNonFiniteSteps, L.LightningModule):
    """Base of every task's LightningModule: the model, its `Optimization`, and an optimizer
    whose plateau schedule follows the task's monitored metric (from the task table)."""

    task_name: str  # the task's row in seq2seq.tasks.TASKS

    def __init__(self, model: torch.nn.Module, optimization: Optimization | None = None) -> None:
        super().__init__()
        self.model = model
        self.optimization = optimization or Optimization()

    def configure_optimizers(self):
        task = task_named(self.task_name)
        return build_optimization(self, monitor=task.monitor, mode=task.mode)


def build_optimization(system, monitor: str, mode: str):
    """Optimizer and schedule of a system holding an `Optimization` as `system.optimization`.

    The plateau schedule is not handed to Lightning, which would step it at the end of the
    epoch, after the checkpoint of that validation is written, and skips that step in an
    epoch resumed from a mid-epoch checkpoint. `PlateauSchedule` steps it right after each
    validation instead, so every checkpoint holds the schedule that goes with its weights.
    """
    params = list(system.model.parameters())
    # PyTorch's fused Adam updates every parameter in one kernel instead of a dozen passes over
    # all of them, each of which reads and writes every parameter's memory (README, "Benchmarks").
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    settings: Optimization = system.optimization
    optimizer = OPTIMIZERS[settings.optimizer](
        params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay, fused=fused)
    system.plateau = None
    if settings.scheduler == "none":
        return optimizer
    if settings.scheduler == "inverse_sqrt":
        warmup = settings.warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: inverse_sqrt_factor(step, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
    system.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=settings.plateau_factor, patience=settings.plateau_patience,
        min_lr=settings.min_lr), monitor)
    return optimizer


class PlateauSchedule(L.Callback):
    """Steps a system's plateau schedule after every validation of training and keeps its state
    in checkpoints (Lightning orders checkpoint callbacks last, so the step comes first)."""

    def __init__(self) -> None:
        self._pending: dict | None = None

    @staticmethod
    def _schedule(pl_module):
        plateau = getattr(pl_module, "plateau", None)
        return plateau if plateau is not None else (None, None)

    def on_validation_end(self, trainer, pl_module) -> None:
        schedule, monitor = self._schedule(pl_module)
        if schedule is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(monitor)
        if value is not None:
            schedule.step(float(value))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        schedule, _ = self._schedule(pl_module)
        if schedule is not None:
            checkpoint["plateau_schedule"] = schedule.state_dict()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get("plateau_schedule")

    def on_train_start(self, trainer, pl_module) -> None:
        # The optimizer (and so the schedule) is built after checkpoint hooks have run.
        schedule, _ = self._schedule(pl_module)
        if schedule is not None and self._pending is not None:
            schedule.load_state_dict(self._pending)
        self._pending = None


class ReleaseFreedMemory(L.Callback):
    """Gives malloc's free pages back to the kernel after every validation and every
    `every_n_train_steps` optimizer steps (0: only after validations), and logs the process's
    resident memory after each training epoch (`memory/rss_mb`, `memory/peak_rss_mb`).

    The commands keep freed memory for reuse (`seq2seq.runtime`), which makes steps faster but
    lets the heap hold every page it ever touched; releasing now and then bounds it, at the cost
    of faulting in again the pages the next steps use (README, "Training memory").
    """

    def __init__(self, every_n_train_steps: int = 200) -> None:
        if every_n_train_steps < 0:
            raise UserError(f"callbacks.release_freed_memory.every_n_train_steps={every_n_train_steps} must be >= 0")
        self.every_n_train_steps = every_n_train_steps
        self._released_at = -1

    def _release(self, step: int) -> None:
        if step != self._released_at:
            release_freed_memory()
            self._released_at = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_train_steps and step and step % self.every_n_train_steps == 0:
            self._release(step)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._release(trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        rss, peak = resident_memory_mb(), peak_resident_memory_mb()
        if rss is not None:
            pl_module.log("memory/rss_mb", rss, rank_zero_only=True)
        if peak is not None:
            pl_module.log("memory/peak_rss_mb", peak, rank_zero_only=True)
