"""Shared fixtures: tiny models and small corpora that the tests generate themselves."""

from __future__ import annotations

import fcntl
import os
import random
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch

from seq2seq.tasks.translation.model import Seq2Seq

WORDS = ["red", "blue", "green", "dog", "cat", "runs", "sits", "big", "small", "tree",
         "house", "river", "sun", "moon", "car", "bird", "fish", "stone", "hill", "road"]


def make_reversal_corpus(directory: Path, sizes: dict[str, int], seed: int = 0,
                         min_len: int = 3, max_len: int = 7) -> Path:
    """<split>.src holds random word sequences, <split>.tgt the same words reversed and upper-cased."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        src, tgt = [], []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(min_len, max_len))]
            src.append(" ".join(words))
            tgt.append(" ".join(reversed(words)).upper())
        (directory / f"{split}.src").write_text("\n".join(src) + "\n", encoding="utf-8")
        (directory / f"{split}.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return directory


def tiny_model(attention: str = "luong_general", **overrides) -> Seq2Seq:
    torch.manual_seed(0)
    settings = dict(src_vocab_size=23, tgt_vocab_size=29, embed_dim=8, encoder_hidden_size=6,
                    encoder_layers=2, decoder_hidden_size=12, decoder_layers=2, attention=attention,
                    dropout=0.0)
    if attention == "luong_dot":
        settings["decoder_hidden_size"] = 12  # = 2 directions x 6
    settings.update(overrides)
    return Seq2Seq(**settings).eval()


def random_batch(lengths: list[int], vocab: int = 23, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) padded source ids (no specials) and their lengths."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, n in enumerate(lengths):
        src[row, :n] = torch.randint(4, vocab, (n,), generator=generator)
    return src, torch.tensor(lengths)


@pytest.fixture
def reversal_corpus(tmp_path: Path) -> Path:
    return make_reversal_corpus(tmp_path / "corpus", {"train": 400, "val": 40, "test": 40})


BIN = Path(sys.executable).parent

# A small model that learns to reverse word sequences in a few epochs on a CPU.
TINY_REVERSAL = [
    "data=parallel", "data.src_lang=src", "data.tgt_lang=tgt", "data.max_tokens=400",
    "tokenizer.vocab_size=24", "tokenizer.model_type=word", "tokenizer.joint=false",
    "model.embed_dim=32", "model.encoder_hidden_size=32", "model.decoder_hidden_size=64",
    "model.encoder_layers=1", "model.dropout=0.0", "optim.lr=0.005",
    "trainer.enable_progress_bar=false", "paths.cache_dir=cache",
]


def run(command: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """A console script of this environment in a subprocess; fails loudly unless check=False."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{command[0]} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def trained_reversal(tmp_path_factory) -> Path:
    """A folder with corpus/ and run/ (run/model is the model): trained once per test session."""
    work = tmp_path_factory.mktemp("reversal")
    make_reversal_corpus(work / "corpus", {"train": 2500, "val": 100, "test": 100}, seed=11)
    result = run(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "trainer.max_epochs=4",
                  "hydra.run.dir=run"], cwd=work)
    assert "model written to" in result.stdout
    return work


class Terminal:
    """The real command on a pseudo-terminal, read until expected text appears."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        env = dict(os.environ, PYTHONWARNINGS="ignore", HOME=str(cwd), TERM="dumb")
        self.process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                        close_fds=True, preexec_fn=self._controlling_terminal)
        os.close(slave)
        self.seen = ""

    @staticmethod
    def _controlling_terminal() -> None:
        """Make the pty the child's controlling terminal, so Ctrl-C reaches it as SIGINT.

        SIGINT is reset to its default first: a test run started in the background (`pytest &`)
        has it ignored, and Python would then never raise KeyboardInterrupt in the child.
        """
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    def expect(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"did not see {text!r}; got:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    break
        if text not in self.seen:
            raise AssertionError(f"did not see {text!r}; got:\n{self.seen}")
        before, _, self.seen = self.seen.partition(text)
        return before

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def interrupt_until_exit(self, attempts: int = 5) -> int | None:
        """Press Ctrl-C until the program exits; its exit code (None if it never did)."""
        # A Ctrl-C that lands while readline is still switching terminal modes can be dropped by
        # the terminal; a person would press it again, and so does the test (a few times at most).
        try:
            for _ in range(attempts):
                self.send("\x03")
                try:
                    return self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    continue
        finally:
            self.process.kill()
        return None


class LineDriver:
    """A command driven over pipes the way another program would: one line in, wait for the answer."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        self.process = subprocess.Popen([str(BIN / command[0]), *command[1:]], cwd=cwd, env=env, bufsize=0,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buffer = b""

    def ask(self, line: str, answers: int = 1, timeout: float = 120) -> list[str]:
        """Send `line` and read `answers` output lines; fails if they do not come within `timeout`
        (the pipe stays open, so a command that waits for more input fails here instead of hanging)."""
        self.process.stdin.write(line.encode() + b"\n")
        deadline = time.monotonic() + timeout
        while self.buffer.count(b"\n") < answers:
            remaining = deadline - time.monotonic()
            ready = select.select([self.process.stdout], [], [], max(remaining, 0))[0] if remaining > 0 else []
            if not ready:
                self.process.kill()
                raise AssertionError(f"no answer to {line!r} within {timeout} s; stderr:\n"
                                     f"{self.process.stderr.read().decode(errors='replace')[-3000:]}")
            data = os.read(self.process.stdout.fileno(), 65536)
            if not data:
                raise AssertionError(f"the command ended before answering {line!r}; stderr:\n"
                                     f"{self.process.stderr.read().decode(errors='replace')[-3000:]}")
            self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n", answers)
        return [raw.decode() for raw in lines]

    def close(self, timeout: float = 60) -> int:
        """Close stdin (end of input) and wait for the exit status."""
        self.process.stdin.close()
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.process.kill()
