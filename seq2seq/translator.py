"""Translate text with a model directory: the one decoding path behind every front end."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from seq2seq.bundle import Bundle, load_bundle
from seq2seq.data import pad_sequences
from seq2seq.errors import UserError
from seq2seq.quantization import quantize_for_decoding
from seq2seq.search import Hypothesis, check_sampling, decode


@dataclass
class ScoredTranslation:
    text: str
    score: float
    tokens: list[int]
    attention: torch.Tensor | None = None  # (target pieces + EOS, source pieces)


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def length_sorted_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Positions grouped longest first into batches of at most `batch_tokens` padded tokens."""
    if batch_tokens <= 0:
        raise UserError(f"batch_tokens={batch_tokens} must be positive")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current, width = [], [], 0
    for i in order:
        w = max(width, lengths[i], 1)
        if current and w * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, w = [], max(lengths[i], 1)
        current.append(i)
        width = w
    if current:
        batches.append(current)
    return batches


class Translator:
    """Loaded translation model plus its tokenizers.

    >>> t = Translator.load("outputs/run/model")            # doctest: +SKIP
    >>> t.translate(["Ein Hund läuft im Park."], beam=5)     # doctest: +SKIP
    """

    def __init__(self, bundle: Bundle, device: torch.device, precision: str = "fp32") -> None:
        if precision not in ("fp32", "bf16", "int8"):
            raise UserError(f"precision={precision!r} is not one of fp32, bf16, int8")
        # bf16 runs the matrix products in bfloat16 (about twice the fp32 rate on CPUs with
        # AVX-512 BF16 or AMX, and on recent GPUs); weights stay fp32. int8 (CPU only) decodes
        # with a dynamically quantized copy of the model (seq2seq.quantization).
        self.precision = precision
        self.bundle = bundle
        self.model = bundle.model
        if precision == "int8":  # issue 15: decode with an int8 copy; bundle.model stays fp32
            if device.type != "cpu":
                raise UserError(f"precision=int8 runs on the CPU only (device={device.type}); use bf16 or fp32 there")
            self.model = quantize_for_decoding(bundle.model)
        self.device = device
        self.src_tokenizer = bundle.tokenizers["src"]
        self.tgt_tokenizer = bundle.tokenizers["tgt"]

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None,
             precision: str = "fp32") -> "Translator":
        device = pick_device(device)
        return cls(load_bundle(path, device, expected_type="seq2seq"), device, precision)

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
