"""Generate and score text with a language-model directory: the path behind every front end.

>>> g = Generator.load("outputs/run/model")                        # doctest: +SKIP
>>> g.generate("ROMEO:", max_chars=200, temperature=0.8, seed=1)     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import torch

from seq2seq.bundle import Bundle, load_bundle
from seq2seq.errors import UserError
from seq2seq.precision import resolve_decoding_precision
from seq2seq.runtime import pick_device
from seq2seq.tasks import task_named
from seq2seq.tasks.language_model.codec import GenerateFromStream, StopFilter, TextCodec  # noqa: F401  (TextCodec: api users)
from seq2seq.tasks.language_model.model import (
    generate_ids,
    loss_report,
    score_streams,
    scoring_streams,
)
from seq2seq.tokenizer import UNK_ID

MODEL_TYPE = task_named("language_model").model_type
log = logging.getLogger(__name__)


class Generator(GenerateFromStream):
    """A loaded character language model and its tokenizer."""

    def __init__(self, bundle: Bundle, device: torch.device, precision: str = "auto") -> None:
        precision, reason = resolve_decoding_precision(precision, device, int8_for="language models")
        log.info(reason)
        self.bundle, self.model, self.device, self.precision = bundle, bundle.model, device, precision
        self.codec = TextCodec(bundle.tokenizers["text"])

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None,
             precision: str = "auto") -> Generator:
        device = pick_device(device)
        return cls(load_bundle(path, device, expected_type=MODEL_TYPE), device, precision)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _prompt_ids(self, prompt: str) -> list[int]:
        # An empty prompt starts the text as if after a line break.
        return self.codec.encode(prompt) or self.codec.encode("\n")

    def stream(
        self,
        prompt: str = "",
        max_chars: int = 500,
        num_samples: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        greedy: bool = False,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> Iterator[list[str]]:
        """Yield, per step, the new text of each sample ("" once a sample has met a stop string).

        The text continues `prompt` (which is not repeated); each sample ends after `max_chars`
        characters or just before the first stop string it produces.
        """
        if max_chars < 0:
            raise UserError(f"max_chars={max_chars} must be 0 or more")
        if num_samples < 1:
            raise UserError(f"num_samples={num_samples} must be at least 1")
        if isinstance(stop, str):
            stop = [stop]
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        filters = [StopFilter(stop) for _ in range(num_samples)]
        with self._autocast():
            steps = generate_ids(self.model, self._prompt_ids(prompt), max_chars, num_samples, temperature,
                                 top_k, top_p, greedy, generator)
            for tokens in steps:
                pieces = [f.feed(self.codec.texts[t]) if not f.stopped else ""
                          for f, t in zip(filters, tokens.tolist())]
                yield pieces
                if all(f.stopped for f in filters):
                    return
        yield [f.flush() for f in filters]

    def score(self, text: str, streams: int = 16, warmup: int = 256) -> dict[str, float]:
        """Loss of the model on `text`: nats/char, bits/char, perplexity over every char but the first."""
        ids = torch.tensor(self.codec.encode(text), dtype=torch.long)
        data = scoring_streams(ids, streams, warmup)
        with self._autocast():
            total, count = score_streams(self.model, data)
        report = loss_report(total, count)
        report["unknown"] = int((ids == UNK_ID).sum())
        return report
