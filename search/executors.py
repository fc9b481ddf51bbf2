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
import socket
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from optdsl.errors import DslError

from .evaluate import run_job

STARTUP_TIMEOUT = 300.0  # seconds a new worker may take to import torch and report ready


def failure(job: dict, status: str, error: str) -> dict:
    """The result of a job that never returned one.

    Example:
        >>> r = failure({"id": 3, "kind": "evaluate"}, "timeout", "killed after 300 s")
        >>> r["id"], r["status"], r["fitness"], r["error"]
        (3, 'timeout', None, 'killed after 300 s')
    """
    return {"id": job["id"], "status": status, "fitness": None, "error": error, "seconds": None,
            "task_score": {}, "task_loss": {}, "task_lr": {}}


@contextmanager
def _ctrl_c_held():
    """Hold SIGINT back in this block (main thread only): a process spawned in it starts with it
    blocked (the mask is inherited), so a Ctrl-C while it still imports torch does not print its
    traceback (``_worker`` then ignores it); here a Ctrl-C of that moment stays pending and is
    taken when the block ends. (Ignoring it instead lost it: the search ran its whole budget.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _exit_when_orphaned(parent: int) -> None:
    """End this process as soon as ``parent`` is gone (a search killed by SIGKILL leaves its workers
    to init): a job in progress is not finished for nobody."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _worker(index: int, parent: int, inbox, outbox, target: Callable[[dict], dict]) -> None:
    # Ctrl-C goes to the whole process group; only the parent decides how to stop (one that came
    # while this process started is pending, held back by _ctrl_c_held: ignoring it drops it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # ``parent`` is the search's pid, handed over: by now (torch imported) a parent killed during
    # the spawn has left this process to init, whose pid getppid() would then give
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    outbox.put(("ready", index))  # job timeouts count from here, not from the (slow) spawn
    while True:
        job = inbox.get()
        if job is None:
            return
        try:
            result = target(job)
        except BaseException as e:  # noqa: BLE001 - a worker must survive whatever its job does
            result = failure(job, "error", f"{type(e).__name__}: {e}")
        outbox.put(result)


def _gpu_worker(gpu: str, *args) -> None:
    """A worker that sees only GPU ``gpu`` (set before torch first touches CUDA)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    _worker(*args)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (none when torch
    sees no CUDA device).

    Example (two GPUs, the process allowed the machine's GPUs 3 and 5):
        >>> from unittest import mock
        >>> with mock.patch("torch.cuda.is_available", return_value=True):
        ...     with mock.patch("torch.cuda.device_count", return_value=2):
        ...         with mock.patch.dict(os.environ, {"CUDA_VISIBLE_DEVICES": "3,5"}):
        ...             print(visible_gpus(), gpu_count("local"))
        ['3', '5'] 2
    """
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [g.strip() for g in listed.split(",")] if listed is not None else [str(i) for i in range(count)]
    return names[:count]


class LocalExecutor:
    """``workers`` spawned processes on this machine, one job each at a time. With
    ``gpus`` (names as in ``CUDA_VISIBLE_DEVICES``), worker i sees only ``gpus[i % len(gpus)]``:
    one worker per GPU, or several sharing one when there are more workers than GPUs."""

    def __init__(self, workers: int | None = None, timeout: float = 120.0,
                 target: Callable[[dict], dict] = run_job, gpus: list[str] | None = None):
        self.ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and locks
        self.capacity = workers or os.cpu_count() or 1
        self.timeout, self.target, self.gpus = timeout, target, gpus
        self.outbox = self.ctx.Queue()
        self.slots = [self._spawn(i) for i in range(self.capacity)]

    def _spawn(self, index: int) -> dict:
        inbox = self.ctx.Queue()
        args = (index, os.getpid(), inbox, self.outbox, self.target)
        if self.gpus:
            target, args = _gpu_worker, (self.gpus[index % len(self.gpus)], *args)
        else:
            target = _worker
        proc = self.ctx.Process(target=target, args=args, daemon=True)
        with _ctrl_c_held():
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
        """Stop every worker; jobs in flight are dropped. Idle workers get 2 s to exit; a Ctrl-C
        meanwhile (a user's second) kills them at once rather than leaving them running."""
        try:
            for s in self.slots:
                if s["job"] is None and s["proc"].is_alive():
                    s["inbox"].put(None)
            deadline = time.monotonic() + 2
            for s in self.slots:
                s["proc"].join(max(0.0, deadline - time.monotonic()) if s["job"] is None else 0)
        except KeyboardInterrupt:
            pass
        for s in self.slots:
            if s["proc"].is_alive():
                s["proc"].kill()
                s["proc"].join()
        self.slots = []


