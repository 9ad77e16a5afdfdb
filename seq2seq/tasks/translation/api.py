"""Translate text with a model directory: the one decoding path behind every front end."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import torch

from seq2seq.batching import length_sorted_batches, pad_sequences
from seq2seq.bundle import Bundle, load_bundle
from seq2seq.errors import UserError
from seq2seq.precision import resolve_decoding_precision
from seq2seq.quantization import quantize_for_decoding
from seq2seq.runtime import pick_device
from seq2seq.tasks.translation.ensemble import Ensemble
from seq2seq.tasks.translation.options import DecodingOptions, model_defaults
from seq2seq.tasks.translation.results import (  # noqa: F401  (ScoredTranslation: the API's type)
    InInputOrder,
    ScoredTranslation,
    scored_translations,
)
from seq2seq.tasks.translation.search import Hypothesis, decode_options, forced_scores

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


class Translator(InInputOrder):
    """Loaded translation model (or an ensemble of them) plus its tokenizers.

    >>> t = Translator.load("outputs/run/model")            # doctest: +SKIP
    >>> t.translate(["Ein Hund läuft im Park."], beam=5)     # doctest: +SKIP  (the model's defaults, beam 5)
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
        # The first model's model.json `decoding` block: the defaults every call starts from.
        self.default_options = model_defaults(bundle.config, f"{bundle.path}/model.json")
        self._shortlists: list | None = None  # read on first use (shortlist=auto|true)

    def options(self, options: DecodingOptions | None = None, **changes) -> DecodingOptions:
        """The decoding options of a call: `options` (else the model's defaults) with `changes`
        (None = keep), checked, with the shortlist setting checked against the model directories."""
        chosen = (options or self.default_options).updated(changes)
        self.shortlists_for(chosen)
        return chosen

    def shortlists_for(self, options: DecodingOptions) -> list | None:
        """The members' shortlists when `options.shortlist` says to use them, else None.

        auto: when every model directory has one (an ensemble's members all restrict, or none);
        true: every directory must have one."""
        if options.shortlist == "false":
            return None
        from seq2seq.tasks.translation.shortlist import SHORTLIST_FILE, Shortlist

        paths = [b.path / SHORTLIST_FILE for b in self.bundles if b.path is not None]
        present = [p.is_file() for p in paths]
        if options.shortlist == "true" and not (present and all(present) and len(paths) == len(self.bundles)):
            missing = next((p.parent for p, here in zip(paths, present) if not here), "the model")
            raise UserError(f"shortlist=true but {missing} has no {SHORTLIST_FILE}; build one with "
                            f"seq2seq-shortlist model={missing}")
        if not present or not all(present) or len(paths) != len(self.bundles):
            return None
        if self._shortlists is None:
            self._shortlists = [Shortlist.load(p, b.tokenizers["src"], b.tokenizers["tgt"])
                                for p, b in zip(paths, self.bundles)]
        return self._shortlists

    def batch_vocabulary(self, shortlists: list | None, src: torch.Tensor) -> torch.Tensor | None:
        """The target pieces a batch may produce: the union of the members' shortlists for it."""
        if shortlists is None:
            return None
        ids = shortlists[0].ids_for(src)
        for other in shortlists[1:]:
            ids = torch.unique(torch.cat([ids, other.ids_for(src)]))  # sorted: specials stay first
        return ids.to(self.device)

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

    def translate_batches(self, lines: Sequence[str], options: DecodingOptions | None = None,
                          return_attention: bool = False, **changes
                          ) -> Iterator[tuple[list[int], list[list[ScoredTranslation]]]]:
        """Yields (positions, n-best lists) batch by batch, longest sources first.

        `options` (default: the model's) with keyword `changes`, e.g. `beam=1`, `shortlist="false"`
        (seq2seq.tasks.translation.options). With `sampling`, `nbest` is the number of samples per
        sentence and `beam` is unused. With a shortlist, scores are over the shortlist's pieces.
        """
        options = self.options(options, **changes)
        shortlists = self.shortlists_for(options)
        generator = None
        if options.sampling and options.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(options.seed)
        ids = self.src_tokenizer.encode(lines)
        for positions in length_sorted_batches([len(s) for s in ids], options.batch_tokens):
            src = pad_sequences([ids[i] for i in positions]).to(self.device)
            lengths = torch.tensor([max(len(ids[i]), 1) for i in positions], device=self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                results: list[list[Hypothesis]] = decode_options(
                    self.model, src, lengths, options, generator=generator, return_attention=return_attention,
                    target_ids=self.batch_vocabulary(shortlists, src))
            texts = self.tgt_tokenizer.decode([h.tokens for hyps in results for h in hyps])
            yield positions, scored_translations(positions, results, ids, texts)
