"""Faults during training: non-finite losses are skipped and stop training; Ctrl-C saves a checkpoint."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from seq2seq.checkpointing import AtomicCheckpointIO
from seq2seq.errors import UserError
from seq2seq.tasks.language_model.model import LanguageModel
from seq2seq.tasks.language_model.system import LanguageModelSystem
from seq2seq.training import Optimization
from tests.helpers import BIN, TINY_REVERSAL, UNICODE_TEXT, char_datamodule, make_reversal_corpus, run


class PoisonedModel(LanguageModel):
    """A language model whose loss turns NaN at the steps listed in `poisoned` (counted by calls)."""

    def __init__(self, *args, poisoned: set[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.poisoned, self.calls = poisoned, 0

    def forward(self, tokens, state=None):
        logits, state = super().forward(tokens, state)
        if self.training:
            self.calls += 1
            if self.calls in self.poisoned:
                logits = logits * float("nan")
        return logits, state


def fit(tmp_path: Path, poisoned: set[int], max_nonfinite_steps: int, max_steps: int):
    data = char_datamodule(tmp_path, UNICODE_TEXT, batch_streams=4, bptt=16)
    torch.manual_seed(0)
    model = PoisonedModel(data.tokenizer.vocab_size, embed_dim=8, hidden_size=16, dropout=0.0, poisoned=poisoned)
    optimization = Optimization(lr=0.01, scheduler="none", max_nonfinite_steps=max_nonfinite_steps)
    system = LanguageModelSystem(model, optimization, sample_every_n_steps=0)
    snapshots = {}

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            snapshots[trainer.global_step] = [p.detach().clone() for p in model.parameters()]

    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0, callbacks=[Snapshot()])
    trainer.fit(system, datamodule=data)
    return system, trainer, model, snapshots


def test_an_isolated_nan_step_is_skipped_and_training_goes_on(tmp_path):
    system, trainer, model, _ = fit(tmp_path, poisoned={3}, max_nonfinite_steps=3, max_steps=8)
    assert system.nonfinite_steps == 1 and system.stopped_reason is None
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.calls == 8


def test_nan_steps_in_a_row_stop_training_with_the_weights_untouched(tmp_path):
    system, trainer, model, snapshots = fit(tmp_path, poisoned=set(range(4, 100)), max_nonfinite_steps=3,
                                            max_steps=50)
    assert system.nonfinite_steps == 3 and "3 steps in a row had a non-finite loss" in system.stopped_reason
    assert model.calls == 6  # 3 good steps, then 3 bad ones
    last_good = snapshots[3]
    assert all(torch.equal(a, b) for a, b in zip(last_good, model.parameters()))


def test_learning_rate_must_be_positive_and_finite():
    model = LanguageModel(30, embed_dim=8, hidden_size=16)
    for lr in (float("nan"), 0.0, -1.0):
        with pytest.raises(UserError, match="optim.lr"):
            LanguageModelSystem(model, Optimization(lr=lr))


def test_a_failed_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)
    before = target.read_bytes()

    def disk_full(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="No space left on device.*previous checkpoint is kept"):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    with pytest.raises(UserError, match="cannot save checkpoint"):
        io.save_checkpoint({"step": torch.tensor(3)}, tmp_path / "checkpoints" / "last.ckpt" / "inside.ckpt")


def test_ctrl_c_in_the_middle_of_a_save_leaves_no_partial_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)
    before = target.read_bytes()

    def interrupted(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_ctrl_c_during_training_saves_a_resumable_checkpoint(tmp_path):
    make_reversal_corpus(tmp_path / "corpus", {"train": 3000, "val": 50, "test": 20}, seed=3)
    command = [str(BIN / "seq2seq-train"), *TINY_REVERSAL, "data.data_dir=corpus", "trainer.max_epochs=1000",
               "hydra.run.dir=run", "trainer.log_every_n_steps=1"]
    # SIGINT as a terminal would deliver it, even when this test run was started in the background.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONWARNINGS="ignore"),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = tmp_path / "run" / "logs" / "metrics.csv"
    deadline = time.monotonic() + 300
    # Interrupt once training is under way and has validated once (so a checkpoint exists too).
    while not (metrics.is_file() and "val/bleu" in metrics.read_text() and len(metrics.read_text().splitlines()) > 5):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    checkpoint = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    assert checkpoint.is_file() and f"resume={checkpoint}" in stderr
    assert not list(checkpoint.parent.glob(".*partial"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    interrupted_at = state["global_step"]
    resumed = run(["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "hydra.run.dir=run2",
                   f"resume={checkpoint}", f"trainer.max_epochs={state['epoch'] + 2}"], cwd=tmp_path)
    assert "model written to" in resumed.stdout
    final = torch.load(tmp_path / "run2" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] > interrupted_at
