"""Classify sentences with an exported classifier: the runtime's `Classifier`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from seq2seq.errors import UserError
from seq2seq.portable.batches import length_sorted_batches, padded
from seq2seq.portable.exported import ExportedDirectory
from seq2seq.tasks.classification.predictions import Prediction, predictions
from seq2seq.text import repair_cp1252


class Classifier:
    """An exported sentence classifier, its tokenizer and label names."""

    def __init__(self, directory: ExportedDirectory) -> None:
        if directory.task != "classification":
            raise UserError(f"{directory.path} holds an exported {directory.task} model, not a classifier")
        self.directory, self.path, self.precision = directory, directory.path, directory.precision
        self.device = "cpu (onnxruntime)"
        self.session = directory.session("classifier")
        self.tokenizer = directory.tokenizer("text")
        labels = directory.config.get("labels")
        classes = int(directory.network["num_classes"])
        if not isinstance(labels, list) or len(labels) != classes:
            raise UserError(f"{directory.path}: export.json needs {classes} label names")
        self.labels = [str(label) for label in labels]
        self.lowercase = bool(directory.config.get("lowercase", False))

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int | None = None) -> Classifier:
        return cls(ExportedDirectory.open(path, threads=threads))

    def normalize(self, text: str) -> str:
        text = repair_cp1252(text)
        return text.lower() if self.lowercase else text

    def probabilities(self, texts: Sequence[str], batch_tokens: int = 4000) -> list[np.ndarray | None]:
        """(C,) class probabilities per text, in input order; None for a text with no pieces."""
        ids = self.tokenizer.encode([self.normalize(t) for t in texts])
        results: list[np.ndarray | None] = [None] * len(texts)
        real = [i for i, pieces in enumerate(ids) if pieces]
        for batch in length_sorted_batches([len(ids[i]) for i in real], batch_tokens):
            positions = [real[j] for j in batch]
            tokens = padded([ids[i] for i in positions])
            lengths = np.array([len(ids[i]) for i in positions], dtype=np.int64)
            logits = self.session.run(["logits"], {"tokens": tokens, "lengths": lengths})[0]
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            for position, row in zip(positions, probs):
                results[position] = row
        return results

    def classify(self, texts: Sequence[str], batch_tokens: int = 4000) -> list[Prediction | None]:
        """A `Prediction` per text, in input order; None for an empty text (nothing to classify)."""
        return predictions(self.probabilities(texts, batch_tokens), self.labels)
