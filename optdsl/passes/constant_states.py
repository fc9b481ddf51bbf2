"""States that never leave their start value, replaced by it.

A state that starts at 0 (or 1) and that the step keeps at that number, whatever the other inputs,
is that number at every step (by induction): it is set to it, handed back as it came, or mapped
to it from it by constant folding (``v = sign(v)``, ``v = v * v``; two states each kept by the
other count too). Such states appear in searched programs (a 10-minute search's winner handed
back ``sign(m)`` as its new ``m``), and without this pass a program reading one keeps a state it
does not need, and cannot be proved equal to the program without it.

Folding is exact (IEEE values, the sign of a zero included), so the result computes what the
program computes, bit for bit.

Example:
    >>> from optdsl import parse, to_source
    >>> p = parse('''
    ... def f(w, g, m, v, lr):
    ...     m = interp(g * interp(g, v, 0.7), m, 0.9)
    ...     v = sign(v)
    ...     return lr * g / sqrt(m), m, v
    ... ''')
    >>> print(to_source(eliminate_constant_states(p)), end="")
    def f(w, g, m, lr):
        m = interp(g * interp(g, 0, 0.7), m, 0.9)
        return lr * g / sqrt(m), m
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ..ir import START_VALUES, Call, Const, Program, Var, walk
from ..ops import COL, ELEMENTWISE, OPS, ROW, STATIC
from ..typecheck import valid
from .deadcode import eliminate_dead_code
from .fold import fold


def constant_states(program: Program, values: dict[str, float] | None = None,
                    among: set[str] | None = None) -> dict[str, float]:
    """The states of ``program`` (hyperparameters bound to ``values``) that stay at their start
    value at every step, with that value: the largest such set, found by dropping from every state
    that starts at a number (of those named in ``among``, if given) those whose new value does not
    fold back to it, until none is dropped. A ``keep`` state is never among them (its value is
    handed out, so it stays).

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, m, v, lr, b=0.9):\\n    v = b * v\\n    return lr * g, m, v\\n")
        >>> constant_states(p), constant_states(p, {"b": 0.9})
        ({'m': 0.0}, {'m': 0.0, 'v': 0.0})
    """
    fixed = {s.name: START_VALUES[s.init] for s in program.states
             if s.init in START_VALUES and not s.keep and (among is None or s.name in among)}
    while fixed:
        new_states = fold(program, values={**(values or {}), **fixed}).new_states
        kept = {s.name: fixed[s.name] for s, e in zip(program.states, new_states)
                if s.name in fixed and e == Const(fixed[s.name])}
        if kept == fixed:
            return fixed
        fixed = kept
    return {}


def eliminate_constant_states(program: Program, values: dict[str, float] | None = None) -> Program:
    """``program`` with each state of :func:`constant_states` gone: folded with those states at
    their values (:func:`~optdsl.passes.fold`: reads before the step sets them take the numbers,
    ``k = sign(0)`` is ``k = 0`` and read on), and the statements that only fed them gone too;
    ``program`` itself when there is none. Hyperparameters stay (bound to ``values`` only to decide
    which states stay constant). A number has no shape, so a state read where its shape counts
    (``colmean(r + 0 * c)`` is of a full value, ``colmean(r + 0)`` of a row; ``ndim(v)``; ``norm(v)``
    of a state of ones, sqrt(n) where ``norm(1)`` is 1, and ``norm(v + 1)`` of one held at 0) stays,
    and so do those that only it kept constant: the result validates, and computes, as ``program``
    does.

    Example (m starts at 0 and stays there):
        >>> from optdsl.parser import parse
        >>> from optdsl.printer import to_source
        >>> p = parse("def f(w, g, m, lr=0.1):\\n    m = 0.5 * m\\n    return lr * (g + m), m\\n")
        >>> print(to_source(eliminate_constant_states(p)).strip())
        def f(w, g, lr=0.1):
            return lr * (g + 0)
    """
    fixed = constant_states(program, values)
    counted = {s.name for s in program.states if s.name in fixed and s.kind != "scalar"
               and _counted(program, s.name, fixed)}
    if counted:
        fixed = constant_states(program, values, among=set(fixed) - counted)
    while fixed:
        reduced = _without(program, fixed)
        if valid(reduced):
            return reduced
        # one state fewer (and those only it kept constant): a set that validates first, then the largest
        fewer = [constant_states(program, values, among=set(fixed) - {name}) for name in fixed]
        fixed = max(fewer, key=lambda kept: (bool(kept) and valid(_without(program, kept)), len(kept)))
    return program


@cache
def _counts_elements(op_name: str) -> bool:
    """Does the reduction ``op_name`` of a tensor of ones differ from it of the number 1 (``sum``,
    ``norm``, ``dot``: n and sqrt(n)), read off its numpy form? (One that takes no number, ``rowmean``,
    is left to validation.)"""
    op = OPS[op_name]
    try:
        ones, one = op.numpy(*[np.ones((2, 3))] * op.arity), op.numpy(*[np.float64(1.0)] * op.arity)
        return bool(np.any(ones != one))
    except (IndexError, ValueError, np.exceptions.AxisError):
        return False


def _counted(program: Program, name: str, fixed) -> bool:
    """Is the state ``name``, or a value computed from it, an argument of a reduction that counts
    elements (:func:`_counts_elements`) where no value of a tensor's shape joins it (w, g, a state
    not in ``fixed``, values of theirs)? There the number the state becomes would count as one
    element where the tensor counts n: ``norm(v + 1)`` of a state held at 0 is sqrt(n), ``norm(1)``
    is 1; ``norm(v + g)`` is of a tensor either way."""
    tainted = {name}
    wide = {"w", "g"} | {s.name for s in program.states if s.name not in fixed and s.kind != "scalar"}

    def is_wide(e) -> bool:  # does e keep a tensor's shape, the fixed states taken as numbers?
        if isinstance(e, Var):
            return e.name in wide
        if isinstance(e, Call) and OPS[e.op].shape in (ELEMENTWISE, ROW, COL):
            return any(map(is_wide, e.args))
        return False  # a number, or a per-tensor (or global) reduction: a number either way

    reads = lambda e: any(isinstance(n, Var) and n.name in tainted for n in walk(e))
    counts = lambda e: any(isinstance(n, Call) and OPS[n.op].shape not in (ELEMENTWISE, STATIC)
                           and _counts_elements(n.op) and any(map(reads, n.args))
                           and not any(map(is_wide, n.args)) for n in walk(e))
    for a in program.body:
        if counts(a.expr):
            return True
        # reassigned from values of its own: no longer the state's
        (tainted.add if reads(a.expr) else tainted.discard)(a.target)
        (wide.add if is_wide(a.expr) else wide.discard)(a.target)
    return any(map(counts, program.outputs()))


def _without(program: Program, fixed: dict[str, float]) -> Program:
    """``program`` with the states in ``fixed`` replaced by their values, folded, and gone."""
    folded = fold(program, values=fixed)
    keep = [i for i, s in enumerate(program.states) if s.name not in fixed]
    return eliminate_dead_code(folded.with_body(folded.body, new_states=[folded.new_states[i] for i in keep],
                                                states=tuple(program.states[i] for i in keep)))


__all__ = ["constant_states", "eliminate_constant_states"]
