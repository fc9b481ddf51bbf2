import math
import time

import numpy as np
import pytest

from optdsl import parse, to_source
from search.candidate import describe
from search.evaluate import evaluate_program, run_job, score, train_copies
from search.executors import LocalExecutor
from search.warm_start import adamw_program

BASE = {"quadratic": 0.13, "logreg": 0.1}


def test_warm_start_trains_every_proxy_task_to_a_finite_loss():
    for task in ("quadratic", "logreg"):
        losses = train_copies(adamw_program(), task, [1.0, 10.0])
        assert np.all(np.isfinite(losses)) and losses.min() < 0.5


def test_score_is_log_ratio_against_the_baseline():
    assert score(0.5, 1.0) == pytest.approx(math.log(2))
    assert score(1.0, 1.0) == 0.0
    assert score(math.inf, 1.0) == -10.0


@pytest.mark.parametrize("body, status", [
    ("update = g * 0 / 0", "diverged"),                 # NaN from the first step
    ("update = -g * lr * 1000", "diverged"),            # gradient ascent: blows up
    ("update = lr * g * dim(w, 3)", "error"),           # an exception inside evaluation
])
def test_broken_candidates_are_contained(body, status):
    p = parse(f"def train(w, g, lr):\n    {body}\n    return update\n")
    r = evaluate_program(p, ["quadratic", "logreg"], BASE)
    assert r["status"] == status and r["fitness"] is None and r["error"]


def test_nan_in_some_copies_does_not_fail_the_candidate():
    # lr = 30 makes plain gradient descent diverge on the quadratic; the smaller lrs still count.
    r = evaluate_program(parse("def train(w, g, lr):\n    return lr * 0.1 * g\n"), ["quadratic"], BASE)
    assert r["status"] == "ok" and math.isfinite(r["fitness"]) and r["task_lr"]["quadratic"] < 30


def test_hurdle_stops_bad_candidates_after_the_first_task():
    bad = parse("def train(w, g, lr):\n    return lr * 1e-6 * g\n")
    r = evaluate_program(bad, ["quadratic", "logreg"], BASE, hurdle=-1.0)
    assert r["status"] == "hurdle" and list(r["task_score"]) == ["quadratic"]
    assert r["fitness"] == pytest.approx(r["task_score"]["quadratic"])


def test_unparsable_job_is_an_error_result():
    r = run_job({"id": 7, "kind": "evaluate", "source": "import os", "tasks": ["quadratic"], "baselines": BASE})
    assert r["id"] == 7 and r["status"] == "error" and r["fitness"] is None


def test_renamed_and_reordered_programs_share_hash_and_fingerprint():
    a = parse("""
def train(w, g, m, v, lr):
    m = interp(g, m, 0.9)
    t = g * g
    v = interp(t, v, 0.999)
    d = w * 0.01
    u = m / sqrt(v)
    update = (u + d) * lr
    return update, m, v
""")
    b = parse("""
def train(w, g, v, m, lr):
    decay = 0.01 * w
    sq = g * g
    junk = exp(g)
    v = interp(g, v, 0.9)
    m = interp(sq, m, 0.999)
    update = lr * (decay + v / sqrt(m))
    return update, v, m
""")
    da, db = describe(a), describe(b)
    assert da["structural_hash"] == db["structural_hash"]
    assert da["fingerprint"] == db["fingerprint"]
    assert db["n_live"] < db["n_statements"]  # the dead `junk` statement is not live
    c = parse(to_source(a).replace("0.999", "0.99"))
    assert describe(c)["structural_hash"] != da["structural_hash"]
    assert describe(c)["fingerprint"] != da["fingerprint"]


def hang(job):
    """A job that never ends (stands in for an endless loop inside an evaluation)."""
    if job.get("hang"):
        while True:
            time.sleep(0.1)
    return {"id": job["id"], "status": "ok"}


def crash(job):
    """A job whose worker process dies outright."""
    import os

    os._exit(3)


def _collect(ex, n, limit=60):
    out, t0 = [], time.monotonic()
    while len(out) < n and time.monotonic() - t0 < limit:
        out += ex.poll(0.2)
    return out


def test_endless_job_is_killed_and_the_executor_goes_on():
    ex = LocalExecutor(workers=1, timeout=2, target=hang)
    try:
        ex.submit({"id": 1, "hang": True})
        (r,) = _collect(ex, 1)
        assert r["id"] == 1 and r["status"] == "timeout" and r["fitness"] is None
        ex.submit({"id": 2})
        (r,) = _collect(ex, 1)
        assert r == {"id": 2, "status": "ok"}
    finally:
        ex.close()


def test_dead_worker_is_replaced():
    ex = LocalExecutor(workers=1, timeout=30, target=crash)
    try:
        ex.submit({"id": 5})
        (r,) = _collect(ex, 1)
        assert r["status"] == "error" and "exit code 3" in r["error"]
        assert ex.idle() == 1
    finally:
        ex.close()
