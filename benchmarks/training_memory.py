"""Where the Multi30k recipe's training memory goes, and what each malloc setting costs in speed.

    python benchmarks/training_memory.py                                   # 3 rounds, 400 steps
    python benchmarks/training_memory.py --steps 40 --val-every 20 --rounds 1 --variants before after

Each variant trains `seq2seq-train experiment=multi30k_de_en trainer.precision=32-true` for
--steps optimizer steps with a validation every --val-every steps (and the final one of the
export), in a child process; the variants run one after another in each of --rounds rounds, so
a machine whose speed drifts slows them alike. Variants:
  before   every block from the heap, never trimmed (SEQ2SEQ_KEEP_FREED_MEMORY=all, no release)
  after    as shipped: blocks up to 32 MiB from the heap, free pages released after each
           validation and every 200 steps (seq2seq/runtime.py, ReleaseFreedMemory)
  glibc    malloc left alone (SEQ2SEQ_KEEP_FREED_MEMORY=0), release callback on
  onednn0  as shipped, with oneDNN's primitive cache off (ONEDNN_PRIMITIVE_CACHE_CAPACITY=0)
  arena1   as shipped, with one malloc arena (MALLOC_ARENA_MAX=1)
  nothp    as shipped, without transparent huge pages (THP_MEM_ALLOC_ENABLE=0); thp sets it to 1
  heapN    as shipped, with only blocks up to N MiB on the heap (SEQ2SEQ_HEAP_BLOCKS_MIB=N)
  thp_heap4, thp_glibc  huge pages with 4 MiB heap blocks / with glibc's malloc untouched
  jemalloc, jemalloc_keep, tcmalloc  another allocator through LD_PRELOAD (Debian packages
           libjemalloc2, libtcmalloc-minimal4)

A callback from this file runs inside the child (`+callbacks.memory_probe`): it records RSS,
malloc's heap (in use / free, mallinfo2), minor page faults and target tokens at every 25th
step and around each validation. Reported per variant: peak RSS (the child's own maximum,
os.wait4), RSS when training starts (libraries, model, corpus), the peaks during training steps
and during validations, the heap's bytes in use and free at the end, target tokens/s over the
training steps after the first 10 (validation time excluded) and page faults per step.
Prints a table; writes JSON (with the CPU model and whether it has native bf16) to
benchmarks/results/training_memory.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reporting import BIN, RESULTS, report  # noqa: E402

VARIANTS = {
    "before": ({"SEQ2SEQ_KEEP_FREED_MEMORY": "all"}, ["callbacks.release_freed_memory=null"]),
    "after": ({}, []),
    "glibc": ({"SEQ2SEQ_KEEP_FREED_MEMORY": "0"}, []),
    "onednn0": ({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}, []),
    "arena1": ({"MALLOC_ARENA_MAX": "1"}, []),
    "heap4": ({"SEQ2SEQ_HEAP_BLOCKS_MIB": "4"}, []),
    "heap1": ({"SEQ2SEQ_HEAP_BLOCKS_MIB": "1"}, []),
    "heap8": ({"SEQ2SEQ_HEAP_BLOCKS_MIB": "8"}, []),
    "heap16": ({"SEQ2SEQ_HEAP_BLOCKS_MIB": "16"}, []),
    # PyTorch's own switch: blocks of 2 MB and more 2 MB-aligned and madvise(MADV_HUGEPAGE)d, so a
    # freshly mapped block faults in 2 MB at a time (needs THP "madvise" or "always").
    "thp": ({"THP_MEM_ALLOC_ENABLE": "1"}, []),
    "nothp": ({"THP_MEM_ALLOC_ENABLE": "0"}, []),  # as shipped before huge pages
    "thp_heap4": ({"THP_MEM_ALLOC_ENABLE": "1", "SEQ2SEQ_HEAP_BLOCKS_MIB": "4"}, []),
    "thp_glibc": ({"THP_MEM_ALLOC_ENABLE": "1", "SEQ2SEQ_KEEP_FREED_MEMORY": "0"}, []),
    # Other allocators in place of glibc's malloc (Debian: apt-get install libjemalloc2
    # libtcmalloc-minimal4); mallopt/malloc_trim then have nothing to tune.
    "jemalloc": ({"LD_PRELOAD": "libjemalloc.so.2", "SEQ2SEQ_KEEP_FREED_MEMORY": "0"}, []),
    # jemalloc keeping freed pages (Intel's PyTorch CPU tuning guide suggests this MALLOC_CONF).
    "jemalloc_keep": ({"LD_PRELOAD": "libjemalloc.so.2", "SEQ2SEQ_KEEP_FREED_MEMORY": "0",
                       "MALLOC_CONF": "oversize_threshold:1,background_thread:true,metadata_thp:auto,"
                                      "dirty_decay_ms:9000000000,muzzy_decay_ms:9000000000"}, []),
    "tcmalloc": ({"LD_PRELOAD": "libtcmalloc_minimal.so.4", "SEQ2SEQ_KEEP_FREED_MEMORY": "0"}, []),
}
WARMUP_STEPS = 10


def cpu_description() -> dict:
    """The CPU model and whether it multiplies bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo."""
    model, flags = "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"})}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def process_memory() -> dict:
    """RSS and peak RSS (MB), malloc's heap in use and free (MB, all arenas), minor faults."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        out |= {"heap_used": info.uordblks / 2**20, "heap_free": info.fordblks / 2**20,
                "mmapped": info.hblkhd / 2**20}
    except (OSError, AttributeError):
        pass
    with open("/proc/self/stat") as handle:
        out["minflt"] = int(handle.read().rsplit(")", 1)[1].split()[7])
    return out


