"""Dead-code removal, across steps as well as within one.

A statement is live when a live output reads its value. The update is always live; so is the
new value of a ``keep`` state, and the new value of any state whose incoming value a live
statement reads. A state nobody reads is dead across iterations (the search paper's rule), and
so is everything that only feeds it. Liveness is the least fixpoint of these rules.

Example:
    >>> from optdsl import parse
    >>> p = parse('''
    ... def f(w, g, m, v, lr):
    ...     unused = exp(g)
    ...     m = interp(g, m, 0.9)
    ...     v = v + g * g
    ...     return lr * m, m, v
    ... ''')
    >>> q = eliminate_dead_code(p)
    >>> q.state_names, len(q.body)
    (('m',), 1)
"""

from __future__ import annotations

from ..checkpoints import without_stale
from ..ir import Program, Var, free_vars


def liveness(program: Program, force: frozenset[int] = frozenset()) -> tuple[set[int], set[str]]:
    """(indices of live statements, names of live states); ``force`` keeps statements live.

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, m, v, lr):\\n    m = m + g\\n    v = v + g\\n    return lr * m, m, v\\n")
        >>> liveness(p)  # `v = v + g` only feeds v, which no live value reads
        ({0}, {'m'})
    """
    states = {s.name: i for i, s in enumerate(program.states)}
    live_states = {s.name for s in program.states if s.keep}
    while True:
        needed = free_vars(program.update)
        for name in live_states:
            needed |= free_vars(program.new_states[states[name]])
        live: set[int] = set()
        for i in range(len(program.body) - 1, -1, -1):
            a = program.body[i]
            if a.expr == Var(a.target):  # `x = x` does nothing
                continue
            if a.target in needed or i in force:
                live.add(i)
                needed.discard(a.target)
                needed |= free_vars(a.expr)
        grown = live_states | (needed & states.keys())
        if grown == live_states:
            return live, live_states
        live_states = grown


def eliminate_dead_code(program: Program, force: frozenset[int] = frozenset()) -> Program:
    """``program`` without dead statements and dead states (hyperparameters are kept); a
    torch checkpoint declaration that names a removed state goes too (:mod:`optdsl.checkpoints`).

    Example:
        >>> from optdsl import parse, to_source
        >>> p = parse("def f(w, g, m, v, lr):\\n    m = m + g\\n    v = v + g\\n    return lr * m, m, v\\n")
        >>> print(to_source(eliminate_dead_code(p)).strip())
        def f(w, g, m, lr):
            m = m + g
            return lr * m, m
    """
    live, live_states = liveness(program, force)
    keep = [i for i, s in enumerate(program.states) if s.name in live_states]
    return without_stale(program.with_body(
        [a for i, a in enumerate(program.body) if i in live],
        new_states=[program.new_states[i] for i in keep],
        states=tuple(program.states[i] for i in keep),
    ))
