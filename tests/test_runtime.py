"""malloc tuned by the commands (seq2seq.runtime): freed blocks are kept for reuse."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh interpreter: the first call in a process decides how malloc is tuned, and the test
# process may have run a command (which tunes it for training) before this test.
PAGE_FAULTS_OF_REUSED_BLOCKS = """
import resource, torch
from seq2seq.runtime import reuse_freed_memory
assert reuse_freed_memory() and reuse_freed_memory()  # a second call is harmless
for _ in range(3):  # 20 MB blocks: the heap grows to hold them (it takes two rounds)
    torch.empty(5_000_000).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.empty(5_000_000).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs glibc's mallopt")
def test_reuse_freed_memory_stops_page_faults_on_large_tensors():
    result = subprocess.run([sys.executable, "-c", PAGE_FAULTS_OF_REUSED_BLOCKS], capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin", "SEQ2SEQ_KEEP_FREED_MEMORY": "1"})
    assert result.returncode == 0, result.stderr
    # With mmap'ed blocks every fill would fault in all 4,883 of its 4 KB pages again.
    assert int(result.stdout) < 1000
