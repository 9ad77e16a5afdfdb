"""Training batches built in worker processes: the same batches, so the same model."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_REVERSAL, make_reversal_corpus, run

from seq2seq.batching import loader_settings
from seq2seq.bundle import load_state_dict
from seq2seq.errors import UserError
from seq2seq.tasks.translation.corpus import Batch

TRAINING = [*TINY_REVERSAL, "data.data_dir=corpus", "trainer.max_epochs=2", "evaluate_test=false",
            "model.dropout=0.2"]


def test_workers_train_the_same_weights_as_the_training_thread(tmp_path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 600, "val": 20, "test": 10}, seed=7)
    for workers in (0, 2):
        run(["seq2seq-train", *TRAINING, f"data.num_workers={workers}", f"hydra.run.dir=w{workers}"], cwd=tmp_path)
    inline = load_state_dict(tmp_path / "w0" / "checkpoints" / "last.ckpt")
    workers = load_state_dict(tmp_path / "w2" / "checkpoints" / "last.ckpt")
    assert inline["global_step"] == workers["global_step"] > 10
    for key, value in inline["state_dict"].items():
        torch.testing.assert_close(workers["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_bad_loader_settings_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="num_workers"):
        loader_settings(-1, "auto")
    with pytest.raises(UserError, match="pin_memory"):
        loader_settings(0, "sometimes")
    assert loader_settings("auto", True) == ("auto", True)
    make_reversal_corpus(tmp_path / "corpus", {"train": 50, "val": 5, "test": 5})
    result = run(["seq2seq-train", *TRAINING, "data.num_workers=-2", "hydra.run.dir=bad"], cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: data.num_workers=-2 must be auto or a count of 0 or more")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs a GPU")
def test_batches_pin_every_tensor():
    batch = Batch(*(torch.ones(2, 3, dtype=torch.long) for _ in range(5)))
    pinned = batch.pin_memory()
    assert all(t.is_pinned() for t in (pinned.src, pinned.src_lengths, pinned.tgt_in, pinned.tgt_out, pinned.indices))
