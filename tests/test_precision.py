"""precision=auto: bf16 only where it is native, fp32 elsewhere; explicit values win."""

from __future__ import annotations

from pathlib import Path

import pytest

from seq2seq import precision
from seq2seq.config import CONF_DIR
from seq2seq.errors import UserError
from seq2seq.precision import (
    FORCE_ENV,
    cpu_bf16_flags,
    cpu_int8_flags,
    cpu_model,
    machine_summary,
    resolve_decoding_precision,
    resolve_training_precision,
)

SKYLAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
GRAVITON3 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm sve
"""


def test_flags_name_native_bf16_and_nothing_else():
    assert cpu_bf16_flags(SKYLAKE) == []  # AVX-512 without BF16: emulated, slow
    assert cpu_bf16_flags(SAPPHIRE_RAPIDS) == ["amx_bf16", "avx512_bf16"]
    assert cpu_bf16_flags(GRAVITON3) == ["bf16"]
    assert cpu_bf16_flags("") == []
    assert cpu_int8_flags(SKYLAKE) == [] and cpu_int8_flags(SAPPHIRE_RAPIDS) == ["amx_int8"]
    assert cpu_int8_flags(GRAVITON3) == ["i8mm"]
    assert cpu_model(SKYLAKE) == "Intel(R) Xeon(R) Processor @ 2.00GHz"


def test_detection_reads_the_cpu_flags(monkeypatch):
    monkeypatch.delenv(FORCE_ENV, raising=False)
    precision._detected_cpu_bf16.cache_clear()
    monkeypatch.setattr(precision, "_cpu_info", lambda path="/proc/cpuinfo": SKYLAKE)
    assert resolve_training_precision("auto", "cpu")[0] == "32-true"
    precision._detected_cpu_bf16.cache_clear()
    monkeypatch.setattr(precision, "_cpu_info", lambda path="/proc/cpuinfo": SAPPHIRE_RAPIDS)
    chosen, reason = resolve_decoding_precision("auto", "cpu")
    assert chosen == "bf16" and "amx_bf16" in reason
    precision._detected_cpu_bf16.cache_clear()


def test_forced_no_bf16_gives_fp32(monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "0")
    chosen, reason = resolve_training_precision("auto", "cpu")
    assert chosen == "32-true" and FORCE_ENV in reason
    assert resolve_training_precision(None, "cpu")[0] == "32-true"
    assert resolve_decoding_precision("auto", "cpu")[0] == "fp32"
    assert machine_summary()["cpu_native_bf16"] is False


def test_forced_bf16_gives_bf16(monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "1")
    assert resolve_training_precision("auto", "cpu")[0] == "bf16-mixed"
    assert resolve_decoding_precision("auto", "cpu")[0] == "bf16"
    assert resolve_decoding_precision(None, "cpu")[0] == "bf16"


@pytest.mark.parametrize("forced", ["0", "1"])
def test_explicit_setting_overrides_detection(monkeypatch, forced):
    monkeypatch.setenv(FORCE_ENV, forced)
    monkeypatch.setattr(precision, "cpu_runs_bf16_lstm", lambda: (True, "bf16 LSTM runs"))
    assert resolve_training_precision("32-true", "cpu") == ("32-true", "trainer.precision=32-true was set explicitly")
    assert resolve_training_precision("bf16-mixed", "cpu")[0] == "bf16-mixed"
    assert resolve_training_precision(32, "cpu")[0] == "32-true"  # Hydra hands `precision=32` over as an int
    assert resolve_training_precision("bf16", "cpu")[0] == "bf16-mixed"
    assert resolve_decoding_precision("fp32", "cpu")[0] == "fp32"
    assert resolve_decoding_precision("bf16", "cpu")[0] == "bf16"
    assert resolve_decoding_precision("int8", "cpu")[0] == "int8"


def test_other_accelerators_get_fp32(monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "1")
    assert resolve_training_precision("auto", "mps")[0] == "32-true"
    assert resolve_decoding_precision("auto", "meta")[0] == "fp32"


@pytest.mark.parametrize("call, message", [
    (lambda: resolve_training_precision("fp64", "cpu"), "trainer.precision='fp64' is not one of auto, 32-true"),
    (lambda: resolve_decoding_precision("fp8", "cpu"), "precision='fp8' is not one of auto, fp32, bf16, int8"),
    (lambda: resolve_decoding_precision("int8", "cuda"), "precision=int8 runs on the CPU only"),
    (lambda: resolve_decoding_precision("int8", "cpu", int8_for="classifiers"),
     "precision=int8 is for translation models; classifiers take auto, fp32 or bf16"),
])
def test_bad_values_are_one_clear_line(call, message):
    with pytest.raises(UserError) as caught:
        call()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_force_value_is_an_error(monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "maybe")
    with pytest.raises(UserError, match=f"{FORCE_ENV}='maybe' must be 1"):
        resolve_training_precision("auto", "cpu")


@pytest.mark.parametrize("forced, expected", [("0", "32-true"), ("1", "bf16-mixed")])
def test_training_run_resolves_auto_before_lightning_sees_it(monkeypatch, forced, expected):
    """The shipped CPU trainer config says auto; the trainer gets the machine's choice."""
    from omegaconf import OmegaConf

    from seq2seq.experiment import precision_settings

    monkeypatch.setenv(FORCE_ENV, forced)
    monkeypatch.setattr(precision, "cpu_runs_bf16_lstm", lambda: (True, "bf16 LSTM runs"))
    cfg = OmegaConf.load(Path(CONF_DIR) / "trainer" / "cpu.yaml")
    assert cfg.precision == "auto"
    settings = precision_settings(OmegaConf.create({"trainer": cfg, "model": {}}))
    assert settings == {"precision": expected}
    explicit = OmegaConf.create({"trainer": {"accelerator": "cpu", "precision": "bf16-mixed"}, "model": {}})
    assert precision_settings(explicit) == {"precision": "bf16-mixed"}


def test_bf16_is_refused_in_one_line_where_the_cpu_has_no_bf16_lstm(monkeypatch):
    """AVX2-only CPUs (e.g. AMD Zen 3): oneDNN cannot build a bf16 LSTM, so bf16-mixed would fail
    in the first step with a oneDNN message; it is refused up front, naming what works instead."""
    monkeypatch.setattr(precision, "cpu_runs_bf16_lstm", lambda: (False, "this CPU (AVX2) cannot run a bf16 LSTM"))
    for call, message in [
        (lambda: resolve_training_precision("bf16-mixed", "cpu"),
         "trainer.precision=bf16-mixed: this CPU (AVX2) cannot run a bf16 LSTM; use auto (which picks 32-true "
         "here) or 32-true"),
        (lambda: resolve_decoding_precision("bf16", "cpu"),
         "precision=bf16: this CPU (AVX2) cannot run a bf16 LSTM; use auto (which picks fp32 here) or fp32"),
    ]:
        with pytest.raises(UserError) as caught:
            call()
        assert str(caught.value) == message
    monkeypatch.setenv(FORCE_ENV, "0")
    assert resolve_training_precision("auto", "cpu")[0] == "32-true"
    assert resolve_training_precision("bf16-true", "cpu")[0] == "bf16-true"  # bf16 weights take another path
    assert resolve_training_precision("bf16-mixed", "gpu")[0] == "bf16-mixed"  # the probe is for CPUs


def test_the_bf16_lstm_probe_answers_with_a_reason():
    runs, why = precision.cpu_runs_bf16_lstm()
    assert isinstance(runs, bool) and why
    if runs:  # then the real thing works too
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.LSTM(8, 8)(torch.zeros(3, 2, 8))
