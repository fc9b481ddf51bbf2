"""Gradient accumulation: one update from the mean of k gradients."""

from __future__ import annotations

from ..ir import Assign, Program
from ._build import Builder, call


def gradient_accumulation(program: Program, accum_steps: int = 4) -> Program:
    """Sums k gradients in a state and runs the inner rule on their mean every k-th step:

        acc <- acc + g;  on steps t = j k:  (update, states) = inner(g = acc / k, step = j), acc <- 0
        on other steps:  update = 0, and the inner states and step counter stay as they are.

    This is optax.MultiSteps(inner, every_k_schedule=k) (which keeps a running mean instead).

    Example:
        >>> from optdsl import load, Interpreter
        >>> import numpy as np
        >>> opt = Interpreter(gradient_accumulation(load("sgd"), 2), lr=1.0)
        >>> p = {"w": np.zeros(1)}
        >>> s = opt.init(p)
        >>> p, s = opt.step(p, {"w": np.array([1.0])}, s, 1); p["w"]
        array([0.])
        >>> p, s = opt.step(p, {"w": np.array([3.0])}, s, 2); p["w"]
        array([-2.])
    """
    b = Builder(program)
    k = b.hyper("accum_steps", accum_steps, "count")
    incoming = b.incoming()
    boundary = b.let("boundary", call("eq", call("mod", "step", k), 0), "before")
    # `step` is never reassigned, so renaming every read of it is exact.
    b.rename_input("step", b.let("step_eff", call("floordiv", "step", k), "before"))
    b.new_states = [call("where", boundary, e, incoming[s.name]) for s, e in zip(program.states, b.new_states)]
    b.update = call("where", boundary, b.update, 0)
    acc = b.state("acc")
    b.next(acc, call("where", boundary, 0, acc))
    b.prologue += [Assign(acc.name, call("add", acc, "g")), Assign("g", call("div", acc, k))]
    return b.build("accum", f"Derived: gradient accumulation over {k.name} steps (the inner rule "
                            "sees the mean gradient and counts its own steps).")
