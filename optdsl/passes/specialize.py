"""Specialisation: the program one parameter tensor runs, given its shape.

Shape facts become numbers, static branches resolve, and what the chosen branch does not need
is removed, states included (a 1-d parameter of factored AdaFactor keeps a full ``v`` and no
row/column states). Global reductions are first hoisted into statements of their own, and one
live in the generic program stays live in every specialisation: each tensor must contribute to
it, even one that does not read the result. The global statements cut the body into
:func:`segments`, which every backend runs in lockstep across tensors.

Example:
    >>> from optdsl import load
    >>> [s.name for s in specialize(load("adafactor"), (8,)).states]
    ['v']
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import DslError
from ..ir import Assign, Call, Program, Var, fresh_name, map_calls, names_in, walk
from ..ops import COL, GLOBAL, OPS, ROW, STATIC
from .deadcode import eliminate_dead_code, liveness
from .fold import fold, fold_expr


def hoist_globals(program: Program) -> Program:
    """Each global reduction becomes its own statement ``<op>_k = global_norm(x)``."""
    used = names_in(program)
    body: list[Assign] = []

    def lift(loc):
        def fn(call: Call):
            if OPS[call.op].shape != GLOBAL:
                return call
            name = fresh_name(call.op, used)
            body.append(Assign(name, call, loc))
            return Var(name)
        return fn

    for a in program.body:
        top = a.expr
        if isinstance(top, Call) and OPS[top.op].shape == GLOBAL:
            inner = Call(top.op, tuple(map_calls(x, lift(a.loc)) for x in top.args))
            body.append(Assign(a.target, inner, a.loc))
        else:
            body.append(Assign(a.target, map_calls(top, lift(a.loc)), a.loc))
    outs = [map_calls(e, lift(program.return_loc)) for e in program.outputs()]
    return program.with_body(body, update=outs[0], new_states=outs[1:])


def global_statements(program: Program) -> list[int]:
    """Indices of statements that are a global reduction (after :func:`hoist_globals`)."""
    return [i for i, a in enumerate(program.body)
            if isinstance(a.expr, Call) and OPS[a.expr.op].shape == GLOBAL]


def static_key(program: Program, shape: tuple[int, ...]) -> tuple:
    """The values of every shape fact the program asks: tensors with equal keys share code."""
    facts = []
    for e in [a.expr for a in program.body] + list(program.outputs()):
        for node in walk(e):
            if isinstance(node, Call) and OPS[node.op].shape == STATIC:
                facts.append(fold_expr(node, tuple(shape)).value)
    return tuple(facts)


@lru_cache(maxsize=4096)
def specialize(program: Program, shape: tuple[int, ...]) -> Program:
    """The straight-line program a tensor of ``shape`` runs (no shape facts, no dead code)."""
    hoisted = hoist_globals(program)
    live, _ = liveness(hoisted)
    forced = frozenset(i for i in global_statements(hoisted) if i in live)
    spec = eliminate_dead_code(fold(hoisted, shape=tuple(shape)), force=forced)
    for expr, loc in _located(spec):
        for node in walk(expr):
            if isinstance(node, Call) and OPS[node.op].shape == STATIC:
                raise DslError(f"dim(w, {int(node.args[1].value)}) asks for an axis a parameter of shape "
                               f"{tuple(shape)} does not have", program.filename, *(loc or (None, None)),
                               program.source, hint="guard it with `if ndim(w) > ...:`")
    if len(shape) < 2:
        for expr, loc in _located(spec):
            for node in walk(expr):
                if isinstance(node, Call) and OPS[node.op].shape in (ROW, COL):
                    raise DslError(f"{node.op}() needs a parameter with 2 or more axes, got shape "
                                   f"{tuple(shape)}", program.filename, *(loc or (None, None)),
                                   program.source, hint="guard it with `if ndim(w) >= 2:`")
        for s in spec.states:
            if s.kind in ("row", "col"):
                raise DslError(f"state {s.name!r} is {s.kind}-shaped but the parameter has shape "
                               f"{tuple(shape)}", program.filename, hint="guard its use with "
                               "`if ndim(w) >= 2:`")
    return spec


def _located(program: Program):
    """(expression, location) for every statement and output."""
    return [(a.expr, a.loc) for a in program.body] + [(e, program.return_loc) for e in program.outputs()]


def segments(program: Program) -> list[list[Assign]]:
    """The body cut at global reductions: ``len(segments) == len(global_statements) + 1``.

    Backends run segment k for every tensor, then global statement k across all tensors."""
    out: list[list[Assign]] = [[]]
    for a in program.body:
        if isinstance(a.expr, Call) and OPS[a.expr.op].shape == GLOBAL:
            out.append([])
        else:
            out[-1].append(a)
    return out
