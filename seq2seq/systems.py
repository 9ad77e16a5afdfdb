"""LightningModules: the loss, optimizers, schedules and validation metrics around a model."""

from __future__ import annotations

import logging
import math
import time

import lightning as L
import torch
import torch.nn.functional as F

from seq2seq.data import Batch
from seq2seq.errors import UserError
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


class TranslationSystem(L.LightningModule):
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
        val_beam: int = 1,
        max_len_ratio: float = 2.0,
        max_len_offset: int = 10,
        num_val_samples: int = 3,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise UserError(f"optim.optimizer={optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if scheduler not in SCHEDULERS:
            raise UserError(f"optim.scheduler={scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        self.model = model
        self.optimizer_name, self.lr, self.betas, self.weight_decay = optimizer, lr, tuple(betas), weight_decay
        self.scheduler_name, self.warmup_steps = scheduler, warmup_steps
        self.plateau_factor, self.plateau_patience, self.min_lr = plateau_factor, plateau_patience, min_lr
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
        by_index = dict(outputs)  # each sentence once, whatever the number of ranks
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
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            srcs = self.trainer.datamodule.valid_srcs
            lines = [f"epoch {self.current_epoch} step {self.global_step}: val loss {val_loss:.3f} "
                     f"BLEU {scores['bleu'].score:.2f} chrF {scores['chrf'].score:.2f}"]
            for i in sorted(by_index)[: self.num_val_samples]:
                lines.append(f"  src: {srcs[i]}\n  ref: {refs[i]}\n  hyp: {by_index[i]}")
            log.info("\n".join(lines))

    # ------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        optimizer = OPTIMIZERS[self.optimizer_name](
            self.model.parameters(), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        if self.scheduler_name == "none":
            return optimizer
        if self.scheduler_name == "inverse_sqrt":
            warmup = self.warmup_steps
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: inverse_sqrt_factor(step, warmup))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
        schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=self.plateau_factor, patience=self.plateau_patience, min_lr=self.min_lr)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "monitor": "val/bleu", "interval": "epoch",
                                 "strict": False}}
