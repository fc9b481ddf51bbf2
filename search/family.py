r"""Is a found rule in the Lion family? Read from the program's structure, not its text.

The Lion family, as the discovery issue counts it: the update is a ``sign`` of a momentum, up to a
learning rate and decoupled weight decay::

    update = s * (sign(x) + c * w)        s: no g, no state (lr, numbers);  c * w: optional

where ``x`` is a momentum: a state whose new value is ``interp(g, state, b)`` (any b), or such an
interpolation of g with that state (Lion's ``interp(g, m, b1)``; signum's new ``m``, as in Tiger).
A sign of the raw gradient (signSGD) or a sign term added to an Adam step is not, nor is a rule
with a branch on g (the zoo's Tiger, whose NaN guard reads g).

Example:
    >>> from optdsl import load, parse
    >>> signum = parse("def train(w, g, m, lr):\n    m = interp(g, m, 0.9)\n    return lr * sign(m), m\n")
    >>> lion_family(load("lion")), lion_family(signum), lion_family(load("adamw"))
    (True, True, False)
"""

from __future__ import annotations

from optdsl.ir import Call, Expr, Program, Var, free_vars, inline


def _interp_of_g(e: Expr, state: str) -> bool:
    return (isinstance(e, Call) and e.op == "interp" and {a for a in e.args[:2] if isinstance(a, Var)} ==
            {Var("g"), Var(state)} and not free_vars(e.args[2]) & {"g", state})


def _is_momentum(x: Expr, momenta: set[str]) -> bool:
    if isinstance(x, Var):
        return x.name in momenta
    return any(_interp_of_g(x, s) for s in momenta)


def _direction(e: Expr, moving: set[str]) -> Expr:
    """``e`` without factors free of g and the states, and without a weight-decay term."""
    if isinstance(e, Call) and e.op in ("mul", "div"):
        a, b = e.args
        if not free_vars(b) & moving:
            return _direction(a, moving)
        if e.op == "mul" and not free_vars(a) & moving:
            return _direction(b, moving)
    if isinstance(e, Call) and e.op in ("add", "sub"):
        a, b = e.args
        decays = [x for x in (a, b) if "w" in free_vars(x) and not free_vars(x) & moving]
        if b in decays:
            return _direction(a, moving)
        if a in decays and e.op == "add":
            return _direction(b, moving)
    if isinstance(e, Call) and e.op == "neg":
        return _direction(e.args[0], moving)
    return e


def lion_family(program: Program) -> bool:
    """True when ``program``'s update is ``sign`` of a momentum, up to lr and weight decay (see the
    module docstring)::

        update = s * (sign(x) + c * w),   x = m or interp(g, m, b'),   where m' = interp(g, m, b)

    Example (signSGD steps by the sign of the raw gradient, not of a momentum):
        >>> from optdsl import load, parse
        >>> sign_sgd = parse("def train(w, g, lr):\\n    return lr * sign(g)\\n")
        >>> lion_family(load("lion")), lion_family(sign_sgd)
        (True, False)
    """
    update, news = inline(program)
    momenta = {s for s, e in zip(program.state_names, news) if _interp_of_g(e, s)}  # m' = interp(g, m, b)
    d = _direction(update, {"g", *program.state_names})
    return isinstance(d, Call) and d.op == "sign" and _is_momentum(d.args[0], momenta)
