"""Training progress: Lightning's bar on a terminal, a log line every N steps anywhere else.

A progress bar written to a file or a pipe is every frame of it (CI logs, `nohup`, `2> log`),
so the bar is shown only when stderr is a terminal, and otherwise a line of step, loss,
throughput and the expected time left is logged every `every_n_steps` optimizer steps.
"""

from __future__ import annotations

import logging
import math
import sys
import time

import lightning as L

from seq2seq.errors import UserError

log = logging.getLogger(__name__)


def progress_bar_wanted(setting) -> bool:
    """`trainer.enable_progress_bar`: true, false, or auto (a bar only when stderr is a terminal)."""
    if setting in (True, False):
        return setting
    if setting == "auto":
        return sys.stderr.isatty()
    raise UserError(f"trainer.enable_progress_bar={setting!r}: expected auto, true or false")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressLog(L.Callback):
    """Logs `step S/T  loss L  N tokens/s  elapsed E  ETA R` every `every_n_steps` optimizer steps
    when no progress bar is shown (0: never). Throughput counts what the task's system reports
    for a batch (`tokens_in(batch)`: target tokens, characters, or values for forecasting), on
    this process, since the start of this fit; ETA takes the nearer of the step/epoch limit and
    `trainer.max_time`."""

    def __init__(self, every_n_steps: int = 50) -> None:
        if every_n_steps < 0:
            raise UserError(f"callbacks.progress_log.every_n_steps={every_n_steps} must be >= 0")
        self.every_n_steps = every_n_steps
        self.active = False

    def on_train_start(self, trainer, pl_module) -> None:
        self.active = bool(self.every_n_steps) and trainer.progress_bar_callback is None and trainer.is_global_zero
        self.started = time.monotonic()
        self.first_step = trainer.global_step
        self.logged_step = trainer.global_step
        self.units = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.active:
            return
        count = getattr(pl_module, "tokens_in", None)
        if count is not None:
            self.units += count(batch)
        step = trainer.global_step
        if step == self.logged_step or step % self.every_n_steps:
            return
        self.logged_step = step
        elapsed = time.monotonic() - self.started
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        total = trainer.estimated_stepping_batches
        parts = [f"step {step}" + (f"/{int(total)}" if math.isfinite(total) else "")]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if count is not None and elapsed > 0:
            parts.append(f"{self.units / elapsed:,.0f} {getattr(pl_module, 'progress_unit', 'tokens')}/s")
        parts.append(f"elapsed {duration(elapsed)}")
        eta = self.time_left(trainer, step, elapsed, total)
        if eta is not None:
            parts.append(f"ETA {duration(eta)}")
        log.info("  ".join(parts))

    def time_left(self, trainer, step: int, elapsed: float, total: float) -> float | None:
        estimates = []
        done = step - self.first_step
        if math.isfinite(total) and done > 0:
            estimates.append(max(total - step, 0) * elapsed / done)
        timer = next((c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.Timer)), None)
        if timer is not None and timer.time_remaining("train") is not None:
            estimates.append(max(timer.time_remaining("train"), 0.0))
        return min(estimates) if estimates else None
