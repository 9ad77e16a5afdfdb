"""init_from=<model dir>: fine-tuning starts from a model directory's weights, model config and
tokenizer files (byte for byte), with a fresh optimizer, schedule and step count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seq2seq.bundle import load_state_dict
from seq2seq.tasks.translation.shortlist import SHORTLIST_FILE, Shortlist
from seq2seq.tokenizer import Tokenizer
from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run, run_in_process

BASE = [*TINY_REVERSAL, "data.data_dir=corpus"]


def train_base(work: Path) -> None:
    make_reversal_corpus(work / "corpus", {"train": 2000, "val": 60, "test": 60}, seed=3)
    run(["seq2seq-train", *BASE, "trainer.max_epochs=1", "hydra.run.dir=base"], cwd=work)


@pytest.fixture(scope="module")
def base_run(build_once) -> Path:
    """One short epoch of the reversal task: a model that has started to learn, not finished."""
    return build_once("finetune-base", train_base)


def bleu(run_dir: Path) -> float:
    return json.loads((run_dir / "test_scores.json").read_text())["bleu"]["score"]


def test_init_from_reuses_tokenizers_and_weights_exactly(base_run):
    # No optimizer step: what is exported is what was loaded. A bigger vocabulary setting and
    # another model type prove the tokenizer is not retrained: the directory's files are used.
    run(["seq2seq-train", *BASE, "tokenizer.vocab_size=30", "tokenizer.model_type=bpe",
         "init_from=base/model", "trainer.max_steps=0", "hydra.run.dir=zero"], cwd=base_run)
    base, zero = base_run / "base" / "model", base_run / "zero" / "model"
    for name in ("src.spm.model", "tgt.spm.model"):
        assert (zero / name).read_bytes() == (base / name).read_bytes()
        assert (base_run / "zero" / "tokenizers" / name).read_bytes() == (base / name).read_bytes()
    loaded, source = load_state_dict(zero / "weights.pt"), load_state_dict(base / "weights.pt")
    assert loaded.keys() == source.keys()
    for key in source:
        assert torch.equal(loaded[key], source[key]), key
    base_config = json.loads((base / "model.json").read_text())
    config = json.loads((zero / "model.json").read_text())
    assert config["model_config"] == base_config["model_config"]
    assert config["trained"]["init_from"] == str(base.resolve())
    assert bleu(base_run / "zero") == pytest.approx(bleu(base_run / "base"), abs=1e-9)


def test_fine_tuning_continues_and_improves(base_run):
    before = bleu(base_run / "base")
    assert before < 90  # one short epoch leaves room to improve
    run(["seq2seq-train", *BASE, "init_from=base/model", "trainer.max_epochs=2", "model.dropout=0.1",
         "hydra.run.dir=tuned"], cwd=base_run)
    after = bleu(base_run / "tuned")
    assert after > before + 5, (before, after)
    config = json.loads((base_run / "tuned" / "model" / "model.json").read_text())
    assert config["model_config"]["dropout"] == 0.1  # a setting that keeps the shapes is taken
    # The vocabulary shortlist is rebuilt from the fine-tuning corpus for the reused tokenizers.
    tuned = base_run / "tuned" / "model"
    shortlist = Shortlist.load(tuned / SHORTLIST_FILE, Tokenizer(tuned / "src.spm.model"),
                               Tokenizer(tuned / "tgt.spm.model"))
    assert shortlist.settings["sentences"] > 0
    # A fresh step count: two epochs of this run, not the base run's plus two.
    base_steps = json.loads((base_run / "base" / "model" / "model.json").read_text())["trained"]["steps"]
    assert config["trained"]["steps"] == 2 * base_steps


def test_a_shape_changing_override_is_refused_in_one_line(base_run):
    result = run_in_process(["seq2seq-train", *BASE, "init_from=base/model", "model.decoder_hidden_size=32",
                  "hydra.run.dir=refused"], cwd=base_run)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: init_from=base/model: model.decoder_hidden_size=32 changes the shape")
    assert "decoder_hidden_size=64" in lines[-1]


def test_init_from_another_task_or_a_missing_directory_is_refused(base_run):
    missing = run_in_process(["seq2seq-train", *BASE, "init_from=nowhere", "hydra.run.dir=x"], cwd=base_run)
    assert missing.returncode == 2 and "model directory not found: nowhere" in missing.stderr


@pytest.mark.slow
def test_init_from_works_for_another_task_forecasting(tmp_path):
    """A forecaster fine-tuned on another series keeps the directory's scale, window and weights."""
    from tests.helpers import TINY_FORECAST, noisy_seasonal_series, write_series

    write_series(tmp_path / "sine.csv", noisy_seasonal_series(400, seed=1))
    write_series(tmp_path / "other.csv", 2.0 * noisy_seasonal_series(400, seed=2))
    run(["seq2seq-train", *TINY_FORECAST, "trainer.max_epochs=2", "hydra.run.dir=base"], cwd=tmp_path)
    # The data's window follows the model's (${model.window}): the directory's 52, not a default.
    tuned = ["seq2seq-train", *[o for o in TINY_FORECAST if not o.startswith("model.")], "data.file=other.csv",
             "init_from=base/model"]
    run([*tuned, "trainer.max_steps=0", "hydra.run.dir=zero"], cwd=tmp_path)
    base = json.loads((tmp_path / "base" / "model" / "model.json").read_text())
    zero = json.loads((tmp_path / "zero" / "model" / "model.json").read_text())
    assert zero["model_config"] == base["model_config"] and zero["model_config"]["window"] == 52
    source, loaded = (load_state_dict(tmp_path / d / "model" / "weights.pt") for d in ("base", "zero"))
    assert all(torch.equal(source[k], loaded[k]) for k in source) and source.keys() == loaded.keys()
    refused = run_in_process([*tuned, "model.hidden_size=8", "hydra.run.dir=refused"], cwd=tmp_path)
    assert refused.returncode == 2
    assert "error: init_from=base/model: model.hidden_size=8 changes the shape" in refused.stderr
