"""Common subexpressions of a straight-line program, computed once.

A statement ``y = e`` whose ``e`` an earlier statement ``x = e`` already computed from the same
values is dropped and ``y`` read as ``x``: every op of the language is a pure function, so both
hold the same bits. Adafactor writes ``g * g`` twice (``rowmean(g * g)``, ``colmean(g * g)``);
search-evolved programs repeat whole subexpressions. Conservative where names are reassigned: x and
y must each be assigned once, and no name ``e`` reads may be assigned from x's statement to y's.

    x = e(a, b) ... y = e(a, b) ... f(y)   ->   x = e(a, b) ... f(x)

Example:
    >>> from optdsl import parse, to_source
    >>> p = parse('''
    ... def f(w, g, r, lr):
    ...     a = g * g
    ...     b = g * g
    ...     r = interp(r, a + b, 0.9)
    ...     return lr * g / sqrt(r), r
    ... ''')
    >>> print(to_source(eliminate_common(p), doc=False).strip())
    def f(w, g, r, lr):
        a = g * g
        r = interp(r, a + a, 0.9)
        return lr * g / sqrt(r), r
"""

from __future__ import annotations

from collections import Counter

from ..ir import Expr, Program, Var, free_vars, substitute


def eliminate_common(program: Program) -> Program:
    """``program`` with each repeated computation read from its first statement (see the module
    docstring); states, the update and the new states see the same values as before.

    Example:
        >>> from optdsl import parse, to_source
        >>> p = parse("def f(w, g, lr):\\n    a = g * g\\n    b = g * g\\n    return lr * a / b\\n")
        >>> print(to_source(eliminate_common(p)).strip())
        def f(w, g, lr):
            a = g * g
            return lr * a / a
    """
    assigned = Counter(a.target for a in program.body)
    states = set(program.state_names)
    first: dict[Expr, tuple[str, int]] = {}  # computation -> (its target, statement index)
    last_set: dict[str, int] = {}  # name -> index of the latest statement assigning it
    rename: dict[str, Expr] = {}
    body = []
    for i, a in enumerate(program.body):
        expr = substitute(a.expr, rename) if rename else a.expr
        earlier = first.get(expr)
        if (earlier is not None and assigned[a.target] == 1 and a.target not in states
                and all(last_set.get(v, -1) < earlier[1] for v in free_vars(expr))):
            rename[a.target] = Var(earlier[0])
            continue
        last_set[a.target] = i
        body.append(type(a)(a.target, expr, a.loc))
        if assigned[a.target] == 1 and a.target not in states and a.target not in free_vars(expr):
            first.setdefault(expr, (a.target, i))
    if not rename:
        return program
    return program.with_body(body, update=substitute(program.update, rename),
                             new_states=[substitute(e, rename) for e in program.new_states])
