"""Positive homogeneity of the ops, and the positive numbers it lets out of an expression.

An op ``f`` is positively homogeneous of degree ``p`` in its argument ``i`` when

    f(..., c x, ...) = c^p f(..., x, ...)      for every number c > 0

(``mul`` 1 in each argument, ``div`` 1 and -1, ``cbrt`` 1/3, ``sqrt`` 1/2 (of ``|x|``), ``sign`` 0,
``norm`` 1). The degrees are read off each op's numpy form, so the op table stays the one source.
With them :func:`positive_factor` writes ``cbrt(g / 0.2837 / d)`` as ``0.2837^(-1/3) * cbrt(g / d)``:
the readable form (:mod:`optdsl.readable`) folds such a number into the learning rate.

Example:
    >>> from optdsl import parse
    >>> from optdsl.printer import DslPrinter
    >>> c, rest = positive_factor(parse("def f(w, g, lr):\\n    return lr * 0.001 * cbrt(g / 8.0)\\n").update)
    >>> c, DslPrinter().doprint(rest)
    (1/2000, 'lr * 1 * cbrt(g / 1)')
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import numpy as np
import sympy

from .ir import Call, Const, Expr
from .ops import OPS, STATIC


@cache
def degree(op_name: str, position: int) -> Fraction | None:
    """The ``p`` with ``f(..., c x, ...) = c^p f(..., x, ...)`` for every ``c > 0`` in argument
    ``position`` of op ``op_name``, the other arguments held, or None where there is none: read
    off its numpy form at three factors and three draws (``p`` a fraction of denominator <= 6).

    Example: ``degree("div", 1) == -1``, ``degree("cbrt", 0) == Fraction(1, 3)``,
    ``degree("add", 0) is None``.
    """
    op = OPS[op_name]
    if op.shape == STATIC:
        return None
    rng = np.random.default_rng(0)
    found = None
    with np.errstate(all="ignore"):
        for draw in range(3):
            # zeros and equal values among them, so that where, ne... show what they pick
            args = [np.where(rng.random((3, 4)) < 0.5, rng.standard_normal((3, 4)),
                             rng.choice([-1.0, 0.0, 1.0], (3, 4))) for _ in range(op.arity)]
            try:
                plain = np.asarray(op.numpy(*args), dtype=np.float64)
                for c in (2.0, 0.37, 5.5):
                    scaled = list(args)
                    scaled[position] = c * args[position]
                    value = np.asarray(op.numpy(*scaled), dtype=np.float64)
                    seen = np.isfinite(plain) & (plain != 0)
                    if not seen.any() or not np.array_equal(np.isfinite(value), np.isfinite(plain)):
                        return None
                    if found is None:  # from the first factor's ratio, then checked at the others
                        ratio = value[seen] / plain[seen]
                        if not np.all(ratio > 0):
                            return None
                        found = Fraction(math.log(float(ratio.flat[0]), c)).limit_denominator(6)
                    if not np.allclose(value, c ** float(found) * plain, rtol=1e-9, atol=0, equal_nan=True):
                        return None
            except (ValueError, TypeError, IndexError, ZeroDivisionError, np.exceptions.AxisError):
                return None
    return found


def positive_factor(expr: Expr) -> tuple[sympy.Expr, Expr]:
    """``(c, rest)`` with ``expr = c * rest`` in real arithmetic: the positive finite numbers that
    stand where the ops are homogeneous (:func:`degree`) taken out, exactly (``c`` a sympy number:
    ``2837/10000 ** (-1/3)``), each replaced by 1 in ``rest`` (:func:`optdsl.passes.fold` removes
    those). Example: ``positive_factor(cbrt(g / 0.2837))`` is ``((2837/10000)^(-1/3), cbrt(g / 1))``."""
    from .symbolic import number  # (here: optdsl.symbolic imports this module)

    if isinstance(expr, Const):
        return (number(expr.value), Const(1.0)) if 0 < expr.value < math.inf else (sympy.Integer(1), expr)
    if not isinstance(expr, Call):
        return sympy.Integer(1), expr
    factor, args = sympy.Integer(1), list(expr.args)
    for i, arg in enumerate(expr.args):
        p = degree(expr.op, i)
        if p is None:
            continue
        c, rest = positive_factor(arg)
        if c != 1:
            factor *= c ** sympy.Rational(p.numerator, p.denominator)
            args[i] = rest
    return factor, (Call(expr.op, tuple(args)) if factor != 1 else expr)


__all__ = ["degree", "positive_factor"]
