"""Shape arithmetic (``size(w) - 1``, ``ndim(w) >= 2``) as plain Python, where plain Python computes
what the reference interpreter does: IEEE float64 (:func:`optdsl.passes.specialize.shape_value`).

Shape facts are Python ints, and Python's own arithmetic on ints is not IEEE's: ``1 / (n - n)`` and
``2 ** 2000`` raise, ``dim ** dim ** 50`` computes a huge int for minutes, ``-(n - n)`` is 0 where
float64 gives -0.0 (and ``g / -0.0`` is the other infinity). So an expression is printed as plain
Python only where that is exact:

- its ops are those the op table marks ``python_exact`` (``+ - *``, comparisons, logic, ``where``:
  IEEE float64 on Python floats, never raising);
- a shape fact inside arithmetic is made a float (``float(w.numel())``); compared, it stays an int
  (Python compares ints and floats exactly);
- in a shape test, ops with a ``python_test`` spelling (``max``/``min``: Python's builtins) of shape
  facts and finite numbers are printed in it: no nan reaches them, and a test cannot see the sign
  of a zero.

Elsewhere :func:`plain_python` returns None and the target computes with its tensors or arrays.

Example:
    >>> n = Call("size", (Var("w"),))
    >>> plain_python(Call("gt", (Call("sub", (n, Const(1.0))), Const(3.0))), "torch", test=True)
    'float(w.numel()) - 1 > 3'
    >>> plain_python(Call("mul", (Call("neg", (n,)), Const(0.5))), "jax")
    '-float(w.size) * 0.5'
    >>> plain_python(Call("div", (Const(1.0), n)), "torch") is None  # 1 / 0 raises in Python
    True
"""

from __future__ import annotations

import ast
import math

from optdsl.ir import Call, Const, Expr, Var
from optdsl.ops import OPS, STATIC

from .generated import number


def plain_python(expr: Expr, target: str, test: bool = False) -> str | None:
    """``expr`` (shape facts, numbers and the ops between them) as plain Python over ``w`` that
    computes float64's value (see the module docstring), shape facts spelled as ``target``
    ("torch" or "jax") spells them; None where plain Python would not be exact. ``test``: only the
    truth of the value counts (a shape test): comparisons and logic read as Python's own
    (``w.ndim >= 2 and ...``), and max and min of facts and finite numbers qualify.

    Example:
        >>> k = Call("ge", (Call("ndim", (Var("w"),)), Const(2.0)))  # ndim(w) >= 2
        >>> plain_python(k, "torch"), plain_python(k, "jax", test=True)
        ('1.0 if w.ndim >= 2 else 0.0', 'w.ndim >= 2')
    """

    def show(e: Expr, context: str) -> str | None:
        """``context``: "truth" (only truthiness counts), "compared" (an operand of a comparison:
        an int compares as its float does) or "number" (inside arithmetic)."""
        if isinstance(e, Const):
            return number(e.value)
        if not isinstance(e, Call):
            return None  # a name: not a shape fact
        op = OPS[e.op]
        if op.shape == STATIC:
            args = [a.name if isinstance(a, Var) else str(int(a.value)) for a in e.args]
            text = getattr(op, target).format(*args)
            return text if context != "number" else f"float({text})"
        inner = "compared" if op.truth else "number"
        if op.python_test and test and all(_fact_or_finite(a) for a in e.args):
            spelling, inner = op.python_test, "compared"
        elif op.truth and op.infix and context == "truth":  # a test as Python's: w.ndim >= 2 and ...
            spelling = f"{op.infix} {{0}}" if op.arity == 1 else f"{{0}} {op.infix} {{1}}"
            # and/or/not read their operands' truth alone, so a truth among them may be Python's own;
            # a comparison reads their values, and Python's `a and b` is a or b, not 1.0 or 0.0
            inner = "truth" if op.logic else "compared"
        elif op.python_exact:
            spelling = op.python
        else:
            return None
        args = [show(a, "compared" if inner == "truth" and not _is_truth(a) else inner) for a in e.args]
        return None if None in args else "(" + spelling.format(*args) + ")"

    text = show(expr, "truth" if test else "number")
    return None if text is None else ast.unparse(ast.parse(text, mode="eval"))


def shape_test(expr: Expr, target: str, computed) -> str:
    """A shape test as Python: :func:`plain_python` where that is exact; else ``and``, ``or`` and
    ``not`` (the op table's ``logic``) as Python's own over their operands' tests, so that only
    what needs it is computed, by ``computed(e)`` (the target's float64 computation of the truth
    of ``e``, as Python text).

    Example (the left side is plain; the right needs float64 arithmetic):
        >>> n = Call("size", (Var("w"),))
        >>> big = Call("gt", (Call("power", (Const(2.0), n)), Const(1e300)))
        >>> shape_test(Call("and", (Call("ge", (n, Const(2.0))), big)), "torch", lambda e: "COMPUTED")
        'w.numel() >= 2 and COMPUTED'
    """
    plain = plain_python(expr, target, test=True)
    if plain is not None:
        return plain
    if isinstance(expr, Call) and OPS[expr.op].logic:
        parts = [f"({shape_test(a, target, computed)})" for a in expr.args]
        text = f"not {parts[0]}" if len(parts) == 1 else f" {expr.op} ".join(parts)
        return ast.unparse(ast.parse(text, mode="eval"))  # (needless parentheses dropped)
    return computed(expr)


def _fact_or_finite(expr: Expr) -> bool:
    if isinstance(expr, Const):
        return math.isfinite(expr.value)
    return isinstance(expr, Call) and OPS[expr.op].shape == STATIC


def _is_truth(expr: Expr) -> bool:
    return isinstance(expr, Call) and OPS[expr.op].truth
