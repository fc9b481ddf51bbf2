"""Simplification by ablation: a winner's parts that do nothing useful go, checked by the evaluator."""

import sqlite3

import pytest

from optdsl import parse, to_source
from optdsl.cli import main
from optdsl.errors import DslError
from optdsl.passes import flatten
from optdsl.typecheck import validate
from search.ablation import ablations, steps
from search.selection import META_TOLERANCE, winner
from search.store import Store

#: AdamW whose denominator is guarded by a max that never binds (sqrt(v) + eps > 1e-30): its
#: ablation `max(t, 1e-30) -> t` trains the same bits, so the search must keep it.
GUARDED = """def train(w, g, m, v, lr):
    m = interp(g, m, 0.9)
    v = interp(g * g, v, 0.999)
    t = sqrt(v) + 1e-08
    t = max(t, 1e-30)
    update = lr * 0.001 * m / t
    return update, m, v
"""


def test_each_ablation_is_one_op_smaller_and_type_checks():
    program = parse(GUARDED)
    children = ablations(program)
    assert "t = max(t, 1e-30) -> t = t" in [w for _, w in children]
    assert len(set(map(to_source, (c for c, _ in children)))) == len(children)  # no duplicates
    ops = len(flatten(program).body)  # one op per statement
    for child, what in children:
        validate(child)
        assert len(child.body) < ops, what
        assert not any(type(a.expr).__name__ == "Var" for a in child.body), what  # no copy statements


def test_a_bypassed_state_is_read_as_its_replacement_in_the_return():
    program = parse("def train(w, g, m, lr):\n    m = interp(g, m, 0.9)\n    return lr * sign(m), m\n")
    (child,) = [c for c, w in ablations(program) if w.endswith("-> m = g")]
    assert to_source(child, doc=False).splitlines()[1:] == ["    t = sign(g)", "    update = lr * t",
                                                           "    return update"]


@pytest.mark.slow
def test_the_search_keeps_an_ablation_that_scores_the_same_and_prints_it(tmp_path, capsys):
    start = tmp_path / "guarded.py"
    start.write_text(GUARDED)
    db = tmp_path / "s.sqlite"
    assert main(["search", "--db", str(db), "--tasks", "quadratic", "--workers", "1", "--evals", "1",
                 "--init", str(start)]) == 0
    out = capsys.readouterr().out
    store = Store(str(db), readonly=True)
    best = winner(store)
    origin, removed = steps(store, best)
    assert origin["mutation"] == f"init {start}" and removed and "max" in removed[0]
    assert "max" not in best["live_source"] and best["n_live"] < origin["n_live"]
    assert best["meta_fitness"] >= origin["meta_fitness"] - META_TOLERANCE
    assert f"Simplified by ablation from program #{origin['id']}" in out
    written = " ".join((tmp_path / "best_optimizer.py").read_text().split())  # its docstring is wrapped
    assert f"It is program #{best['parent']} with one op removed" in written
    with sqlite3.connect(db) as c:  # every ablation scored is a stored child of the program it came from
        rows = c.execute("SELECT parent, status FROM programs WHERE mutation LIKE 'ablate: %'").fetchall()
    assert rows and all(parent is not None for parent, _ in rows)


def test_an_ablation_that_is_its_own_parent_is_a_damaged_database_not_a_hang(tmp_path):
    class Rows:  # a store whose one row names itself as its parent (an audit's hand-edited database)
        path = str(tmp_path / "damaged.sqlite")

        def get(self, pid):
            return {"id": pid, "parent": pid, "mutation": "ablate: t = sin(m) -> t = m"}

    with pytest.raises(DslError, match="ablations lead back to it: the database is damaged"):
        steps(Rows(), Rows().get(7))
