"""Corpus-level scores through sacreBLEU, each with its signature so figures are comparable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest


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


def optional_float(value) -> float | None:
    return None if value is None else float(value)


def compare_systems(systems: Sequence[tuple[str, Sequence[str]]], refs: Sequence[str],
                    metrics: Sequence[str] = ("bleu", "chrf"), bootstrap_samples: int = 1000,
                    ar_trials: int = 10000) -> dict:
    """Paired significance tests of every system against the first (the baseline), by sacreBLEU's
    own implementation: paired bootstrap resampling (Koehn 2004; each system's mean and 95%
    confidence interval over the resamples, and the p-value) and approximate randomization
    (Riezler and Maxwell 2005; the p-value). Seeded by $SACREBLEU_SEED (12345 unless set).

    -> {"systems": [names], "<metric>": [{"score", "mean", "ci", "p_bootstrap", "p_ar"}, ...],
        "signatures": {"bootstrap": {...}, "ar": {...}}}
    """
    if len(systems) < 2:
        raise ValueError("a comparison needs a baseline and at least one other system")
    for name, hyps in systems:
        if len(hyps) != len(refs):
            raise ValueError(f"{name}: {len(hyps)} translations for {len(refs)} references")
    makers = {"bleu": BLEU, "chrf": CHRF, "ter": TER}
    named = [(name, list(hyps)) for name, hyps in systems]
    references = [list(refs)]
    report: dict = {"systems": [name for name, _ in named], "signatures": {}}
    runs = {"bootstrap": ("bs", bootstrap_samples), "ar": ("ar", ar_trials)}
    for label, (test_type, samples) in runs.items():
        # The AR run's own confidence intervals are not needed: the bootstrap run gives them.
        extra = {"n_ar_confidence": -1} if test_type == "ar" else {}
        test = PairedTest(named, {name: makers[name]() for name in metrics}, references,
                          test_type=test_type, n_samples=samples, **extra)
        signatures, results = test()
        report["signatures"][label] = {name: str(sig) for name, sig in signatures.items()}
        for metric_name, column in results.items():
            if metric_name == "System":
                continue
            rows = report.setdefault(metric_name, [{} for _ in named])
            for row, result in zip(rows, column):
                row["score"] = float(result.score)
                if test_type == "bs":  # numpy numbers: plain floats for JSON
                    row["mean"], row["ci"] = optional_float(result.mean), optional_float(result.ci)
                row[f"p_{label}"] = optional_float(result.p_value)
    return report


def format_comparison(report: dict) -> str:
    """One row per system and metric: score, bootstrap mean +- 95% CI, the two p-values."""
    rows = [("system", "metric", "score", "bootstrap mean (95% CI)", "p (bootstrap)", "p (AR)")]
    same = False
    for metric in (k for k in report if k not in ("systems", "signatures")):
        baseline = report[metric][0]["score"]
        for index, (name, row) in enumerate(zip(report["systems"], report[metric])):
            mean = "" if row.get("mean") is None else f"{row['mean']:.2f} (+-{row['ci']:.2f})"
            mark = " *" if index and row["score"] == baseline else ""
            same = same or bool(mark)
            p_bs = "baseline" if index == 0 else f"{row['p_bootstrap']:.4f}{mark}"
            p_ar = "baseline" if index == 0 else f"{row['p_ar']:.4f}{mark}"
            rows.append((name, metric, f"{row['score']:.2f}", mean, p_bs, p_ar))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(r, widths)).rstrip() for r in rows]
    if same:
        lines.append("* the baseline's score: sacreBLEU counts only larger differences than the observed one, "
                     "so a zero difference gets the smallest p-value; read it as no difference")
    return "\n".join(lines)


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
