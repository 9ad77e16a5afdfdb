"""Corpus-level scores through sacreBLEU, each with its signature so figures are comparable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sacrebleu.metrics import BLEU, CHRF, TER


@dataclass
class Score:
    name: str
    score: float
    signature: str
    detail: str  # sacreBLEU's own one-line summary

    def as_dict(self) -> dict:
        return asdict(self)


def score_corpus(hyps: Sequence[str], refs: Sequence[str], metrics: Sequence[str] = ("bleu", "chrf", "ter")
                 ) -> dict[str, Score]:
    """Cased BLEU (13a), chrF and TER of detokenized hypotheses against one reference each."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    makers = {"bleu": BLEU, "chrf": CHRF, "ter": TER}
    results = {}
    for name in metrics:
        metric = makers[name]()
        result = metric.corpus_score(list(hyps), [list(refs)])
        results[name] = Score(name, float(result.score), str(metric.get_signature()), str(result))
    return results


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    return score_corpus(hyps, refs, ("bleu",))["bleu"].score


# --------------------------------------------------------------------------- metrics
def confusion_matrix(gold: list[int], predicted: list[int], num_classes: int) -> list[list[int]]:
    """matrix[g][p]: how many examples of class g were predicted as p (rows: truth)."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for g, p in zip(gold, predicted):
        matrix[g][p] += 1
    return matrix


def classification_scores(gold: list[int], predicted: list[int], labels: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1, macro-F1 (the unweighted mean of the per-class F1)
    and the confusion matrix. A class never predicted and never present scores F1 = 0."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    matrix = confusion_matrix(gold, predicted, len(labels))
    per_class = {}
    for c, name in enumerate(labels):
        true_positive = matrix[c][c]
        predicted_c = sum(row[c] for row in matrix)
        actual_c = sum(matrix[c])
        precision = true_positive / predicted_c if predicted_c else 0.0
        recall = true_positive / actual_c if actual_c else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual_c}
    correct = sum(matrix[c][c] for c in range(len(labels)))
    return {
        "accuracy": correct / len(gold) if gold else 0.0,
        "macro_f1": sum(v["f1"] for v in per_class.values()) / len(labels),
        "per_class": per_class,
        "confusion_matrix": matrix,
        "labels": list(labels),
        "examples": len(gold),
    }


def format_confusion(scores: dict) -> str:
    """The confusion matrix as a text table: rows are the true labels, columns the predictions."""
    labels, matrix = scores["labels"], scores["confusion_matrix"]
    corner = "true \\ predicted"
    width = max(len(corner), *(len(name) for name in labels))
    cell = max(8, *(len(name) for name in labels), *(len(str(v)) for row in matrix for v in row))
    lines = [f"{corner:<{width}}" + "".join(f"  {name:>{cell}}" for name in labels)]
    for name, row in zip(labels, matrix):
        lines.append(f"{name:<{width}}" + "".join(f"  {v:>{cell}}" for v in row))
    return "\n".join(lines)


def format_scores(scores: dict[str, Score]) -> str:
    rows = [("metric", "score", "signature")] + [
        (s.name.upper() if s.name != "chrf" else "chrF", f"{s.score:.2f}", s.signature) for s in scores.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]}" for r in rows)
