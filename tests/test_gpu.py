"""GPU paths: run with `pytest -m gpu` on a machine with CUDA; skipped elsewhere."""

from __future__ import annotations

import csv

import pytest
import torch

from seq2seq.tasks.translation.search import decode
from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run, tiny_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def validation_losses(run_dir) -> list[float]:
    rows = csv.DictReader((run_dir / "logs" / "metrics.csv").open())
    return [float(r["val/loss"]) for r in rows if r.get("val/loss")]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "32-true"])
def test_training_on_one_gpu_learns(tmp_path, precision):
    make_reversal_corpus(tmp_path / "corpus", {"train": 1000, "val": 40, "test": 20})
    result = run(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "trainer=gpu",
                  f"trainer.precision={precision}", "trainer.max_epochs=4", "hydra.run.dir=run"], cwd=tmp_path)
    assert "model written to" in result.stdout
    losses = validation_losses(tmp_path / "run")
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.2


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_on_two_gpus_scores_every_validation_sentence_once(tmp_path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 600, "val": 41, "test": 10})
    run(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "trainer=ddp", "trainer.devices=2",
         "trainer.max_epochs=2", "evaluate_test=false", "hydra.run.dir=ddp"], cwd=tmp_path)
    rows = [r for r in csv.DictReader((tmp_path / "ddp" / "logs" / "metrics.csv").open()) if r.get("val/sentences")]
    assert float(rows[-1]["val/sentences"]) == 41


def test_gpu_decoding_matches_cpu_decoding():
    model = tiny_model()
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(4, 23, (6, 9), generator=generator)
    lengths = torch.tensor([9, 8, 7, 5, 3, 1])
    for row, n in enumerate(lengths.tolist()):
        src[row, n:] = 0
    on_cpu = decode(model, src, lengths, beam_size=4)
    on_gpu = decode(model.cuda(), src.cuda(), lengths.cuda(), beam_size=4)
    assert [h[0].tokens for h in on_gpu] == [h[0].tokens for h in on_cpu]
    for gpu_hyps, cpu_hyps in zip(on_gpu, on_cpu):
        assert gpu_hyps[0].score == pytest.approx(cpu_hyps[0].score, abs=1e-3)
