"""Piecewise-linear learning-rate schedule (warm-up, decay)."""

from __future__ import annotations

from itertools import pairwise

from ..ir import Const, Expr, Program
from ._build import Builder, call, checked


def piecewise_linear(t: Expr, points) -> Expr:
    """f(t) through the points ``(t_i, f_i)``: linear in between, flat before and after.

        f(t) = f_0 (t < t_0);  f_i + (t - t_i)(f_{i+1} - f_i)/(t_{i+1} - t_i) (t_i <= t < t_{i+1});
        f_n (t >= t_n)

    Example:
        >>> from optdsl.ir import Var
        >>> from optdsl.printer import DslPrinter
        >>> DslPrinter().doprint(piecewise_linear(Var("t"), [(0, 0.0), (10, 1.0)]))
        'where(t >= 10, 1, where(t >= 0, 0 + 0.1 * (t - 0), 0))'
    """
    points = sorted((checked("a schedule's step", a), checked("a schedule's multiplier", b))
                    for a, b in points)
    if any(ta == tb for (ta, _), (tb, _) in pairwise(points)):
        raise ValueError(f"a schedule's steps must differ: {points}")
    expr: Expr = Const(points[0][1])
    for (ta, fa), (tb, fb) in pairwise(points):
        slope = (fb - fa) / (tb - ta)
        expr = call("where", call("ge", t, ta), call("add", fa, call("mul", slope, call("sub", t, ta))), expr)
    return call("where", call("ge", t, points[-1][0]), points[-1][1], expr)


def lr_schedule(program: Program, points=((0, 0.0), (100, 1.0), (1000, 0.1))) -> Program:
    """Multiplies lr by a piecewise-linear function of the number of updates done so far:

        lr_t = lr f(t - 1)   (t the 1-based step; optax schedules count from 0 the same way)

    The default warms up linearly from 0 over 100 updates, then decays to 0.1 lr at 1000.

    Example:
        >>> from optdsl import load, Interpreter
        >>> import numpy as np
        >>> opt = Interpreter(lr_schedule(load("sgd"), [(0, 0.5), (2, 1.0)]), lr=1.0)
        >>> p = {"w": np.zeros(1)}
        >>> s = opt.init(p)
        >>> [float(opt.updates(p, {"w": np.ones(1)}, s, t)[0]["w"][0]) for t in (1, 2, 3, 9)]
        [0.5, 0.75, 1.0, 1.0]
    """
    if len(points) < 1:
        raise ValueError("a schedule needs at least one (step, multiplier) point")
    b = Builder(program)
    t = b.let("t", call("sub", "step", 1), "before")
    lr_t = b.let("lr_t", call("mul", "lr", piecewise_linear(t, points)), "before")
    b.rename_input("lr", lr_t)  # `lr` is never reassigned, so renaming its reads is exact
    shown = ", ".join(f"({a:g}, {v:g})" for a, v in sorted(points))
    return b.build("scheduled", f"Derived: lr times the piecewise-linear schedule through {shown}.")
