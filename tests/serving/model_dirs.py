"""Tiny untrained model directories of every servable kind, built in about a second (server tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from seq2seq.bundle import save_bundle
from seq2seq.tasks import task_named
from seq2seq.tokenizer import SentencePieceSettings, Tokenizer, train_or_load
from tests.helpers import make_reversal_corpus, tiny_model

CHAR_TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))


def build_model_dirs(root: Path) -> dict[str, Path]:
    """{'translator': dir, 'lm': dir, 'classifier': dir, 'forecaster': dir} under `root`."""
    corpus = make_reversal_corpus(root / "corpus", {"train": 300})
    words = train_or_load([corpus / "train.src"], root / "cache", SentencePieceSettings(vocab_size=40)).model_file
    translator = save_bundle(root / "translator", tiny_model("bahdanau", src_vocab_size=40, tgt_vocab_size=40),
                             "seq2seq", {"src": words, "tgt": words},
                             {"data": {"src_lang": "src", "tgt_lang": "tgt"}})
    (root / "chars.txt").write_text(CHAR_TEXT, encoding="utf-8")
    chars = train_or_load([root / "chars.txt"], root / "cache",
                          SentencePieceSettings(vocab_size=60, model_type="char", preserve_text=True)).model_file
    lm = task_named("language_model").model()(vocab_size=Tokenizer(chars).vocab_size, embed_dim=8,
                                               hidden_size=16, num_layers=1, dropout=0.0)
    lm_dir = save_bundle(root / "lm", lm, "lstm_lm", {"text": chars})
    classifier = task_named("classification").model()(vocab_size=40, num_classes=2, embed_dim=8, hidden_size=8,
                                                       dropout=0.0)
    classifier_dir = save_bundle(root / "classifier", classifier, "lstm_classifier", {"text": words},
                                 {"labels": ["negative", "positive"], "lowercase": True})
    forecaster = task_named("forecast").model()(window=8, horizon=4, hidden_size=8, num_layers=1)
    forecaster_dir = save_bundle(root / "forecaster", forecaster, "forecaster", {})
    return {"translator": translator, "lm": lm_dir, "classifier": classifier_dir, "forecaster": forecaster_dir}


class SlowGenerator:
    """A language model that takes `delay` seconds a character, so a stream lasts long enough to
    watch it arrive or to walk away from it."""

    def __init__(self, inner, delay: float = 0.005) -> None:
        self.inner, self.delay = inner, delay

    def stream(self, *args, **kwargs):
        for pieces in self.inner.stream(*args, **kwargs):
            time.sleep(self.delay)
            yield pieces


@contextmanager
def serving(app) -> Iterator[str]:
    """The app on uvicorn on a free loopback port, in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