def ray_connect(address: str | None = None, num_cpus: int | None = None, files: tuple[str, ...] = ()):
    """Ray, connected to the cluster at ``address`` (``auto``: the one ``ray start`` runs on this
    machine), or to a new local one when ``address`` is None. ``files`` (user task files) travel
    to every worker through the job's runtime environment (``py_modules``: Ray uploads local
    files only when the connection starts, so the first call must name them).

    Example::

        ray = ray_connect()          # a new local cluster; ray_connect("auto") joins `ray start`'s
        ray.cluster_resources()      # e.g. {'CPU': 16.0, 'memory': ..., ...}
    """
    import ray

    if not ray.is_initialized():
        check_reachable(address)
        kw = {"address": address} if address else {"num_cpus": num_cpus}
        env = {"py_modules": sorted(set(files))} if files else None
        main = threading.current_thread() is threading.main_thread()
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
        try:
            ray.init(include_dashboard=False, log_to_driver=False, runtime_env=env, **kw)
        except ConnectionError as e:  # (its first sentence: the rest names Ray's own --address flag)
            raise DslError(f"cannot connect to a Ray cluster ({str(e).split('. ')[0]})", "--ray-address",
                           hint="start one (ray start --head), or leave --ray-address out for a local "
                                "cluster") from None
        finally:
            # ray.init puts in its own SIGTERM handler, which ended the search at once (exit 1, no
            # winner written): ours turns it into Ctrl-C's orderly stop (optdsl.cli.sigterm_as_ctrl_c)
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
    return ray


def check_reachable(address: str | None, seconds: float = 5.0) -> None:
    """DslError unless the Ray head at ``address`` (``host:port`` or ``ray://host:port``) accepts a
    connection within ``seconds``: ray.init retries an address nobody answers at for minutes.
    ``auto``, ``local`` and None (no address) are Ray's to resolve.

    Example:
        >>> check_reachable("127.0.0.1:1")
        Traceback (most recent call last):
        optdsl.errors.DslError: --ray-address: cannot reach a Ray cluster at 127.0.0.1:1 (Connection ...
    """
    host, _, port = (address or "").split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as e:
        raise DslError(f"cannot reach a Ray cluster at {address} ({e.strerror or e})", "--ray-address",
                       hint="start one there (ray start --head), or leave --ray-address out for a local "
                            "cluster") from None


class RayExecutor:
    """The same, on a Ray cluster (``address=None`` starts a local one): one task per job, one CPU
    each; ``workers`` caps the jobs in flight (default: the cluster's CPUs).

    ``files`` (user task files) travel to the workers (:func:`ray_connect`): a worker whose disk
    lacks a task file's path imports the shipped copy by module name
    (:func:`search.user_task.load_task`). ``gpus`` is each job's share of a GPU (``num_gpus``;
    Ray then sets ``CUDA_VISIBLE_DEVICES`` for the job)."""

    def __init__(self, workers: int | None = None, timeout: float = 120.0, address: str | None = None,
                 target: Callable[[dict], dict] = run_job, num_cpus: int | None = None,
                 files: tuple[str, ...] = (), gpus: float = 0.0):
        ray = self.ray = ray_connect(address, num_cpus, files)
        self.remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(target)
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


def gpu_count(kind: str, address: str | None = None, files: tuple[str, ...] = ()) -> int:
    """GPUs the executor ``kind`` can use: this machine's, or the Ray cluster's (connecting to it,
    with ``files`` shipped: see :func:`ray_connect`).

    Example: see :func:`visible_gpus`.
    """
    if kind == "ray":
        return int(ray_connect(address, files=files).cluster_resources().get("GPU", 0))
    return len(visible_gpus())


def make_executor(kind: str, workers: int | None, timeout: float, address: str | None = None,
                  device: str = "cpu", files: tuple[str, ...] = ()):
    """``local`` or ``ray`` (see the classes). With ``device="cuda"`` the workers share the GPUs
    evenly: local workers round-robin over the visible GPUs; each Ray job asks for
    ``min(1, GPUs / workers)`` of a GPU. ``files``: user task files the Ray workers need.

    Example (``make_executor("local", 4, 300.0)`` starts 4 worker processes; an unknown kind
    is refused before anything starts):
        >>> make_executor("slurm", 1, 60.0)
        Traceback (most recent call last):
        ValueError: unknown executor 'slurm'; choose local or ray
    """
    if kind == "local":
        return LocalExecutor(workers, timeout, gpus=visible_gpus() if device == "cuda" else None)
    if kind == "ray":
        gpus = 0.0
        if device == "cuda":
            resources = ray_connect(address, files=files).cluster_resources()
            gpus = min(1.0, resources.get("GPU", 0) / (workers or int(resources.get("CPU", 1))))
        return RayExecutor(workers, timeout, address, files=files, gpus=gpus)
    raise ValueError(f"unknown executor {kind!r}; choose local or ray")
