"""seq2seq-average: a model directory whose weights are the mean of checkpoints or model directories.

    seq2seq-average 'inputs=[outputs/run/checkpoints]' output=outputs/run/averaged
    seq2seq-average 'inputs=[a.ckpt,b.ckpt,c.ckpt]' output=averaged like=outputs/run/model
"""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig

from seq2seq.averaging import average, expand_inputs
from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError


@run_as_command
def average_command(cfg: DictConfig) -> None:
    if cfg.output is None:
        raise UserError("output= is required: the model directory to write")
    inputs = list(cfg.inputs) if isinstance(cfg.inputs, (list, ListConfig)) else [cfg.inputs]
    if not inputs:
        raise UserError("inputs=[...] is required: checkpoints, model directories or a folder of checkpoints")
    paths = expand_inputs(inputs)
    directory = average(paths, cfg.output, like=cfg.like)
    print(f"averaged {len(paths)} checkpoints into {directory}:")
    for path in paths:
        print(f"  {path}")


@hydra_command(APPS_CONF_DIR, "average")
def main(cfg: DictConfig) -> None:
    average_command(cfg)


if __name__ == "__main__":
    main()
