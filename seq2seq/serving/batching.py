"""Micro-batching: requests that arrive within a few milliseconds share one model call.

Each model gets one `Batcher` with one worker thread, so model work never runs on the server's
event loop and one model decodes one batch at a time. A job is a list of items (sentences) with
a cost (their source tokens) and a key (the decoding options): the worker takes the oldest job,
then for up to `wait_s` collects later jobs with the same key while the summed cost stays within
`budget`, makes one call for all their items and hands each job its slice of the results.
With `enabled=False` every job is a call of its own, one after another (the baseline that the
load benchmark compares with).

Bounds (seq2seq-serve's overload and deadline behaviour):
  - at most `max_queue` jobs wait; `submit` past that raises `QueueFull` at once, so a burst
    costs a refusal instead of memory and an ever longer wait;
  - a job has a deadline; one whose deadline has passed (or whose request has gone) when the
    worker reaches it is dropped without any model work;
  - a call already running is stopped between decoding steps once none of its jobs is wanted
    any more (`watch_network` puts the check in front of every module of the model) or the
    batcher closes; its jobs then fail with `DeadlineExceeded` or `BatcherClosed`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The model's queue holds `max_queue` jobs already."""


class DeadlineExceeded(Exception):
    """The job's deadline passed (or its request went away) before its results were ready."""


class BatcherClosed(Exception):
    """The server is shutting down; the job will not be run."""


class CallAbandoned(Exception):
    """Raised inside a model call to stop it: nobody waits for its results any more."""


class JobFuture(Future):
    """A Future that its waiter can give up on even once the worker has started it (a plain
    Future can only be cancelled while pending)."""

    def __init__(self, deadline: float | None) -> None:
        super().__init__()
        self.deadline = deadline  # time.monotonic() seconds, None = no deadline
        self._abandoned = False

    def abandon(self) -> None:
        self._abandoned = True
        self.cancel()

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (time.monotonic() if now is None else now) >= self.deadline

    def unwanted(self, now: float | None = None) -> bool:
        return self._abandoned or self.cancelled() or self.expired(now)


@dataclass
class Job:
    key: Hashable
    items: Sequence[Any]
    cost: int
    alone: bool = False  # never shares a call (e.g. seeded sampling: its draws would depend on the batch)
    future: JobFuture = field(default_factory=lambda: JobFuture(None))


@dataclass
class BatchStats:
    calls: int = 0
    jobs: int = 0
    items: int = 0
    largest_call: int = 0  # jobs in the largest call
    sizes: list[int] = field(default_factory=list)  # items per call, the last 1,000 calls
    rejected: int = 0      # submits refused by a full queue
    expired: int = 0       # jobs dropped before any model work (deadline passed or request gone)
    stopped_calls: int = 0  # calls stopped part-way because nobody waited for them


class Call:
    """The call the worker thread is making now, for the checks inside the model."""

    CHECK_EVERY_S = 0.002  # the check reads the clock once per job: not more often than this

    def __init__(self, jobs: list[Job], closing: threading.Event) -> None:
        self.jobs, self.closing = jobs, closing
        self._next_check = 0.0
        self._abandoned = False

    def abandoned(self) -> bool:
        if self._abandoned:
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.CHECK_EVERY_S
        self._abandoned = self.closing.is_set() or all(job.future.unwanted(now) for job in self.jobs)
        return self._abandoned


_local = threading.local()


def current_call() -> Call | None:
    return getattr(_local, "call", None)


def stop_if_abandoned(*_: Any) -> None:
    """A forward pre-hook: model work on a batcher's thread stops once its call is abandoned;
    on any other thread (the Python API, tests) it does nothing."""
    call = getattr(_local, "call", None)
    if call is not None and call.abandoned():
        raise CallAbandoned("nobody waits for this call any more")


_watched: weakref.WeakSet = weakref.WeakSet()


def no_autograd():
    """torch's inference mode around model work, where torch is installed (the exported-model
    runtime has none, and needs none)."""
    try:
        import torch
    except ModuleNotFoundError:
        return contextlib.nullcontext()
    return torch.inference_mode()


