"""Simplification by ablation: the search paper's hand simplification, automated and measured.

:func:`optdsl.readable.readable` simplifies a winner only where the result is *equal* to it. A
searched program also carries parts that are not equal to nothing but do nothing useful: the
README job's winner once stepped ``sin(m)`` and ``sqrt(expm1(v))`` where ``m`` and ``v`` are
small enough that ``sin(m) ~ m`` and ``expm1(v) ~ v``, and the paper's authors removed such parts
from their raw program by hand, checking that the performance held. Here that check is the
search's own evaluator.

An ablation replaces one statement ``x = f(a, b, ...)`` of the program's live part by ``x = a``
(one of its named arguments; later reads of ``x`` read ``a``), so ``sin(m) -> m``,
``a + g -> a``, ``clip(m, t) -> m``; what then feeds nothing is dead and goes.
:func:`ablations` lists every such program one op smaller than a given one. At the end of a
search (:meth:`search.evolution.Search.run`, after the funnel) the winner's ablations are scored
on the proxies; those within :data:`PROXY_TOLERANCE` of its proxy fitness are meta-validated,
the closest first, and the best held-out one within
:data:`search.selection.META_TOLERANCE` of the winner's is kept; then the same again from it.
:func:`search.selection.ranked` prefers the smaller of programs that close held out, so the last
program kept is the winner the search prints and exports. Every ablation scored is a stored row
(mutation ``ablate: ...``, its parent the program it came from; :func:`step` reads one step, :func:`steps` the chain).

Example:
    >>> from optdsl import parse, to_source
    >>> p = parse("def train(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * sin(m), m\\n")
    >>> for _, what in ablations(p)[1:]:
    ...     print(what)
    m = interp(g, m, 0.9) -> m = m
    t = sin(m) -> t = m
    update = lr * t -> update = lr
    update = lr * t -> update = t
"""

from __future__ import annotations

from dataclasses import replace

from optdsl.errors import DslError
from optdsl.ir import Assign, Call, Program, Var, free_vars, substitute
from optdsl.passes import eliminate_dead_code, flatten
from optdsl.printer import DslPrinter, to_source
from optdsl.typecheck import validate

#: A step simpler is kept while its proxy fitness is at least the winner's minus this. Two
#: seeds leave a task score a spread of 0.032 (docs/search.md), and the fitness averages four
#: of them: differences below ~0.02 are the seeds' luck, not the program's.
PROXY_TOLERANCE = 0.02
#: At most this many rounds of ablation (each scores every ablation of the program kept so far).
MAX_ROUNDS = 6
#: ... and in each round at most this many of them are meta-validated.
META_TRIES = 4


#: How a stored row says it is an ablation of its parent: its mutation is this, then the step.
PREFIX = "ablate: "


def step(row: dict) -> str | None:
    """The ablation that made stored ``row`` from its parent (``"x = f(a) -> x = a"``, in the
    parent's flattened names), or None where ``row`` is not an ablation.

    Example:
        >>> step({"mutation": "ablate: t = sin(m) -> t = m", "parent": 7})
        't = sin(m) -> t = m'
        >>> step({"mutation": "delete t = sin(m)", "parent": 7}) is None
        True
    """
    mutation = row.get("mutation") or ""
    return mutation.removeprefix(PREFIX) if mutation.startswith(PREFIX) and row.get("parent") is not None else None


def steps(store, row: dict) -> tuple[dict, list[str]]:
    """``(origin, steps)``: the program ``row`` was ablated from (``row`` itself if it was not)
    and the ablations that led from it to ``row``, first step first.

    Example::

        origin, what = steps(store, winner(store))   # (row #17792, ["m = sin(m) -> m = m", ...])
    """
    what, seen = [], set()
    while (removed := step(row)) is not None:
        if row["id"] in seen:  # (a search stores a child after its parent: only a damaged row loops)
            raise DslError(f"program #{row['id']}'s ablations lead back to it: the database is damaged",
                           store.path, hint="export or report another search's programs")
        seen.add(row["id"])
        what.append(removed)
        row = store.get(row["parent"])
    return row, what[::-1]


def _bypassed(program: Program, i: int, arg: Var) -> Program:
    """``program`` with statement ``i`` (``x = f(..., arg, ...)``) read as ``x = arg``: its later
    reads of ``x`` read ``arg`` and the statement goes, so the child has one op fewer and no
    copy statement; where ``arg`` is reassigned while ``x`` is still read, ``x = arg`` stays."""
    x = program.body[i].target
    rest, reads_x = [], True
    for j, stmt in enumerate(program.body[i + 1:], i + 1):
        if reads_x and stmt.target == arg.name != x and _read(x, program.body[j:], program.outputs()):
            return program.with_body(program.body[:i] + (replace(program.body[i], expr=arg),) + program.body[i + 1:])
        rest.append(replace(stmt, expr=substitute(stmt.expr, {x: arg})) if reads_x else stmt)
        reads_x = reads_x and stmt.target != x
    outputs = [substitute(e, {x: arg}) if reads_x else e for e in program.outputs()]
    return program.with_body(program.body[:i] + tuple(rest), update=outputs[0], new_states=outputs[1:])


def _read(x: str, body, outputs) -> bool:
    """Does ``body`` (then ``outputs``) read ``x`` before assigning it?"""
    for stmt in body:
        if x in free_vars(stmt.expr):
            return True
        if stmt.target == x:
            return False
    return any(x in free_vars(e) for e in outputs)


def _statement(a: Assign) -> str:
    return f"{a.target} = {DslPrinter().doprint(a.expr)}"


def ablations(program: Program) -> list[tuple[Program, str]]:
    """Every program one step simpler than ``program``'s live part in the paper's form (one
    op per statement, :func:`optdsl.passes.flatten`): one statement ``x = f(..., a, ...)``
    replaced by ``x = a`` for each named argument ``a``, dead code then removed;
    ``(program, "x = f(a, b) -> x = a")`` pairs in statement order, one per distinct result,
    those that no longer type-check left out. Which of them still train is the guards' and the
    evaluator's to say (``update = lr`` ignores the gradient; ``update = t`` drops ``lr``).

    Example (Lion without its momentum is signSGD with weight decay):
        >>> from optdsl import load
        >>> options = ablations(load("lion"))
        >>> len(options), options[0][1]
        (13, 't_1 = interp(g, m, beta1) -> t_1 = g')
        >>> options[0][0].state_names
        ()
    """
    live = flatten(eliminate_dead_code(program))
    out, seen = [], set()
    for i, stmt in enumerate(live.body):
        if not isinstance(stmt.expr, Call):
            continue
        for arg in stmt.expr.args:
            if not isinstance(arg, Var):
                continue
            try:
                child = eliminate_dead_code(validate(_bypassed(live, i, arg)))
            except DslError:
                continue
            key = to_source(child)
            if key in seen:
                continue
            seen.add(key)
            out.append((child, f"{_statement(stmt)} -> {stmt.target} = {arg.name}"))
    return out

