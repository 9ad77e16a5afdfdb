"""TranslationSystem: the LightningModule that trains a `Seq2Seq`.

Label-smoothed cross-entropy over the real target tokens; validation scores loss, BLEU and chrF
over the whole validation set (each sentence once, whatever the number of ranks), and BLEU picks
the checkpoint. Below it, what the training run calls for this task."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from seq2seq.config import build
from seq2seq.errors import UserError
from seq2seq.metrics import format_scores, score_corpus
from seq2seq.runtime import evaluation_device
from seq2seq.tasks.translation.corpus import Batch
from seq2seq.tasks.translation.options import DecodingOptions
from seq2seq.tasks.translation.search import decode
from seq2seq.text import read_parallel
from seq2seq.tokenizer import PAD_ID
from seq2seq.training import Optimization, TaskSystem

log = logging.getLogger(__name__)

# Target positions projected onto the vocabulary at a time when scoring without gradients.
VALIDATION_LOSS_ROWS = 768


class TranslationSystem(TaskSystem):
    """Trains a `Seq2Seq`; validates with loss, BLEU and chrF over the whole validation set."""

    task_name = "translation"

    def __init__(
        self,
        model: torch.nn.Module,
        optimization: Optimization | None = None,
        label_smoothing: float = 0.1,
        val_beam: int = 1,
        max_len_ratio: float = 2.0,
        max_len_offset: int = 10,
        num_val_samples: int = 3,
        shortlist: dict | None = None,  # how export builds the shortlist (`export_files`), not training
    ) -> None:
        super().__init__(model, optimization)
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"task.label_smoothing={label_smoothing} must be in [0, 1)")
        self.label_smoothing = label_smoothing
        self.val_beam, self.max_len_ratio, self.max_len_offset = val_beam, max_len_ratio, max_len_offset
        self.num_val_samples = num_val_samples
        self._val_outputs: list[tuple[int, str]] = []
        self._val_loss_sum = 0.0
        self._val_tokens = 0
        self._tokens_seen = 0
        self._epoch_start = time.perf_counter()

    # ------------------------------------------------------------------ loss
    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Label-smoothed cross-entropy per target token, and the number of target tokens."""
        outputs = self.model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, O)
        real = batch.tgt_out != PAD_ID  # (B, T)
        # Project only real target positions: padding would cost a full vocabulary product each.
        logits = self.model.project(outputs[real])  # (N, V)
        loss = F.cross_entropy(logits.float(), batch.tgt_out[real], label_smoothing=self.label_smoothing)
        return loss, int(real.sum())

    def summed_loss(self, batch: Batch, rows: int = VALIDATION_LOSS_ROWS) -> tuple[float, int]:
        """The summed label-smoothed cross-entropy of a batch and its target tokens, without
        gradients, projecting at most `rows` target positions at a time.

        A validation batch holds up to 8,192 target tokens; one (tokens, vocabulary) product over
        all of them is 260 MB at 8k pieces, and the log-softmax another. Slices of 768 rows
        (25 MB, a training batch's size) keep validation's memory at the training step's.
        """
        outputs = self.model(batch.src, batch.src_lengths, batch.tgt_in)
        real = batch.tgt_out != PAD_ID
        outputs, targets = outputs[real], batch.tgt_out[real]
        total = 0.0
        for start in range(0, targets.numel(), rows):
            logits = self.model.project(outputs[start:start + rows])
            total += float(F.cross_entropy(logits.float(), targets[start:start + rows],
                                           label_smoothing=self.label_smoothing, reduction="sum"))
        return total, targets.numel()

    def tokens_in(self, batch: Batch) -> int:
        """Target tokens of a training batch, for the progress log's throughput."""
        return batch.num_tgt_tokens

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, tokens = self.loss(batch)
        self._tokens_seen += tokens
        self.log("train/loss", loss, prog_bar=True, batch_size=tokens)
        return loss

    def on_train_epoch_start(self) -> None:
        self._tokens_seen, self._epoch_start = 0, time.perf_counter()

    def on_train_epoch_end(self) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        if elapsed > 0:
            self.log("train/tgt_tokens_per_s", self._tokens_seen / elapsed, sync_dist=True, reduce_fx="sum")

    # ------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_outputs, self._val_loss_sum, self._val_tokens = [], 0.0, 0

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss_sum, tokens = self.summed_loss(batch)
        self._val_loss_sum += loss_sum
        self._val_tokens += tokens
        hyps = decode(self.model, batch.src, batch.src_lengths, beam_size=self.val_beam,
                      max_len_ratio=self.max_len_ratio, max_len_offset=self.max_len_offset)
        texts = self.trainer.datamodule.tgt_tokenizer.decode([h[0].tokens for h in hyps])
        self._val_outputs.extend(zip(batch.indices.tolist(), texts))

    def on_validation_epoch_end(self) -> None:
        outputs, loss_sum, tokens = self._val_outputs, self._val_loss_sum, self._val_tokens
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (outputs, loss_sum, tokens))
            outputs = [o for part in gathered for o in part[0]]
            loss_sum = sum(part[1] for part in gathered)
            tokens = sum(part[2] for part in gathered)
        by_index = dict(outputs)
        if len(by_index) != len(outputs):
            # The validation loader gives each rank distinct batches; a repeat would skew BLEU.
            raise RuntimeError(f"validation decoded {len(outputs) - len(by_index)} sentences more than once")
        refs = self.trainer.datamodule.valid_refs
        if len(by_index) != len(refs):
            # A partial validation (limit_val_batches, fast_dev_run) scores what it decoded.
            refs_used = [refs[i] for i in sorted(by_index)]
        else:
            refs_used = refs
        hyps = [by_index[i] for i in sorted(by_index)]
        scores = score_corpus(hyps, refs_used, ("bleu", "chrf"))
        val_loss = loss_sum / max(tokens, 1)
        # Every rank holds the same gathered values, so no further reduction is needed.
        self.log("val/loss", val_loss, prog_bar=True)
        self.log("val/ppl", math.exp(min(val_loss, 50.0)))
        self.log("val/bleu", scores["bleu"].score, prog_bar=True)
        self.log("val/chrf", scores["chrf"].score)
        self.log("val/sentences", float(len(hyps)))
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            srcs = self.trainer.datamodule.valid_srcs
            lines = [f"epoch {self.current_epoch} step {self.global_step}: val loss {val_loss:.3f} "
                     f"BLEU {scores['bleu'].score:.2f} chrF {scores['chrf'].score:.2f}"]
            for i in sorted(by_index)[: self.num_val_samples]:
                lines.append(f"  src: {srcs[i]}\n  ref: {refs[i]}\n  hyp: {by_index[i]}")
            log.info("\n".join(lines))

    # ------------------------------------------------------------- optimizer


