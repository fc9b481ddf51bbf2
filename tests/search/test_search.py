"""End-to-end: the search as a user runs it (CLI), its store, resume, report, export, Ray."""

import importlib.util
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from optdsl import DslError, parse, to_source
from optdsl.cli import main
from search.evaluate import run_job
from search.evolution import Search, SearchConfig
from search.export import export_top, search_id
from search.guards import guard
from search.report import report, totals
from search.store import Store, failures

pytestmark = pytest.mark.slow

BAD_START = "def train(w, g, lr):\n    update = lr * 1e-06 * g\n    return update\n"


def _rows(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT id, source, status, fitness, parent, mutation FROM programs ORDER BY id").fetchall()


def _children(rows):
    """The rows a search's evolution scored (not cache hits, not the final ablation of its winner)."""
    return [r for r in rows if r[2] != "cached" and not r[5].startswith("ablate: ")]


def _search(db, *extra):
    return main(["search", "--db", str(db), "--tasks", "quadratic", "--workers", "1", *extra])


def test_evals_seed_workers1_is_reproducible(tmp_path):
    for run in "abc":  # a folder each: a search refuses to replace another search's best_optimizer.py
        (tmp_path / run).mkdir()
    assert _search(tmp_path / "a" / "s.sqlite", "--evals", "12", "--seed", "3", "--population", "8") == 0
    assert _search(tmp_path / "b" / "s.sqlite", "--evals", "12", "--seed", "3", "--population", "8") == 0
    a, b = _rows(tmp_path / "a" / "s.sqlite"), _rows(tmp_path / "b" / "s.sqlite")
    assert a == b and len(_children(a)) == 12
    best = [(tmp_path / run / "best_optimizer.py").read_text() for run in "ab"]
    assert best[0] != best[1]  # two searches: each names its own id ...
    same = [re.sub(r"search \w{8}, |# optdsl sha256 \w+\n\Z", "", text) for text in best]
    assert same[0] == same[1]  # ... and is the same (but for its digest line, which hashes the id too)
    c = tmp_path / "c" / "s.sqlite"
    assert _search(c, "--evals", "12", "--seed", "4", "--population", "8") == 0
    assert _rows(c) != a


@pytest.fixture(scope="module")
def improved(tmp_path_factory):
    """A tiny search from a deliberately bad warm start (SGD with a 1e-6 learning-rate factor)."""
    d = tmp_path_factory.mktemp("improve")
    (d / "bad.py").write_text(BAD_START)
    db = d / "s.sqlite"
    # 30 evaluations take the quadratic's loss from 25 to 0.59-0.71 (`lr * g`) with every seed of 1-8
    assert _search(db, "--evals", "30", "--seed", "4", "--population", "10", "--tournament", "3",
                   "--init", str(d / "bad.py")) == 0
    return d, db


def test_search_improves_on_a_bad_warm_start(improved, capsys):
    _, db = improved
    rows = Store(str(db)).all()
    init = rows[0]
    assert init["mutation"].startswith("init") and init["status"] == "ok"
    ok = [r for r in rows if r["fitness"] is not None and r["status"] == "ok"]
    # the start's loss is below the fitness scale's floor (-1), so compare losses
    best = min(ok, key=lambda r: r["task_loss"]["quadratic"])
    assert best["fitness"] >= init["fitness"]
    assert best["task_loss"]["quadratic"] < init["task_loss"]["quadratic"] / 10


def test_report_and_export_write_usable_files(improved, tmp_path, capsys):
    _d, db = improved
    store = Store(str(db))
    plots = report(store, str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in plots] == ["best_fitness.png", "pareto_front.png"]
    assert all(os.path.getsize(p) > 1000 for p in plots)
    # its two scored programs, lr * 1e-06 * g and lr * g, are one rule: the better one is exported
    paths = export_top(store, 2, str(tmp_path / "out"))
    assert len(paths) == 4 and "update = lr * g\n" in to_source(parse(Path(paths[0]).read_text()))
    dsl = [p for p in paths if not p.endswith(("_torch.py", "_jax.py", "ranking.md"))]
    for p in dsl:
        parse(Path(p).read_text())
    spec = importlib.util.spec_from_file_location("found", next(p for p in paths if p.endswith("_torch.py")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import torch

    cls = next(v for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, torch.optim.Optimizer)
               and not k.startswith("_") and v is not torch.optim.Optimizer)
    w = torch.nn.Parameter(torch.ones(3))
    opt = cls([w])
    w.grad = torch.ones(3)
    opt.step()
    assert torch.all(w < 1)
    assert main(["export", str(db), "--top", "1", "-o", str(tmp_path / "cli")]) == 0
    assert "note:" not in capsys.readouterr().err
    # it had written one program for --top 5, silently
    assert main(["export", str(db), "--top", "5", "-o", str(tmp_path / "cli5")]) == 0
    assert "note: the search holds 1 distinct scored program, fewer than --top 5" in capsys.readouterr().err
    assert main(["report", str(db), "-o", str(tmp_path / "cli")]) == 0
    for command in ("export", "report"):  # an unset shell variable: report had written nothing, silently
        assert main([command, str(db), "-o", ""]) == 2


def test_report_says_why_a_program_scored_minus_one_held_out_untrained(capsys):
    """Meta-validation does not train a program whose step does not last (-1, no task score);
    report showed the -1.000 beside empty task cells and no reason."""
    from rich.console import Console

    from search.candidate import describe

    fading = parse("def train(w, g, m, step, lr):\n    return lr * g * 0.9 ** (0.5 * step), m\n")
    store = Store(":memory:")
    store.add(**describe(fading), status="ok", fitness=0.2, task_lr={"mlp": 0.5})
    store.set_meta_validation(1, -1.0, {})
    report(store, console=Console(width=200))
    out = " ".join(capsys.readouterr().out.split())
    assert "held out -1.000 without training: the step does not last" in out


def test_several_warm_starts_seed_the_population(tmp_path):
    db = tmp_path / "two.sqlite"
    assert _search(db, "--evals", "4", "--init", "adamw,lion", "--population", "6") == 0
    inits = [r for r in Store(str(db)).all() if r["parent"] is None]
    assert [r["mutation"] for r in inits] == ["init adamw", "init lion"]
    assert all(r["status"] == "ok" for r in inits)


class InlineExecutor:
    """One worker running :func:`search.evaluate.run_job` in this process, keeping every job."""

    capacity = 1

    def __init__(self):
        self.jobs, self.done = [], []

    def idle(self):
        return 1 - self.in_flight()

    def in_flight(self):
        return len(self.jobs) - len(self.done)

    def submit(self, job):
        self.jobs.append(job)

    def poll(self, timeout):
        out = [run_job(j) for j in self.jobs[len(self.done):]]
        self.done += out
        return out


def test_children_the_guards_refuse_are_recorded_without_a_place_in_a_batch(tmp_path):
    store = Store(str(tmp_path / "g.sqlite"))
    executor = InlineExecutor()
    search = Search(store, SearchConfig(tasks=("quadratic",), population=8, seed=2, batch=4), executor,
                    simplify_grace=None)
    search.run(evals=40)
    rows = [r for r in store.all() if r["status"] != "cached"]  # the warm start's first
    refused = [r for r in rows if r["status"] == "guard"]
    assert len(rows) == 40 and refused and all(r["error"] for r in refused)
    batches = [j["sources"] for j in executor.jobs if j["kind"] == "evaluate" and not j["horizon"]][1:]
    children = [src for batch in batches for src in batch]
    assert not any(guard(parse(src)) for src in children)
    assert len(children) == 39 - len(refused)
    assert all(len(batch) == 4 for batch in batches[:-1])  # full batches but the last
    # each child's sweeps start at its parent's learning rates
    parents = {r["source"]: store.get(r["parent"]) for r in rows if r["parent"] is not None}
    jobs = [j for j in executor.jobs if j["kind"] == "evaluate" and not j["horizon"]][1:]
    assert all(j["from_parent"] for j in jobs)
    assert all(t == (parents[src]["task_lr"] or {}) for j in jobs for src, t in zip(j["sources"], j["tuned"]))
    # the report counts what the live table did
    failed = failures(Counter(r["status"] for r in rows))
    assert totals(store)["failed"] == failures(search.stats.statuses) == failed
    assert "refused by the guards" in totals(store)["failed"]

def test_a_rescaled_child_is_a_cache_hit_at_rescaled_learning_rates(tmp_path, monkeypatch):
    """``update = 2 * (...)`` is its parent at half the learning rate: not trained again, its row
    takes the parent's scores and the parent's learning rates halved (its children's sweeps
    start there, and an export of it steps as its parent did)."""
    from search import evolution
    from search.candidate import describe

    store = Store(str(tmp_path / "r.sqlite"))
    # the paper's AdamW: its best lr on the quadratic lies inside the sweep (torch_adamw's lies on
    # the sweep's top edge under the cosine decay, where a rescaling is rightly trained again)
    config = SearchConfig(init="adamw", tasks=("quadratic",), population=4, seed=0, batch=4)
    search = Search(store, config, InlineExecutor(), simplify_grace=None)
    search.run(evals=1)  # the warm start, scored
    parent = store.get(1)
    src = parent["source"]
    head, tail = src.rsplit("    return ", 1)
    result = tail.split(",")[0].strip()
    child = parse(f"{head}    {result} = 2 * {result}\n    return {tail}")
    assert describe(child)["structural_hash"] != parent["structural_hash"]
    monkeypatch.setattr(evolution, "mutate", lambda program, rng: (child, "rescale"))
    assert search._propose() is None  # a cache hit, recorded at once
    row = store.all()[-1]
    assert row["status"] == "cached" and row["cached_from"] == 1 and row["fitness"] == parent["fitness"]
    assert row["task_lr"].keys() == parent["task_lr"].keys()
    for task, lr in parent["task_lr"].items():
        assert row["task_lr"][task] == pytest.approx(lr / 2, rel=1e-6)


def test_bad_init_is_refused_before_any_work(tmp_path, capsys):
    assert main(["search", "--db", str(tmp_path / "x.sqlite"), "--init", "adamw,nosuch"]) == 2
    assert not (tmp_path / "x.sqlite").exists()


def test_an_interrupted_search_says_how_to_go_on(tmp_path, monkeypatch, capsys):
    # Search.run catches the interrupt itself (its rows are stored), so the CLI must ask it.
    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Search, "_drain", interrupt)
    monkeypatch.chdir(tmp_path)
    command = ["search", "--db", "s.sqlite", "--tasks", "quadratic", "--evals", "3", "--workers", "1"]
    assert main(command) == 130  # stopped: written, but not run to its budget
    out = " ".join(capsys.readouterr().out.split())
    assert ("interrupted: every finished evaluation is in the database; "
            "go on with optdsl search --resume s.sqlite") in out
    for flag in ("--resume", "--db"):  # an unset shell variable: not a new search in the current folder
        assert main(["search", flag, "", "--evals", "1"]) == 2
        assert f"{flag}: empty path" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["s.sqlite"]  # interrupted before any score: nothing to write


def test_a_second_ctrl_c_while_the_winner_is_simplified_writes_it_as_found(tmp_path, monkeypatch, capsys):
    # The readable form takes up to a minute; a second Ctrl-C there had exited 130 without a winner.
    import search.export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(search.export, "readable_within", interrupted)
    monkeypatch.chdir(tmp_path)
    command = ["search", "--db", "s.sqlite", "--tasks", "quadratic", "--evals", "2", "--workers", "1"]
    assert main(command) == 130
    out = " ".join(capsys.readouterr().out.split())
    assert "interrupted: the winner is written as the search found it, not simplified" in out
    written = (tmp_path / "best_optimizer.py").read_text()
    assert "equality: exact (not simplified: interrupted)" in " ".join(written.split())


def test_sigkill_then_resume_keeps_every_finished_row(tmp_path):
    db = tmp_path / "k.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "optdsl.cli", "search", "--db", str(db), "--tasks", "quadratic",
                             "--workers", "1", "--evals", "100000", "--population", "8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if db.exists() and len(_rows(db)) >= 6:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the search and its worker, without warning
        proc.wait()
    before = _rows(db)
    assert len(before) >= 6
    assert main(["search", "--resume", str(db), "--evals", "3", "--workers", "1"]) == 0
    after = _rows(db)
    assert after[:len(before)] == before
    assert len(_children(after[len(before):])) == 3
    assert all(r[4] is not None for r in after[len(before):])  # children of the resumed population


def test_resuming_after_a_built_in_task_changed_is_refused(tmp_path, monkeypatch, capsys):
    """A newer optdsl changed the ``embedding`` proxy (bags of 6 tokens, then 10): a search stored
    before would have gone on scoring the new task's children against the old task's tuned AdamW.
    The baseline job returns the task's fingerprint; --resume compares it with the task now."""
    from search import tasks

    db = tmp_path / "s.sqlite"
    assert _search(db, "--evals", "1", "--population", "2", "--tournament", "2", "--batch", "1") == 0
    with Store(str(db), readonly=True) as store:
        assert store.get_meta("task_prints")["quadratic"]["steps"] == 100
    assert main(["search", "--resume", str(db), "--evals", "2", "--workers", "1"]) == 0  # unchanged: goes on
    capsys.readouterr()
    monkeypatch.setitem(tasks.FACTORIES, "quadratic", lambda: tasks.quadratic(steps=120))
    tasks.get_task.cache_clear()
    try:
        assert main(["search", "--resume", str(db), "--evals", "3", "--workers", "1"]) == 2
    finally:
        tasks.get_task.cache_clear()
    err = " ".join(capsys.readouterr().err.split())
    assert "task quadratic changed since this search was stored (steps 100 -> 120" in err
    assert "resume with the optdsl that began the search" in err
    monkeypatch.undo()
    with Store(str(db)) as store:  # as an optdsl before 2026-12-07 stored it: goes on, and says so
        store.set_meta("task_prints", {})
    assert main(["search", "--resume", str(db), "--evals", "3", "--workers", "1"]) == 0
    assert "kept no fingerprint of task(s) quadratic" in " ".join(capsys.readouterr().out.split())
    for damaged in (["quadratic"], []):  # (an empty list is damaged too, not "none stored")
        with Store(str(db)) as store:
            store.set_meta("task_prints", damaged)
        assert main(["search", "--resume", str(db), "--evals", "3", "--workers", "1"]) == 2
        assert "setting 'task_prints' is unreadable" in " ".join(capsys.readouterr().err.split())


def test_a_search_whose_reader_leaves_writes_its_winner_and_exits_141(tmp_path):
    """``optdsl search ... | head -1``: rich ended the process with SystemExit(1) at the next
    redraw, with no word and no best_optimizer.py."""
    proc = subprocess.Popen([sys.executable, "-m", "optdsl.cli", "search", "--db", str(tmp_path / "s.sqlite"),
                             "--tasks", "quadratic", "--workers", "1", "--evals", "4", "--population", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader gone before the search writes (rich writes a pipe's output late)
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert (tmp_path / "best_optimizer.py").exists() and "Traceback" not in err


def test_a_winner_written_meanwhile_by_another_search_stays(tmp_path, monkeypatch, capsys):
    """Two searches started in one folder at once: the second ran its budget, then refused to
    write its winner over the first's, and its database could not be resumed there either."""
    other = tmp_path / "best_optimizer.py"
    text = "# Found by optdsl search of one.sqlite (search 0a1b2c3d, program #7): ...\n"
    run = Search.run

    def run_beside_another(self, *args, **kwargs):
        other.write_text(text)  # the other search finished first
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Search, "run", run_beside_another)
    assert _search(tmp_path / "two.sqlite", "--evals", "2", "--population", "4") == 0
    with Store(str(tmp_path / "two.sqlite"), readonly=True) as store:
        own = tmp_path / f"best_optimizer_{search_id(store)}.py"
    assert other.read_text() == text and "class " in own.read_text()
    out = "".join(capsys.readouterr().out.split())  # (rich wraps the long path anywhere)
    said = "holdsthewinnerofanothersearch(one.sqlite,search0a1b2c3d)now;thissearch'swinnergoesto"
    assert said + str(own) in out


def test_ray_executor_on_a_local_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    from search.executors import RayExecutor

    before = signal.getsignal(signal.SIGTERM)
    ex = RayExecutor(workers=2, timeout=120, num_cpus=2)
    try:
        # ray.init's own SIGTERM handler ended a search at once, with no winner written (exit 1)
        assert signal.getsignal(signal.SIGTERM) is before
        store = Store(str(tmp_path / "r.sqlite"))
        search = Search(store, SearchConfig(tasks=("quadratic",), population=6, seed=1), ex, simplify_grace=None)
        best = search.run(evals=6)
        rows = store.all()
        assert sum(r["status"] != "cached" for r in rows) == 6 and best is not None
        assert store.baselines()["quadratic"]["loss"] > 0
    finally:
        ex.close()
        ray.shutdown()


def test_an_unreachable_ray_address_is_an_error_at_once():
    """ray.init retried 127.0.0.1:9999 for minutes (SIGTERM did not stop it)."""
    from search.executors import check_reachable

    with pytest.raises(DslError, match="cannot reach a Ray cluster at 127.0.0.1:1 "):
        check_reachable("127.0.0.1:1")
    for address in (None, "auto", "local"):
        check_reachable(address)  # Ray's to resolve


def test_no_ray_cluster_to_join_is_named_in_optdsls_words(monkeypatch):
    """Ray's message told the user to set its `--address` flag; optdsl's is --ray-address."""
    ray = pytest.importorskip("ray")
    from search.executors import ray_connect

    def refuse(**kw):
        raise ConnectionError("Could not find any running Ray instance. Please specify ... `--address` flag")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(DslError, match="--ray-address: cannot connect to a Ray cluster") as e:
        ray_connect("auto")
    assert "`--address`" not in str(e.value) and signal.getsignal(signal.SIGTERM) is before


def test_the_panel_names_each_stage_in_turn(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    stages = []
    search = Search(store, SearchConfig(tasks=("quadratic",), population=4, seed=0, batch=4), InlineExecutor(),
                    progress=lambda s: stages.append(s.stats.stage) if stages[-1:] != [s.stats.stage] else None)
    search.run(evals=6)
    assert stages == ["tuning AdamW on the tasks", "searching", "meta-validating the best",
                      "simplifying the winner by ablation", "done"]


class _Recorder:
    """An executor that keeps the jobs it is given and runs none."""

    def __init__(self):
        self.jobs = []

    def idle(self):
        return 1

    def submit(self, job):
        self.jobs.append(job)


def test_fresh_seeds_for_held_out_tasks_and_promising_children_and_old_searches_keep_theirs(tmp_path):
    """A new search measures held-out losses on HELD_OUT_SEEDS, and the proxy losses of a child
    above the population's median (of the warm start, of an ablation: every one) on CONFIRM_SEEDS,
    the baselines of each kind of task alike; a search stored before those settings existed resumes
    measuring them as it did."""
    from dataclasses import asdict

    from optdsl import to_source
    from search.evaluate import CONFIRM_SEEDS, HELD_OUT_SEEDS
    from search.warm_start import adamw_program

    config = SearchConfig(tasks=("quadratic",))
    assert config.meta_tasks == ("quadratic_large",) and config.held_out_seeds == HELD_OUT_SEEDS
    assert config.confirm_seeds == CONFIRM_SEEDS
    executor = _Recorder()
    search = Search(Store(str(tmp_path / "s.sqlite")), config, executor)
    search._request_baselines(config.tasks + config.meta_tasks)
    assert {j["task"]: j["fresh_seeds"] for j in executor.jobs} == {"quadratic": list(CONFIRM_SEEDS),
                                                                    "quadratic_large": list(HELD_OUT_SEEDS)}
    row = {"source": to_source(adamw_program()), "task_lr": {"quadratic": 1.0}}
    search._evaluate([row], config.meta_tasks, None, kind="meta", pid=1)
    assert executor.jobs[-1]["fresh_seeds"] == list(HELD_OUT_SEEDS) and executor.jobs[-1]["horizon"]
    assert "confirm_above" not in executor.jobs[-1]
    search.population.extend({"fitness": f} for f in (0.3, -0.2, None, 0.1))
    search._evaluate([row], config.tasks, None)
    assert executor.jobs[-1]["confirm_above"] == pytest.approx(-0.05)
    assert executor.jobs[-1]["confirm_seeds"] == list(CONFIRM_SEEDS)
    search._evaluate([row], config.tasks, None, confirm_all=True)
    assert executor.jobs[-1]["confirm_above"] == -math.inf
    old = asdict(config)
    del old["held_out_seeds"], old["confirm_seeds"]
    assert (SearchConfig.from_dict(old).held_out_seeds, SearchConfig.from_dict(old).confirm_seeds) == ((), ())
    assert SearchConfig.from_dict(asdict(config)) == config
    resumed = Search(Store(str(tmp_path / "old.sqlite")), SearchConfig.from_dict(old), _Recorder())
    resumed._evaluate([row], config.tasks, None)
    assert "confirm_above" not in resumed.executor.jobs[-1]


def test_the_schedule_and_the_aggregate_reach_every_job_and_an_older_search_keeps_its_own(tmp_path):
    from dataclasses import asdict

    from search.warm_start import adamw_program

    config = SearchConfig(tasks=("quadratic",))
    assert (config.schedule, config.init) == ("cosine", "torch_adamw")  # the defaults
    executor = _Recorder()
    search = Search(Store(str(tmp_path / "s.sqlite")), config, executor)
    search._request_baselines(config.tasks)
    search._evaluate([{"source": to_source(adamw_program())}], config.tasks, None)
    assert [j["schedule"] for j in executor.jobs] == ["cosine", "cosine"]
    assert executor.jobs[-1]["loss_averse"] is True
    old = asdict(config)
    del old["schedule"], old["loss_averse"]
    assert SearchConfig.from_dict(old).schedule == "constant"
    resumed = Search(Store(str(tmp_path / "old.sqlite")), SearchConfig.from_dict(old), _Recorder())
    resumed._evaluate([{"source": to_source(adamw_program())}], config.tasks, None)
    assert resumed.executor.jobs[-1]["loss_averse"] is False  # its stored fitness is the plain mean


def test_logreg_is_a_hurdle_only_for_the_default_proxies_and_an_older_search_counts_it(tmp_path):
    from dataclasses import asdict

    from search.tasks import HURDLE_ONLY, PROXY_TASKS
    from search.warm_start import adamw_program

    assert SearchConfig().hurdle_only == HURDLE_ONLY == ("logreg",)
    assert SearchConfig(tasks=("logreg", "mlp")).hurdle_only == ()  # the user's choice of tasks counts
    executor = _Recorder()
    search = Search(Store(str(tmp_path / "s.sqlite")), SearchConfig(), executor)
    search._evaluate([{"source": to_source(adamw_program())}], PROXY_TASKS, None)
    assert executor.jobs[-1]["hurdle_only"] == ["logreg"]
    old = asdict(SearchConfig())
    del old["hurdle_only"]
    assert SearchConfig.from_dict(old).hurdle_only == ()
    assert SearchConfig.from_dict(asdict(SearchConfig())).hurdle_only == ("logreg",)


def test_each_rule_is_held_out_once_and_a_child_in_flight_is_not_scored_twice(tmp_path, monkeypatch):
    """The funnel counts rules (fingerprints), not rows: near-copies of one rule (here a rescaling,
    which the tuned learning rate absorbs) are meta-validated once, the final funnel takes the best
    few *rules*, and a resumed search knows which rules were held out. A README job had held out one
    rule five times; one exact duplicate had been scored twice, proposed while its twin was in a job."""
    from search import evolution
    from search.candidate import describe

    rules = {"a": "lr * g", "a2": "lr * (2 * g)", "b": "lr * sign(g)", "c": "lr * g * abs(g)",
             "d": "lr * arcsinh(g)"}
    fitness = {"a": 0.3, "a2": 0.29, "b": 0.2, "c": 0.1, "d": 0.05}
    store = Store(str(tmp_path / "f.sqlite"))
    ids = {}
    for name, expr in rules.items():
        info = describe(parse(f"def train(w, g, lr):\n    return {expr}\n"))
        ids[name] = store.add(status="ok", fitness=fitness[name], task_lr={"quadratic": 0.01}, **info)
    assert store.get(ids["a"])["fingerprint"] == store.get(ids["a2"])["fingerprint"]
    config = SearchConfig(tasks=("quadratic",), population=4)
    search = Search(store, config, _Recorder())
    assert [r["id"] for r in search._top_rules(3)] == [ids["a"], ids["b"], ids["c"]]
    assert search._rank(store.get(ids["a2"])) == 0 and search._rank(store.get(ids["d"])) == 3
    search._queue_meta(store.get(ids["a"]))
    search._queue_meta(store.get(ids["a2"]))  # the same rule: not again
    search._finish_funnel(time.monotonic() - 1)  # queues what is left of the best three rules
    assert list(search.meta_queue) == [ids["a"], ids["b"], ids["c"]]
    store.set_meta_validation(ids["b"], 0.1, {"quadratic_large": 0.1})
    resumed = Search(store, config, _Recorder())
    resumed._finish_funnel(time.monotonic() - 1)
    assert list(resumed.meta_queue) == [ids["a"], ids["c"]]

    # a child whose twin is out in a job is dropped, not scored again
    child = parse("def train(w, g, lr):\n    return lr * cbrt(g)\n")
    monkeypatch.setattr(evolution, "mutate", lambda program, rng: (child, "twin"))
    record = search._propose()
    assert record is not None
    search.pending[99] = {"kind": "evaluate", "programs": [record]}
    before = store.count()
    assert search._propose() is None and store.count() == before


def test_meta_validation_takes_the_best_queued_rule_first_and_lets_an_overtaken_one_come_back(tmp_path):
    """Of the rules waiting for a worker, the best by proxy fitness goes first (not the oldest); one
    overtaken while it waited leaves the queue and is no longer counted as held out, so the closing
    funnel can queue it again should it be back among the best few."""
    from search.candidate import describe

    rules = {"a": ("lr * g", 0.3), "b": ("lr * sign(g)", 0.2), "c": ("lr * g * abs(g)", 0.1),
             "d": ("lr * arcsinh(g)", 0.05)}

    def search_over(name):
        store = Store(str(tmp_path / f"{name}.sqlite"))
        ids = {n: store.add(status="ok", fitness=f, task_lr={"quadratic": 0.01},
                            **describe(parse(f"def train(w, g, lr):\n    return {e}\n")))
               for n, (e, f) in rules.items()}
        search = Search(store, SearchConfig(tasks=("quadratic",), population=4), _Recorder())
        search.baselines = {t: 1.0 for t in ("quadratic", "quadratic_large")}
        return search, store, ids

    search, store, ids = search_over("order")
    search._queue_meta(store.get(ids["c"]))
    search._queue_meta(store.get(ids["a"]))
    search._start_meta(share=None)
    assert search.executor.jobs[0]["sources"] == [store.get(ids["a"])["source"]]

    search, store, ids = search_over("overtaken")
    search._queue_meta(store.get(ids["d"]))  # fourth by proxy fitness: no longer among the best three
    search._start_meta(share=None)
    assert ids["d"] not in search.meta_queue and store.get(ids["d"])["fingerprint"] not in search.held_rules


def test_a_resumed_search_draws_anew_rather_than_replaying_the_first_runs_draws(tmp_path):
    from search.candidate import describe

    store = Store(str(tmp_path / "r.sqlite"))
    config = SearchConfig(tasks=("quadratic",), population=4)
    first = Search(store, config, _Recorder()).rng.random(4)
    store.add(status="ok", fitness=0.1, **describe(parse("def train(w, g, lr):\n    return lr * g\n")))
    resumed = Search(store, config, _Recorder()).rng.random(4)
    assert not (first == resumed).any()
    assert (Search(store, config, _Recorder()).rng.random(4) == resumed).all()  # (still seeded)
