"""Positive homogeneity read off the op table, and the numbers it lets out of an expression."""

from fractions import Fraction

import numpy as np
import pytest

from optdsl import parse
from optdsl.homogeneity import degree, positive_factor
from optdsl.interpreter import Interpreter
from optdsl.ops import OPS
from optdsl.printer import DslPrinter


def test_degrees_of_the_ops():
    assert [degree("mul", 0), degree("div", 1), degree("cbrt", 0), degree("rsqrt", 0)] == [
        1, -1, Fraction(1, 3), Fraction(-1, 2)]
    assert degree("sign", 0) == 0 and degree("norm", 0) == 1 and degree("dot", 1) == 1
    # where picks by its condition, ne compares: no degree in a value argument (a probe without
    # zeros and equal values once gave where's second argument degree 1)
    assert degree("where", 1) is degree("where", 2) is degree("ne", 0) is None
    assert degree("add", 0) is degree("log", 0) is degree("max", 0) is degree("interp", 0) is None


@pytest.mark.parametrize("name", [n for n, op in OPS.items() if op.arity == 1 and degree(n, 0) is not None])
def test_a_degree_holds_at_other_factors_and_values(name):
    op, p = OPS[name], float(degree(name, 0))
    x = np.linspace(-3.0, 5.0, 13).reshape(1, 13)
    for c in (0.01, 7.0, 1234.5):
        np.testing.assert_allclose(op.numpy(c * x), c ** p * op.numpy(x), rtol=1e-12)


def test_positive_numbers_come_out_of_homogeneous_ops_only():
    e = parse("def f(w, g, v, lr):\n    return lr * 0.001 * cbrt(g / 0.2837 / (sqrt(v) + 1e-08)), v\n").update
    c, rest = positive_factor(e)
    assert float(c) == pytest.approx(0.001 * 0.2837 ** (-1 / 3), rel=1e-15)
    assert DslPrinter().doprint(rest) == "lr * 1 * cbrt(g / 1 / (sqrt(v) + 1e-08))"  # a sum keeps its number
    negative = parse("def f(w, g, lr):\n    return lr * -2 * sign(g)\n").update
    assert positive_factor(negative)[0] == 1  # only c > 0 passes a root or a sign unchanged


def test_the_factor_and_the_rest_compute_the_expression():
    p = parse("def f(w, g, v, lr=0.3):\n    v = interp(g * g, v, 0.9)\n"
              "    return lr * 0.5 * cbrt(g / 0.25 / (4 * sqrt(v) + 1e-08)) * norm(3 * w), v\n")
    c, rest = positive_factor(p.update)
    q = p.with_body(p.body, update=rest)
    rng = np.random.default_rng(0)
    w, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    def run(prog):
        interp = Interpreter(prog, dtype=np.float64)
        return interp.step({"w": w}, {"w": g}, interp.init({"w": w}), 1)

    (a, _), (b, _) = run(p), run(q)
    np.testing.assert_allclose(w - a["w"], float(c) * (w - b["w"]), rtol=1e-12)
