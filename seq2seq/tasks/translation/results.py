"""Translations as the Translators return them: no torch, so the exported-model runtime
(seq2seq.portable) and the PyTorch Translator share them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class ScoredTranslation:
    text: str
    score: float
    tokens: list[int]
    attention: Any = None  # (target pieces + EOS, source pieces): a torch tensor or numpy array


def scored_translations(positions: Sequence[int], results: Sequence[Sequence[Any]], source_ids: Sequence[Sequence[int]],
                        texts: Sequence[str]) -> list[list[ScoredTranslation]]:
    """A batch's n-best lists of hypotheses with their decoded `texts` (all hypotheses in order),
    the attention cut to each sentence's own source pieces (not the batch's padding)."""
    out, cursor = [], 0
    for position, hyps in zip(positions, results):
        width = max(len(source_ids[position]), 1)
        out.append([ScoredTranslation(texts[cursor + j], h.score, h.tokens,
                                      None if h.attention is None else h.attention[:, :width])
                    for j, h in enumerate(hyps)])
        cursor += len(hyps)
    return out


class InInputOrder:
    """`translate` over `options()` and `translate_batches()`, which yields batches longest first."""

    def translate_batches(self, lines, options=None, return_attention: bool = False,
                          **changes) -> Iterator[tuple[list[int], list[list[ScoredTranslation]]]]:
        raise NotImplementedError

    def translate(self, lines: Sequence[str], options=None, return_hypotheses: bool = False,
                  return_attention: bool = False, **changes) -> list:
        """Translations in input order: strings, or n-best lists of `ScoredTranslation` (with
        `return_hypotheses`, or nbest > 1)."""
        options = self.options(options, **changes)
        results: list = [None] * len(lines)
        for positions, nbest_lists in self.translate_batches(lines, options, return_attention):
            for position, hyps in zip(positions, nbest_lists):
                results[position] = hyps if return_hypotheses or options.nbest > 1 else hyps[0].text
        return results
