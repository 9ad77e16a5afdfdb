"""fp16 with loss scaling through the trainer config (on CPU it needs the explicit LSTM cell)."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run


@pytest.mark.slow
def test_fp16_mixed_precision_trains_with_a_loss_scaler(tmp_path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 600, "val": 30, "test": 10})
    run(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "trainer.max_epochs=3", "evaluate_test=false",
         "trainer.precision=16-mixed", "model.cell=explicit", "hydra.run.dir=fp16"], cwd=tmp_path)
    checkpoint = torch.load(tmp_path / "fp16" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    scaler = checkpoint["MixedPrecision"]  # the GradScaler's state, restored on resume
    # It starts at 2**16 and can only have been lowered (by overflows) in 30 steps: it grows after 2,000.
    assert 0 < scaler["scale"] <= 2.0 ** 16 and 0 < scaler["_growth_tracker"] <= checkpoint["global_step"]
    losses = [float(r["val/loss"]) for r in csv.DictReader((tmp_path / "fp16" / "logs" / "metrics.csv").open())
              if r.get("val/loss")]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.1


def test_fp16_on_cpu_with_the_fused_lstm_is_refused_in_one_line(tmp_path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 20, "val": 5})
    result = run(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "trainer.precision=16-mixed",
                  "hydra.run.dir=fp16"], cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "model.cell=explicit" in result.stderr and "Traceback" not in result.stderr
