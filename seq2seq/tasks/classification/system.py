"""ClassificationSystem: the LightningModule that trains an `LSTMClassifier`.

Cross-entropy on the labels; validation scores accuracy and macro-F1 over the whole validation
split (each sentence once, whatever the number of ranks), and accuracy picks the checkpoint.
The optimizer, schedule and non-finite-step guard are the ones the other systems use.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from seq2seq.config import build
from seq2seq.errors import UserError
from seq2seq.metrics import format_confusion
from seq2seq.runtime import evaluation_device
from seq2seq.tasks.classification.data import LabelledBatch
from seq2seq.tasks.classification.model import LSTMClassifier
from seq2seq.training import Optimization, TaskSystem

log = logging.getLogger(__name__)


class ClassificationSystem(TaskSystem):
    task_name = "classification"

    def __init__(
        self,
        model: LSTMClassifier,
        optimization: Optimization | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(model, optimization)
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"task.label_smoothing={label_smoothing} must be in [0, 1)")
        self.label_smoothing = label_smoothing
        # torchmetrics sums their counts over DDP ranks when computed; each rank scores a distinct
        # slice of the validation batches, so every sentence counts once.
        classes = model.config["num_classes"]
        self.val_accuracy = MulticlassAccuracy(classes, average="micro")
        self.val_macro_f1 = MulticlassF1Score(classes, average="macro")
        self.val_loss = MeanMetric()

    def loss(self, batch: LabelledBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch.tokens, batch.lengths)  # (B, C)
        return F.cross_entropy(logits.float(), batch.labels, label_smoothing=self.label_smoothing), logits

    def tokens_in(self, batch: LabelledBatch) -> int:
        """Sentence pieces of a training batch, for the progress log's throughput."""
        return int(batch.lengths.sum())

    def training_step(self, batch: LabelledBatch, batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.labels.numel())
        return loss

    def validation_step(self, batch: LabelledBatch, batch_idx: int) -> None:
        loss, logits = self.loss(batch)
        predicted = logits.argmax(-1)
        self.val_accuracy.update(predicted, batch.labels)
        self.val_macro_f1.update(predicted, batch.labels)
        self.val_loss.update(loss.detach(), weight=batch.labels.numel())

    def on_validation_epoch_end(self) -> None:
        count = int(self.val_loss.weight)  # this rank's sentences (before compute() syncs the ranks)
        accuracy, macro_f1, val_loss = (float(m.compute()) for m in
                                        (self.val_accuracy, self.val_macro_f1, self.val_loss))
        for metric in (self.val_accuracy, self.val_macro_f1, self.val_loss):
            metric.reset()
        # compute() gave every rank the same totals, so no further reduction is needed.
        self.log("val/loss", val_loss)
        self.log("val/accuracy", accuracy, prog_bar=True)
        self.log("val/macro_f1", macro_f1)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            log.info("epoch %d step %d: val loss %.4f accuracy %.4f macro-F1 %.4f (%d sentences on this rank)",
                     self.current_epoch, self.global_step, val_loss, accuracy, macro_f1, count)


# ----------------------------------------------------------------- what the training run calls
def build_model(cfg: DictConfig, datamodule) -> LSTMClassifier:
    # The tokenizer and the label files fix the model's input and output sizes.
    datamodule.prepare_data()
    datamodule.setup("fit")
    return build(cfg.model, vocab_size=datamodule.tokenizer.vocab_size, num_classes=len(datamodule.labels))


def export_contents(datamodule, cfg: DictConfig) -> tuple[dict, dict]:
    """Tokenizer files and model.json extras of the exported model directory."""
    return datamodule.tokenizer_files(), datamodule.bundle_extra()


def evaluate_test(model_dir: Path, datamodule, cfg: DictConfig, run_dir: Path) -> dict | None:
    """Score the exported model on the data's test split: print the report, write test_scores.json
    and test.predictions.tsv (one `label<TAB>probability` row per test sentence)."""
    from seq2seq.tasks.classification.api import Classifier, format_row

    test = datamodule.splits().get("test")
    if test is None:
        return None
    classifier = Classifier.load(model_dir, device=evaluation_device(cfg.trainer))
    scores = classifier.evaluate(test.texts, test.labels)
    rows = [format_row(p) for p in classifier.classify(test.texts)]
    (run_dir / "test.predictions.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (run_dir / "test_scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(f"\nTest split ({scores['examples']:,} sentences): accuracy {scores['accuracy']:.4f}, "
          f"macro-F1 {scores['macro_f1']:.4f}")
    print(format_confusion(scores))
    return scores
