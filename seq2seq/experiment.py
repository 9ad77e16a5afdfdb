"""One training run of any task, from a composed config to a model directory and its test scores.

The task table (`seq2seq.tasks`) says what differs between tasks; nothing here names a task.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins import MixedPrecision
from omegaconf import DictConfig, OmegaConf

from seq2seq.bundle import load_state_dict, save_bundle
from seq2seq.checkpointing import (
    AtomicCheckpointIO,
    LastValidationStep,
    RandomStateCheckpoint,
    SaveOnInterrupt,
    check_resumable,
)
from seq2seq.config import build
from seq2seq.errors import UserError
from seq2seq.tasks import Task, task_named
from seq2seq.training import Optimization, PlateauSchedule

log = logging.getLogger("seq2seq.train")

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


def build_trainer(cfg: DictConfig, run_dir: Path, last_validation: LastValidationStep) -> L.Trainer:
    loggers = [build(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    # The plateau step comes before last.ckpt is written after a validation: callbacks run in order.
    callbacks = [PlateauSchedule(), RandomStateCheckpoint(), *callbacks, last_validation,
                 SaveOnInterrupt(run_dir / "checkpoints")]
    precision = precision_settings(cfg)
    return build(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                 plugins=[AtomicCheckpointIO(), *precision.pop("plugins", [])], **precision)


def export_model(task: Task, trainer: L.Trainer, system: L.LightningModule, datamodule, run_dir: Path,
                 cfg: DictConfig, last_validation: LastValidationStep) -> Path | None:
    """Write `<run_dir>/model` from the best validated weights.

    Training can stop between validations (max_time, max_steps, Ctrl-C); the final weights are
    then validated once more and kept if they beat the best checkpoint.
    """
    checkpoint = trainer.checkpoint_callback
    monitor = checkpoint.monitor if checkpoint and checkpoint.monitor else task.monitor
    sign = 1.0 if (checkpoint.mode == "max" if checkpoint else task.larger_is_better) else -1.0
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
    tokenizer_files, extra = task.module("system").export_contents(datamodule, cfg)
    return save_bundle(run_dir / "model", system.model, task.model_type, tokenizer_files,
                       extra | {"trained": trained})


def train(cfg: DictConfig, run_dir: Path) -> tuple[Path | None, float | None]:
    """Train, export and test as `cfg` says: (the model directory, the best validation value of
    the task's monitored metric). Under DDP only rank 0 returns a directory."""
    task = task_named(cfg.task.name)
    hooks = task.module("system")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    check_trainer_settings(cfg.trainer)
    datamodule = build(cfg.data, tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
                       run_dir=str(run_dir), _convert_="all")
    model = hooks.build_model(cfg, datamodule)
    task_settings = OmegaConf.to_container(cfg.task, resolve=True)
    task_settings.pop("name")
    system = task.system()(model, Optimization(**OmegaConf.to_container(cfg.optim, resolve=True)), **task_settings)
    log.info("model: %s parameters", f"{sum(p.numel() for p in model.parameters()):,}")
    last_validation = LastValidationStep()
    trainer = build_trainer(cfg, run_dir, last_validation)
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
    model_dir = export_model(task, trainer, system, datamodule, run_dir, cfg, last_validation)
    best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    best = None if best is None else float(best)
    if model_dir is None:
        return None, best
    print(f"model written to {model_dir}")
    if cfg.get("evaluate_test", True):
        hooks.evaluate_test(model_dir, datamodule, cfg, run_dir)
    return model_dir, best
