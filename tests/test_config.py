"""Every experiment composes, and its data, model and system instantiate."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seq2seq.config import CONF_DIR
from seq2seq.tasks import task_named
from seq2seq.tasks.language_model.data import TextDataModule
from seq2seq.training import Optimization
from tests.helpers import compose_train

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def test_there_are_experiments():
    assert "multi30k_de_en" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}", f"paths.data_root={tmp_path}",
                         f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/run",
                         "hydra.runtime.output_dir=" + str(tmp_path / "run")])
    container = OmegaConf.to_container(cfg, resolve=False)
    assert "model" in container and "trainer" in container
    model = instantiate(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    datamodule = instantiate(cfg.data, tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
                             _convert_="all")
    task = OmegaConf.to_container(cfg.task, resolve=True)
    task_name = task.pop("name")
    task_named(task_name).system()(model, Optimization(**OmegaConf.to_container(cfg.optim, resolve=True)), **task)
    # The best checkpoint is chosen by the metric the task validates on, and early stopping watches it too.
    expected = {"translation": ("val/bleu", "max"), "language_model": ("val/loss", "min"),
                "classification": ("val/accuracy", "max"), "forecast": ("val/mae", "min")}[task_name]
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == expected
    assert (cfg.callbacks.early_stopping.monitor, cfg.callbacks.early_stopping.mode) == expected
    if task_name == "translation":
        assert datamodule.src_lang and datamodule.tgt_lang
    elif task_name == "language_model":
        assert isinstance(datamodule, TextDataModule) and datamodule.train_file


def test_char_lm_recipe_holds_out_the_last_tenth(tmp_path):
    cfg = compose_train(["experiment=tiny_shakespeare_char", f"paths.data_root={tmp_path}"])
    assert cfg.task.name == "language_model"
    assert cfg.data.valid_fraction == 0.1 and cfg.data.valid_file is None
    assert cfg.data.data_dir == f"{tmp_path}/tinyshakespeare"


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong_dot", "luong_general", "luong_concat"])
def test_every_attention_override_builds(attention, tmp_path):
    cfg = compose_train(["experiment=multi30k_de_en", f"model.attention={attention}",
                         f"hydra.run.dir={tmp_path}"])
    assert instantiate(cfg.model).config["attention"] == attention


def test_data_root_defaults_to_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQ2SEQ_DATA", str(tmp_path))
    cfg = compose_train(["experiment=multi30k_de_en"])
    assert cfg.data.data_dir == f"{tmp_path}/multi30k"
