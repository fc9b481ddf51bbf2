"""Regularized evolution (aging evolution with tournament selection), as in the search paper.

The population is the ``P`` most recently scored programs. Each new child comes from a
tournament: ``T`` members drawn at random, the fittest is the parent, one mutation makes the
child. Before evaluation the child is described (:func:`search.candidate.describe`); if its
structural hash or (scale-free) fingerprint was scored before, it takes that fitness at once (a
cache hit; a rescaled program with the learning rates rescaled), else it goes to an executor.
Every scored child joins the population and the oldest member leaves. When the best fitness has
not improved for ``restart_after`` evaluations, the population restarts from the best program.
Children that beat tuned AdamW (fitness > 0) and whose rule ranks in the top few are re-evaluated
on the larger held-out tasks (the funnel; meta-validation), once per rule (fingerprint).

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
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from optdsl.errors import DslError
from optdsl.parser import parse
from optdsl.printer import to_source

from .ablation import MAX_ROUNDS, META_TRIES, PREFIX, PROXY_TOLERANCE, ablations
from .candidate import Seen, describe, same_rule
from .evaluate import CANDIDATE_LRS, CONFIRM_SEEDS, HELD_OUT_SEEDS, HURDLE, refusal
from .mutate import mutate
from .selection import ties, winner
from .store import Store
from .tasks import HURDLE_ONLY, PROXY_TASKS, meta_tasks_for
from .warm_start import initial_program

WORST = -math.inf
FUNNEL_TOP = 3  # meta-validate a child beating AdamW only if it ranks in the top few so far
FUNNEL_MIN = 0.0  # ... and its proxy fitness is above this (0: as good as tuned AdamW)
META_SHARE = 0.25  # at most this share of worker time goes to meta-validation during the search
PROPOSALS_PER_SLOT = 8  # cache hits allowed per child before a partial batch is sent


@dataclass
class SearchConfig:
    """Settings stored with the search (``--resume`` reuses them). ``init`` names one warm start
    or several, comma-separated (``adamw,lion``); ``batch`` children are scored together in one
    job (one forward/backward pass of each task serves them all). Tasks are built-in names or
    user tasks by reference (``/abs/path/file.py:function``); with no held-out tasks there is no
    meta-validation. Evaluations and baselines run on ``device`` (``cpu`` or ``cuda``)."""

    init: str = "torch_adamw"  # AdamW with bias correction: constant-lr proxies rewarded dropping it
    population: int = 32
    tournament: int = 4
    seed: int = 0
    tasks: tuple[str, ...] = PROXY_TASKS
    meta_tasks: tuple[str, ...] | None = None  # default: the held-out tasks for these proxies
    hurdle: float | None = HURDLE
    restart_after: int = 300
    objectives: tuple[str, ...] = ("quality",)  # add "memory" for a Pareto tournament
    batch: int = 8  # one job of 8 ran 80 children 1.25x faster than jobs of 4 (docs/search.md)
    device: str = "cpu"
    held_out_seeds: tuple[int, ...] = HELD_OUT_SEEDS  # a held-out loss is measured on these
    confirm_seeds: tuple[int, ...] = CONFIRM_SEEDS  # a promising child's proxy losses are measured on these
    schedule: str = "cosine"  # the lr over each task's steps, for candidates and tuned AdamW alike
    loss_averse: bool = True  # a task's loss weighs about twice a gain in the fitness (evaluate.aggregate)
    hurdle_only: tuple[str, ...] | None = None  # proxies left out of the fitness (default: tasks.HURDLE_ONLY)

    def __post_init__(self):
        if self.meta_tasks is None:
            self.meta_tasks = meta_tasks_for(self.tasks)
        if self.hurdle_only is None:
            self.hurdle_only = HURDLE_ONLY if self.tasks == PROXY_TASKS else ()

    @property
    def inits(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.init.split(",") if n.strip())

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        """The settings stored by a search; one stored before held-out (or a promising child's
        proxy) losses were measured on fresh seeds keeps measuring them on the sweep's own (its
        stored scores and baselines were), one stored before the schedule was a setting keeps
        its lr constant, one stored before losses weighed more than gains keeps the plain mean, and
        one stored before a proxy could be a hurdle only counts every proxy, so a resumed search
        compares like with like."""
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{"held_out_seeds": (), "confirm_seeds": (), "schedule": "constant", "loss_averse": False,
                      "hurdle_only": (), **d})


def _settings(store: Store) -> SearchConfig | None:
    """The search's settings as ``--resume`` reads them, None where they are unreadable."""
    try:
        return SearchConfig.from_dict(store.get_meta("config") or {})
    except (DslError, TypeError, ValueError, KeyError, AttributeError):
        return None


