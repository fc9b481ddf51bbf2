"""Where evaluations run: local worker processes, or a Ray cluster. Same interface for both.

An executor takes jobs (plain dicts: a program travels as its source text, never as pickled
code) and hands back result dicts carrying the job's ``id``. It contains every failure of a
job: an exception inside a job is the job's result (see :func:`search.evaluate.run_job`); a job
running past ``timeout`` seconds is killed and reported with status ``timeout``; a worker that
dies (segfault, out of memory) is replaced and its job reported with status ``error``.

Example::

    ex = LocalExecutor(workers=1, timeout=60)
    ex.submit({"id": 1, "kind": "baseline", "task": "quadratic"})
    ex.poll(30)   # -> [{'id': 1, 'loss': 0.134..., 'lr': 0.056..., 'seconds': ...}] once it is done
    ex.close()
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable

from .evaluate import run_job

STARTUP_TIMEOUT = 300.0  # seconds a new worker may take to import torch and report ready


def failure(job: dict, status: str, error: str) -> dict:
    """The result of a job that never returned one."""
    return {"id": job["id"], "status": status, "fitness": None, "error": error, "seconds": None,
            "task_score": {}, "task_loss": {}, "task_lr": {}}


def _worker(index: int, inbox, outbox, target: Callable[[dict], dict]) -> None:
    # Ctrl-C goes to the whole process group; only the parent decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    outbox.put(("ready", index))  # job timeouts count from here, not from the (slow) spawn
    parent = os.getppid()
    while True:
        try:
            job = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the search was killed (SIGKILL): do not linger
                return
            continue
        if job is None:
            return
        try:
            result = target(job)
        except BaseException as e:  # noqa: BLE001 - a worker must survive whatever its job does
            result = failure(job, "error", f"{type(e).__name__}: {e}")
        outbox.put(result)


class LocalExecutor:
    """``workers`` spawned processes on this machine, one job each at a time."""

    def __init__(self, workers: int | None = None, timeout: float = 120.0,
                 target: Callable[[dict], dict] = run_job):
        self.ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and locks
        self.capacity = workers or os.cpu_count() or 1
        self.timeout, self.target = timeout, target
        self.outbox = self.ctx.Queue()
        self.slots = [self._spawn(i) for i in range(self.capacity)]

    def _spawn(self, index: int) -> dict:
        inbox = self.ctx.Queue()
        proc = self.ctx.Process(target=_worker, args=(index, inbox, self.outbox, self.target), daemon=True)
        proc.start()
        return {"proc": proc, "inbox": inbox, "job": None, "since": 0.0, "ready": False,
                "spawned": time.monotonic()}

    def idle(self) -> int:
        """How many more jobs may be submitted now."""
        return sum(s["job"] is None for s in self.slots)

    def submit(self, job: dict) -> None:
        slot = next(s for s in self.slots if s["job"] is None)
        slot["job"], slot["since"] = job, time.monotonic()
        slot["inbox"].put(job)

    def _expired(self, slot: dict, now: float) -> bool:
        if not slot["ready"]:  # still starting up: allow generously for a loaded machine
            return now - slot["spawned"] > STARTUP_TIMEOUT
        return now - max(slot["since"], slot["ready"]) > self.timeout

    def in_flight(self) -> int:
        return self.capacity - self.idle()

    def poll(self, timeout: float) -> list[dict]:
        """Finished results (waiting up to ``timeout`` s for the first one)."""
        out = []
        try:
            out.append(self.outbox.get(timeout=timeout))
            while True:
                out.append(self.outbox.get_nowait())
        except queue.Empty:
            pass
        now = time.monotonic()
        for msg in [m for m in out if isinstance(m, tuple)]:
            self.slots[msg[1]]["ready"] = now
        out = [m for m in out if not isinstance(m, tuple)]
        for r in out:
            for s in self.slots:
                if s["job"] is not None and s["job"]["id"] == r["id"]:
                    s["job"] = None
        for i, s in enumerate(self.slots):
            job = s["job"]
            if job is None:
                continue
            if self._expired(s, now):
                out.append(failure(job, "timeout", f"killed after {self.timeout:g} s"))
            elif not s["proc"].is_alive():
                out.append(failure(job, "error", f"worker died (exit code {s['proc'].exitcode})"))
            else:
                continue
            s["proc"].kill()
            s["proc"].join()
            self.slots[i] = self._spawn(i)
        return out

    def close(self) -> None:
        """Stop every worker; jobs in flight are dropped."""
        for s in self.slots:
            if s["job"] is None and s["proc"].is_alive():
                s["inbox"].put(None)
        deadline = time.monotonic() + 2
        for s in self.slots:
            s["proc"].join(max(0.0, deadline - time.monotonic()) if s["job"] is None else 0)
            if s["proc"].is_alive():
                s["proc"].kill()
                s["proc"].join()
        self.slots = []


class RayExecutor:
    """The same, on a Ray cluster (``address=None`` starts a local one): one task per job, one CPU
    each; ``workers`` caps the jobs in flight (default: the cluster's CPUs)."""

    def __init__(self, workers: int | None = None, timeout: float = 120.0, address: str | None = None,
                 target: Callable[[dict], dict] = run_job, num_cpus: int | None = None):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            kw = {"address": address} if address else {"num_cpus": num_cpus}
            ray.init(include_dashboard=False, log_to_driver=False, **kw)
        self.remote = ray.remote(num_cpus=1, max_retries=0)(target)
        self.capacity = workers or int(ray.cluster_resources().get("CPU", 1))
        self.timeout = timeout
        self.running: dict = {}  # ObjectRef -> (job, since)

    def idle(self) -> int:
        return self.capacity - len(self.running)

    def in_flight(self) -> int:
        return len(self.running)

    def submit(self, job: dict) -> None:
        self.running[self.remote.remote(job)] = (job, time.monotonic())

    def poll(self, timeout: float) -> list[dict]:
        out = []
        if self.running:
            ready, rest = self.ray.wait(list(self.running), num_returns=1, timeout=timeout)
            if ready and rest:  # collect everything else already finished, without waiting
                ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                job, _ = self.running.pop(ref)
                try:
                    out.append(self.ray.get(ref))
                except Exception as e:  # noqa: BLE001 - the task's process died, or Ray failed it
                    out.append(failure(job, "error", f"{type(e).__name__}: {e}"))
        else:
            time.sleep(min(timeout, 0.05))
        now = time.monotonic()
        for ref, (job, since) in list(self.running.items()):
            if now - since > self.timeout:
                self.ray.cancel(ref, force=True)
                del self.running[ref]
                out.append(failure(job, "timeout", f"killed after {self.timeout:g} s"))
        return out

    def close(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        self.running = {}


def make_executor(kind: str, workers: int | None, timeout: float, address: str | None = None):
    """``local`` or ``ray`` (see the classes)."""
    if kind == "local":
        return LocalExecutor(workers, timeout)
    if kind == "ray":
        return RayExecutor(workers, timeout, address)
    raise ValueError(f"unknown executor {kind!r}; choose local or ray")
