"""Constant folding, static shape facts and constant propagation.

Calls whose arguments are all constants are evaluated with the op's numpy form in float64, as
the interpreter would (a whole-tensor reduction too: a number is a 0-d value in every backend,
so ``norm(-0.374)`` is 0.374 and ``sum(3)`` is 3): ``1 / 0`` is ``inf``, ``0 / 0``, ``1 % 0`` and ``(-1) ** 0.5`` are ``nan``,
``10 ** 1000`` is ``inf`` (IEEE results, never an exception); names bound to constants are
propagated; identities that hold for every IEEE value are applied (``x * 1``, ``x - 0``,
``x / 1``, ``x ** 1``, ``--x``, ``clip(x, x)``, ``where`` with a constant condition, ``and``/``or`` with a
constant (``x and 1`` is x's truth, ``x or 1`` is 1), and an ``abs`` where the op reads
only the magnitude: ``sqrt(abs(x))`` and ``sqrt(-x)`` are ``sqrt(x)``, ``sqrt(x / -2)`` is ``sqrt(x / 2)``,
see ``Op.even``) -- not ``x + 0``, which
turns -0.0 into 0.0 (and ``1 / x`` from -inf into inf). Given a parameter ``shape``, ``ndim(w)``, ``size(w)`` and
``dim(w, i)`` become numbers first, so static branches resolve. ``values`` binds
hyperparameters (``{"beta1": 0.95}``) to numbers.

Example:
    >>> from optdsl import parse, to_source
    >>> p = parse("def f(w, g, lr):\\n    u = where(ndim(w) >= 2, g * (2 - 1), sign(g))\\n    return lr * u\\n")
    >>> print(to_source(fold(p, shape=(3, 4))).splitlines()[1].strip())
    u = g
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Assign, Call, Const, Expr, Program, substitute
from ..ops import ELEMENTWISE, OPS, REDUCE, STATIC


def _is(e: Expr, v: float) -> bool:
    return isinstance(e, Const) and e.value == v


def _static(call: Call, shape: tuple[int, ...]) -> Expr:
    if call.op == "ndim":
        return Const(float(len(shape)))
    if call.op == "size":
        return Const(float(math.prod(shape)))
    i = int(call.args[1].value)
    if not -len(shape) <= i < len(shape):
        return call  # an axis this parameter lacks: an error only if still live (see specialize)
    return Const(float(shape[i]))


def constant(value) -> Const:
    """A folded value as a constant; every NaN is the one ``math.nan``, as the parser reads ``nan``,
    so equal programs stay equal (``nan != nan``, but a tuple holding the same object compares equal).

    Example:
        >>> constant(np.float64(1.5)), constant(np.float64("nan")).value is math.nan
        (Const(value=1.5), True)
    """
    value = float(np.asarray(value))
    return Const(math.nan if math.isnan(value) else value)


def fold_expr(expr: Expr, shape: tuple[int, ...] | None = None) -> Expr:
    """One expression, folded bottom-up; with ``shape``, ``ndim(w)``, ``size(w)`` and ``dim(w, i)``
    become numbers first.

    Example:
        >>> from optdsl.ir import Var
        >>> fold_expr(Call("mul", (Call("sub", (Const(2.0), Const(1.0))), Var("g"))))  # (2 - 1) * g
        Var(name='g')
        >>> fold_expr(Call("ndim", (Var("w"),)), shape=(3, 4))
        Const(value=2.0)
    """
    if not isinstance(expr, Call):
        return expr
    if OPS[expr.op].shape == STATIC:
        return _static(expr, shape) if shape is not None else expr
    if expr.op == "where":
        # A resolved condition folds only the branch taken: a guarded `dim(w, 2)` in the
        # other branch may ask for an axis this parameter does not have.
        cond = fold_expr(expr.args[0], shape)
        if isinstance(cond, Const):
            return fold_expr(expr.args[1] if cond.value != 0 else expr.args[2], shape)
    op = OPS[expr.op]
    args = tuple(fold_expr(a, shape) for a in expr.args)
    args = tuple(_unsigned(a) if i in op.even else a for i, a in enumerate(args))
    call = Call(expr.op, args)
    if op.name == "where" and isinstance(args[0], Const):
        return args[1] if args[0].value != 0 else args[2]
    if all(isinstance(a, Const) for a in args) and op.shape in (ELEMENTWISE, REDUCE):
        return constant(op.numpy(*[np.float64(a.value) for a in args]))
    same = _identity(op.name, args)
    if same is not None:
        return same
    a0 = args[0]
    if op.name == "neg" and isinstance(a0, Call) and a0.op == "neg":
        return a0.args[0]
    if op.name in ("and", "or") and any(isinstance(a, Const) for a in args):
        return _logic_with_constant(op.name, *sorted(args, key=lambda a: not isinstance(a, Const)))
    return call


def _unsigned(e: Expr) -> Expr:
    """``e`` up to its sign, for an argument whose sign the op ignores (``Op.even``): ``abs(x)``
    and ``-x`` are ``x``, and a negative number multiplying or dividing is its magnitude
    (``sqrt(v / -1.778)`` is ``sqrt(v / 1.778)``): IEEE products and quotients change only sign.

    Example:
        >>> from optdsl.ir import Var
        >>> _unsigned(Call("div", (Var("v"), Const(-1.778))))
        Call(op='div', args=(Var(name='v'), Const(value=1.778)))
    """
    if isinstance(e, Call) and e.op in ("abs", "neg"):
        return e.args[0]
    negative = lambda a: isinstance(a, Const) and a.value < 0
    if isinstance(e, Call) and e.op in ("mul", "div") and any(map(negative, e.args)):
        args = tuple(Const(-a.value) if negative(a) else a for a in e.args)
        same = _identity(e.op, args)  # -1 * g is g, as a second fold would make it
        return Call(e.op, args) if same is None else same
    return e


def _identity(op: str, args: tuple[Expr, ...]) -> Expr | None:
    """The argument ``op(*args)`` is, where an identity makes it one (``x * 1``, ``1 * x``, ``x / 1``,
    ``x ** 1``, ``x - 0``, ``clip(x, x)``), else None."""
    a0, a1 = args[0], args[1] if len(args) > 1 else None
    if (op in ("mul", "div", "power") and _is(a1, 1)) or (op == "sub" and _is(a1, 0)):
        return a0
    if op == "mul" and _is(a0, 1):
        return a1
    if op == "clip" and a0 == a1:  # x in [-|x|, |x|]: x itself, -0.0, inf and nan too
        return a0
    return None


def _logic_with_constant(name: str, c: Const, x: Expr) -> Expr:
    """``x and c`` / ``x or c`` for a constant c: the constant when it decides (``x and 0`` is 0,
    ``x or 1`` is 1), else the truth of x (``x and 1``): x itself if it already is a truth value
    (a comparison, ``not``...), else ``x != 0`` (nan counts as true, as in ``and``)."""
    if (c.value != 0) == (name == "or"):
        return Const(1.0 if name == "or" else 0.0)
    if isinstance(x, Call) and OPS[x.op].truth:
        return x
    return Call("ne", (x, Const(0.0)))


def fold(program: Program, shape: tuple[int, ...] | None = None,
         values: dict[str, float] | None = None) -> Program:
    """The program with constants folded and propagated (statement count unchanged).

    Example:
        >>> from optdsl import parse, to_source
        >>> p = parse("def f(w, g, lr, beta=0.9):\\n    a = 1 - beta\\n    return lr * a * g\\n")
        >>> print(to_source(fold(p, values={"beta": 0.5})).strip())
        def f(w, g, lr, beta=0.9):
            a = 0.5
            return lr * 0.5 * g
    """
    known: dict[str, Expr] = {k: Const(float(v)) for k, v in (values or {}).items()}
    body = []
    for a in program.body:
        e = fold_expr(substitute(a.expr, known), shape)
        if isinstance(e, Const):
            known[a.target] = e
        else:
            known.pop(a.target, None)
        body.append(Assign(a.target, e, a.loc))
    outs = [fold_expr(substitute(e, known), shape) for e in program.outputs()]
    return program.with_body(body, update=outs[0], new_states=outs[1:])
