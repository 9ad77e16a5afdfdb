"""Micro-batching: requests that arrive within a few milliseconds share one model call.

Each model gets one `Batcher` with one worker thread, so model work never runs on the server's
event loop and one model decodes one batch at a time. A job is a list of items (sentences) with
a cost (their source tokens) and a key (the decoding options): the worker takes the oldest job,
then for up to `wait_s` collects later jobs with the same key while the summed cost stays within
`budget`, makes one call for all their items and hands each job its slice of the results.
With `enabled=False` every job is a call of its own, one after another (the baseline that the
load benchmark compares with).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Job:
    key: Hashable
    items: Sequence[Any]
    cost: int
    alone: bool = False  # never shares a call (e.g. seeded sampling: its draws would depend on the batch)
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    calls: int = 0
    jobs: int = 0
    items: int = 0
    largest_call: int = 0  # jobs in the largest call
    sizes: list[int] = field(default_factory=list)  # items per call, the last 1,000 calls


class Batcher:
    """Runs `run(key, items) -> results` (one result per item) on a worker thread."""

    def __init__(self, run: Callable[[Hashable, list], list], budget: int = 4000, wait_s: float = 0.005,
                 enabled: bool = True, name: str = "batcher") -> None:
        if budget < 1:
            raise ValueError(f"budget={budget} must be positive")
        self.run, self.budget, self.wait_s, self.enabled = run, budget, max(0.0, wait_s), enabled
        self.stats = BatchStats()
        self._pending: deque[Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, items: Sequence[Any], cost: int, alone: bool = False) -> Future:
        """Queue a job; the Future gets the list of its results (or the call's exception)."""
        job = Job(key, list(items), max(1, cost), alone)
        with self._ready:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append(job)
            self._ready.notify_all()
        return job.future

    def close(self, timeout: float | None = 5.0) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker
    def _take_batch(self) -> list[Job] | None:
        with self._ready:
            while not self._pending and not self._closed:
                self._ready.wait()
            if not self._pending:
                return None
            batch = [self._pending.popleft()]
            if not self.enabled or batch[0].alone:
                return batch
            key, cost = batch[0].key, batch[0].cost
            deadline = time.monotonic() + self.wait_s
            while cost < self.budget:
                for job in list(self._pending):
                    if job.key == key and not job.alone and cost + job.cost <= self.budget:
                        self._pending.remove(job)
                        batch.append(job)
                        cost += job.cost
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._ready.wait(remaining)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            items = [item for job in jobs for item in job.items]
            try:
                with torch.inference_mode():
                    results = self.run(jobs[0].key, items)
                if len(results) != len(items):
                    raise RuntimeError(f"the model returned {len(results)} results for {len(items)} items")
            except BaseException as error:  # noqa: BLE001 - every waiting request gets it; the worker goes on
                for job in jobs:
                    job.future.set_exception(error)
                continue
            self._record(jobs, len(items))
            start = 0
            for job in jobs:
                job.future.set_result(results[start:start + len(job.items)])
                start += len(job.items)

    def _record(self, jobs: list[Job], items: int) -> None:
        stats = self.stats
        stats.calls += 1
        stats.jobs += len(jobs)
        stats.items += items
        stats.largest_call = max(stats.largest_call, len(jobs))
        stats.sizes.append(items)
        del stats.sizes[:-1000]
