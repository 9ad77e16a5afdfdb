"""LightningModules: the loss, optimizers, schedules and validation metrics around a model.

TranslationSystem trains a Seq2Seq; LanguageModelSystem a LanguageModel.
"""

from __future__ import annotations

import logging
import math
import time

import lightning as L
import torch
import torch.nn.functional as F

from seq2seq.data import Batch
from seq2seq.errors import UserError
from seq2seq.generator import TextCodec
from seq2seq.language_model import (LanguageModel, LSTMState, ScoringStreams, detach_state, generate_ids,
                                    loss_report, score_streams)
from seq2seq.metrics import score_corpus
from seq2seq.search import decode
from seq2seq.tokenizer import PAD_ID

log = logging.getLogger(__name__)

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULERS = ("none", "plateau", "inverse_sqrt")


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

    max_nonfinite_steps: int
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
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            self.stopped_reason = (
                f"training stopped at step {self.global_step}: {self.nonfinite_in_a_row} steps in a row had a "
                f"non-finite loss (optim.max_nonfinite_steps={self.max_nonfinite_steps}); lower optim.lr or "
                "check the data")
            self.trainer.should_stop = True


class TranslationSystem(SkipsNonFiniteSteps, L.LightningModule):
    """Trains a `Seq2Seq`; validates with loss, BLEU and chrF over the whole validation set."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: str = "adam",
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        scheduler: str = "plateau",
        warmup_steps: int = 1000,
        plateau_factor: float = 0.5,
        plateau_patience: int = 1,
        min_lr: float = 1e-5,
        label_smoothing: float = 0.1,
        max_nonfinite_steps: int = 20,
        val_beam: int = 1,
        max_len_ratio: float = 2.0,
        max_len_offset: int = 10,
        num_val_samples: int = 3,
    ) -> None:
        super().__init__()
        keep_optimization(self, optimizer, lr, betas, weight_decay, scheduler, warmup_steps, plateau_factor,
                          plateau_patience, min_lr, max_nonfinite_steps)
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        self.model = model
        self.label_smoothing = label_smoothing
        self.val_beam, self.max_len_ratio, self.max_len_offset = val_beam, max_len_ratio, max_len_offset
        self.num_val_samples = num_val_samples
        self._val_outputs: list[tuple[int, str]] = []
        self._val_loss_sum = 0.0
        self._val_tokens = 0
        self._tokens_seen = 0
        self._epoch_start = time.perf_counter()

    # ------------------------------------------------------------------ loss
    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Label-smoothed cross-entropy per target token, and the number of target tokens."""
        outputs = self.model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, O)
        real = batch.tgt_out != PAD_ID  # (B, T)
        # Project only real target positions: padding would cost a full vocabulary product each.
        logits = self.model.project(outputs[real])  # (N, V)
        loss = F.cross_entropy(logits.float(), batch.tgt_out[real], label_smoothing=self.label_smoothing)
        return loss, int(real.sum())

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, tokens = self.loss(batch)
        self._tokens_seen += tokens
        self.log("train/loss", loss, prog_bar=True, batch_size=tokens)
        return loss

    def on_train_epoch_start(self) -> None:
        self._tokens_seen, self._epoch_start = 0, time.perf_counter()

    def on_train_epoch_end(self) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        if elapsed > 0:
            self.log("train/tgt_tokens_per_s", self._tokens_seen / elapsed, sync_dist=True, reduce_fx="sum")

    # ------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_outputs, self._val_loss_sum, self._val_tokens = [], 0.0, 0

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, tokens = self.loss(batch)
        self._val_loss_sum += float(loss) * tokens
        self._val_tokens += tokens
        hyps = decode(self.model, batch.src, batch.src_lengths, beam_size=self.val_beam,
                      max_len_ratio=self.max_len_ratio, max_len_offset=self.max_len_offset)
        texts = self.trainer.datamodule.tgt_tokenizer.decode([h[0].tokens for h in hyps])
        self._val_outputs.extend(zip(batch.indices.tolist(), texts))

    def on_validation_epoch_end(self) -> None:
        outputs, loss_sum, tokens = self._val_outputs, self._val_loss_sum, self._val_tokens
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (outputs, loss_sum, tokens))
            outputs = [o for part in gathered for o in part[0]]
            loss_sum = sum(part[1] for part in gathered)
            tokens = sum(part[2] for part in gathered)
        by_index = dict(outputs)
        if len(by_index) != len(outputs):
            # The validation loader gives each rank distinct batches; a repeat would skew BLEU.
            raise RuntimeError(f"validation decoded {len(outputs) - len(by_index)} sentences more than once")
        refs = self.trainer.datamodule.valid_refs
        if len(by_index) != len(refs):
            # A partial validation (limit_val_batches, fast_dev_run) scores what it decoded.
            refs_used = [refs[i] for i in sorted(by_index)]
        else:
            refs_used = refs
        hyps = [by_index[i] for i in sorted(by_index)]
        scores = score_corpus(hyps, refs_used, ("bleu", "chrf"))
        val_loss = loss_sum / max(tokens, 1)
        # Every rank holds the same gathered values, so no further reduction is needed.
        self.log("val/loss", val_loss, prog_bar=True)
        self.log("val/ppl", math.exp(min(val_loss, 50.0)))
        self.log("val/bleu", scores["bleu"].score, prog_bar=True)
        self.log("val/chrf", scores["chrf"].score)
        self.log("val/sentences", float(len(hyps)))
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            srcs = self.trainer.datamodule.valid_srcs
            lines = [f"epoch {self.current_epoch} step {self.global_step}: val loss {val_loss:.3f} "
                     f"BLEU {scores['bleu'].score:.2f} chrF {scores['chrf'].score:.2f}"]
            for i in sorted(by_index)[: self.num_val_samples]:
                lines.append(f"  src: {srcs[i]}\n  ref: {refs[i]}\n  hyp: {by_index[i]}")
            log.info("\n".join(lines))

    # ------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        return build_optimization(self, monitor="val/bleu", mode="max")


