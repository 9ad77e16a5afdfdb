"""ClassificationSystem: the LightningModule that trains an `LSTMClassifier`.

Cross-entropy on the labels; validation scores accuracy and macro-F1 over the whole validation
split (each sentence once, whatever the number of ranks), and accuracy picks the checkpoint.
The optimizer, schedule and non-finite-step guard are the ones the other systems use.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
import torch.nn.functional as F

from seq2seq.classification import LSTMClassifier, classification_scores
from seq2seq.errors import UserError
from seq2seq.labelled_text import LabelledBatch
from seq2seq.systems import SkipsNonFiniteSteps, build_optimization, keep_optimization

log = logging.getLogger(__name__)

MONITOR = "val/accuracy"


class ClassificationSystem(SkipsNonFiniteSteps, L.LightningModule):
    def __init__(
        self,
        model: LSTMClassifier,
        optimizer: str = "adam",
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        scheduler: str = "plateau",
        warmup_steps: int = 0,
        plateau_factor: float = 0.5,
        plateau_patience: int = 1,
        min_lr: float = 1e-5,
        label_smoothing: float = 0.0,
        max_nonfinite_steps: int = 20,
    ) -> None:
        super().__init__()
        keep_optimization(self, optimizer, lr, betas, weight_decay, scheduler, warmup_steps, plateau_factor,
                          plateau_patience, min_lr, max_nonfinite_steps)
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        self.model = model
        self.label_smoothing = label_smoothing
        self._val_rows: list[tuple[int, int, int]] = []  # (index, gold, predicted)
        self._val_loss_sum = 0.0

    def loss(self, batch: LabelledBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch.tokens, batch.lengths)  # (B, C)
        return F.cross_entropy(logits.float(), batch.labels, label_smoothing=self.label_smoothing), logits

    def training_step(self, batch: LabelledBatch, batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.labels.numel())
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_rows, self._val_loss_sum = [], 0.0

    def validation_step(self, batch: LabelledBatch, batch_idx: int) -> None:
        loss, logits = self.loss(batch)
        self._val_loss_sum += float(loss) * batch.labels.numel()
        predicted = logits.argmax(-1)
        self._val_rows.extend(zip(batch.indices.tolist(), batch.labels.tolist(), predicted.tolist()))

    def on_validation_epoch_end(self) -> None:
        rows, loss_sum = self._val_rows, self._val_loss_sum
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (rows, loss_sum))
            rows = [r for part in gathered for r in part[0]]
            loss_sum = sum(part[1] for part in gathered)
        by_index = {index: (gold, predicted) for index, gold, predicted in rows}
        gold = [by_index[i][0] for i in sorted(by_index)]
        predicted = [by_index[i][1] for i in sorted(by_index)]
        labels = [str(c) for c in range(self.model.config["num_classes"])]
        scores = classification_scores(gold, predicted, labels)
        val_loss = loss_sum / max(len(rows), 1)
        # Every rank holds the same gathered values, so no further reduction is needed.
        self.log("val/loss", val_loss)
        self.log(MONITOR, scores["accuracy"], prog_bar=True)
        self.log("val/macro_f1", scores["macro_f1"])
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            log.info("epoch %d step %d: val loss %.4f accuracy %.4f macro-F1 %.4f (%d sentences)",
                     self.current_epoch, self.global_step, val_loss, scores["accuracy"], scores["macro_f1"],
                     len(gold))

    def configure_optimizers(self):
        return build_optimization(self, monitor=MONITOR, mode="max")
