"""Text <-> ids of a character language model, and stop strings: no torch, so the exported-model
runtime (seq2seq.portable) shares them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from seq2seq.tokenizer import UNK_ID, Tokenizer

UNKNOWN_TEXT = "\ufffd"  # shown for the unknown id, which generation never draws anyway


class TextCodec:
    """Exact text <-> ids for a verbatim (character) SentencePiece model.

    Decoding is a table lookup per id, so text can be printed one character at a time.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        pieces = tokenizer.id_to_piece(range(tokenizer.vocab_size))
        self.texts = [p.replace("\u2581", " ") for p in pieces]
        for special in range(4):
            self.texts[special] = ""
        self.texts[UNK_ID] = UNKNOWN_TEXT

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokenizer.encode_text(text)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.texts[int(i)] for i in ids)


class StopFilter:
    """Passes text through until a stop string appears; holds back what could start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        self.pending += text
        for stop in self.stops:
            at = self.pending.find(stop)
            if at >= 0:
                self.stopped = True
                out, self.pending = self.pending[:at], ""
                return out
        if self.hold == 0:
            out, self.pending = self.pending, ""
        else:
            out, self.pending = self.pending[:-self.hold], self.pending[-self.hold:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


class GenerateFromStream:
    """`generate` over `stream()`, which yields each step's new text of every sample."""

    def stream(self, prompt: str = "", max_chars: int = 500, num_samples: int = 1, **options) -> Iterator[list[str]]:
        raise NotImplementedError

    def generate(self, prompt: str = "", max_chars: int = 500, num_samples: int | None = None,
                 **options) -> str | list[str]:
        """The continuation of `prompt`; a list of `num_samples` continuations when given."""
        count = 1 if num_samples is None else num_samples
        parts: list[list[str]] = [[] for _ in range(max(count, 0))]
        for pieces in self.stream(prompt, max_chars, count, **options):
            for part, piece in zip(parts, pieces):
                part.append(piece)
        texts = ["".join(p) for p in parts]
        return texts if num_samples is not None else texts[0]
