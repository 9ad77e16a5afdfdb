"""Classify sentences with a classifier model directory: the one path behind every front end.

>>> c = Classifier.load("outputs/run/model")                        # doctest: +SKIP
>>> c.classify(["a gorgeous , witty , seductive movie ."])          # doctest: +SKIP
[Prediction(label='positive', probability=0.97, ...)]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch

from seq2seq.batching import length_sorted_batches, pad_sequences
from seq2seq.bundle import Bundle, load_bundle
from seq2seq.errors import UserError
from seq2seq.metrics import classification_scores
from seq2seq.precision import resolve_decoding_precision
from seq2seq.runtime import pick_device
from seq2seq.tasks import task_named
from seq2seq.tasks.classification.predictions import Prediction, predictions
from seq2seq.text import repair_cp1252

MODEL_TYPE = task_named("classification").model_type
log = logging.getLogger(__name__)


class Classifier:
    """A loaded sentence classifier, its tokenizer and label names."""

    def __init__(self, bundle: Bundle, device: torch.device, precision: str = "auto") -> None:
        precision, reason = resolve_decoding_precision(precision, device, int8_for="classifiers")
        log.info(reason)
        self.bundle, self.model, self.device, self.precision = bundle, bundle.model, device, precision
        self.tokenizer = bundle.tokenizers.get("text")
        labels = bundle.config.get("labels")
        num_classes = self.model.config["num_classes"]
        if self.tokenizer is None or not isinstance(labels, list) or len(labels) != num_classes:
            raise UserError(f"{bundle.path}: a classifier needs a 'text' tokenizer and {num_classes} label names")
        self.labels = [str(label) for label in labels]
        self.lowercase = bool(bundle.config.get("lowercase", False))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None,
             precision: str = "auto") -> Classifier:
        device = pick_device(device)
        return cls(load_bundle(path, device, expected_type=MODEL_TYPE), device, precision)

    def normalize(self, text: str) -> str:
        """The text as the training data was prepared: cp1252 repaired, lower-cased if it was."""
        text = repair_cp1252(text)
        return text.lower() if self.lowercase else text

    @torch.no_grad()
    def probabilities(self, texts: Sequence[str], batch_tokens: int = 4000) -> list[torch.Tensor | None]:
        """(C,) class probabilities per text, in input order; None for a text with no pieces (empty)."""
        ids = self.tokenizer.encode([self.normalize(t) for t in texts])
        results: list[torch.Tensor | None] = [None] * len(texts)
        real = [i for i, pieces in enumerate(ids) if pieces]
        for batch in length_sorted_batches([len(ids[i]) for i in real], batch_tokens):
            positions = [real[j] for j in batch]
            tokens = pad_sequences([ids[i] for i in positions]).to(self.device)
            lengths = torch.tensor([len(ids[i]) for i in positions], device=self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                logits = self.model(tokens, lengths)
            for position, row in zip(positions, torch.softmax(logits.float(), dim=-1).cpu()):
                results[position] = row
        return results

    def classify(self, texts: Sequence[str], batch_tokens: int = 4000) -> list[Prediction | None]:
        """A `Prediction` per text, in input order; None for an empty text (nothing to classify)."""
        return predictions(self.probabilities(texts, batch_tokens), self.labels)

    def evaluate(self, texts: Sequence[str], gold: Sequence[int], batch_tokens: int = 4000) -> dict:
        """Accuracy, macro-F1 and the confusion matrix against `gold` class indices.

        An empty text counts as a wrong answer: the model gave none.
        """
        if len(texts) != len(gold):
            raise UserError(f"{len(texts)} texts but {len(gold)} labels")
        predicted = []
        for probs, truth in zip(self.probabilities(texts, batch_tokens), gold):
            predicted.append(int(probs.argmax()) if probs is not None else (truth + 1) % len(self.labels))
        return classification_scores(list(gold), predicted, self.labels)


def format_row(prediction: Prediction | None) -> str:
    """`label<TAB>probability`, or an empty row for an empty input line."""
    return "" if prediction is None else f"{prediction.label}\t{prediction.probability:.4f}"
