"""Exact resumption: a training process killed with SIGKILL continues from its last checkpoint
and ends with the weights an uninterrupted run ends with."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from seq2seq.bundle import load_state_dict
from tests.helpers import BIN, TINY_REVERSAL, make_reversal_corpus, run

# Dropout on, so the random state must be restored too; a step checkpoint every 4 steps.
TRAINING = [*TINY_REVERSAL, "data.data_dir=corpus", "model.dropout=0.2", "trainer.max_epochs=3",
            "callbacks.last_checkpoint.every_n_train_steps=4", "evaluate_test=false"]


def checkpoint_step(path: Path) -> int | None:
    try:
        return int(load_state_dict(path)["global_step"])
    except Exception:  # not written yet
        return None


# Subword regularization: the segmentation stream must continue too.
SAMPLED = ["tokenizer.model_type=unigram", "tokenizer.vocab_size=40", "tokenizer.sampling.alpha=0.1"]


def start_training(tmp_path: Path, run_dir: str, training: list[str] = TRAINING) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "seq2seq-train"), *training, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))


@pytest.mark.slow
@pytest.mark.parametrize("segmentation", [[], SAMPLED], ids=["fixed", "sampled"])
def test_sigkill_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(tmp_path, segmentation):
    training = [*TRAINING, *segmentation]
    make_reversal_corpus(tmp_path / "corpus", {"train": 1000, "val": 30, "test": 10}, seed=5)
    run(["seq2seq-train", *training, "hydra.run.dir=whole"], cwd=tmp_path)
    whole = load_state_dict(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    steps_per_epoch = whole["global_step"] // 3
    assert steps_per_epoch > 8

    # Kill the second run as soon as it has written a checkpoint in the middle of epoch 2.
    process = start_training(tmp_path, "killed", training)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while True:
        step = checkpoint_step(last)
        if step is not None and step > steps_per_epoch + 2:
            break
        assert process.poll() is None, f"training ended before it could be killed: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed = load_state_dict(last)  # the kill never leaves a half-written last.ckpt
    assert killed["global_step"] % steps_per_epoch != 0, "the checkpoint must be a mid-epoch one"
    assert killed["global_step"] < whole["global_step"]

    run(["seq2seq-train", *training, "hydra.run.dir=resumed", f"resume={last}"], cwd=tmp_path)
    resumed = load_state_dict(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == whole["global_step"]
    # Same batches, same dropout masks, same optimizer and schedule state: on CPU the weights
    # come out bit-identical (max difference 0.0 when this test was written); the tolerance only
    # allows for a different summation order on other machines.
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-6, atol=1e-7, msg=key)
    assert resumed["plateau_schedule"] == whole["plateau_schedule"]
    assert resumed["plateau_schedule"]["last_epoch"] == 3  # stepped after each of the 3 validations
    torch.testing.assert_close(resumed["optimizer_states"][0]["state"], whole["optimizer_states"][0]["state"],
                               rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_a_language_model_resumed_mid_epoch_carries_its_stream_state_on(tmp_path):
    from tests.helpers import PATTERN_TEXT, TINY_CHAR_LM

    (tmp_path / "text.txt").write_text(PATTERN_TEXT, encoding="utf-8")
    # 47 steps an epoch; samples every 20 steps must not disturb the random state either.
    settings = [*TINY_CHAR_LM, "trainer.max_epochs=1", "model.dropout=0.1", "evaluate_test=false"]
    run(["seq2seq-train", *settings, "hydra.run.dir=whole"], cwd=tmp_path)
    run(["seq2seq-train", *settings, "trainer.max_steps=20", "callbacks.last_checkpoint.every_n_train_steps=20",
         "hydra.run.dir=part"], cwd=tmp_path)
    part = load_state_dict(tmp_path / "part" / "checkpoints" / "last.ckpt")
    assert part["global_step"] == 20 and part["stream_state"]["state"] is not None
    run(["seq2seq-train", *settings, f"resume={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}",
         "hydra.run.dir=resumed"], cwd=tmp_path)
    whole = load_state_dict(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    resumed = load_state_dict(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == whole["global_step"] > 40
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-6, atol=1e-7, msg=key)
