"""What the tests share besides fixtures: corpora and series they generate, tiny models, the
settings of tiny training runs, and ways to run the real commands (subprocess, pseudo-terminal,
line-by-line pipes, or in this process)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import io
import math
import os
import random
import select
import signal
import subprocess
import sys
import termios
import time
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from seq2seq.config import CONF_DIR
from seq2seq.tasks.language_model.data import TextDataModule
from seq2seq.tasks.language_model.model import LanguageModel
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


class Exploit:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


UNICODE_TEXT = ("Ça va? Très bien.\n日本語のテキストです。\n  two  spaces\tand a tab 😀\n"
                "ROMEO: O, she doth teach the torches to burn bright!\n") * 20


def char_datamodule(tmp_path: Path, text: str, **settings) -> TextDataModule:
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    options = dict(batch_streams=4, bptt=16, valid_streams=3, valid_warmup=8)
    options.update(settings)
    data = TextDataModule(data_dir=str(tmp_path), train_file="text.txt", cache_dir=str(tmp_path / "cache"),
                          tokenizer={"vocab_size": 1000, "model_type": "char"}, **options)
    data.prepare_data()
    data.setup("fit")
    return data


def tiny_lm(vocab_size: int, **overrides) -> LanguageModel:
    torch.manual_seed(0)
    settings = dict(vocab_size=vocab_size, embed_dim=8, hidden_size=16, num_layers=2, dropout=0.0)
    settings.update(overrides)
    return LanguageModel(**settings)


def compose_train(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


START = dt.date(1990, 1, 6)


def write_series(path: Path, values, start: dt.date = START, header: str = "date,level") -> Path:
    """A weekly CSV; NaN values are written as empty cells (missing weeks)."""
    lines = [header]
    for week, value in enumerate(values):
        date = (start + dt.timedelta(weeks=week)).strftime("%Y%m%d")
        lines.append(f"{date}," + ("" if math.isnan(value) else f"{value:.4f}"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def noisy_seasonal_series(weeks: int, seed: int = 0) -> np.ndarray:
    """A 52-week sine (amplitude 3) on a rising trend, noise sd 0.1, and a gap of 1-6 weeks per 40 weeks."""
    rng = np.random.default_rng(seed)
    t = np.arange(weeks)
    values = 300.0 + 0.03 * t + 3.0 * np.sin(2 * np.pi * t / 52) + rng.normal(0.0, 0.1, weeks)
    for start in rng.choice(np.arange(10, weeks - 10), size=weeks // 40, replace=False):
        values[start:start + rng.integers(1, 7)] = np.nan
    return values


TINY_FORECAST = [
    "experiment=co2_forecast", "data.data_dir=.", "data.file=sine.csv", "data.download=null", "data.units=u",
    "data.valid_weeks=52", "data.test_weeks=104", "data.batch_size=16", "model.window=52", "model.horizon=26",
    "model.hidden_size=16", "task.eval_horizon=26", "optim.lr=0.01", "trainer.max_epochs=20",
    "trainer.enable_progress_bar=false",
]


ALPHABET = "abcdefghijklmnopqrstuvwxyz"


# A text with an obvious pattern: the alphabet, one line at a time.
PATTERN_TEXT = (ALPHABET + "\n") * 500


TINY_CHAR_LM = [
    "experiment=tiny_shakespeare_char", "data.data_dir=.", "data.download=null", "data.train_file=text.txt",
    "data.batch_streams=8", "data.bptt=32", "model.embed_dim=16", "model.hidden_size=64", "model.dropout=0.0",
    "optim.lr=0.01", "trainer.max_epochs=3", "trainer.precision=32-true", "task.sample_every_n_steps=20",
    "task.sample_prompt=abc", "task.sample_chars=40", "trainer.enable_progress_bar=false",
    "paths.cache_dir=cache",
]


def console_script(name: str):
    """The function a console script of this package runs, as the installed metadata names it."""
    (entry,) = entry_points(group="console_scripts", name=name)
    return entry.load()


def run_in_process(command: list[str], cwd: Path, input: str = "") -> subprocess.CompletedProcess:
    """A console script's function called in this process, as the script would call it, with its
    argv, working folder, stdin, stdout and stderr: the command without the seconds an interpreter
    takes to start and import torch and Lightning. For error paths and quick runs; tests of what
    only a real process has (exit by signal, a terminal, worker processes) use `run`.

    malloc is left as it is (SEQ2SEQ_KEEP_FREED_MEMORY=0): the commands tune it once per process,
    and the test process must stay as the tests of that tuning expect it."""
    main = console_script(command[0])
    stdin = io.TextIOWrapper(io.BytesIO(input.encode()), encoding="utf-8")
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdin, os.getcwd(), os.environ.get("SEQ2SEQ_KEEP_FREED_MEMORY")
    returncode = 0
    try:
        os.environ["SEQ2SEQ_KEEP_FREED_MEMORY"] = "0"
        sys.argv, sys.stdin = [command[0], *command[1:]], stdin
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
            except SystemExit as exit_:
                returncode = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv, sys.stdin = saved[0], saved[1]
        os.chdir(saved[2])
        if saved[3] is None:
            os.environ.pop("SEQ2SEQ_KEEP_FREED_MEMORY")
        else:
            os.environ["SEQ2SEQ_KEEP_FREED_MEMORY"] = saved[3]
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(command, returncode, stdout.getvalue(), stderr.getvalue())
