"""Translate text with a model directory: the one decoding path behind every front end."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from seq2seq.batching import length_sorted_batches, pad_sequences
from seq2seq.bundle import Bundle, load_bundle
from seq2seq.errors import UserError
from seq2seq.precision import resolve_decoding_precision
from seq2seq.quantization import quantize_for_decoding
from seq2seq.runtime import pick_device
from seq2seq.sampling import check_sampling
from seq2seq.tasks.translation.ensemble import Ensemble
from seq2seq.tasks.translation.search import Hypothesis, decode, forced_scores

log = logging.getLogger(__name__)


def check_ensemble(bundles: Sequence[Bundle]) -> None:
    """Models decode together only with the same vocabularies: refused in one line otherwise."""
    first = bundles[0]
    for other in bundles[1:]:
        for role in ("tgt", "src"):
            mine, theirs = first.tokenizers[role].model_file, other.tokenizers[role].model_file
            if mine.read_bytes() != theirs.read_bytes():
                side = "target" if role == "tgt" else "source"
                raise UserError(f"cannot ensemble {first.path} and {other.path}: their {side} vocabularies "
                                f"differ ({mine.name} vs {theirs.name})")


@dataclass
class ScoredTranslation:
    text: str
    score: float
    tokens: list[int]
    attention: torch.Tensor | None = None  # (target pieces + EOS, source pieces)


class Translator:
    """Loaded translation model (or an ensemble of them) plus its tokenizers.

    >>> t = Translator.load("outputs/run/model")            # doctest: +SKIP
    >>> t.translate(["Ein Hund läuft im Park."], beam=5)     # doctest: +SKIP
    >>> Translator.load(["run1/model", "run2/model"])       # doctest: +SKIP  (an ensemble)
    """

    def __init__(self, bundle: Bundle | Sequence[Bundle], device: torch.device, precision: str = "auto") -> None:
        precision, reason = resolve_decoding_precision(precision, device)
        log.info(reason)
        # bf16 runs the matrix products in bfloat16 (about twice the fp32 rate on CPUs with
        # AVX-512 BF16 or AMX, and on recent GPUs); weights stay fp32. int8 (CPU only) decodes
        # with a dynamically quantized copy of the model (seq2seq.quantization).
        self.precision = precision
        self.bundles = [bundle] if isinstance(bundle, Bundle) else list(bundle)
        check_ensemble(self.bundles)
        self.bundle = bundle = self.bundles[0]
        models = [b.model for b in self.bundles]
        if precision == "int8":  # decode with int8 copies; the bundles' models stay fp32
            models = [quantize_for_decoding(model) for model in models]
        # One model decodes as itself; several as an ensemble (mean log-probabilities each step).
        self.model = models[0] if len(models) == 1 else Ensemble(models)
        self.device = device
        self.src_tokenizer = bundle.tokenizers["src"]
        self.tgt_tokenizer = bundle.tokenizers["tgt"]

    @classmethod
    def load(cls, path: str | os.PathLike | Sequence[str | os.PathLike], device: str | torch.device | None = None,
             precision: str = "auto") -> Translator:
        """One model directory, or a list of them: an ensemble."""
        device = pick_device(device)
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths:
            raise UserError("no model directory given")
        return cls([load_bundle(p, device, expected_type="seq2seq") for p in paths], device, precision)

    def score(self, sources: Sequence[str], targets: Sequence[str], batch_tokens: int = 4000) -> list[float]:
        """The model's log-probability (natural log, summed over the target pieces and EOS) of each
        target given its source: forced decoding, in input order."""
        if len(sources) != len(targets):
            raise UserError(f"{len(sources)} sources but {len(targets)} targets")
        src_ids, tgt_ids = self.src_tokenizer.encode(sources), self.tgt_tokenizer.encode(targets)
        scores: list[float] = [0.0] * len(sources)
        for positions in length_sorted_batches([len(s) for s in src_ids], batch_tokens):
            src = pad_sequences([src_ids[i] for i in positions]).to(self.device)
            lengths = torch.tensor([max(len(src_ids[i]), 1) for i in positions], device=self.device)
            tgt = pad_sequences([tgt_ids[i] for i in positions]).to(self.device)
            tgt_lengths = torch.tensor([len(tgt_ids[i]) for i in positions], device=self.device)
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                 enabled=self.precision == "bf16"):
                totals = forced_scores(self.model, src, lengths, tgt, tgt_lengths)
            for position, total in zip(positions, totals.tolist()):
                scores[position] = total
        return scores

    def translate_batches(
        self,
        lines: Sequence[str],
        beam: int = 5,
        nbest: int = 1,
        length_penalty: float = 1.0,
        max_len_ratio: float = 2.0,
        max_len_offset: int = 10,
        batch_tokens: int = 4000,
        return_attention: bool = False,
        no_repeat_ngram_size: int = 0,
        sampling: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[tuple[list[int], list[list[ScoredTranslation]]]]:
        """Yields (positions, n-best lists) batch by batch, longest sources first.

        With `sampling`, `nbest` is the number of samples per sentence and `beam` is unused.
        """
        if beam < 1:
            raise UserError(f"beam={beam} must be at least 1")
        if nbest < 1 or (not sampling and nbest > beam):
            raise UserError(f"nbest={nbest} must be between 1 and beam={beam}")
        if no_repeat_ngram_size < 0:
            raise UserError(f"no_repeat_ngram_size={no_repeat_ngram_size} must be 0 (off) or positive")
        if sampling:
            check_sampling(temperature, top_k, top_p)
        generator = None
        if sampling and seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        ids = self.src_tokenizer.encode(lines)
        for positions in length_sorted_batches([len(s) for s in ids], batch_tokens):
            src = pad_sequences([ids[i] for i in positions]).to(self.device)
            lengths = torch.tensor([max(len(ids[i]), 1) for i in positions], device=self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                results: list[list[Hypothesis]] = decode(
                    self.model, src, lengths, beam_size=beam, nbest=nbest,
                    length_penalty_alpha=length_penalty, max_len_ratio=max_len_ratio,
                    max_len_offset=max_len_offset, return_attention=return_attention,
                    no_repeat_ngram_size=no_repeat_ngram_size, sampling=sampling, temperature=temperature,
                    top_k=top_k, top_p=top_p, generator=generator)
            texts = self.tgt_tokenizer.decode([h.tokens for hyps in results for h in hyps])
            out, cursor = [], 0
            for position, hyps in zip(positions, results):
                width = max(len(ids[position]), 1)  # drop the batch's padding columns
                out.append([ScoredTranslation(texts[cursor + j], h.score, h.tokens,
                                              None if h.attention is None else h.attention[:, :width])
                            for j, h in enumerate(hyps)])
                cursor += len(hyps)
            yield positions, out

    def translate(self, lines: Sequence[str], beam: int = 5, nbest: int = 1,
                  return_hypotheses: bool = False, **options) -> list:
        """Translations in input order: strings, or n-best lists of `ScoredTranslation`."""
        results: list = [None] * len(lines)
        for positions, nbest_lists in self.translate_batches(lines, beam=beam, nbest=nbest, **options):
            for position, hyps in zip(positions, nbest_lists):
                results[position] = hyps if return_hypotheses or nbest > 1 else hyps[0].text
        return results
