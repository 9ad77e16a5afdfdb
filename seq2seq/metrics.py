"""Corpus-level scores through sacreBLEU, each with its signature so figures are comparable."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

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
