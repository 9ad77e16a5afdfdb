"""Fixtures: tiny trained models and small corpora that the tests generate themselves."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run

# precision=auto picks bf16 on a CPU with native bf16, and bf16 changes the last digits of scores
# and, now and then, a beam's choice: the tests compare exact outputs, so every test (and every
# command it starts, which inherits the environment) computes in fp32 whatever CI's CPU is. The
# tests of the choice itself (tests/test_precision.py) set or clear the variable themselves.
os.environ["SEQ2SEQ_NATIVE_BF16"] = "0"


@pytest.fixture(scope="session")
def build_once(tmp_path_factory) -> Callable[[str, Callable[[Path], None]], Path]:
    """`build_once(name, build)`: the folder `build` fills, built once per test run, however many
    pytest-xdist workers ask for it (the others wait for the first), so every trained tiny
    model is trained once."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base folders share this one

    def folder(name: str, build: Callable[[Path], None]) -> Path:
        target = root / f"shared-{name}"
        with open(root / f"shared-{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target / ".built").exists():
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
                build(target)
                (target / ".built").touch()
        return target

    return folder


@pytest.fixture
def reversal_corpus(tmp_path: Path) -> Path:
    return make_reversal_corpus(tmp_path / "corpus", {"train": 400, "val": 40, "test": 40})


def train_reversal(work: Path) -> None:
    make_reversal_corpus(work / "corpus", {"train": 2500, "val": 100, "test": 100}, seed=11)
    result = run(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "trainer.max_epochs=4",
                  "hydra.run.dir=run"], cwd=work)
    assert "model written to" in result.stdout
    (work / "train.stderr").write_text(result.stderr)


@pytest.fixture(scope="session")
def trained_reversal(build_once) -> Path:
    """A folder with corpus/ and run/ (run/model is the model), and train.stderr, what training
    wrote on stderr (a pipe, not a terminal)."""
    return build_once("reversal", train_reversal)
