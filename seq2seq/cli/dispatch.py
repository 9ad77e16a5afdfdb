"""The entry points of the commands that take an exported directory as well as a model directory.

model= naming an exported directory (export.json) runs the command in the exported-model runtime
(seq2seq.portable.cli: no torch, Lightning or Hydra imported); anything else runs the PyTorch
command. In an install of the runtime alone, the PyTorch commands are missing, and say so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module

# What the runtime-only install lacks: a PyTorch command needs them.
FULL_INSTALL_MODULES = ("torch", "lightning", "hydra", "omegaconf", "matplotlib", "tqdm", "torchmetrics")


def command(name: str, full_module: str) -> Callable[[], None]:
    def main() -> None:
        from seq2seq.portable.cli import exported_model, run

        argv = sys.argv[1:]
        if exported_model(argv) is not None:
            run(name, argv)
            return
        try:
            module = import_module(full_module)
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] not in FULL_INSTALL_MODULES:
                raise
            print(f"error: seq2seq-{name} on a PyTorch model directory needs the full install (pip install seq2seq; "
                  f"{error.name} is missing); this install runs exported directories (seq2seq-export)",
                  file=sys.stderr)
            sys.exit(2)
        module.main()

    main.__name__ = name
    return main


translate = command("translate", "seq2seq.cli.translate")
evaluate = command("evaluate", "seq2seq.cli.evaluate")
generate = command("generate", "seq2seq.cli.generate")
classify = command("classify", "seq2seq.cli.classify")
serve = command("serve", "seq2seq.cli.serve")
