"""The benchmarks run in a quick mode, so they cannot silently break (their figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seq2seq.precision import cpu_runs_bf16_lstm

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

REQUIRED_KEYS = ["matmul_flops_per_s", "train_tgt_tokens_per_s", "train_flops_per_tgt_token", "train_flops_ratio",
                 "train_bf16_tgt_tokens_per_s", "train_auto_tgt_tokens_per_s", "train_auto_vs_faster_forced",
                 "train_peak_rss_mb", "greedy_seconds", "beam5_seconds", "beam5_bleu"]


def run_benchmark(script: str, *args: str, cwd: Path) -> dict:
    out = cwd / "result.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "written to" in result.stdout
    return json.loads(out.read_text())


@pytest.mark.slow
def test_throughput_benchmark_quick_mode(tmp_path):
    figures = run_benchmark("throughput.py", "--quick", cwd=tmp_path)
    bf16_runs = "train_bf16_unavailable" not in figures  # AVX2-only CPUs cannot run a bf16 LSTM
    assert bf16_runs == cpu_runs_bf16_lstm()[0]
    for key in REQUIRED_KEYS:
        if key == "train_bf16_tgt_tokens_per_s" and not bf16_runs:
            assert figures[key] is None
            continue
        assert isinstance(figures[key], (int, float)) and figures[key] >= 0, key
    assert figures["train_flops_per_tgt_token"] > 0 and figures["decode_sentences"] == 40
    assert 0.0 <= figures["padding_ratio_tgt"] < 1.0
    assert figures["train_auto_precision"] == ("bf16-mixed" if figures["cpu_native_bf16"] else "32-true")
    assert figures["cpu_model"] and isinstance(figures["cpu_native_bf16"], bool)


@pytest.mark.slow
def test_char_lm_speed_benchmark_runs(tmp_path):
    figures = run_benchmark("char_lm_speed.py", "--steps", "1", "--chars", "5", "--repeats", "1", cwd=tmp_path)
    keys = ["train_fp32_chars_per_s", "generate_fp32_batch1_chars_per_s"]
    if cpu_runs_bf16_lstm()[0]:
        keys += ["train_bf16_chars_per_s", "generate_bf16_batch32_chars_per_s"]
    else:
        assert "bf16_unavailable" in figures and "train_bf16_chars_per_s" not in figures
    for key in keys:
        assert figures[key] > 0, key
