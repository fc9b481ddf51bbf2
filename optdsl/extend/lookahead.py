"""Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back")."""

from __future__ import annotations

from ..ir import Program
from ._build import Builder, call


def lookahead(program: Program, sync_period: int = 5, slow_step_size: float = 0.5) -> Program:
    """k fast steps of the inner rule, then the slow weights move towards the fast ones:

        fast = w - update;  every k-th step:  slow <- slow + alpha (fast - slow),  w <- slow
        otherwise w <- fast.  The slow weights are a state ``slow: full(init=w)``.

    This is optax.lookahead(inner, sync_period=k, slow_step_size=alpha) (reset_state=False).

    Example:
        >>> from optdsl import load, to_source
        >>> "slow: full(init=w)" in to_source(lookahead(load("sgd")))
        True
    """
    b = Builder(program)
    k = b.hyper("sync_period", sync_period, "count")
    alpha = b.hyper("slow_step_size", slow_step_size, "fraction")
    slow = b.state("slow", init="w")
    fast = b.let("fast", call("sub", "w", b.update))
    sync = b.let("sync", call("eq", call("mod", "step", k), 0))
    moved = call("add", slow, call("mul", alpha, call("sub", fast, slow)))
    new_slow = b.let("slow_next", call("where", sync, moved, slow))
    b.next(slow, new_slow)
    b.update = call("sub", "w", call("where", sync, new_slow, fast))
    return b.build("lookahead", f"Derived: Lookahead, every {k.name} steps slow <- slow + {alpha.name} "
                                "(fast - slow) and w <- slow.")
