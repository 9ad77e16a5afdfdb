"""Which number format to compute in, for the machine at hand: `precision=auto`.

bf16 matrix products are about twice the fp32 rate where the hardware has them natively (x86
CPUs with AVX-512 BF16 or AMX, Arm CPUs with the BF16 extension, NVIDIA GPUs from Ampere on;
the CPU generations are listed in README, "Scale out: processes, GPUs, nodes, mixed precision,
large corpora"). Elsewhere oneDNN emulates bf16 with fp32 instructions plus conversions, which
makes `bf16-mixed` training slower than `32-true` (figures in the same README section). So
"auto" means bf16 only where it is native, fp32 everywhere else; an explicit value always wins.

How native bf16 is detected on a CPU, and why not otherwise:
- The CPU feature flags the kernel reports in /proc/cpuinfo: `avx512_bf16` or `amx_bf16` on
  x86, `bf16` among the aarch64 `Features`. These name the instructions themselves.
- Not `torch.backends.cpu.get_cpu_capability()`: it answers "AVX512" on AVX-512 CPUs with and
  without bf16 alike; it names the widest vector ISA PyTorch's kernels use, nothing more.
- Not `torch.ops.mkldnn._is_mkldnn_bf16_supported()`: it is True on AVX-512 CPUs without
  AVX-512 BF16 (it checks AVX-512 BW/VL/DQ, where oneDNN can *emulate* bf16), so it says
  "bf16 works", not "bf16 is fast".
- Not a timed probe: a few milliseconds of matrix products are noisy on shared cores and would
  make the choice, and so the results, differ between runs on one machine.
Where /proc/cpuinfo cannot be read (macOS, Windows) the answer is "no native bf16": fp32 is
never the slow choice by much, bf16 on an emulating CPU is.

SEQ2SEQ_NATIVE_BF16=1 or =0 replaces the detection (tests; measuring the other branch on one
machine). On a GPU, `torch.cuda.is_bf16_supported()` decides.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

import torch

from seq2seq.errors import UserError

FORCE_ENV = "SEQ2SEQ_NATIVE_BF16"
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags in /proc/cpuinfo
ARM_BF16_FEATURE = "bf16"  # aarch64 `Features` entry
CPU_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
ARM_INT8_FEATURE = "i8mm"

# Lightning's precision values (lightning.fabric.connector._PRECISION_INPUT_STR) and the short
# forms it converts ("32" -> "32-true", "bf16" -> "bf16-mixed", ...).
TRAINING_PRECISIONS = ("auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")
TRAINING_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}
DECODING_PRECISIONS = ("auto", "fp32", "bf16", "int8")


def _cpu_info(path: str | os.PathLike = "/proc/cpuinfo") -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name as the kernel reports it (`platform.processor()` where it cannot)."""
    text = _cpu_info() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model name", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags(wanted: tuple[str, ...], arm_feature: str, cpuinfo: str | None) -> list[str]:
    text = _cpu_info() if cpuinfo is None else cpuinfo
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags":
            found.update(flag for flag in value.split() if flag in wanted)
        elif key == "Features" and arm_feature in value.split():
            found.add(arm_feature)
    return sorted(found)


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The native-bf16 feature flags this CPU reports (empty: none, or nothing readable)."""
    return _cpu_flags(CPU_BF16_FLAGS, ARM_BF16_FEATURE, cpuinfo)


def cpu_int8_flags(cpuinfo: str | None = None) -> list[str]:
    """Flags of int8 dot-product instructions (VNNI, AMX-INT8; Arm i8mm), which make int8
    products several times the fp32 rate; without them int8 gains little (README, "Translate")."""
    return _cpu_flags(CPU_INT8_FLAGS, ARM_INT8_FEATURE, cpuinfo)


def _forced() -> bool | None:
    """SEQ2SEQ_NATIVE_BF16 as True/False, None when unset or empty; anything else is an error."""
    raw = os.environ.get(FORCE_ENV, "").strip().lower()
    if raw == "":
        return None
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise UserError(f"{FORCE_ENV}={os.environ[FORCE_ENV]!r} must be 1 (native bf16) or 0 (none), or unset to detect")


@lru_cache(maxsize=1)
def _detected_cpu_bf16() -> tuple[bool, str]:
    flags = cpu_bf16_flags()
    if flags:
        return True, f"CPU has native bf16 ({', '.join(flags)} in /proc/cpuinfo)"
    return False, "CPU has no native bf16 (no avx512_bf16/amx_bf16/bf16 flag in /proc/cpuinfo)"


def native_bf16_cpu() -> tuple[bool, str]:
    """(whether this CPU computes bf16 natively, why we think so)."""
    forced = _forced()
    if forced is not None:
        return forced, f"{FORCE_ENV}={int(forced)} says the CPU {'has' if forced else 'has no'} native bf16"
    return _detected_cpu_bf16()


def native_bf16_gpu() -> tuple[bool, str]:
    forced = _forced()
    if forced is not None:
        return forced, f"{FORCE_ENV}={int(forced)} says the GPU {'has' if forced else 'has no'} native bf16"
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return True, f"GPU {torch.cuda.get_device_name()} supports bf16"
    return False, "GPU does not support bf16"


def machine_summary() -> dict:
    """What benchmarks record so that figures of different machines are never compared blind."""
    bf16, reason = native_bf16_cpu()
    return {"cpu_model": cpu_model(), "cpu_native_bf16": bf16, "cpu_bf16_reason": reason,
            "cpu_int8_dot_product": cpu_int8_flags() or "none",
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


@lru_cache(maxsize=1)
def cpu_runs_bf16_lstm() -> tuple[bool, str]:
    """Whether PyTorch can run an LSTM under bf16 autocast on this CPU, and why not.

    A probe, not a flag check: oneDNN's bf16 LSTM exists for AVX-512 CPUs (emulated where bf16
    is not native, so slow but working) and not for AVX2-only ones, where oneDNN raises "could
    not create a primitive descriptor for the LSTM forward propagation primitive" in the first
    training step or the first translated batch. A 4-unit LSTM costs next to nothing to run.
    """
    lstm = torch.nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 4))
    except RuntimeError as error:
        return False, f"this CPU ({torch.backends.cpu.get_cpu_capability()}) cannot run PyTorch's bf16 LSTM: " \
                      f"{str(error).split('. ')[0]}"
    return True, "bf16 LSTM runs"


def _refuse_bf16_without_lstm(setting: str, fp32: str) -> None:
    runs, why = cpu_runs_bf16_lstm()
    if not runs:
        raise UserError(f"{setting}: {why}; use auto (which picks {fp32} here) or {fp32}")


def _is_gpu(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def resolve_training_precision(value: str | int | None, accelerator: str = "cpu") -> tuple[str, str]:
    """`trainer.precision` -> (the value for Lightning's Trainer, the reason to log).

    "auto" (or None) is "bf16-mixed" where the accelerator computes bf16 natively, else "32-true".
    An explicit value is returned unchanged apart from Lightning's short forms ("32" -> "32-true").
    """
    text = "auto" if value is None else str(value).strip()
    text = TRAINING_ALIASES.get(text, text)
    if text not in TRAINING_PRECISIONS:
        raise UserError(f"trainer.precision={value!r} is not one of {', '.join(TRAINING_PRECISIONS)}")
    accelerator = str(accelerator or "auto").lower()
    if text != "auto":
        # bf16-true (bf16 weights and inputs) takes another path, which works there.
        if text == "bf16-mixed" and not _is_gpu(accelerator):
            _refuse_bf16_without_lstm(f"trainer.precision={text}", "32-true")
        return text, f"trainer.precision={text} was set explicitly"
    if _is_gpu(accelerator):
        bf16, why = native_bf16_gpu()
    elif accelerator in ("cpu", "auto"):
        bf16, why = native_bf16_cpu()
    else:  # mps, tpu, ...: no claim about bf16 there
        return "32-true", f"trainer.precision=auto: 32-true on accelerator {accelerator!r}"
    chosen = "bf16-mixed" if bf16 else "32-true"
    return chosen, f"trainer.precision=auto chose {chosen}: {why}"


def resolve_decoding_precision(value: str | None, device: str | torch.device = "cpu",
                               int8_for: str | None = None) -> tuple[str, str]:
    """`precision` of translate/evaluate/generate/classify -> ("fp32" | "bf16" | "int8", reason).

    "auto" (or None) is "bf16" where the device computes bf16 natively, else "fp32"; "int8"
    (dynamic quantization, seq2seq.quantization) is CPU only and is never chosen by "auto",
    since it changes the outputs slightly. Models without an int8 path name themselves in
    `int8_for` (e.g. "language models"), and int8 is refused for them.
    """
    text = "auto" if value is None else str(value).strip().lower()
    if text not in DECODING_PRECISIONS:
        raise UserError(f"precision={value!r} is not one of {', '.join(DECODING_PRECISIONS)}")
    if text == "int8" and int8_for is not None:
        raise UserError(f"precision=int8 is for translation models; {int8_for} take auto, fp32 or bf16")
    device_type = torch.device(device).type
    if text == "int8" and device_type != "cpu":
        raise UserError(f"precision=int8 runs on the CPU only (device={device_type}); use bf16 or fp32 there")
    if text != "auto":
        if text == "bf16" and device_type == "cpu":
            _refuse_bf16_without_lstm("precision=bf16", "fp32")
        return text, f"precision={text} was set explicitly"
    if device_type == "cuda":
        bf16, why = native_bf16_gpu()
    elif device_type == "cpu":
        bf16, why = native_bf16_cpu()
    else:  # mps, ...: no claim about bf16 there
        bf16, why = False, f"no bf16 claim for device {device_type}"
    chosen = "bf16" if bf16 else "fp32"
    return chosen, f"precision=auto chose {chosen}: {why}"
