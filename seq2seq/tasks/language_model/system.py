"""LanguageModelSystem: the LightningModule that trains a `LanguageModel`, and what the
training run calls for this task."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from seq2seq.config import build
from seq2seq.rnn import LSTMState
from seq2seq.runtime import evaluation_device
from seq2seq.tasks.language_model.api import TextCodec
from seq2seq.tasks.language_model.model import (
    LanguageModel,
    ScoringStreams,
    detach_state,
    generate_ids,
    loss_report,
    score_streams,
)
from seq2seq.training import Optimization, TaskSystem

log = logging.getLogger(__name__)


class LanguageModelSystem(TaskSystem):
    """Trains a `LanguageModel` with truncated BPTT over contiguous streams.

    The LSTM state at the end of one training window is the (detached) start state of the next,
    since window i+1 of each stream continues window i; it is reset at the start of every epoch.
    Validation scores the whole held-out text from a fresh state and leaves the training
    state untouched. Every `sample_every_n_steps` a sample of text is written to the log.
    """

    task_name = "language_model"

    def __init__(
        self,
        model: LanguageModel,
        optimization: Optimization | None = None,
        sample_every_n_steps: int = 500,
        sample_chars: int = 300,
        sample_prompt: str = "\n",
        sample_temperature: float = 0.8,
    ) -> None:
        super().__init__(model, optimization)
        self.sample_every_n_steps, self.sample_chars = sample_every_n_steps, sample_chars
        self.sample_prompt, self.sample_temperature = sample_prompt, sample_temperature
        self.train_state: LSTMState | None = None
        self._val_sum, self._val_count = 0.0, 0
        self._chars_seen, self._epoch_start = 0, time.perf_counter()

    def on_train_epoch_start(self) -> None:
        self.train_state = None
        self._chars_seen, self._epoch_start = 0, time.perf_counter()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # A resume mid-epoch continues each stream from where it was, as training would have.
        checkpoint["stream_state"] = {"world_size": self.trainer.world_size,
                                      "state": list(self.train_state) if self.train_state else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("stream_state") or {}
        # Only rank 0's streams are in the file: with several ranks, the others' would be wrong.
        if saved.get("state") is not None and saved.get("world_size") == 1 == self.trainer.world_size:
            self.train_state = tuple(saved["state"])

    def tokens_in(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        """Characters predicted in a training batch, for the progress log's throughput."""
        return batch[1].numel()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        if self.train_state is not None and self.train_state[0].device != inputs.device:
            self.train_state = tuple(s.to(inputs.device) for s in self.train_state)
        logits, state = self.model(inputs, self.train_state)
        self.train_state = detach_state(state)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        self._chars_seen += targets.numel()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        every = self.sample_every_n_steps
        if every and self.global_step % every == 0 and self.trainer.is_global_zero:
            log.info("sample at step %d:\n%s", self.global_step, self.sample_text())

    def on_train_epoch_end(self) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        if elapsed > 0:
            self.log("train/chars_per_s", self._chars_seen / elapsed, sync_dist=True, reduce_fx="sum")

    def sample_text(self) -> str:
        codec = TextCodec(self.trainer.datamodule.tokenizer)
        was_training = self.model.training
        self.model.eval()
        try:
            # A generator of its own: logging a sample must not change the dropout masks that
            # follow, or a resumed run (which skips the samples before it) would train differently.
            generator = torch.Generator(device=self.device).manual_seed(self.global_step)
            steps = generate_ids(self.model, codec.encode(self.sample_prompt) or codec.encode("\n"),
                                 self.sample_chars, temperature=self.sample_temperature, generator=generator)
            text = codec.decode([int(t) for t in steps])
        finally:
            self.model.train(was_training)
        return self.sample_prompt + text

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = 0.0, 0

    def validation_step(self, batch: ScoringStreams, batch_idx: int) -> None:
        total, count = score_streams(self.model, batch)
        self._val_sum += total
        self._val_count += count

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor([self._val_sum, float(self._val_count)], dtype=torch.float64, device=self.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        report = loss_report(float(totals[0]), int(totals[1]))
        self.log("val/loss", report["nats_per_char"], prog_bar=True)
        self.log("val/bpc", report["bits_per_char"])
        self.log("val/ppl", report["perplexity"])
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            log.info("epoch %d step %d: val %.4f nats/char, %.4f bits/char over %s characters",
                     self.current_epoch, self.global_step, report["nats_per_char"], report["bits_per_char"],
                     f"{report['chars']:,}")



# ----------------------------------------------------------------- what the training run calls
def build_model(cfg: DictConfig, datamodule) -> LanguageModel:
    # A character vocabulary is as large as the training text makes it: build it first.
    datamodule.prepare_data()
    datamodule.setup("fit")
    return build(cfg.model, vocab_size=datamodule.tokenizer.vocab_size)


def export_contents(datamodule, cfg: DictConfig) -> tuple[dict, dict]:
    """Tokenizer files and model.json extras of the exported model directory."""
    return datamodule.tokenizer_files(), {
        "data": {"data_dir": str(Path(datamodule.data_dir).resolve()), "train_file": datamodule.train_file}}


def evaluate_test(model_dir: Path, datamodule, cfg: DictConfig, run_dir: Path) -> None:
    """Score the held-out text with the exported model, and show what it writes."""
    from seq2seq.tasks.language_model.api import Generator

    generator = Generator.load(model_dir, device=evaluation_device(cfg.trainer))
    report = generator.score(datamodule.valid_text, streams=datamodule.valid_streams,
                             warmup=datamodule.valid_warmup)
    (run_dir / "valid_scores.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nHeld-out text ({report['chars']:,} characters): {report['nats_per_char']:.4f} nats/char, "
          f"{report['bits_per_char']:.4f} bits/char, perplexity {report['perplexity']:.3f}")
    task = cfg.task
    sample = generator.generate(task.sample_prompt, max_chars=task.sample_chars,
                                temperature=task.sample_temperature, seed=cfg.seed)
    print(f"\nSample (temperature {task.sample_temperature}):\n{task.sample_prompt}{sample}")
