"""The table of tasks: what `task.name` selects, and the one place a new task is registered.

Every task is a folder `seq2seq/tasks/<folder>/` with the same files:

  model.py   the nn.Module (its class named in the table)
  data.py    the LightningDataModule
  system.py  the LightningModule (named in the table) and three functions the task-free
             training run calls: `build_model(cfg, datamodule)`, `export_contents(datamodule, cfg)`
             (tokenizer files and model.json extras of the model directory) and
             `evaluate_test(model_dir, datamodule, cfg, run_dir)`; optionally a fourth,
             `export_files(datamodule, cfg, run_dir)` (further files of the model directory by name)
  api.py     the Python API over a model directory (Translator, Generator, Classifier, Forecaster)

Modules are imported when a task is used, not when this table is read: loading a model
directory for translation does not import Lightning or the other tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

from seq2seq.errors import UserError


@dataclass(frozen=True)
class Task:
    name: str             # task.name in the configs
    folder: str           # seq2seq/tasks/<folder>
    model_type: str       # "model_type" in model.json
    model_class: str      # in <folder>/model.py
    system_class: str     # in <folder>/system.py
    monitor: str          # the validation metric that picks checkpoints and stops early
    mode: str             # "max" or "min": which way `monitor` is better
    checkpoint_name: str  # file name of the best checkpoints (Lightning's format keys)

    def module(self, name: str) -> ModuleType:
        return import_module(f"seq2seq.tasks.{self.folder}.{name}")

    def model(self) -> type:
        return getattr(self.module("model"), self.model_class)

    def system(self) -> type:
        return getattr(self.module("system"), self.system_class)

    @property
    def larger_is_better(self) -> bool:
        return self.mode == "max"


TASKS = [
    Task("translation", "translation", "seq2seq", "Seq2Seq", "TranslationSystem",
         "val/bleu", "max", "epoch{epoch:03d}-bleu{val/bleu:.2f}"),
    Task("language_model", "language_model", "lstm_lm", "LanguageModel", "LanguageModelSystem",
         "val/loss", "min", "epoch{epoch:03d}-loss{val/loss:.4f}"),
    Task("classification", "classification", "lstm_classifier", "LSTMClassifier", "ClassificationSystem",
         "val/accuracy", "max", "epoch{epoch:03d}-acc{val/accuracy:.4f}"),
    Task("forecast", "forecasting", "forecaster", "LSTMForecaster", "ForecastSystem",
         "val/mae", "min", "epoch{epoch:03d}-mae{val/mae:.4f}"),
]
BY_NAME = {task.name: task for task in TASKS}
BY_MODEL_TYPE = {task.model_type: task for task in TASKS}


def task_named(name: str) -> Task:
    if name not in BY_NAME:
        raise UserError(f"task.name={name!r} is not one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


def task_of_model_type(model_type: str) -> Task:
    if model_type not in BY_MODEL_TYPE:
        raise UserError(f"unknown model type {model_type!r} (known: {', '.join(BY_MODEL_TYPE)})")
    return BY_MODEL_TYPE[model_type]


def _task_setting(name: str, field: str):
    return getattr(task_named(name), field)


# `${task_setting:${task.name},monitor}` in a config reads the table, so the callbacks of every
# experiment follow its task without a copy of the metric name. The exported-model runtime
# (seq2seq.portable) reads the table without the configs, in an install without OmegaConf.
try:
    from omegaconf import OmegaConf
except ImportError:
    OmegaConf = None
if OmegaConf is not None and not OmegaConf.has_resolver("task_setting"):
    OmegaConf.register_new_resolver("task_setting", _task_setting)
