"""Parameter-wise learning-rate multiplier."""

from __future__ import annotations

from ..ir import Program
from ._build import Builder, call


def lr_multiplier(program: Program, lr_mult: float = 1.0) -> Program:
    """A hyperparameter that scales lr for the parameters it is set on (a parameter group):

        lr -> lr lr_mult   wherever the inner rule reads lr

    Example:
        >>> from optdsl import load, Interpreter
        >>> import numpy as np
        >>> opt = Interpreter(lr_multiplier(load("sgd")), lr=0.1, lr_mult=10.0)
        >>> p = {"w": np.zeros(1)}
        >>> opt.step(p, {"w": np.ones(1)}, opt.init(p))[0]["w"]
        array([-1.])
    """
    b = Builder(program)
    mult = b.hyper("lr_mult", lr_mult, "nonnegative")
    b.rename_input("lr", b.let("lr_scaled", call("mul", "lr", mult), "before"))
    return b.build("lr_mult", f"Derived: lr scaled by the per-parameter {mult.name}.")
