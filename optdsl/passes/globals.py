"""Global reductions (``global_norm``...): hoisted into statements of their own, which cut a
program into :func:`segments` that every backend runs in lockstep across tensors.

Example:
    >>> from optdsl import parse
    >>> p = hoist_globals(parse("def f(w, g, lr):\\n    return lr * g / global_norm(g)\\n"))
    >>> [a.target for a in p.body], global_statements(p)
    (['global_norm_1'], [0])
"""

from __future__ import annotations

from ..ir import Assign, Call, Program, Var, free_vars, fresh_name, map_calls, names_in
from ..ops import GLOBAL, OPS


def hoist_globals(program: Program) -> Program:
    """Each global reduction becomes its own statement ``<op>_k = <op>(x)`` (``global_norm_1 =
    global_norm(g)``), one for each value reduced: a repeat of the same reduction of the same
    names reads the first one's (each is a pass over every tensor and a round of lockstep).

    Example:
        >>> from optdsl import parse, to_source
        >>> p = parse("def f(w, g, lr):\\n    u = g / global_norm(g)\\n    return lr * u * global_norm(g)\\n")
        >>> print(to_source(hoist_globals(p)).strip())
        def f(w, g, lr):
            global_norm_1 = global_norm(g)
            u = g / global_norm_1
            return lr * u * global_norm_1
    """
    used = names_in(program)
    body: list[Assign] = []
    hoisted: dict[Call, str] = {}  # reductions hoisted so far, while no name they read is reassigned

    def lift(loc):
        def fn(call: Call):
            if OPS[call.op].shape != GLOBAL:
                return call
            if call not in hoisted:
                hoisted[call] = fresh_name(call.op, used)
                body.append(Assign(hoisted[call], call, loc))
            return Var(hoisted[call])
        return fn

    for a in program.body:
        top = a.expr
        if isinstance(top, Call) and OPS[top.op].shape == GLOBAL:
            inner = Call(top.op, tuple(map_calls(x, lift(a.loc)) for x in top.args))
            body.append(Assign(a.target, inner, a.loc))
        else:
            body.append(Assign(a.target, map_calls(top, lift(a.loc)), a.loc))
        for call in [c for c in hoisted if a.target in free_vars(c)]:
            del hoisted[call]
    outs = [map_calls(e, lift(program.return_loc)) for e in program.outputs()]
    return program.with_body(body, update=outs[0], new_states=outs[1:])


def global_statements(program: Program) -> list[int]:
    """Indices of statements that are a global reduction (after :func:`hoist_globals`).

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, lr):\\n    u = g / global_norm(g)\\n    return lr * u / global_norm(u)\\n")
        >>> global_statements(p), global_statements(hoist_globals(p))
        ([], [0, 2])
    """
    return [i for i, a in enumerate(program.body)
            if isinstance(a.expr, Call) and OPS[a.expr.op].shape == GLOBAL]


def segments(program: Program) -> list[list[Assign]]:
    """The body cut at global reductions: ``len(segments) == len(global_statements) + 1``.

    Backends run segment k for every tensor, then global statement k across all tensors.

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, lr):\\n    u = g / global_norm(g)\\n    return lr * u / global_norm(u)\\n")
        >>> [[a.target for a in seg] for seg in segments(hoist_globals(p))]
        [[], ['u'], []]
    """
    out: list[list[Assign]] = [[]]
    for a in program.body:
        if isinstance(a.expr, Call) and OPS[a.expr.op].shape == GLOBAL:
            out.append([])
        else:
            out[-1].append(a)
    return out
