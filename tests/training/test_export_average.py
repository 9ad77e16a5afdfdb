"""export_average=N: the exported weights are the mean of the N best checkpoints when that mean
validates better than the best one, else the best one; model.json and the log say which."""

from __future__ import annotations

import json

import torch

from seq2seq.averaging import average_states, model_weights
from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run


def test_the_export_is_the_mean_of_the_best_checkpoints_only_where_it_validates_better(tmp_path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 400, "val": 30, "test": 5}, seed=11)
    result = run(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "trainer.max_epochs=4",
                  "evaluate_test=false", "trainer.precision=32-true", "callbacks.model_checkpoint.save_top_k=3",
                  "export_average=2", "hydra.run.dir=run"], cwd=tmp_path)
    log = result.stdout + result.stderr
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("*-bleu*.ckpt"),
                         key=lambda p: float(p.stem.rsplit("bleu", 1)[1]), reverse=True)
    assert len(checkpoints) == 3
    best_score = float(checkpoints[0].stem.rsplit("bleu", 1)[1])
    trained = json.loads((tmp_path / "run" / "model" / "model.json").read_text())["trained"]
    exported = model_weights(tmp_path / "run" / "model")
    if "averaged" in trained:
        assert trained["averaged"] == [p.name for p in checkpoints[:2]]
        assert trained["val_bleu"] > best_score - 0.005  # it validated better (file names round to 0.01)
        expected = average_states([model_weights(p) for p in checkpoints[:2]])
        assert "exporting the mean of" in log
    else:
        assert abs(trained["val_bleu"] - best_score) < 0.005  # the best checkpoint's own score
        expected = model_weights(checkpoints[0])
        assert "the mean of the 2 best validated" in log
    assert exported.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(exported[key], value, msg=key)
