"""One training run of any task, from a composed config to a model directory and its test scores.

The task table (`seq2seq.tasks`) says what differs between tasks; nothing here names a task.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins import MixedPrecision
from omegaconf import DictConfig, OmegaConf, open_dict

from seq2seq.bundle import WEIGHTS_FILE, load_state_dict, read_bundle_config, save_bundle
from seq2seq.checkpointing import (
    AtomicCheckpointIO,
    LastValidationStep,
    RandomStateCheckpoint,
    SaveOnInterrupt,
    check_resumable,
)
from seq2seq.config import build
from seq2seq.errors import UserError
from seq2seq.precision import resolve_training_precision
from seq2seq.progress import progress_bar_wanted
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
    """Trainer arguments for `trainer.precision`: `auto` resolved for this machine (seq2seq.precision:
    bf16-mixed only where bf16 is native), the choice logged once.

    Lightning turns fp16 on a CPU into bf16 without loss scaling; here `16-mixed` means fp16
    with a loss scaler on every device, so the scaled path can be run and tested without a GPU.
    """
    precision, reason = resolve_training_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator"))
    log.info(reason)
    if precision != "16-mixed" or cfg.trainer.get("accelerator") != "cpu":
        return {"precision": precision}
    if cfg.model.get("cell", "fused") != "explicit":
        raise UserError("trainer.precision=16-mixed on CPU needs model.cell=explicit: oneDNN has no float16 LSTM "
                        "(bf16-mixed is the fast choice on CPU)")
    return {"precision": None, "plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]}


# `model.hidden_size=128`, `+model.x=1`, `++model.x=1` on the command line: settings the user chose.
MODEL_OVERRIDE = re.compile(r"^\+{0,2}model\.([A-Za-z_]\w*)=")


@dataclass
class InitSource:
    """A trained model directory that a run starts from (`init_from=`): its model config, its
    tokenizer files (reused as they are) and the model settings the command line overrides."""

    directory: Path
    model_config: dict
    tokenizer_files: dict[str, str]
    overridden: set[str]

    @classmethod
    def read(cls, directory: Path, task: Task, overrides: Sequence[str]) -> InitSource:
        config = read_bundle_config(directory)
        if config.get("model_type") != task.model_type:
            raise UserError(f"init_from={directory} holds a {config.get('model_type')} model; "
                            f"task.name={task.name} trains {task.model_type} models")
        files = {role: str(directory / name) for role, name in dict(config.get("tokenizers", {})).items()}
        for path in files.values():
            if not Path(path).is_file():
                raise UserError(f"init_from={directory}: tokenizer file {Path(path).name} is missing")
        overridden = {m.group(1) for m in map(MODEL_OVERRIDE.match, overrides) if m}
        return cls(directory, dict(config["model_config"]), files, overridden)

    def model_settings(self, model_cfg: DictConfig) -> dict:
        """The directory's model config, with the settings given on the command line."""
        settings = dict(self.model_config)
        for key in self.overridden:
            settings[key] = OmegaConf.to_container(model_cfg, resolve=True).get(key)
        return {"_target_": model_cfg.get("_target_"), **settings}

    def load_into(self, task: Task, fresh: torch.nn.Module, settings: dict) -> torch.nn.Module:
        """The model to train: built from `settings` with the directory's weights.

        `fresh` is what the task builds from the data (vocabulary and label counts, scales); a
        difference that changes a weight's shape is refused, naming the setting."""
        state = load_state_dict(self.directory / WEIGHTS_FILE)
        settings = {k: v for k, v in settings.items() if k != "_target_"}
        model = task.model()(**settings)
        shapes = {k: tuple(v.shape) for k, v in state.items()}

        def first_difference(a: dict, b: dict) -> str | None:
            changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            return next((k for k in changed if k in self.overridden), changed[0] if changed else None)

        if {k: tuple(v.shape) for k, v in model.state_dict().items()} != shapes:
            key = first_difference(settings, self.model_config)
            if key is not None:
                raise UserError(f"init_from={self.directory}: model.{key}={settings.get(key)!r} changes the shape "
                                f"of the model (the directory's has {key}={self.model_config.get(key)!r}); "
                                "drop that override")
            raise UserError(f"init_from={self.directory}: the weights do not fit the directory's model config")
        if {k: tuple(v.shape) for k, v in fresh.state_dict().items()} != shapes:
            key = first_difference(dict(fresh.config), settings)
            raise UserError(f"init_from={self.directory}: this data gives {key}={fresh.config.get(key)!r} but the "
                            f"directory's model has {key}={settings.get(key)!r}")
        for key in sorted(k for k in settings if fresh.config.get(k) != settings[k]):
            log.info("init_from: keeping the directory's %s=%r (the data gives %r)", key, settings[key],
                     fresh.config.get(key))
        model.load_state_dict(state)
        log.info("init_from: weights, model config and tokenizers of %s; optimizer, schedule and step count "
                 "start afresh", self.directory)
        return model


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
                 enable_progress_bar=progress_bar_wanted(cfg.trainer.get("enable_progress_bar", "auto")),
                 plugins=[AtomicCheckpointIO(), *precision.pop("plugins", [])], **precision)


