"""Generate text with an exported character language model: the runtime's `Generator`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from seq2seq.errors import UserError
from seq2seq.portable.exported import ExportedDirectory
from seq2seq.portable.sampling import NEG_INF, check_sampling, logsumexp, sample_tokens
from seq2seq.tasks.language_model.codec import GenerateFromStream, StopFilter, TextCodec

# The special ids are the first four (pad, unk, bos, eos): never drawn.
FIRST_TEXT_ID = 4


class Generator(GenerateFromStream):
    """An exported language model and its tokenizer (the PyTorch Generator's interface)."""

    def __init__(self, directory: ExportedDirectory) -> None:
        if directory.task != "language_model":
            raise UserError(f"{directory.path} holds an exported {directory.task} model, not a language model")
        self.directory, self.path, self.precision = directory, directory.path, directory.precision
        self.device = "cpu (onnxruntime)"
        self.step = directory.session("lm_step")
        self.layers = int(directory.network["layers"])
        self.hidden_size = int(directory.network["hidden_size"])
        self.codec = TextCodec(directory.tokenizer("text"))

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int | None = None) -> Generator:
        return cls(ExportedDirectory.open(path, threads=threads))

    def _advance(self, tokens: np.ndarray, state: tuple[np.ndarray, np.ndarray]):
        logits, h, c = self.step.run(None, {"tokens": tokens, "h": state[0], "c": state[1]})
        return logits, (h, c)

    def stream(self, prompt: str = "", max_chars: int = 500, num_samples: int = 1, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, greedy: bool = False, seed: int | None = None,
               stop: Sequence[str] = ()) -> Iterator[list[str]]:
        """Yield, per step, the new text of each sample ("" once a sample has met a stop string)."""
        if max_chars < 0:
            raise UserError(f"max_chars={max_chars} must be 0 or more")
        if num_samples < 1:
            raise UserError(f"num_samples={num_samples} must be at least 1")
        if not greedy:
            check_sampling(temperature, top_k, top_p)
        if isinstance(stop, str):
            stop = [stop]
        rng = np.random.default_rng(seed)
        filters = [StopFilter(stop) for _ in range(num_samples)]
        prompt_ids = self.codec.encode(prompt) or self.codec.encode("\n")  # empty: as if after a line break
        zeros = np.zeros((self.layers, num_samples, self.hidden_size), dtype=np.float32)
        state = (zeros, zeros.copy())
        for token in prompt_ids:  # the prompt read one step at a time through the same graph
            logits, state = self._advance(np.full(num_samples, token, dtype=np.int64), state)
        for _ in range(max_chars):
            log_probs = logits - logsumexp(logits)
            log_probs[:, :FIRST_TEXT_ID] = NEG_INF
            tokens = log_probs.argmax(axis=1) if greedy else sample_tokens(log_probs, temperature, top_k, top_p, rng)
            yield [f.feed(self.codec.texts[t]) if not f.stopped else "" for f, t in zip(filters, tokens.tolist())]
            if all(f.stopped for f in filters):
                return
            logits, state = self._advance(tokens.astype(np.int64), state)
        yield [f.flush() for f in filters]
