"""seq2seq-train: compose the config, train with Lightning, export the model, score held-out data.

    seq2seq-train experiment=multi30k_de_en model.attention=luong_general trainer.max_epochs=20
    seq2seq-train experiment=tiny_shakespeare_char
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.plugins.io import TorchCheckpointIO
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seq2seq.bundle import load_state_dict, save_bundle
from seq2seq.checkpointing import RandomStateCheckpoint
from seq2seq.classification_system import ClassificationSystem
from seq2seq.cli.classify import evaluate_test_split
from seq2seq.cli.common import CONF_DIR, run_as_command
from seq2seq.cli.evaluate import format_scores
from seq2seq.data import read_parallel
from seq2seq.errors import UserError
from seq2seq.forecast_training import ForecastSystem, evaluate_forecaster
from seq2seq.forecasting import MODEL_TYPE as FORECASTER
from seq2seq.metrics import score_corpus
from seq2seq.generator import Generator
from seq2seq.systems import LanguageModelSystem, PlateauSchedule, TranslationSystem
from seq2seq.translator import Translator

log = logging.getLogger("seq2seq.train")


def build(config, **kwargs):
    """hydra.utils.instantiate, letting our own one-line errors through unwrapped."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise UserError(str(error).replace("\n", " ")) from None


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [build(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_loggers(cfg: DictConfig) -> list:
    return [build(c) for c in (cfg.get("logger") or {}).values() if c is not None]


INTEGER_TRAINER_SETTINGS = ("max_epochs", "max_steps", "log_every_n_steps", "accumulate_grad_batches",
                            "check_val_every_n_epoch", "num_sanity_val_steps", "num_nodes")


def check_trainer_settings(trainer: DictConfig) -> None:
    """Lightning asserts on some wrong types deep inside fit; say it up front, in one line."""
    for key in INTEGER_TRAINER_SETTINGS:
        value = trainer.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise UserError(f"trainer.{key}={value!r} must be a whole number")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not isinstance(clip, (int, float)):
        raise UserError(f"trainer.gradient_clip_val={clip!r} must be a number")


def precision_settings(cfg: DictConfig) -> dict:
    """Trainer arguments for `trainer.precision`.

    Lightning turns fp16 on a CPU into bf16 without loss scaling; here `16-mixed` means fp16
    with a loss scaler on every device, so the scaled path can be run and tested without a GPU.
    """
    precision = str(cfg.trainer.get("precision"))
    if precision not in ("16-mixed", "16") or cfg.trainer.get("accelerator") != "cpu":
        return {}
    if cfg.model.get("cell", "fused") != "explicit":
        raise UserError("trainer.precision=16-mixed on CPU needs model.cell=explicit: oneDNN has no float16 LSTM "
                        "(bf16-mixed is the fast choice on CPU)")
    return {"precision": None, "plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]}


class LastValidationStep(L.Callback):
    """Remembers the optimizer step of the last validation run."""

    def __init__(self) -> None:
        self.step = -1

    def on_validation_end(self, trainer, pl_module) -> None:
        self.step = trainer.global_step


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a kill, a full disk or an unwritable
    folder during a save leaves the previous checkpoint as it was."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise UserError(f"cannot save checkpoint {path} ({error.strerror or error}); "
                            "the previous checkpoint is kept") from None


class SaveOnInterrupt(L.Callback):
    """Ctrl-C: write a resumable checkpoint and say how to continue."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "interrupted.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            return
        trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            print(f"\ninterrupted at epoch {trainer.current_epoch} step {trainer.global_step}; continue with "
                  f"resume={self.path}", file=sys.stderr)


def check_resumable(path: Path, system: L.LightningModule) -> None:
    """Refuse, in one line, a checkpoint that is missing, corrupt, unsafe or of another model."""
    if not path.is_file():
        raise UserError(f"resume={path}: checkpoint not found")
    checkpoint = load_state_dict(path)  # tensors and plain data only: a planted pickle is refused
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"resume={path}: not a training checkpoint (no state_dict); use checkpoints/*.ckpt of a run")
    expected = {k: tuple(v.shape) for k, v in system.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if expected != found:
        differing = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found.get(k)]
        raise UserError(f"resume={path}: the checkpoint is of another model than this config builds "
                        f"(first difference: {differing[0]}); resume with the run's own config")


def export_model(trainer: L.Trainer, system: L.LightningModule, datamodule, run_dir: Path,
                 cfg: DictConfig, last_validation: LastValidationStep) -> Path | None:
    """Write `<run_dir>/model` from the best validated weights.

    Training can stop between validations (max_time, max_steps, Ctrl-C); the final weights are
    then validated once more and kept if they beat the best checkpoint.
    """
    checkpoint = trainer.checkpoint_callback
    monitor = checkpoint.monitor if checkpoint and checkpoint.monitor else VALIDATION_METRIC[cfg.task.name]
    larger_wins = checkpoint.mode == "max" if checkpoint else monitor in LARGER_IS_BETTER
    sign = 1.0 if larger_wins else -1.0
    best_path = checkpoint.best_model_path if checkpoint else ""
    best_score = checkpoint.best_model_score if checkpoint else None
    final_score = None
    if trainer.global_step != last_validation.step:
        results = trainer.validate(system, datamodule=datamodule, verbose=False)
        final_score = results[0].get(monitor) if results else None
    best_wins = best_score is not None and (final_score is None or sign * float(best_score) >= sign * final_score)
    if best_path and best_wins:
        state = load_state_dict(best_path)["state_dict"]
        system.model.load_state_dict(
            {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
        chosen = float(best_score)
        log.info("exporting best checkpoint %s (%s %.4f)", best_path, monitor, chosen)
    else:
        chosen = final_score
        log.info("exporting final weights (%s %s)", monitor, "n/a" if chosen is None else f"{chosen:.4f}")
    if not trainer.is_global_zero:
        return None  # under DDP every rank holds the same weights; one writes them
    trained = {"epochs": trainer.current_epoch, "steps": trainer.global_step, monitor.replace("/", "_"): chosen}
    if cfg.task.name == "language_model":
        extra = {"data": {"data_dir": str(Path(datamodule.data_dir).resolve()), "train_file": datamodule.train_file},
                 "trained": trained}
        return save_bundle(run_dir / "model", system.model, "lstm_lm", datamodule.tokenizer_files(), extra)
    if cfg.task.name == "classification":
        return save_bundle(run_dir / "model", system.model, "lstm_classifier", datamodule.tokenizer_files(),
                           datamodule.bundle_extra() | {"trained": trained})
    if cfg.task.name == "forecast":
        return save_bundle(run_dir / "model", system.model, FORECASTER, {}, datamodule.describe() | {"trained": trained})
    extra = {
        "data": {"data_dir": str(Path(datamodule.data_dir).resolve()), "src_lang": datamodule.src_lang,
                 "tgt_lang": datamodule.tgt_lang},
        "decoding": OmegaConf.to_container(cfg.decoding, resolve=True),
        "trained": trained,
    }
    return save_bundle(run_dir / "model", system.model, "seq2seq", datamodule.tokenizer_files(), extra)


def evaluate_test(model_dir: Path, datamodule, cfg: DictConfig, run_dir: Path) -> None:
    """Translate and score the test split with the exported model."""
    files = datamodule.test_files
    if files is None:
        return
    src_lines, ref_lines = read_parallel(*files)
    translator = Translator.load(model_dir, device=cfg_device(cfg))
    d = cfg.decoding
    hyps = translator.translate(src_lines, beam=d.beam, length_penalty=d.length_penalty,
                                max_len_ratio=d.max_len_ratio, max_len_offset=d.max_len_offset,
                                batch_tokens=d.batch_tokens)
    scores = score_corpus(hyps, ref_lines)
    (run_dir / f"test.hyp.{datamodule.tgt_lang}").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (run_dir / "test_scores.json").write_text(json.dumps(
        {name: s.as_dict() for name, s in scores.items()} | {"beam": d.beam, "src": str(files[0])}, indent=2) + "\n")
    print(f"\nTest set {files[0].name} -> {files[1].name}, beam {d.beam}:")
    print(format_scores(scores))
    print("\nSample translations:")
    for i in range(min(3, len(src_lines))):
        print(f"  src: {src_lines[i]}\n  ref: {ref_lines[i]}\n  hyp: {hyps[i]}")


def evaluate_held_out_text(model_dir: Path, datamodule, cfg: DictConfig, run_dir: Path) -> None:
    """Score the held-out text with the exported model, and show what it writes."""
    generator = Generator.load(model_dir, device=cfg_device(cfg))
    report = generator.score(datamodule.valid_text, streams=datamodule.valid_streams,
                             warmup=datamodule.valid_warmup)
    (run_dir / "valid_scores.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nHeld-out text ({report['chars']:,} characters): {report['nats_per_char']:.4f} nats/char, "
          f"{report['bits_per_char']:.4f} bits/char, perplexity {report['perplexity']:.3f}")
    task = cfg.task
    sample = generator.generate(task.sample_prompt, max_chars=task.sample_chars,
                                temperature=task.sample_temperature, seed=cfg.seed)
    print(f"\nSample (temperature {task.sample_temperature}):\n{task.sample_prompt}{sample}")


def cfg_device(cfg: DictConfig) -> str | None:
    return "cpu" if cfg.trainer.get("accelerator") == "cpu" else None


SYSTEMS = {"translation": TranslationSystem, "language_model": LanguageModelSystem,
           "classification": ClassificationSystem, "forecast": ForecastSystem}
VALIDATION_METRIC = {"translation": "val/bleu", "language_model": "val/loss", "classification": "val/accuracy",
                     "forecast": "val/mae"}
LARGER_IS_BETTER = {"val/bleu", "val/chrf", "val/accuracy", "val/macro_f1"}


@run_as_command
def train(cfg: DictConfig) -> Path | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    check_trainer_settings(cfg.trainer)
    datamodule = build(cfg.data, tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
                             run_dir=str(run_dir), _convert_="all")
    if cfg.task.name == "language_model":
        # A character vocabulary is as large as the training text makes it: build it first.
        datamodule.prepare_data()
        datamodule.setup("fit")
        model = build(cfg.model, vocab_size=datamodule.tokenizer.vocab_size)
    elif cfg.task.name == "classification":
        # The tokenizer and the label files fix the model's input and output sizes.
        datamodule.prepare_data()
        datamodule.setup("fit")
        model = build(cfg.model, vocab_size=datamodule.tokenizer.vocab_size, num_classes=len(datamodule.labels))
    elif cfg.task.name == "forecast":
        # The model carries the scale fitted on the training span.
        datamodule.prepare_data()
        datamodule.setup("fit")
        model = build(cfg.model, **datamodule.model_arguments())
    else:
        if cfg.model.get("share_embeddings") and not cfg.tokenizer.get("joint", True):
            raise UserError("model.share_embeddings=true needs tokenizer.joint=true: with separate vocabularies "
                            "the same id is a different piece on each side")
        model = build(cfg.model)
    task = OmegaConf.to_container(cfg.task, resolve=True)
    task_name = task.pop("name")
    if task_name not in SYSTEMS:
        raise UserError(f"task.name={task_name!r} is not one of {', '.join(SYSTEMS)}")
    system = SYSTEMS[task_name](model, **OmegaConf.to_container(cfg.optim, resolve=True), **task)
    log.info("model: %s parameters", f"{sum(p.numel() for p in model.parameters()):,}")
    last_validation = LastValidationStep()
    loggers = build_loggers(cfg)
    callbacks = [c for c in build_callbacks(cfg)
                 if loggers or not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    # The plateau step comes before last.ckpt is written after a validation: callbacks run in order.
    callbacks = [PlateauSchedule(), RandomStateCheckpoint()] + callbacks
    precision = precision_settings(cfg)
    trainer: L.Trainer = build(cfg.trainer, logger=loggers or False,
                               plugins=[AtomicCheckpointIO(), *precision.pop("plugins", [])], **precision,
                               callbacks=callbacks + [last_validation,
                                                    SaveOnInterrupt(run_dir / "checkpoints")])
    resume = cfg.get("resume")
    if resume:
        check_resumable(Path(resume), system)
    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=resume)
    except SystemExit:
        if trainer.interrupted:  # Lightning exits after Ctrl-C; SaveOnInterrupt has saved the run
            sys.exit(130)
        raise
    if system.stopped_reason:
        last = run_dir / "checkpoints" / "last.ckpt"
        kept = f"; the last good checkpoint is {last}" if last.is_file() else ""
        raise UserError(system.stopped_reason + kept)
    model_dir = export_model(trainer, system, datamodule, run_dir, cfg, last_validation)
    if model_dir is None:
        return None
    print(f"model written to {model_dir}")
    if cfg.get("evaluate_test", True):
        if task_name == "language_model":
            evaluate_held_out_text(model_dir, datamodule, cfg, run_dir)
        elif task_name == "classification":
            evaluate_test_split(model_dir, datamodule, run_dir, cfg_device(cfg))
        elif task_name == "forecast":
            evaluate_forecaster(model_dir, datamodule, run_dir, cfg_device(cfg))
        else:
            evaluate_test(model_dir, datamodule, cfg, run_dir)
    return model_dir


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
