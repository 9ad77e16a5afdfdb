"""Predictions from class probabilities: no torch, so the exported-model runtime (seq2seq.portable)
shares them with the PyTorch Classifier."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Prediction:
    label: str
    probability: float  # of `label`, the most probable class
    probabilities: dict[str, float]  # every label's probability, in class order


def predictions(probabilities: Iterable[Any], labels: Sequence[str]) -> list[Prediction | None]:
    """A `Prediction` per (C,) row of probabilities (a torch tensor or numpy array); None stays None
    (an empty text: nothing to classify)."""
    found: list[Prediction | None] = []
    for probs in probabilities:
        if probs is None:
            found.append(None)
            continue
        best = int(probs.argmax())
        found.append(Prediction(labels[best], float(probs[best]), {label: float(p) for label, p in zip(labels, probs)}))
    return found
