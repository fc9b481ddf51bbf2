"""Shape tests (``where`` on ``ndim(w)``, ``size(w)``...) decide as Python decides them, on every shape.

The interpreter and every backend run the straight-line program that :func:`optdsl.passes.specialize`
picks for a shape from a decision tree over the tests; here random nested tests are checked against
Python evaluating the same source with the shape's numbers. A test taken inside another's branch
once read the outer test's truth (1) for its value (``ndim(w) > 2`` inside ``where(ndim(w), ...)``
was false on 3-d parameters), and a test that folded to one already taken never ended (RecursionError).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import scaled_examples

from optdsl import Interpreter, parse
from optdsl.cli import main
from optdsl.typecheck import validate

SHAPES = [(), (1,), (7,), (5, 6), (2, 3, 4), (1, 1, 1, 2)]

# (DSL source, Python source over N = ndim(w) and S = size(w))
ATOMS = st.sampled_from([("ndim(w)", "N"), ("size(w)", "S"), ("(ndim(w) - 2)", "(N - 2)"),
                         ("(size(w) % 3)", "(S % 3)"), ("0", "0"), ("2", "2"), ("-1", "-1")])


def _combine(parts):
    """Expressions over ``parts``: arithmetic, comparisons, and/or/not, where. The DSL's and/or/not
    and comparisons are truths (1.0 or 0.0), so Python's are wrapped in ``float(...)``."""
    def infix(op):
        def spell(ab):
            (a, pa), (b, pb) = ab
            if op in ("and", "or"):
                python = f"float(bool({pa}) {op} bool({pb}))"
            elif op in ("+", "-", "*"):
                python = f"({pa} {op} {pb})"
            else:  # a comparison
                python = f"float({pa} {op} {pb})"
            return f"({a} {op} {b})", python
        return st.tuples(parts, parts).map(spell)

    ops = [infix(op) for op in ("+", "-", "*", ">", ">=", "<", "==", "!=", "and", "or")]
    negation = parts.map(lambda a: (f"(not {a[0]})", f"float(not {a[1]})"))
    where = st.tuples(parts, parts, parts).map(
        lambda c: (f"where({c[0][0]}, {c[1][0]}, {c[2][0]})", f"({c[1][1]} if {c[0][1]} else {c[2][1]})"))
    return st.one_of(*ops, negation, where)


TESTS = st.recursive(ATOMS, _combine, max_leaves=6)


@st.composite
def branches(draw, depth=3, outer=()):
    """A tree of ``where`` over shape tests with arms ``k * g``; half the inner tests are built on a
    test above them (``ndim(w) > 2`` under ``where(ndim(w), ...)``), where the tree's paths meet."""
    if depth == 0 or (outer and draw(st.booleans())):
        k = draw(st.integers(1, 8))
        return f"{k} * g", f"{k}"
    on_outer = outer and draw(st.booleans())
    test = draw(_combine(st.one_of(st.sampled_from(outer), ATOMS)) if on_outer else TESTS)
    inner = branches(depth - 1, (*outer, test))
    (yes, py_yes), (no, py_no) = draw(inner), draw(inner)
    return f"where({test[0]}, {yes}, {no})", f"({py_yes} if {test[1]} else {py_no})"


@settings(max_examples=scaled_examples(300))  # (a few seconds; 100 found the first bug below 4 times in 5)
@given(branches())
def test_nested_shape_tests_pick_the_branch_python_picks(branches):
    source, python = branches
    opt = Interpreter(parse(f"def f(w, g, lr=1.0):\n    return lr * ({source})\n"))
    params = {f"p{i}": np.zeros(shape) for i, shape in enumerate(SHAPES)}
    updates, _ = opt.updates(params, {k: np.ones(v.shape) for k, v in params.items()}, opt.init(params), 1)
    for update, shape in zip(updates.values(), SHAPES):
        want = eval(python, {"N": len(shape), "S": int(np.prod(shape))})  # (text made here, not user input)
        assert np.ravel(update)[0] == want, (source, shape)


@pytest.mark.parametrize(("source", "python"), [
    ("where(ndim(w), 8 * g, where(2, where((not ndim(w)) * size(w), 3 * g, 1 * g), 4 * g))",  # RecursionError
     "(8 if N else ((3 if (float(not N) * S) else 1) if 2 else 4))"),
    ("where(ndim(w), where(ndim(w) > 2, 2 * g, 3 * g), 5 * g)", "((2 if N > 2 else 3) if N else 5)"),  # 3-d
])
def test_cases_random_shape_tests_found(source, python):
    test_nested_shape_tests_pick_the_branch_python_picks.hypothesis.inner_test((source, python))


def test_a_program_that_a_shape_test_narrows_is_refused_by_check(tmp_path, capsys):
    """`c` is a column state, but for 2-d parameters the shape test makes it the number 1.1, so
    `r + 0 * c` is a row there and no target can take its column mean. `optdsl check` accepted
    it, and every target refused it at compile time (an Adafactor mutant's readable form said
    that neither program runs)."""
    path = tmp_path / "narrow.py"
    path.write_text("def narrow(w, g, r: row, c: col, lr=0.1):\n    r = rowmean(g * g)\n"
                    "    c = where(ndim(w) >= 2, 1.1, c)\n    u = g\n    if ndim(w) >= 2:\n"
                    "        u = g * colmean(r + 0 * c)\n    return lr * u, r, c\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:6:9: colmean() reduces a full tensor, got a row-shaped value; "
                          "once the shape tests are decided") and "Traceback" not in err
    kept = path.read_text().replace("1.1, c)", "colmean(g * g), c)")  # a column either way: fine
    assert validate(parse(kept)).name == "narrow"
