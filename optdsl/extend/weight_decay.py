"""Decoupled weight decay (Loshchilov & Hutter 2019)."""

from __future__ import annotations

from ..ir import Program
from ._build import Builder, call


def weight_decay(program: Program, weight_decay: float = 0.01) -> Program:
    """Adds decoupled weight decay: ``update' = update + lr wd w``, i.e. w <- w - update - lr wd w.

    The decay does not pass through the inner rule's preconditioner (AdamW rather than Adam
    with an L2 term). The new hyperparameter is called ``weight_decay`` (or ``weight_decay_1``
    when the program already has one). ``lr`` is the one the program is called with: an
    ``lr_schedule`` or ``lr_multiplier`` inside scales the inner rule's step but not the decay,
    so one applied outside scales both (``lr_schedule(weight_decay(adam))`` is optax.adamw with
    a schedule).

    Example:
        >>> from optdsl import load, to_source
        >>> print(to_source(weight_decay(load("sgd")), doc=False).splitlines()[-1])
            return update + lr * weight_decay * w
    """
    b = Builder(program)
    wd = b.hyper("weight_decay", weight_decay, "nonnegative")
    b.update = call("add", b.update, call("mul", call("mul", "lr", wd), "w"))
    return b.build("wd", f"Derived: decoupled weight decay, update + lr {wd.name} w.")
