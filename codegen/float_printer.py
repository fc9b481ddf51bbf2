"""Per-step scalars as Python float arithmetic: a generated torch module's ``_path<k>_uniform_floats``.

The values all tensors of a step share (AdamW's bias corrections ``1 / (1 - beta1 ** step)``) come
from lr, step and the hyperparameters alone, once per step. In 0-d tensors every op is a torch
dispatch (~5 us; ~100 us of a small model's ~600 us AdamW step); in Python floats it is a few
hundred nanoseconds. Each op is spelled from the op table's ``python`` field (:data:`optdsl.ops.Op`),
whose meaning is numpy's up to libm's rounding, as the reference interpreter computes it. Where an
op has no such spelling there is no float function and the module computes its scalars in tensors;
where Python raises instead of giving inf or nan (``1 / 0``), the runtime computes that step's
scalars in tensors (``_Program.floats`` in :mod:`codegen.runtime.torch_optimizer`).

Example:
    >>> from optdsl.ir import Call, Const, Var
    >>> power = Call("power", (Var("b"), Var("t")))
    >>> FloatPrinter().doprint(Call("div", (Const(1.0), Call("sub", (Const(1.0), power)))))
    '1 / (1 - math.pow(b, t))'
"""

from __future__ import annotations

import re

from optdsl.ir import Call, Const, Var, walk
from optdsl.ops import ELEMENTWISE, OPS
from optdsl.printer import ATOM, Code, CodePrinter, precedence_of

from .generated import number


class NoFloatSpelling(Exception):
    """An op of the expression has no Python spelling (a reduction, ``floor``, ``cbrt``)."""


def called_functions(exprs) -> set[str]:
    """The runtime helpers (codegen/runtime/float_math.py: ``_fmax``...) the spellings of ``exprs`` call.

    Example:
        >>> sorted(called_functions([Call("clamp", (Var("x"), Const(0.0), Var("hi")))]))
        ['_fmax', '_fmin']
    """
    ops = {n.op for e in exprs for n in walk(e) if isinstance(n, Call)}
    return {name for op in ops for name in re.findall(r"\b(_f[a-z]\w*)\(", OPS[op].python or "")}


class FloatPrinter(CodePrinter):
    """Expressions over Python floats, one op table spelling each (see the module docstring). Deep
    nests become temporaries early, so that lines stay short."""

    max_depth = 4

    def _print_Const(self, expr: Const) -> Code:
        text = number(float(expr.value))
        return Code(text, precedence_of(text))

    def _print_Var(self, expr: Var) -> Code:  # a program's names are checked before printing
        return Code(expr.name, ATOM)

    def _print_Call(self, expr: Call) -> Code:
        op = OPS[expr.op]
        if op.shape != ELEMENTWISE or op.python is None:
            raise NoFloatSpelling(expr.op)
        return self.fill(op.python, list(expr.args))