def watch_network(network: Any) -> bool:
    """Put `stop_if_abandoned` in front of every module of a torch network (once per module), or
    in the `before_step` slot of an exported model (seq2seq.portable), which calls it every step.

    The searches call the decoder's modules once per step, so a call stops within one decoding
    step of the moment the last of its requests gives up. False for anything else."""
    if hasattr(network, "before_step"):
        network.before_step = stop_if_abandoned
        return True
    try:
        import torch
    except ModuleNotFoundError:
        return False
    if not isinstance(network, torch.nn.Module):
        return False
    for module in network.modules():
        if module not in _watched:
            module.register_forward_pre_hook(stop_if_abandoned)
            _watched.add(module)
    return True


class Batcher:
    """Runs `run(key, items) -> results` (one result per item) on a worker thread."""

    def __init__(self, run: Callable[[Hashable, list], list], budget: int = 4000, wait_s: float = 0.005,
                 enabled: bool = True, name: str = "batcher", max_queue: int | None = None,
                 on_call: Callable[[int], None] | None = None,
                 on_drop: Callable[[str, int], None] | None = None) -> None:
        if budget < 1:
            raise ValueError(f"budget={budget} must be positive")
        if max_queue is not None and max_queue < 1:
            raise ValueError(f"max_queue={max_queue} must be positive")
        self.run, self.budget, self.wait_s, self.enabled = run, budget, max(0.0, wait_s), enabled
        self.max_queue = max_queue
        self.on_call = on_call  # items per finished call (metrics)
        self.on_drop = on_drop  # (reason, jobs) for jobs that got no results (metrics)
        self.stats = BatchStats()
        self._pending: deque[Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def depth(self) -> int:
        """Jobs waiting for the worker (not the ones in the running call)."""
        return len(self._pending)

    def submit(self, key: Hashable, items: Sequence[Any], cost: int, alone: bool = False,
               deadline: float | None = None) -> JobFuture:
        """Queue a job; the Future gets the list of its results (or the call's exception).

        Raises QueueFull when `max_queue` jobs wait already, BatcherClosed once closed."""
        job = Job(key, list(items), max(1, cost), alone, JobFuture(deadline))
        with self._ready:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if self.max_queue is not None and len(self._pending) >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(f"{len(self._pending)} requests wait for this model already (max_queue)")
            self._pending.append(job)
            self._ready.notify_all()
        return job.future

    def close(self, timeout: float | None = 5.0) -> None:
        """Fail the waiting jobs, stop the running call at its next step, end the worker."""
        with self._ready:
            self._closed = True
            self._closing.set()
            waiting = list(self._pending)
            self._pending.clear()
            self._ready.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherClosed("the server is shutting down"))
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker
    def _drop_unwanted(self) -> None:
        """Called with the lock held: jobs nobody waits for leave the queue unrun."""
        now = time.monotonic()
        dropped = [job for job in self._pending if job.future.unwanted(now)]
        for job in dropped:
            self._pending.remove(job)
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(DeadlineExceeded("the deadline passed before the model got to it"))
        if dropped:
            self.stats.expired += len(dropped)
            if self.on_drop:
                self.on_drop("expired_in_queue", len(dropped))

    def _take_batch(self) -> list[Job] | None:
        with self._ready:
            while True:
                self._drop_unwanted()
                if self._pending or self._closed:
                    break
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
            _local.call = Call(jobs, self._closing)
            try:
                with no_autograd():
                    results = self.run(jobs[0].key, items)
                if len(results) != len(items):
                    raise RuntimeError(f"the model returned {len(results)} results for {len(items)} items")
            except CallAbandoned:
                self.stats.stopped_calls += 1
                if self.on_drop:
                    self.on_drop("stopped_mid_call", len(jobs))
                error = BatcherClosed("the server is shutting down") if self._closing.is_set() else \
                    DeadlineExceeded("stopped: the deadline passed while the model worked on it")
                for job in jobs:
                    job.future.set_exception(error)
                continue
            except BaseException as error:  # noqa: BLE001 - every waiting request gets it; the worker goes on
                for job in jobs:
                    job.future.set_exception(error)
                continue
            finally:
                _local.call = None
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
        if self.on_call:
            self.on_call(items)