def keep_optimization(system, optimizer: str, lr: float, betas, weight_decay: float, scheduler: str,
                      warmup_steps: int, plateau_factor: float, plateau_patience: int, min_lr: float,
                      max_nonfinite_steps: int) -> None:
    """Check the `optim` settings and keep them on `system` for `build_optimization`."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise UserError(f"optim.lr={lr} must be a positive number")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"optim.optimizer={optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if scheduler not in SCHEDULERS:
        raise UserError(f"optim.scheduler={scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if max_nonfinite_steps < 1:
        raise UserError(f"optim.max_nonfinite_steps={max_nonfinite_steps} must be at least 1")
    system.optimizer_name, system.lr, system.betas, system.weight_decay = optimizer, lr, tuple(betas), weight_decay
    system.scheduler_name, system.warmup_steps = scheduler, warmup_steps
    system.plateau_factor, system.plateau_patience, system.min_lr = plateau_factor, plateau_patience, min_lr
    system.max_nonfinite_steps = max_nonfinite_steps


def build_optimization(system, monitor: str, mode: str):
    """Optimizer and schedule of a system holding the `optim` settings as attributes.

    The plateau schedule is not handed to Lightning, which would step it at the end of the
    epoch, after the checkpoint of that validation is written, and skips that step in an
    epoch resumed from a mid-epoch checkpoint. `PlateauSchedule` steps it right after each
    validation instead, so every checkpoint holds the schedule that goes with its weights.
    """
    params = list(system.model.parameters())
    # PyTorch's fused Adam updates every parameter in one kernel instead of a dozen passes over
    # all of them: 17 -> 5.5 ms a step for the 9.4M-parameter Multi30k model on 2 CPU cores.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    optimizer = OPTIMIZERS[system.optimizer_name](
        params, lr=system.lr, betas=system.betas, weight_decay=system.weight_decay, fused=fused)
    system.plateau = None
    if system.scheduler_name == "none":
        return optimizer
    if system.scheduler_name == "inverse_sqrt":
        warmup = system.warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: inverse_sqrt_factor(step, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
    system.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=system.plateau_factor, patience=system.plateau_patience,
        min_lr=system.min_lr), monitor)
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


class LanguageModelSystem(SkipsNonFiniteSteps, L.LightningModule):
    """Trains a `LanguageModel` with truncated BPTT over contiguous streams.

    The LSTM state at the end of one training window is the (detached) start state of the next,
    since window i+1 of each stream continues window i; it is reset at the start of every epoch.
    Validation scores the whole held-out text from a fresh state and leaves the training
    state untouched. Every `sample_every_n_steps` a sample of text is written to the log.
    """

    def __init__(
        self,
        model: LanguageModel,
        optimizer: str = "adam",
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        scheduler: str = "plateau",
        warmup_steps: int = 0,
        plateau_factor: float = 0.5,
        plateau_patience: int = 1,
        min_lr: float = 1e-5,
        label_smoothing: float = 0.0,
        max_nonfinite_steps: int = 20,
        sample_every_n_steps: int = 500,
        sample_chars: int = 300,
        sample_prompt: str = "\n",
        sample_temperature: float = 0.8,
    ) -> None:
        super().__init__()
        keep_optimization(self, optimizer, lr, betas, weight_decay, scheduler, warmup_steps, plateau_factor,
                          plateau_patience, min_lr, max_nonfinite_steps)
        if label_smoothing != 0.0:
            # Smoothing would make the reported nats/char a different quantity than the likelihood.
            raise UserError("optim.label_smoothing must be 0 for a language model")
        self.model = model
        self.sample_every_n_steps, self.sample_chars = sample_every_n_steps, sample_chars
        self.sample_prompt, self.sample_temperature = sample_prompt, sample_temperature
        self.train_state: LSTMState | None = None
        self._val_sum, self._val_count = 0.0, 0
        self._chars_seen, self._epoch_start = 0, time.perf_counter()

    def on_train_epoch_start(self) -> None:
        self.train_state = None
        self._chars_seen, self._epoch_start = 0, time.perf_counter()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # A resume mid-epoch continues each stream from where it was, as training would have.
        checkpoint["stream_state"] = {"world_size": self.trainer.world_size,
                                      "state": list(self.train_state) if self.train_state else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("stream_state") or {}
        # Only rank 0's streams are in the file: with several ranks, the others' would be wrong.
        if saved.get("state") is not None and saved.get("world_size") == 1 == self.trainer.world_size:
            self.train_state = tuple(saved["state"])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        if self.train_state is not None and self.train_state[0].device != inputs.device:
            self.train_state = tuple(s.to(inputs.device) for s in self.train_state)
        logits, state = self.model(inputs, self.train_state)
        self.train_state = detach_state(state)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        self._chars_seen += targets.numel()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        every = self.sample_every_n_steps
        if every and self.global_step % every == 0 and self.trainer.is_global_zero:
            log.info("sample at step %d:\n%s", self.global_step, self.sample_text())

    def on_train_epoch_end(self) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        if elapsed > 0:
            self.log("train/chars_per_s", self._chars_seen / elapsed, sync_dist=True, reduce_fx="sum")

    def sample_text(self) -> str:
        codec = TextCodec(self.trainer.datamodule.tokenizer)
        was_training = self.model.training
        self.model.eval()
        try:
            # A generator of its own: logging a sample must not change the dropout masks that
            # follow, or a resumed run (which skips the samples before it) would train differently.
            generator = torch.Generator(device=self.device).manual_seed(self.global_step)
            steps = generate_ids(self.model, codec.encode(self.sample_prompt) or codec.encode("\n"),
                                 self.sample_chars, temperature=self.sample_temperature, generator=generator)
            text = codec.decode([int(t) for t in steps])
        finally:
            self.model.train(was_training)
        return self.sample_prompt + text

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = 0.0, 0

    def validation_step(self, batch: ScoringStreams, batch_idx: int) -> None:
        total, count = score_streams(self.model, batch)
        self._val_sum += total
        self._val_count += count

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor([self._val_sum, float(self._val_count)], dtype=torch.float64, device=self.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        report = loss_report(float(totals[0]), int(totals[1]))
        self.log("val/loss", report["nats_per_char"], prog_bar=True)
        self.log("val/bpc", report["bits_per_char"])
        self.log("val/ppl", report["perplexity"])
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            log.info("epoch %d step %d: val %.4f nats/char, %.4f bits/char over %s characters",
                     self.current_epoch, self.global_step, report["nats_per_char"], report["bits_per_char"],
                     f"{report['chars']:,}")

    def configure_optimizers(self):
        return build_optimization(self, monitor="val/loss", mode="min")