def weighs_losses(store: Store) -> bool | None:
    """Whether the search in ``store`` scores with losses weighing more than gains
    (:func:`search.evaluate.aggregate`), its settings read as ``--resume`` reads them
    (:meth:`SearchConfig.from_dict`: one stored before the setting keeps the plain mean); None where
    they are unreadable (``report`` and ``export`` still read its programs).

    Example:
        >>> store = Store(":memory:")
        >>> weighs_losses(store), store.set_meta("config", {"loss_averse": True}), weighs_losses(store)
        (False, None, True)
    """
    flag = getattr(_settings(store), "loss_averse", None)
    return flag if isinstance(flag, bool) else None


def hurdles_only(store: Store) -> tuple[str, ...]:
    """The proxies the search in ``store`` trains as hurdles only, left out of its fitness
    (:data:`search.tasks.HURDLE_ONLY`); none where its settings are unreadable or predate them.

    Example:
        >>> store = Store(":memory:")
        >>> hurdles_only(store), store.set_meta("config", {"hurdle_only": ["logreg"]}), hurdles_only(store)
        ((), None, ('logreg',))
    """
    tasks = getattr(_settings(store), "hurdle_only", ())
    return tuple(tasks) if isinstance(tasks, tuple) and all(isinstance(t, str) for t in tasks) else ()


@dataclass
class Stats:
    """Counters the progress display and the closing summary read."""

    started: float = field(default_factory=time.monotonic)
    evaluated: int = 0
    cached: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # of the evaluated children: status -> count
    submitted: int = 0
    statements: int = 0
    live_statements: int = 0
    best_fitness: float = WORST
    best_id: int | None = None
    meta_validated: int = 0
    confirmed: int = 0  # children scored on fresh seeds (above the population's median)
    stage: str = "searching"

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


def _stored(record: dict) -> dict:
    """The columns of a proposed child's row (its parsed program and its parent's learning rates
    travel with it but are not stored)."""
    return {k: v for k, v in record.items() if k not in ("program", "parent_lr")}


def _fitness(row: dict) -> float:
    return WORST if row.get("fitness") is None else float(row["fitness"])


