"""The real console scripts, in subprocesses, on a synthetic task they must learn."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.helpers import TINY_REVERSAL, run, run_in_process


@pytest.fixture(scope="module")
def trained_run(trained_reversal) -> Path:
    return trained_reversal


def test_training_learns_the_task_and_leaves_a_complete_run(trained_run):
    run_dir = trained_run / "run"
    for name in ("config.yaml", "model/model.json", "model/weights.pt", "checkpoints/last.ckpt",
                 "logs/metrics.csv", "test_scores.json", "test.hyp.tgt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tokenizers").glob("*.model"))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    scores = json.loads((run_dir / "test_scores.json").read_text())
    assert scores["bleu"]["score"] > 90, scores["bleu"]
    # Validation ran after every epoch (Lightning plans validation by the epoch length).
    with open(run_dir / "logs" / "metrics.csv") as handle:
        validated = {row["epoch"] for row in csv.DictReader(handle) if row.get("val/bleu")}
    assert validated == {"0", "1", "2", "3"}
    assert scores["bleu"]["signature"].startswith("nrefs:1|case:mixed")


def test_evaluate_reports_scores_and_gates_on_min_bleu(trained_run):
    common = ["seq2seq-evaluate", "model=run/model", "src=corpus/test.src", "ref=corpus/test.tgt", "beam=3"]
    passed = run([*common, "min_bleu=90", "json=scores.json", "output=hyps.txt"], cwd=trained_run)
    assert "BLEU" in passed.stdout and "chrF" in passed.stdout and "TER" in passed.stdout
    scores = json.loads((trained_run / "scores.json").read_text())
    assert scores["bleu"]["score"] > 90 and scores["sentences"] == 100
    assert "tok:13a" in scores["bleu"]["signature"]
    hyps = (trained_run / "hyps.txt").read_text().splitlines()
    refs = (trained_run / "corpus" / "test.tgt").read_text().splitlines()
    assert len(hyps) == 100 and sum(h == r for h, r in zip(hyps, refs)) > 80

    failed = run([*common, "min_bleu=99.99"], cwd=trained_run, check=False)
    worse = scores["bleu"]["score"] < 99.99
    assert failed.returncode == (1 if worse else 0)
    if worse:
        assert "below min_bleu=99.99" in failed.stderr


@pytest.mark.slow
def test_untrained_model_does_not_pass_the_gate(trained_run, tmp_path):
    """The gate can fail: a model trained for a handful of steps stays far below the floor."""
    result = run(["seq2seq-train", *TINY_REVERSAL, f"data.data_dir={trained_run / 'corpus'}",
                  "trainer.max_steps=3", "evaluate_test=false", "hydra.run.dir=weak"], cwd=tmp_path)
    assert result.returncode == 0
    gate = run(["seq2seq-evaluate", "model=weak/model", f"src={trained_run}/corpus/test.src",
                f"ref={trained_run}/corpus/test.tgt", "min_bleu=50"], cwd=tmp_path, check=False)
    assert gate.returncode == 1
    assert "below min_bleu=50" in gate.stderr


@pytest.mark.parametrize("args, message", [
    (["model=missing_dir", "src=a", "ref=b"], "model directory not found"),
    (["model=run/model", "src=corpus/nothing.src", "ref=corpus/test.tgt"], "file not found"),
    (["model=run/model", "src=corpus/test.src", "ref=corpus/train.tgt"], "has 100 lines but"),
    (["model=run/model", "src=corpus/test.src", "ref=corpus/test.tgt", "beam=0"], "beam=0"),
])
def test_evaluate_user_errors_are_one_line(trained_run, args, message):
    result = run_in_process(["seq2seq-evaluate", *args], cwd=trained_run)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "train.tgt").write_text("ONE\n"), "train.src has 3 lines but"),
    (lambda d: (d / "train.src").write_bytes(b"a b\nc \xff d\ne f\n"), "train.src:2: invalid UTF-8"),
    (lambda d: (d / "val.tgt").unlink(), "val.tgt: file not found"),
    (lambda d: (d / "train.src").write_text(""), "train.src: file is empty"),
])
def test_train_refuses_bad_corpora_in_one_line(tmp_path, damage, message):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "val"):
        (corpus / f"{split}.src").write_text("a b\nc d\ne f\n")
        (corpus / f"{split}.tgt").write_text("B A\nD C\nF E\n")
    damage(corpus)
    result = run_in_process(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "hydra.run.dir=run"],
                 cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