class MemoryProbe(L.Callback):
    """Runs inside the training process: appends JSON lines to $MEMORY_PROBE_OUT."""

    def __init__(self, every: int = 25) -> None:
        self.every = every
        self.out = open(os.environ["MEMORY_PROBE_OUT"], "a")
        self.tokens = 0
        self.train_seconds = 0.0
        self._step_start = None
        self._peak_since = 0.0

    def _record(self, event: str, trainer, **extra) -> None:
        line = {"event": event, "step": trainer.global_step, "time": time.perf_counter(),
                "tokens": self.tokens, "train_seconds": self.train_seconds, **process_memory(), **extra}
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    def on_train_start(self, trainer, pl_module) -> None:
        self._record("train_start", trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > WARMUP_STEPS:
            self.train_seconds += time.perf_counter() - self._step_start
            self.tokens += int((batch.tgt_out != 0).sum())
        if step == WARMUP_STEPS or step % self.every == 0:
            self._record("step", trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._record("validation_start", trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._record("validation_end", trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._record("train_end", trainer)


def run_variant(name: str, args, work: Path) -> dict:
    env_extra, overrides = VARIANTS[name]
    probe = work / f"{name}.jsonl"
    probe.unlink(missing_ok=True)
    here = str(Path(__file__).resolve().parent)
    env = dict(os.environ, PYTHONWARNINGS="ignore", MEMORY_PROBE_OUT=str(probe), **env_extra,
               PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), here) if p))
    command = [str(BIN / "seq2seq-train"), "experiment=multi30k_de_en", "trainer.precision=32-true",
               f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.val_every}",
               "trainer.max_epochs=1000", "evaluate_test=false", "trainer.enable_progress_bar=false",
               "+callbacks.memory_probe._target_=training_memory.MemoryProbe",
               f"hydra.run.dir={work / ('run-' + name)}", *overrides, *args.overrides]
    samples: list[tuple[float, float]] = []
    with open(work / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        done = threading.Event()

        def sample() -> None:  # RSS over time, from outside, every half second
            while not done.wait(0.5):
                try:
                    with open(f"/proc/{process.pid}/statm") as handle:
                        pages = int(handle.read().split()[1])
                    samples.append((time.perf_counter(), pages * os.sysconf("SC_PAGE_SIZE") / 2**20))
                except (OSError, ValueError):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        done.set()
        sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"variant {name} failed; see {work / (name + '.log')}")
    events = [json.loads(line) for line in probe.read_text().splitlines()]
    return summarize(events, samples, usage.ru_maxrss / 1024)


def summarize(events: list[dict], samples: list[tuple[float, float]], peak_mb: float) -> dict:
    """Peaks by phase from the RSS samples and the probe's phase boundaries."""
    in_validation, start = [], None
    for event in events:
        if event["event"] == "validation_start":
            start = event["time"]
        elif event["event"] == "validation_end" and start is not None:
            in_validation.append((start, event["time"]))
            start = None

    def validating(moment: float) -> bool:
        return any(a <= moment <= b for a, b in in_validation)

    train_start = next(e for e in events if e["event"] == "train_start")
    last = events[-1]
    warm = next((e for e in events if e["event"] == "step" and e["step"] >= WARMUP_STEPS), train_start)
    steps = max(last["step"] - warm["step"], 1)
    return {
        "peak_rss_mb": round(peak_mb),
        "rss_at_train_start_mb": round(train_start["VmRSS"]),
        "peak_in_training_steps_mb": round(max((r for t, r in samples if not validating(t)), default=0)),
        "peak_in_validation_mb": round(max((r for t, r in samples if validating(t)), default=0)),
        "heap_used_at_end_mb": round(last.get("heap_used", 0)),
        "heap_free_at_end_mb": round(last.get("heap_free", 0)),
        "target_tokens_per_s": round(last["tokens"] / last["train_seconds"]) if last["train_seconds"] else None,
        "page_faults_per_step": round((last["minflt"] - warm["minflt"]) / steps),
        "steps": last["step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--val-every", type=int, default=200, help="optimizer steps between validations")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["before", "after", "glibc"], choices=list(VARIANTS))
    parser.add_argument("--work", type=Path, default=RESULTS / "training_memory")
    parser.add_argument("--out", type=Path, default=RESULTS / "training_memory.json")
    parser.add_argument("overrides", nargs="*", help="more seq2seq-train overrides for every variant")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    runs: dict[str, list[dict]] = {name: [] for name in args.variants}
    for round_ in range(args.rounds):
        for name in args.variants:
            runs[name].append(run_variant(name, args, work))
            print(f"round {round_ + 1} {name}: {json.dumps(runs[name][-1])}", flush=True)

    columns = list(runs[args.variants[0]][0])
    medians = {name: {key: statistics.median(r[key] for r in results if r[key] is not None)
                      if any(r[key] is not None for r in results) else None for key in columns}
               for name, results in runs.items()}
    print(f"\nmedians of {args.rounds} round(s), {args.steps} steps, validation every {args.val_every}")
    print(f"{'':>28} | " + " | ".join(f"{name:>9}" for name in args.variants))
    for key in columns:
        print(f"{key:>28} | " + " | ".join(f"{medians[name][key]!s:>9}" for name in args.variants))
    result = cpu_description() | {"steps": args.steps, "val_every": args.val_every, "rounds": args.rounds,
                                  "overrides": args.overrides, "medians": medians, "runs": runs}
    report(result, args.out)


if __name__ == "__main__":
    main()