class Search:
    """One search over ``store`` (fresh or resumed), running jobs on ``executor``."""

    def __init__(self, store: Store, config: SearchConfig, executor, progress: Callable | None = None,
                 job_timeout_grace: float = 30.0, funnel_grace: float = 120.0,
                 simplify_grace: float | None = 60.0):
        self.store, self.config, self.executor, self.progress = store, config, executor, progress
        self.grace, self.funnel_grace, self.simplify_grace = job_timeout_grace, funnel_grace, simplify_grace
        self.batch: list[dict] = []  # children proposed, waiting for a full batch
        self.ahead = False  # the next batch was proposed while every worker was busy
        self.meta_seconds = 0.0  # worker time spent on meta-validation in this run
        stored = store.get_meta("config")
        if stored is None:
            store.set_meta("config", asdict(config))
        self.rng = np.random.default_rng([config.seed, store.count()])
        self.stats = Stats()
        self.interrupted = False  # a KeyboardInterrupt ended run() (its evaluations are all stored)
        self.population: deque[dict] = deque(
            ({**r, "program": parse(r["source"], "<store>")} for r in store.recent(config.population)),
            maxlen=config.population)
        self.seen = Seen()
        for r in store.originals():  # a cache hit is neither a key of its own nor a better score
            self.seen.add(r)
            if r["fitness"] is not None and r["status"] == "ok" and r["fitness"] > self.stats.best_fitness:
                self.stats.best_fitness, self.stats.best_id = r["fitness"], r["id"]
        self.best_at = 0  # evaluation count at the last improvement
        self.pending: dict[int, dict] = {}  # job id -> what to record when it returns
        self.meta_queue: deque[int] = deque()
        # Rules (fingerprints: the same updates up to the learning rate) meta-validated, queued for
        # it or under way: each is held out once. A README job had held out one rule five times
        # (eps 1e-8, 1.4e-8, 4.9e-9...: -0.053 to -0.065), which only re-drew its noise.
        self.held_rules: set[str] = {r["fingerprint"] for r in store.meta_validated()}
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
                meta = task in self.config.meta_tasks
                fresh = self.config.held_out_seeds if meta else self.config.confirm_seeds
                self._submit({"kind": "baseline", "task": task, "device": self.config.device,
                              "fresh_seeds": list(fresh), "schedule": self.config.schedule},
                             {"kind": "baseline", "task": task})
        return all(t in self.baselines for t in tasks)

    # --- results ----------------------------------------------------------------------------
    def _handle(self, record: dict, result: dict) -> None:
        kind = record["kind"]
        if kind == "baseline":  # failed, timed out or diverged: a setup error (nothing to compare with)
            if "where" in result:  # the user's task file failed, at this line
                path, line, col = result["where"]
                readable = line and Path(path).is_file()
                source = Path(path).read_text(encoding="utf-8", errors="replace") if readable else None
                raise DslError(result["error"], path, line, col, source)
            if "loss" not in result:
                raise DslError(f"tuning AdamW on task {record['task']} failed: {result.get('error')}")
            if not math.isfinite(result["loss"]):
                raise DslError(f"tuned AdamW's loss on task {record['task']} is not finite (nan or inf) at "
                               "every learning rate it tried: a task AdamW cannot train gives the search "
                               "no baseline to score against",
                               hint="check the task's data and loss for nan and inf")
            if "print" in result:  # (first: a baseline stored without its task's print would go unchecked)
                prints = self.store.get_meta("task_prints") or {}
                self.store.set_meta("task_prints", {**prints, record["task"]: result["print"]})
            self.store.set_baseline(record["task"], result["loss"], result["lr"], result["seconds"])
            self.baselines[record["task"]] = result["loss"]
            return
        # A job that never returned (timeout, dead worker) is the same failure for each program.
        results = result.get("results") or [result] * len(record["programs"])
        if kind == "meta":
            (r,) = results
            self.meta_seconds += r.get("seconds") or 0.0
            self.store.set_meta_validation(record["pid"], r.get("fitness"), r.get("task_score") or {})
            self.stats.meta_validated += 1
            return
        for child, r in zip(record["programs"], results):
            self._record(child, r)

    def _record(self, record: dict, result: dict) -> dict:
        row = _stored(record)
        row.update(status=result["status"], fitness=result.get("fitness"), task_score=result.get("task_score"),
                   task_loss=result.get("task_loss"), task_lr=result.get("task_lr"),
                   eval_seconds=result.get("seconds"), error=result.get("error"))
        row["id"] = self.store.add(**row)
        self.stats.evaluated += 1
        self.stats.statuses[row["status"]] += 1
        self.stats.confirmed += bool(result.get("confirmed"))
        self._join(row, record["program"])
        self.seen.add(row)
        if row["status"] == "ok" and _fitness(row) > self.stats.best_fitness:
            self.stats.best_fitness, self.stats.best_id = row["fitness"], row["id"]
            self.best_at = self.stats.evaluated
        if (self.config.meta_tasks and row["status"] == "ok" and _fitness(row) > FUNNEL_MIN
                and self._rank(row) < FUNNEL_TOP):
            self._queue_meta(row)
        return row

    def _top_rules(self, k: int) -> list[dict]:
        """The best-scored row of each of the ``k`` best rules by proxy fitness (near-copies of one
        rule, which differ in a constant the fingerprint does not see, count once)."""
        out, rules = [], set()
        for row in self.store.top(4 * k):
            if row["fingerprint"] not in rules and len(out) < k:
                out.append(row)
            rules.add(row["fingerprint"])
        return out

    def _rank(self, row: dict) -> int:
        """How many other rules score better on the proxies than ``row`` (0: the best)."""
        return sum(1 for r in self._top_rules(FUNNEL_TOP)
                   if r["fitness"] > row["fitness"] and r["fingerprint"] != row["fingerprint"])

    def _queue_meta(self, row: dict) -> None:
        """Queue ``row`` for meta-validation unless its rule was held out or is queued already."""
        if row["fingerprint"] not in self.held_rules:
            self.held_rules.add(row["fingerprint"])
            self.meta_queue.append(row["id"])

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

    def _propose(self) -> dict | None:
        """One child: a cache hit is recorded at once (None); anything new is returned for
        evaluation. Children waiting in this batch or out in a job count as seen."""
        parent = self._tournament()
        child, what = mutate(parent["program"], self.rng)
        info, hit = self.seen.describe(child)
        record = {"program": child, "parent": parent["id"], "parent_lr": parent.get("task_lr") or {},
                  "mutation": what, **info}
        same, task_lr = same_rule(hit, info, CANDIDATE_LRS) if hit is not None else (False, None)
        if not same:  # new, or a rescaling whose sweep would reach past the grid's ends
            for waiting in self._children_in_flight():
                if info["structural_hash"] == waiting["structural_hash"] or info["fingerprint"] == waiting["fingerprint"]:
                    return None  # a duplicate of a child in flight: drop it rather than score it twice
            return record
        row = _stored(record)
        row.update(status="cached", fitness=hit["fitness"], task_score=hit["task_score"],
                   task_loss=hit["task_loss"], task_lr=task_lr, cached_from=hit["id"], eval_seconds=0.0)
        row["id"] = self.store.add(**row)
        self.stats.cached += 1
        self._join(row, child)
        return None

    def _children_in_flight(self):
        """Children proposed and not scored yet: this batch's, then those of the jobs out."""
        yield from self.batch
        for record in self.pending.values():
            if record["kind"] == "evaluate":
                yield from record["programs"]

    def _evaluate(self, records: list[dict], tasks, hurdle, kind: str = "evaluate", confirm_all: bool = False,
                  **extra) -> None:
        """Send ``records``' programs to a worker as one batch job. On the proxies, those that score
        above the population's median (every one with ``confirm_all``) are scored on fresh seeds
        (:data:`search.evaluate.CONFIRM_SEEDS`): the members tournaments pick carry no sweep's luck."""
        job = {"kind": "evaluate", "sources": [r["source"] for r in records], "tasks": list(tasks),
               "baselines": self.baselines, "hurdle": hurdle, "device": self.config.device,
               "schedule": self.config.schedule, "loss_averse": self.config.loss_averse,
               "hurdle_only": list(self.config.hurdle_only),
               "horizon": kind == "meta"}  # a held-out winner must also keep training past the tasks' length
        if kind == "meta":  # held-out sweeps start around the learning rates that won the proxies
            job["tuned"], job["fresh_seeds"] = [r["task_lr"] or {} for r in records], list(self.config.held_out_seeds)
        else:  # a child's sweeps start around its parent's learning rates (0.66x the training time)
            job["tuned"], job["from_parent"] = [r.get("parent_lr") or {} for r in records], True
            if self.config.confirm_seeds:
                fitness = [_fitness(r) for r in self.population]
                job["confirm_above"] = WORST if confirm_all or not fitness else float(np.median(fitness))
                job["confirm_seeds"] = list(self.config.confirm_seeds)
        self._submit(job, {"kind": kind, "programs": records, **extra})
        if kind == "evaluate":
            self.stats.submitted += len(records)
            self.ahead = False

    def _fill_batch(self, budget_left: Callable[[], int | None], submit: bool = True) -> None:
        """Propose children until a batch is full (then submit it, if ``submit``) or proposals
        keep hitting the cache; a partial batch is submitted only when nothing else keeps the
        workers busy. Children the guards refuse are recorded here and take no place in a batch,
        so every job trains a full batch (45% of the children of the 10-minute runs were
        refused: their jobs trained 4.4 children on average, where 8 share the forward and
        backward passes). ``budget_left()``: evaluations left, ``None`` without a limit."""

        def size() -> int:
            left = budget_left()
            return self.config.batch if left is None else min(self.config.batch, left)

        for _ in range(PROPOSALS_PER_SLOT * self.config.batch):
            if len(self.batch) >= size():
                break
            record = self._propose()
            if record is not None and not self._refused(record):
                self.batch.append(record)
            self._restart_if_stuck()
        if submit and self.batch and (len(self.batch) >= size() or self.executor.in_flight() == 0):
            self._evaluate(self.batch, self.config.tasks, self.config.hurdle)
            self.batch = []

    def _refused(self, record: dict) -> bool:
        """Record ``record`` at once if the guards refuse its program (what a worker would find)."""
        t0 = time.perf_counter()
        refused = refusal(record["program"])
        if refused is None:
            return False
        status, reason = refused
        self._record(record, {"status": status, "error": reason, "seconds": time.perf_counter() - t0})
        self.stats.submitted += 1
        return True

    def _restart_if_stuck(self) -> None:
        if self.stats.evaluated - self.best_at >= self.config.restart_after and self.stats.best_id is not None:
            best = self.store.get(self.stats.best_id)
            self.population.clear()
            self.population.append({**best, "program": parse(best["source"], "<store>")})
            self.best_at = self.stats.evaluated

    def _start_meta(self, share: float | None = META_SHARE) -> None:
        """Meta-validate queued programs, best proxy fitness first, while workers are free and
        meta-validation has used at most ``share`` of the workers' time so far (the larger tasks
        cost ~10 proxy evaluations; unchecked, early improvements would starve the search)."""
        while self.meta_queue and self.executor.idle() > 0:
            budget = share * self.stats.elapsed * self.executor.capacity if share is not None else math.inf
            if self.meta_seconds > budget:
                return
            row = max((self.store.get(p) for p in self.meta_queue), key=_fitness)
            self.meta_queue.remove(row["id"])
            if self._rank(row) >= FUNNEL_TOP:
                self.held_rules.discard(row["fingerprint"])
                continue  # overtaken while it waited
            self._evaluate([row], self.config.meta_tasks, None, kind="meta", pid=row["id"])

    def _finish_funnel(self, deadline: float) -> None:
        """Before the search ends, meta-validate the best few rules by proxy fitness that have
        not been yet, so the winner is chosen on held-out evidence (up to ``deadline``)."""
        if not self.config.meta_tasks:
            return
        self.stats.stage = "meta-validating the best"
        for row in self._top_rules(FUNNEL_TOP):
            self._queue_meta(row)
        while (self.meta_queue or self.pending) and time.monotonic() < deadline:
            if self._request_baselines(self.config.meta_tasks):
                self._start_meta(share=None)
            self._drain(0.2)
            self._report()

    # --- simplification by ablation ---------------------------------------------------------
    def _simplify_winner(self, deadline: float) -> None:
        """The paper's hand simplification, measured (:mod:`search.ablation`): score every program
        one step simpler than the winner on the proxies; meta-validate those within
        ``PROXY_TOLERANCE`` of the winner's proxy fitness, the closest to it first (a part that
        does nothing changes nothing; one whose removal moves the proxies a lot changed the
        rule), as many at a time as there are workers and up to ``META_TRIES``; go on from the
        first batch's best held-out score if it ties with the best one
        (:func:`search.selection.ties`), for up to ``MAX_ROUNDS`` steps. The programs kept are
        meta-validated rows like any other, and :func:`search.selection.ranked` prefers the
        smaller of tied programs, so the last one kept becomes the winner."""
        start = winner(self.store)
        if start is None or start["meta_fitness"] is None:
            return
        self.stats.stage = "simplifying the winner by ablation"
        current = start
        for _ in range(MAX_ROUNDS):
            near = [r for r in self._score_ablations(current, deadline) if r["status"] == "ok"
                    and r["n_live"] < current["n_live"] and _fitness(r) >= start["fitness"] - PROXY_TOLERANCE]
            near.sort(key=lambda r: abs(_fitness(r) - start["fitness"]))
            held = []
            for at in range(0, min(len(near), META_TRIES), self.executor.capacity):
                tried = near[at:at + self.executor.capacity]
                for row in tried:
                    if row["meta_fitness"] is None and self._worker_free(deadline):
                        self._evaluate([row], self.config.meta_tasks, None, kind="meta", pid=row["id"])
                self._wait_until(lambda: not self.pending, deadline)
                best = self.store.meta_validated()[0]["meta_fitness"]
                held = [r for r in map(self.store.get, (r["id"] for r in tried))
                        if r["meta_fitness"] is not None and ties(r["meta_fitness"], best)]
                if held or time.monotonic() > deadline:
                    break
            if not held:
                return
            current = max(held, key=lambda r: r["meta_fitness"])

    def _score_ablations(self, parent: dict, deadline: float) -> list[dict]:
        """The stored rows of ``parent``'s ablations, each scored on the proxies (or found in
        the cache), recorded as children of ``parent`` (mutation ``ablate: x = f(a) -> x = a``)."""
        records, rows = [], []
        for program, what in ablations(parse(parent["source"], "<store>")):
            info, hit = self.seen.describe(program)
            # it, or a program as small and the same rule at these learning rates, was scored
            if hit is not None and hit["n_live"] <= info["n_live"] and same_rule(hit, info, CANDIDATE_LRS)[0]:
                rows.append(self.store.get(hit["id"]))
            else:
                record = {"program": program, "parent": parent["id"], "parent_lr": parent.get("task_lr") or {},
                          "mutation": f"{PREFIX}{what}", **info}
                if not self._refused(record):
                    records.append(record)
        for i in range(0, len(records), self.config.batch):
            if self._worker_free(deadline):
                self._evaluate(records[i:i + self.config.batch], self.config.tasks, self.config.hurdle,
                               confirm_all=True)  # compared with the winner's confirmed fitness
        self._wait_until(lambda: not self.pending, deadline)
        hits = (self.seen.describe(r["program"])[1] for r in records)
        return rows + [self.store.get(h["id"]) for h in hits if h is not None]

    def _worker_free(self, deadline: float) -> bool:
        """Wait (up to ``deadline``) until a worker can take a job."""
        self._wait_until(lambda: self.executor.idle() > 0, deadline)
        return self.executor.idle() > 0

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self)

    # --- the loop ---------------------------------------------------------------------------
    def _seed_population(self) -> None:
        """Score the warm start(s) (``--init adamw,lion``: each is a member of the first population)."""
        records = []
        for name in self.config.inits:
            program = initial_program(name)
            records.append({"program": program, "parent": None, "mutation": f"init {name}", **describe(program)})
        self._evaluate(records, self.config.tasks, None, confirm_all=True)
        self._wait_until(lambda: not self.pending)

    def run(self, evals: int | None = None, seconds: float | None = None) -> dict | None:
        """Search until ``evals`` more evaluations or ``seconds`` pass (or Ctrl-C), then finish
        the funnel; returns the winner's row (:func:`search.selection.winner`). Jobs still
        running at the end are awaited (up to the grace period)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        start = self.stats.submitted

        def left() -> int | None:
            return None if evals is None else evals - (self.stats.submitted - start)

        def out_of_budget() -> bool:
            return (evals is not None and left() <= 0) or (deadline is not None and time.monotonic() >= deadline)

        try:
            while not self._request_baselines(self.config.tasks):
                self.stats.stage = "tuning AdamW on the tasks"
                self._drain(0.2)
                self._report()
            self.stats.stage = "searching"
            if not self.population:
                self._seed_population()
            while not out_of_budget():
                if self.meta_queue and self._request_baselines(self.config.meta_tasks):
                    self._start_meta()
                while self.executor.idle() > 0 and not out_of_budget():
                    before = self.executor.idle()
                    self._fill_batch(left)
                    if self.executor.idle() == before:  # only cache hits so far: let results in
                        break
                if not self.ahead and not out_of_budget():
                    # Propose the next batch while the workers train (once per submitted batch,
                    # so one worker stays deterministic): a free worker then gets it at once
                    # instead of idling while ~10 proposals per new child hit the cache.
                    self._fill_batch(left, submit=False)
                    self.ahead = True
                self._drain(0.05)
                self._report()
            self._wait_until(lambda: not self.pending, time.monotonic() + self.grace)
            self._finish_funnel(time.monotonic() + self.funnel_grace)
            if self.simplify_grace is not None:  # None: the winner as the search left it
                self._simplify_winner(time.monotonic() + self.simplify_grace)
        except KeyboardInterrupt:
            self.interrupted = True  # every finished evaluation is already in the store
        self.stats.stage = "interrupted" if self.interrupted else "done"
        self._report()
        return winner(self.store)

    def best_program(self):
        """The winner so far (:func:`search.selection.winner`), as mutated; simplify it for display."""
        row = winner(self.store)
        return None if row is None else parse(row["source"], "<store>")


__all__ = ["Search", "SearchConfig", "Stats", "to_source"]
