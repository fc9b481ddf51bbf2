"""Gradient clipping: by value, by each tensor's norm, by the norm over all parameters."""

from __future__ import annotations

from ..ir import Assign, Program
from ._build import Builder, call


def _clipped(program: Program, hyper: str, default: float, suffix: str, rule, note: str) -> Program:
    b = Builder(program)
    c = b.hyper(hyper, default, "positive")
    b.prologue.append(Assign("g", rule(c)))
    return b.build(suffix, note.format(c.name))


def clip_by_value(program: Program, clip_value: float = 1.0) -> Program:
    """``g <- clip(g, c)``: every entry into [-c, c] (optax.clip).

    Example:
        >>> from optdsl import load, to_source
        >>> to_source(clip_by_value(load("sgd")), doc=False).splitlines()[1].strip()
        'g = clip(g, clip_value)'
    """
    return _clipped(program, "clip_value", clip_value, "clip_value", lambda c: call("clip", "g", c),
                    "Derived: gradient clipped to [-{0}, {0}].")


def clip_by_norm(program: Program, max_norm: float = 1.0) -> Program:
    """``g <- g min(1, c / ||g||)`` per tensor (a zero gradient stays zero).

    Example:
        >>> from optdsl import load, Interpreter
        >>> import numpy as np
        >>> opt = Interpreter(clip_by_norm(load("sgd"), 1.0), lr=1.0)
        >>> p = {"w": np.zeros(2)}
        >>> opt.step(p, {"w": np.array([3.0, 4.0])}, opt.init(p))[0]["w"]
        array([-0.6, -0.8])
    """
    return _clipped(program, "max_norm", max_norm, "clip_norm",
                    lambda c: call("mul", "g", call("min", 1, call("div", c, call("norm", "g")))),
                    "Derived: each tensor's gradient clipped to norm {0}.")


def clip_by_global_norm(program: Program, max_norm: float = 1.0) -> Program:
    """``g <- g`` if ``G < c`` else ``g / G c``, G the norm of all gradients together
    (optax.clip_by_global_norm).

    Example:
        >>> from optdsl import load, Interpreter
        >>> import numpy as np
        >>> opt = Interpreter(clip_by_global_norm(load("sgd"), 5.0), lr=1.0)
        >>> p = {"a": np.zeros(1), "b": np.zeros(1)}
        >>> opt.step(p, {"a": np.array([6.0]), "b": np.array([8.0])}, opt.init(p))[0]
        {'a': array([-3.]), 'b': array([-4.])}
    """
    def rule(c):
        total = call("global_norm", "g")
        return call("where", call("lt", total, c), "g", call("mul", call("div", "g", total), c))

    return _clipped(program, "max_norm", max_norm, "clip_global_norm", rule,
                    "Derived: gradients clipped to global norm {0}.")
