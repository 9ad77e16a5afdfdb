"""Process-wide settings that make PyTorch on CPU faster without changing any result, and the
memory they cost.

glibc's malloc serves large blocks (above a threshold that grows to at most 32 MB) with a fresh
mmap and unmaps them on free, so every large tensor starts on pages the kernel must fault in
and zero again. A training step or a beam-search step allocates and frees tensors of the same
sizes over and over (a (tokens, vocabulary) logit matrix is 25 MB at 768 tokens x 8k pieces,
40 MB for 1,250 beam rows), so those page faults are a noticeable part of an fp32 training step
and of beam-search decoding on CPU; keeping the blocks on the heap avoids them (figures: README,
"Benchmarks" and "Training memory").

`reuse_freed_memory()` keeps those pages: the heap serves the blocks and never trims its free
memory on free. The price is that the heap keeps every page it once touched. Training allocates
tensors of new shapes for every batch, freed blocks sit between live ones, and the heap grows:
with every block on the heap, most of the heap is free but kept, and RSS rises with every
validation and over a long run (README, "Training memory").
Training therefore (`use="training"`):
- serves blocks up to `HEAP_BLOCKS_UP_TO` (32 MiB, the largest fixed mmap threshold glibc
  accepts; a training step's largest block, the 768 x 8k logits, is 25 MB) from the heap and
  mmaps larger ones, which are returned when freed;
- calls `release_freed_memory()` (glibc's malloc_trim) after every validation and every 200
  steps (`seq2seq.training.ReleaseFreedMemory`): free pages go back to the kernel, and the next
  steps fault in again only those they use.
Decoding commands (`use="decoding"`, the default) serve every block from the heap: they are
short-lived and beam search's largest blocks (40 MB) gain most.

The commands call `reuse_freed_memory()` first; Python users may call it themselves.
SEQ2SEQ_KEEP_FREED_MEMORY=0 leaves malloc as it is; SEQ2SEQ_KEEP_FREED_MEMORY=all serves every
block from the heap in training too (no memory bound).
SEQ2SEQ_HEAP_BLOCKS_MIB=N lowers the 32 MiB limit: memory for speed. Training shapes change with
every batch, so the heap fragments and grows however often it is trimmed; serving fewer blocks
from the heap bounds it, at the price of page faults on every block it mmaps instead (README,
"Training memory"; benchmarks/training_memory.py --variants heap4 heap1).
What bounds it at no cost in speed is `ask_for_huge_pages()`, which `reuse_freed_memory()` calls
first: PyTorch's 2 MB-aligned large blocks fragment the heap less (README, "Training memory").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

from seq2seq.errors import UserError

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

# glibc's largest fixed mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); mallopt refuses more.
HEAP_BLOCKS_UP_TO = 32 * 2**20
MEMORY_USES = ("training", "decoding")

_libc = None
_applied: str | None = None


def _glibc():
    """glibc through ctypes, or None (other C libraries, other platforms)."""
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            _libc = False
        else:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = libc
            except (OSError, AttributeError):  # musl and other C libraries have no mallopt
                _libc = False
    return _libc or None


def heap_blocks_up_to() -> int:
    """Bytes: the largest block training serves from the heap (SEQ2SEQ_HEAP_BLOCKS_MIB, default 32)."""
    setting = os.environ.get("SEQ2SEQ_HEAP_BLOCKS_MIB", "")
    if not setting:
        return HEAP_BLOCKS_UP_TO
    try:
        mib = float(setting)
    except ValueError:
        mib = -1.0
    if not 0 < mib <= HEAP_BLOCKS_UP_TO / 2**20:
        raise UserError(f"SEQ2SEQ_HEAP_BLOCKS_MIB={setting!r} is not a number of MiB in (0, 32]")
    return int(mib * 2**20)


def reuse_freed_memory(use: str = "decoding") -> bool:
    """Keep freed memory mapped for reuse (glibc only); True when malloc was tuned.

    `use="training"` serves blocks up to `heap_blocks_up_to()` from the heap and mmaps larger ones
    (training also calls `release_freed_memory()` now and then); `use="decoding"` serves every
    block from the heap (a short-lived process whose block sizes repeat: beam search's largest
    blocks are above 32 MiB and gain most). SEQ2SEQ_KEEP_FREED_MEMORY=0 leaves malloc alone,
    =all serves every block from the heap whatever `use` says. The first call decides; later
    calls do nothing and say whether it tuned malloc.
    """
    global _applied
    if use not in MEMORY_USES:
        raise ValueError(f"use={use!r} is not one of {MEMORY_USES}")
    if _applied is not None:
        return True
    setting = os.environ.get("SEQ2SEQ_KEEP_FREED_MEMORY", "1")
    if setting == "0":
        return False
    ask_for_huge_pages()
    libc = _glibc()
    if libc is None:
        return False
    if setting == "all":
        use = "decoding"
    if use == "training":
        # A fixed threshold also stops glibc from raising it (and the trim threshold) by itself.
        heap = bool(libc.mallopt(_M_MMAP_THRESHOLD, heap_blocks_up_to()))
    else:
        # No mmap for large blocks (glibc falls back to mmap by itself if the heap cannot grow).
        heap = bool(libc.mallopt(_M_MMAP_MAX, 0))
    # Never give the heap's free top back to the kernel on free; release_freed_memory() does it.
    if heap and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1):
        _applied = use
    return _applied is not None


def ask_for_huge_pages() -> None:
    """Have PyTorch back its blocks of 2 MB and more with transparent huge pages.

    PyTorch's own switch: with THP_MEM_ALLOC_ENABLE=1 its CPU allocator aligns such blocks to
    2 MB and madvise(MADV_HUGEPAGE)s them, so the kernel maps (and zeroes) them 2 MB at a time
    where Linux's THP is "madvise" or "always" (a no-op where it is "never" or elsewhere).
    A block then faults in with far fewer page faults, and the heap fragments less, since
    2 MB-aligned blocks leave fewer odd-sized holes between them (README, "Training memory";
    benchmarks/training_memory.py --variants nothp after). PyTorch reads the variable at
    its first large allocation, so this must run before the work; a value already set wins.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _proc_kb_field_mb(path: str, field: str) -> float | None:
    """A "Field:   N kB" line of a /proc file, in MB; None where there is none (not Linux)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def huge_pages_mb() -> float | None:
    """MB of this process's anonymous memory on transparent huge pages (Linux), or None."""
    return _proc_kb_field_mb("/proc/self/smaps_rollup", "AnonHugePages")


def freed_memory_use() -> str | None:
    """How `reuse_freed_memory()` tuned malloc in this process ("training", "decoding"), or None."""
    return _applied


def release_freed_memory() -> bool:
    """Give the free pages of every malloc arena back to the kernel (glibc's malloc_trim).

    Live memory is untouched; the next allocations fault in fresh pages. True when glibc
    released something.
    """
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def resident_memory_mb() -> float | None:
    """This process's resident set size in MB (Linux), else None."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def peak_resident_memory_mb() -> float | None:
    """This process's peak resident set size so far in MB (Linux: VmHWM), else None."""
    return _proc_kb_field_mb("/proc/self/status", "VmHWM")


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluation_device(trainer_config) -> str | None:
    """The device to score a just-trained model on: the CPU when training ran there, else the default."""
    return "cpu" if trainer_config.get("accelerator") == "cpu" else None
