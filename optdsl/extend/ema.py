"""Exponential moving average of the weights (Polyak averaging)."""

from __future__ import annotations

from ..ir import Program
from ._build import Builder, call


def ema_of_weights(program: Program, ema_decay: float = 0.999) -> Program:
    """Keeps ``ema: full(init=w, keep=True)``, the average of the weights after each step:

        ema <- decay ema + (1 - decay) (w - update)

    The training weights are unchanged; ``keep=True`` tells dead-code removal that the user
    reads the state (it is evaluated with, not trained).

    Example:
        >>> from optdsl import load, to_source
        >>> "ema: full(init=w, keep=True)" in to_source(ema_of_weights(load("sgd")))
        True
    """
    b = Builder(program)
    decay = b.hyper("ema_decay", ema_decay, "fraction")
    ema = b.state("ema", init="w", keep=True)
    b.next(ema, call("interp", call("sub", "w", b.update), ema, decay))
    return b.build("ema", f"Derived: EMA of the weights, ema <- {decay.name} ema + (1 - {decay.name}) w_new.")
