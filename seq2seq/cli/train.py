"""seq2seq-train: compose the config, train with Lightning, export the model, score held-out data.

    seq2seq-train experiment=multi30k_de_en model.attention=luong_general trainer.max_epochs=20
    seq2seq-train experiment=tiny_shakespeare_char
    seq2seq-train experiment=multi30k_de_en init_from=outputs/<run>/model data.data_dir=in_domain   # fine-tune
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import CONF_DIR


@run_as_command(memory="training")
def train_command(cfg: DictConfig) -> float | None:
    """Train; the exported weights' validation value of the task's monitored metric, which a Hydra
    sweeper (e.g. `hydra/sweeper=optuna`) optimises."""
    from seq2seq.experiment import train  # Lightning: not imported for --help or --cfg

    hydra_cfg = HydraConfig.get()
    _, best = train(cfg, Path(hydra_cfg.runtime.output_dir), overrides=list(hydra_cfg.overrides.task))
    return best


@hydra_command(CONF_DIR, "train", free_text=("task.sample_prompt",))
def main(cfg: DictConfig) -> float | None:
    return train_command(cfg)


if __name__ == "__main__":
    main()