def average_if_better(trainer: L.Trainer, system: L.LightningModule, datamodule, checkpoint, count: int,
                      monitor: str, sign: float, best: float) -> tuple[float, list[str] | None]:
    """export_average=N: the mean of the N best kept checkpoints (Vaswani et al. 2017 averaged the
    last ones), validated, replaces the best checkpoint's weights only where it validates better
    (a mean with early, weak checkpoints can be worse than the best alone). Returns the exported
    weights' score and the averaged checkpoints' names (None when the best one stays)."""
    from seq2seq.averaging import average_states, model_weights

    ranked = sorted(checkpoint.best_k_models.items(), key=lambda item: sign * float(item[1]), reverse=True)[:count]
    if len(ranked) < 2:
        log.info("export_average=%d: only %d checkpoint kept (callbacks.model_checkpoint.save_top_k); "
                 "exporting the best one", count, len(ranked))
        return best, None
    paths = [Path(path) for path, _ in ranked]
    best_state = {key: value.detach().clone() for key, value in system.model.state_dict().items()}
    system.model.load_state_dict(average_states([model_weights(p) for p in paths], [p.name for p in paths]))
    results = trainer.validate(system, datamodule=datamodule, verbose=False)
    score = results[0].get(monitor) if results else None
    if score is not None and sign * float(score) > sign * best:
        log.info("exporting the mean of %s (%s %.4f; the best alone %.4f)", ", ".join(p.name for p in paths),
                 monitor, score, best)
        return float(score), [p.name for p in paths]
    system.model.load_state_dict(best_state)
    log.info("exporting the best checkpoint (%s %.4f): the mean of the %d best validated %s", monitor, best,
             len(paths), "n/a" if score is None else f"{score:.4f}")
    return best, None


def export_model(task: Task, trainer: L.Trainer, system: L.LightningModule, datamodule, run_dir: Path,
                 cfg: DictConfig, last_validation: LastValidationStep) -> tuple[Path | None, float | None]:
    """Write `<run_dir>/model` from the best validated weights: (the model directory, or None on
    the other DDP ranks; the exported weights' validation value of the monitored metric).

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
    averaged = None
    if best_path and best_wins and int(cfg.get("export_average") or 1) > 1:
        chosen, averaged = average_if_better(trainer, system, datamodule, checkpoint, int(cfg.export_average),
                                             monitor, sign, chosen)
    if not trainer.is_global_zero:
        return None, chosen  # under DDP every rank holds the same weights; one writes them
    trained = {"epochs": trainer.current_epoch, "steps": trainer.global_step, monitor.replace("/", "_"): chosen}
    if averaged:
        trained["averaged"] = averaged
    if cfg.get("init_from"):
        trained["init_from"] = str(Path(cfg.init_from).resolve())
    system_module = task.module("system")
    tokenizer_files, extra = system_module.export_contents(datamodule, cfg)
    # Optional per task: further files of the model directory (a translator's shortlist).
    export_files = getattr(system_module, "export_files", None)
    files = export_files(datamodule, cfg, run_dir) if export_files else {}
    return save_bundle(run_dir / "model", system.model, task.model_type, tokenizer_files,
                       extra | {"trained": trained}, files=files), chosen


def train(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = ()) -> tuple[Path | None, float | None]:
    """Train, export and test as `cfg` says: (the model directory, the validation value of the
    task's monitored metric for the exported weights, which is what a Hydra sweeper optimises).
    Under DDP only rank 0 returns a directory.

    With `init_from=<model dir>` the run starts from that directory's weights, model config and
    tokenizers; `overrides` (the command line's) says which model settings replace the directory's.
    """
    task = task_named(cfg.task.name)
    hooks = task.module("system")
    source = InitSource.read(Path(cfg.init_from), task, overrides) if cfg.get("init_from") else None
    tokenizer_settings = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    if source is not None:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.model = source.model_settings(cfg.model)
        tokenizer_settings["files"] = source.tokenizer_files
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    check_trainer_settings(cfg.trainer)
    datamodule = build(cfg.data, tokenizer=tokenizer_settings, run_dir=str(run_dir), _convert_="all")
    model = hooks.build_model(cfg, datamodule)
    if source is not None:
        model = source.load_into(task, model, OmegaConf.to_container(cfg.model, resolve=True))
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
    model_dir, best = export_model(task, trainer, system, datamodule, run_dir, cfg, last_validation)
    best = None if best is None else float(best)
    if model_dir is None:
        return None, best
    print(f"model written to {model_dir}")
    if cfg.get("evaluate_test", True):
        hooks.evaluate_test(model_dir, datamodule, cfg, run_dir)
    return model_dir, best