# ----------------------------------------------------------------- what the training run calls
def build_model(cfg: DictConfig, datamodule) -> torch.nn.Module:
    # The decoding defaults the model directory will record, checked before training, not after.
    DecodingOptions().updated(OmegaConf.to_container(cfg.decoding, resolve=True))
    if cfg.model.get("share_embeddings") and not cfg.tokenizer.get("joint", True):
        raise UserError("model.share_embeddings=true needs tokenizer.joint=true: with separate vocabularies "
                        "the same id is a different piece on each side")
    return build(cfg.model)


def export_contents(datamodule, cfg: DictConfig) -> tuple[dict, dict]:
    """Tokenizer files and model.json extras of the exported model directory."""
    return datamodule.tokenizer_files(), {
        "data": {"data_dir": str(Path(datamodule.data_dir).resolve()), "src_lang": datamodule.src_lang,
                 "tgt_lang": datamodule.tgt_lang, "train_prefix": datamodule.prefixes["train"]},
        "decoding": OmegaConf.to_container(cfg.decoding, resolve=True),
    }


def export_files(datamodule, cfg: DictConfig, run_dir: Path) -> dict[str, Path]:
    """The vocabulary shortlist, built from the training corpus as encoded for training
    (`task.shortlist`; build=false leaves it out)."""
    settings = dict(cfg.task.get("shortlist") or {})
    if not settings.pop("build", True):
        return {}
    from seq2seq.tasks.translation.shortlist import SHORTLIST_FILE, build_from_dataset

    path = run_dir / SHORTLIST_FILE
    build_from_dataset(datamodule.train_set, datamodule.src_tokenizer, datamodule.tgt_tokenizer,
                       settings).save(path)
    return {SHORTLIST_FILE: path}


def evaluate_test(model_dir: Path, datamodule, cfg: DictConfig, run_dir: Path) -> None:
    """Translate and score the test split with the exported model."""
    from seq2seq.tasks.translation.api import Translator

    files = datamodule.test_files
    if files is None:
        return
    src_lines, ref_lines = read_parallel(*files)
    translator = Translator.load(model_dir, device=evaluation_device(cfg.trainer))
    d = translator.default_options  # model.json's `decoding`: cfg.decoding as exported
    hyps = translator.translate(src_lines, d)
    scores = score_corpus(hyps, ref_lines)
    (run_dir / f"test.hyp.{datamodule.tgt_lang}").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (run_dir / "test_scores.json").write_text(json.dumps(
        {name: s.as_dict() for name, s in scores.items()} | {"beam": d.beam, "src": str(files[0])}, indent=2) + "\n")
    print(f"\nTest set {files[0].name} -> {files[1].name}, beam {d.beam}:")
    print(format_scores(scores))
    print("\nSample translations:")
    for i in range(min(3, len(src_lines))):
        print(f"  src: {src_lines[i]}\n  ref: {ref_lines[i]}\n  hyp: {hyps[i]}")
