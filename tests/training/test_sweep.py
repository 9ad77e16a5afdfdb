"""seq2seq-train -m with the Optuna sweeper: the training function's return value is the objective."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run

pytestmark = [
    pytest.mark.slow,  # two short trainings: about 1 CPU-minute, several on a busy 2-core machine
    pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                       reason="the optuna extra is not installed (pip install '.[optuna]')"),
]

SMALLER = ["model.embed_dim=16", "model.encoder_hidden_size=16", "model.decoder_hidden_size=32"]
# The learning rate is what the sweep chooses, so the fixed one of the tiny settings goes.
SETTINGS = [arg for arg in TINY_REVERSAL if not arg.startswith("optim.lr=")] + SMALLER


def test_optuna_sweep_maximises_the_exported_models_validation_bleu(tmp_path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 600, "val": 40, "test": 40}, seed=3)
    result = run(["seq2seq-train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=1", "optim.lr=interval(0.002,0.02)",
                  *SETTINGS, "data.data_dir=corpus", "trainer.max_steps=30", "evaluate_test=false",
                  "hydra.sweep.dir=sweep"], cwd=tmp_path)
    summary = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    # Each trial's objective is the val/bleu its exported model was written with.
    trials = {}
    for number in (0, 1):
        trained = json.loads((tmp_path / "sweep" / str(number) / "model" / "model.json").read_text())["trained"]
        overrides = yaml.safe_load((tmp_path / "sweep" / str(number) / ".hydra" / "overrides.yaml").read_text())
        lr = float(next(o.split("=", 1)[1] for o in overrides if o.startswith("optim.lr=")))
        trials[lr] = trained["val_bleu"]
    assert len(trials) == 2  # two different learning rates were tried
    assert summary["best_value"] == pytest.approx(max(trials.values()))
    chosen = min(trials, key=lambda lr: abs(lr - summary["best_params"]["optim.lr"]))
    assert chosen == pytest.approx(summary["best_params"]["optim.lr"])
    assert trials[chosen] == pytest.approx(summary["best_value"])
    assert "Best value" in result.stdout + result.stderr
