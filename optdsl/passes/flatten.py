"""Three-address form: every call's arguments become names or constants.

This is the paper's program form (one function call per assignment): the search mutates it,
the cost model counts it, and it gives every intermediate value a name.

Example:
    >>> from optdsl import parse, to_source
    >>> p = flatten(parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * sign(m), m\\n"))
    >>> [a.target for a in p.body]
    ['m', 't', 'update']
"""

from __future__ import annotations

from ..ir import Assign, Call, Expr, Program, Var, fresh_name, names_in


def flatten(program: Program) -> Program:
    """``program`` with every nested call given its own statement ``t = f(a, b)`` over names and
    constants; outputs that are calls become statements named ``update`` and ``<state>_1``, ... (a
    fresh name from each state's).

    Example:
        >>> from optdsl import parse, to_source
        >>> print(to_source(flatten(parse("def f(w, g, lr):\\n    return lr * sign(g + w)\\n"))).strip())
        def f(w, g, lr):
            t_1 = g + w
            t = sign(t_1)
            update = lr * t
            return update
    """
    used = names_in(program)
    body: list[Assign] = []

    def atom(expr: Expr, loc) -> Expr:
        if not isinstance(expr, Call):
            return expr
        name = fresh_name("t", used)
        body.append(Assign(name, shallow(expr, loc), loc))
        return Var(name)

    def shallow(expr: Expr, loc) -> Expr:
        if not isinstance(expr, Call):
            return expr
        return Call(expr.op, tuple(atom(a, loc) for a in expr.args))

    for a in program.body:
        body.append(Assign(a.target, shallow(a.expr, a.loc), a.loc))

    def output(expr: Expr, base: str) -> Expr:
        if not isinstance(expr, Call):
            return expr
        name = fresh_name(base, used)
        body.append(Assign(name, shallow(expr, program.return_loc), program.return_loc))
        return Var(name)

    update = output(program.update, "update")
    new_states = [output(e, s.name) for e, s in zip(program.new_states, program.states)]
    return program.with_body(body, update=update, new_states=new_states)
