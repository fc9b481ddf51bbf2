"""Regularized evolution (aging evolution with tournament selection), as in the search paper.

The population is the ``P`` most recently scored programs. Each new child comes from a
tournament: ``T`` members drawn at random, the fittest is the parent, one mutation makes the
child. Before evaluation the child is described (:func:`search.candidate.describe`); if its
structural hash or fingerprint was scored before, it takes that fitness at once (a cache hit),
else it is sent to an executor. Every scored child joins the population and the oldest member
leaves. When the best fitness has not improved for ``restart_after`` evaluations, the
population restarts from the best program. Children that beat tuned AdamW (fitness > 0) and
rank in the top few are re-evaluated on the larger held-out tasks (the funnel; meta-validation).

The loop keeps every worker busy; results are written to the store as they arrive, so a stop
at any moment (budget, Ctrl-C, SIGKILL) keeps everything finished. With one worker the search
is deterministic for a given seed.

Example (a fresh search of 20 evaluations)::

    store = Store("search.sqlite")
    with LocalExecutor(workers=2) as ex:       # doctest: +SKIP
        best = Search(store, SearchConfig(seed=0), ex).run(evals=20)
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from optdsl.parser import parse
from optdsl.printer import to_source

from .candidate import describe
from .mutate import mutate
from .store import Store
from .tasks import PROXY_TASKS, meta_tasks_for
from .warm_start import initial_program

WORST = -math.inf
FUNNEL_TOP = 3  # meta-validate a child beating AdamW only if it ranks in the top few so far


@dataclass
class SearchConfig:
    """Settings stored with the search (``--resume`` reuses them)."""

    init: str = "adamw"
    population: int = 32
    tournament: int = 4
    seed: int = 0
    tasks: tuple[str, ...] = PROXY_TASKS
    meta_tasks: tuple[str, ...] | None = None  # default: the _large version of each task
    hurdle: float | None = -1.0
    restart_after: int = 300
    objectives: tuple[str, ...] = ("quality",)  # add "memory" for a Pareto tournament

    def __post_init__(self):
        if self.meta_tasks is None:
            self.meta_tasks = meta_tasks_for(self.tasks)

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


@dataclass
class Stats:
    """Counters the progress display and the closing summary read."""

    started: float = field(default_factory=time.monotonic)
    evaluated: int = 0
    cached: int = 0
    failed: int = 0
    submitted: int = 0
    statements: int = 0
    live_statements: int = 0
    best_fitness: float = WORST
    best_id: int | None = None
    meta_validated: int = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def proposed(self) -> int:
        return self.evaluated + self.cached

    @property
    def cache_hit_rate(self) -> float:
        return self.cached / self.proposed if self.proposed else 0.0

    @property
    def redundant_fraction(self) -> float:
        return 1 - self.live_statements / self.statements if self.statements else 0.0


def _fitness(row: dict) -> float:
    return WORST if row.get("fitness") is None else float(row["fitness"])


class Search:
    """One search over ``store`` (fresh or resumed), running jobs on ``executor``."""

    def __init__(self, store: Store, config: SearchConfig, executor, progress: Callable | None = None,
                 job_timeout_grace: float = 30.0):
        self.store, self.config, self.executor, self.progress = store, config, executor, progress
        self.grace = job_timeout_grace
        stored = store.get_meta("config")
        if stored is None:
            store.set_meta("config", asdict(config))
        self.rng = np.random.default_rng([config.seed, store.count()])
        self.stats = Stats()
        self.population: deque[dict] = deque(
            ({**r, "program": parse(r["source"], "<store>")} for r in store.recent(config.population)),
            maxlen=config.population)
        self.by_hash: dict[str, dict] = {}
        self.by_fingerprint: dict[str, dict] = {}
        for r in store.all():
            if r["cached_from"] is None:
                self.by_hash.setdefault(r["structural_hash"], r)
                self.by_fingerprint.setdefault(r["fingerprint"], r)
            if r["fitness"] is not None and r["status"] == "ok" and r["fitness"] > self.stats.best_fitness:
                self.stats.best_fitness, self.stats.best_id = r["fitness"], r["id"]
        self.best_at = 0  # evaluation count at the last improvement
        self.pending: dict[int, dict] = {}  # job id -> what to record when it returns
        self.meta_queue: deque[int] = deque()
        self.next_job = 0
        self.requested: set[str] = set()  # tasks whose baseline job is out
        self.baselines = {t: b["loss"] for t, b in store.baselines().items()}

    # --- jobs -------------------------------------------------------------------------------
    def _submit(self, job: dict, record: dict) -> None:
        job["id"] = self.next_job
        self.next_job += 1
        self.pending[job["id"]] = record
        self.executor.submit(job)

    def _drain(self, timeout: float) -> None:
        for result in self.executor.poll(timeout):
            record = self.pending.pop(result["id"], None)
            if record is not None:
                self._handle(record, result)

    def _wait_until(self, done: Callable[[], bool], deadline: float | None = None) -> None:
        while not done():
            if deadline is not None and time.monotonic() > deadline:
                return
            self._drain(0.2)
            self._report()

    def _request_baselines(self, tasks) -> bool:
        """Tune AdamW on each task without a baseline, as workers come free; True once all are in."""
        for task in tasks:
            if task not in self.baselines and task not in self.requested and self.executor.idle() > 0:
                self.requested.add(task)
                self._submit({"kind": "baseline", "task": task}, {"kind": "baseline", "task": task})
        return all(t in self.baselines for t in tasks)

    # --- results ----------------------------------------------------------------------------
    def _handle(self, record: dict, result: dict) -> None:
        kind = record["kind"]
        if kind == "baseline":
            if "loss" not in result:  # a baseline that failed or timed out is a setup error
                raise RuntimeError(f"AdamW baseline on {record['task']} failed: {result.get('error')}")
            self.store.set_baseline(record["task"], result["loss"], result["lr"], result["seconds"])
            self.baselines[record["task"]] = result["loss"]
        elif kind == "meta":
            self.store.set_meta_validation(record["pid"], result.get("fitness"), result.get("task_score", {}))
            self.stats.meta_validated += 1
        else:
            self._record(record, result)

    def _record(self, record: dict, result: dict) -> dict:
        row = {k: v for k, v in record.items() if k not in ("kind", "program")}
        row.update(status=result["status"], fitness=result.get("fitness"), task_score=result.get("task_score"),
                   task_loss=result.get("task_loss"), task_lr=result.get("task_lr"),
                   eval_seconds=result.get("seconds"), error=result.get("error"))
        row["id"] = self.store.add(**row)
        self.stats.evaluated += 1
        self.stats.failed += row["fitness"] is None
        self._join(row, record["program"])
        self.by_hash.setdefault(row["structural_hash"], row)
        self.by_fingerprint.setdefault(row["fingerprint"], row)
        if row["status"] == "ok" and _fitness(row) > self.stats.best_fitness:
            self.stats.best_fitness, self.stats.best_id = row["fitness"], row["id"]
            self.best_at = self.stats.evaluated
        if row["status"] == "ok" and _fitness(row) > 0 and self._rank(row) < FUNNEL_TOP:
            self.meta_queue.append(row["id"])
        return row

    def _rank(self, row: dict) -> int:
        return sum(1 for r in self.store.top(FUNNEL_TOP) if r["fitness"] > row["fitness"])

    def _join(self, row: dict, program) -> None:
        """Add a scored child to the population (the oldest member leaves when it is full)."""
        self.population.append({**row, "program": program})
        self.stats.statements += row["n_statements"]
        self.stats.live_statements += row["n_live"]

    # --- proposing children -------------------------------------------------------------------
    def _tournament(self) -> dict:
        members = list(self.population)
        k = min(self.config.tournament, len(members))
        sample = [members[i] for i in sorted(self.rng.choice(len(members), size=k, replace=False))]
        if "memory" not in self.config.objectives:
            return max(sample, key=_fitness)
        front = [a for a in sample if not any(
            _fitness(b) >= _fitness(a) and b["memory"] <= a["memory"]
            and (_fitness(b) > _fitness(a) or b["memory"] < a["memory"]) for b in sample)]
        return front[int(self.rng.integers(len(front)))]

    def _propose(self) -> None:
        """One child: a cache hit is recorded at once, anything new goes to the executor."""
        parent = self._tournament()
        child, what = mutate(parent["program"], self.rng)
        info = describe(child)
        record = {"kind": "evaluate", "program": child, "parent": parent["id"], "mutation": what, **info}
        hit = self.by_hash.get(info["structural_hash"]) or self.by_fingerprint.get(info["fingerprint"])
        if hit is not None:
            row = {k: v for k, v in record.items() if k not in ("kind", "program")}
            row.update(status="cached", fitness=hit["fitness"], task_score=hit["task_score"],
                       task_loss=hit["task_loss"], task_lr=hit["task_lr"], cached_from=hit["id"],
                       eval_seconds=0.0)
            row["id"] = self.store.add(**row)
            self.stats.cached += 1
            self._join(row, child)
            return
        self.stats.submitted += 1
        self._submit({"kind": "evaluate", "source": info["source"], "tasks": list(self.config.tasks),
                      "baselines": self.baselines, "hurdle": self.config.hurdle}, record)

    def _restart_if_stuck(self) -> None:
        if self.stats.evaluated - self.best_at >= self.config.restart_after and self.stats.best_id is not None:
            best = self.store.get(self.stats.best_id)
            self.population.clear()
            self.population.append({**best, "program": parse(best["source"], "<store>")})
            self.best_at = self.stats.evaluated

    def _start_meta(self) -> None:
        while self.meta_queue and self.executor.idle() > 0:
            pid = self.meta_queue.popleft()
            row = self.store.get(pid)
            self._submit({"kind": "evaluate", "source": row["source"], "tasks": list(self.config.meta_tasks),
                          "baselines": self.baselines, "hurdle": None}, {"kind": "meta", "pid": pid})

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self)

    # --- the loop ---------------------------------------------------------------------------
    def run(self, evals: int | None = None, seconds: float | None = None) -> dict | None:
        """Search until ``evals`` more evaluations or ``seconds`` pass (or Ctrl-C); returns the
        best row. Jobs still running at the end are awaited (up to the grace period)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while not self._request_baselines(self.config.tasks):
                self._drain(0.2)
                self._report()
            if not self.population:
                program = initial_program(self.config.init)
                info = describe(program)
                self._submit({"kind": "evaluate", "source": info["source"], "tasks": list(self.config.tasks),
                              "baselines": self.baselines, "hurdle": None},
                             {"kind": "evaluate", "program": program, "parent": None,
                              "mutation": f"init {self.config.init}", **info})
                self.stats.submitted += 1
                self._wait_until(lambda: not self.pending)
            while True:
                out_of_budget = (evals is not None and self.stats.submitted >= evals) or (
                    deadline is not None and time.monotonic() >= deadline)
                if out_of_budget:
                    break
                if self.meta_queue and self._request_baselines(self.config.meta_tasks):
                    self._start_meta()
                while self.executor.idle() > 0 and not (evals is not None and self.stats.submitted >= evals) \
                        and not (deadline is not None and time.monotonic() >= deadline):
                    self._propose()
                    self._restart_if_stuck()
                self._drain(0.1)
                self._report()
            self._wait_until(lambda: not self.pending, time.monotonic() + self.grace)
        except KeyboardInterrupt:
            pass  # every finished evaluation is already in the store
        self._report()
        return None if self.stats.best_id is None else self.store.get(self.stats.best_id)

    def best_program(self):
        """The best program so far (as mutated; simplify it for display)."""
        if self.stats.best_id is None:
            return None
        return parse(self.store.get(self.stats.best_id)["source"], "<store>")


__all__ = ["Search", "SearchConfig", "Stats", "to_source"]
