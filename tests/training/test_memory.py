"""Training memory: an in-memory run must not grow its resident memory from epoch to epoch.

The run logs `memory/rss_mb` after every epoch (seq2seq.training.ReleaseFreedMemory, right
after the validation's release of free pages), so what it shows is what the process still
holds: a leak (a list of tensors kept per step, a cache keyed by batch shape) shows up as growth.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run

EPOCHS = 6
# Epoch 1 (the second) is the baseline: by then every batch shape has been seen once and the
# heap, Python's arenas and oneDNN's primitive cache hold what a steady run holds. Growth after
# it of more than this fails. Measured: +0.3 MB from epoch 1 to 5 (with the leak below: +30.5 MB).
GROWTH_BOUND_MB = 12.0
# A leak of 256 KiB per step (~30 steps per epoch) adds about 30 MB over the checked epochs.
LEAK_PER_STEP = 256 * 1024


class LeakEveryStep(L.Callback):
    """A deliberate leak for the test that the check can fail: keeps a fresh tensor per step."""

    def __init__(self) -> None:
        self.kept: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.kept.append(torch.ones(LEAK_PER_STEP // 4))


def train_rss_by_epoch(work: Path, monkeypatch, *extra: str) -> list[float]:
    """Train the tiny reversal model on a generated corpus held in memory; RSS (MB) per epoch."""
    corpus = make_reversal_corpus(work / "corpus", {"train": 400, "val": 40, "test": 10}, seed=5,
                                  min_len=2, max_len=24)
    # The run may name a callback of this module (the leak).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                      os.environ.get("PYTHONPATH", "")]))
    run(["seq2seq-train", *TINY_REVERSAL, f"data.data_dir={corpus}", "data.storage=memory", "data.max_tokens=200",
         f"trainer.max_epochs={EPOCHS}", "callbacks.early_stopping=null", "logger.tensorboard=null",
         "evaluate_test=false", "hydra.run.dir=run", *extra], cwd=work)
    with open(work / "run" / "logs" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("memory/rss_mb")]
    by_epoch = {int(row["epoch"]): float(row["memory/rss_mb"]) for row in rows}
    assert sorted(by_epoch) == list(range(EPOCHS)), by_epoch
    return [by_epoch[epoch] for epoch in range(EPOCHS)]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_training_memory_does_not_grow_across_epochs(tmp_path, monkeypatch):
    rss = train_rss_by_epoch(tmp_path, monkeypatch)
    assert all(100 < value < 2048 for value in rss), rss  # a real reading: torch alone is ~300 MB
    growth = rss[-1] - rss[1]
    assert growth < GROWTH_BOUND_MB, f"RSS grew {growth:.1f} MB from epoch 1 to {EPOCHS - 1}: {rss}"
    peak = [float(row["memory/peak_rss_mb"]) for row in csv.DictReader(open(tmp_path / "run/logs/metrics.csv"))
            if row.get("memory/peak_rss_mb")]
    assert peak == sorted(peak) and peak[-1] >= max(rss) - 1, (peak, rss)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_the_growth_check_catches_a_leak(tmp_path, monkeypatch):
    rss = train_rss_by_epoch(tmp_path, monkeypatch, "+callbacks.leak._target_=tests.training.test_memory.LeakEveryStep")
    assert rss[-1] - rss[1] > GROWTH_BOUND_MB, rss


def test_validation_loss_in_slices_equals_the_whole_batch_loss():
    """Validation projects 768 target positions at a time (memory); the loss is the same."""
    from seq2seq.tasks.translation.corpus import make_batch
    from seq2seq.tasks.translation.system import TranslationSystem
    from tests.helpers import tiny_model

    generator = torch.Generator().manual_seed(3)
    lengths = [5, 9, 2, 7, 11]
    src = [torch.randint(4, 23, (n,), generator=generator).tolist() for n in lengths]
    tgt = [torch.randint(4, 29, (n + 1,), generator=generator).tolist() for n in lengths]
    batch = make_batch(src, tgt, list(range(len(lengths))))
    system = TranslationSystem(tiny_model(), label_smoothing=0.1).eval()
    with torch.no_grad():
        mean, tokens = system.loss(batch)
        for rows in (3, 7, 768):
            total, counted = system.summed_loss(batch, rows=rows)
            assert counted == tokens == sum(len(t) + 1 for t in tgt)  # with EOS
            assert abs(total / counted - float(mean)) < 1e-5, (rows, total / counted, float(mean))


def test_heap_block_limit_reads_the_environment_when_malloc_is_tuned(monkeypatch):
    from seq2seq.errors import UserError
    from seq2seq.runtime import HEAP_BLOCKS_UP_TO, heap_blocks_up_to

    monkeypatch.delenv("SEQ2SEQ_HEAP_BLOCKS_MIB", raising=False)
    assert heap_blocks_up_to() == HEAP_BLOCKS_UP_TO == 32 * 2**20
    monkeypatch.setenv("SEQ2SEQ_HEAP_BLOCKS_MIB", "4")
    assert heap_blocks_up_to() == 4 * 2**20
    for bad in ("four", "0", "64", "-1"):
        monkeypatch.setenv("SEQ2SEQ_HEAP_BLOCKS_MIB", bad)
        with pytest.raises(UserError, match="SEQ2SEQ_HEAP_BLOCKS_MIB"):
            heap_blocks_up_to()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc is tuned with glibc only")
def test_a_bad_heap_block_limit_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_HEAP_BLOCKS_MIB", "lots")
    monkeypatch.setenv("SEQ2SEQ_KEEP_FREED_MEMORY", "1")
    result = run(["seq2seq-train", f"hydra.run.dir={tmp_path}"], tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: SEQ2SEQ_HEAP_BLOCKS_MIB='lots' is not a number of MiB in (0, 32]"]


def _transparent_huge_pages() -> str:
    """Linux's THP mode ("always", "madvise", "never"), or "" where there is none."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return ""
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else ""


@pytest.mark.skipif(_transparent_huge_pages() not in ("madvise", "always"), reason="needs Linux THP")
def test_commands_put_large_tensors_on_huge_pages():
    import subprocess

    script = ("from seq2seq.runtime import reuse_freed_memory, huge_pages_mb\n"
              "reuse_freed_memory('training')\n"
              "import torch\n"
              "blocks = [torch.ones(2**23) for _ in range(4)]\n"  # 4 x 32 MB
              "print(huge_pages_mb())\n")

    def huge_mb(**settings: str) -> float:
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | settings
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                check=True, timeout=120)
        return float(result.stdout.split()[-1])

    assert huge_mb(SEQ2SEQ_KEEP_FREED_MEMORY="1") >= 64  # most of the 128 MB
    if _transparent_huge_pages() == "madvise":  # only blocks that ask get huge pages
        assert huge_mb(SEQ2SEQ_KEEP_FREED_MEMORY="0") == 0
