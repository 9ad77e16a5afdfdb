"""What the benchmarks share: where results go, running commands, printing and saving results."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent  # console scripts of the running environment


def run_timed(command: list[str]) -> float:
    """Run a command to completion (failing loudly); its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def parameter_count(weights_file: Path) -> int:
    state = torch.load(weights_file, weights_only=True)
    return sum(t.numel() for t in {t.data_ptr(): t for t in state.values()}.values())  # tied weights once


def report(result: dict, out: Path) -> None:
    """Print `result` as a two-column table and write it as JSON to `out`."""
    from seq2seq.precision import machine_summary

    # Every table names the CPU and whether it has native bf16: figures of different machines
    # are never compared blind.
    result = machine_summary() | result | {"torch": torch.__version__, "threads": torch.get_num_threads()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(f"written to {out}")
