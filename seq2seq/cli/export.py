"""seq2seq-export: a model directory as an exported directory that decodes without PyTorch.

    seq2seq-export model=outputs/run/model output=exported/de-en [precision=int8]
    seq2seq-export model=outputs/run/model format=web output=site/de-en   # a static page (seq2seq.web)

The exported directory is what seq2seq-translate, -evaluate, -generate, -classify and -serve take
as model= in an install without torch (README, "Export").
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from omegaconf import DictConfig

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError

FORMATS = ("onnx", "web")


@run_as_command
def export_command(cfg: DictConfig) -> None:
    if cfg.model is None or cfg.output is None:
        raise UserError("model= and output= are required: the model directory and the folder to write")
    if not isinstance(cfg.model, str):
        if isinstance(cfg.model, Sequence):
            raise UserError("format=onnx exports one model directory, not an ensemble: export each member, or "
                            "average their checkpoints first (seq2seq-average)")
        raise UserError(f"model={cfg.model!r} must be one model directory")
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format!r} is not one of {', '.join(FORMATS)}")
    start = time.perf_counter()
    if cfg.format == "web":
        from seq2seq.web.export import export_web

        output = export_web(cfg.model, cfg.output, precision=cfg.precision)
    else:
        from seq2seq.exporting import export_onnx

        output = export_onnx(cfg.model, cfg.output, precision=cfg.precision)
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    print(f"{output}: exported {cfg.model} ({cfg.format}, {cfg.precision}, {size / 1e6:.1f} MB) "
          f"in {time.perf_counter() - start:.1f} s")


@hydra_command(APPS_CONF_DIR, "export")
def main(cfg: DictConfig) -> None:
    export_command(cfg)


if __name__ == "__main__":
    main()
