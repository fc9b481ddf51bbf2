"""Layer-wise adaptation: the LARS/LAMB trust ratio (You et al. 2017, 2020)."""

from __future__ import annotations

from ..ir import Program
from ._build import Builder, call


def layerwise_adaptation(program: Program, trust_coefficient: float = 1.0) -> Program:
    """Rescales each tensor's step by the trust ratio of its direction ``r = update / lr``:

        update' = lr eta (||w|| / ||r||) r = lr eta ||w|| update / ||update||
        (update' = update when ||w|| or ||update|| is 0, as optax.scale_by_trust_ratio does)

    LAMB is layer-wise adapted AdamW: ``layerwise_adaptation(adamw)`` with eps 1e-6 is
    optax.lamb, because AdamW's update is exactly ``lr r`` with LAMB's r.

    ``lr`` is the one the program is called with: the ratio cancels any scale of the inner update,
    an ``lr_schedule`` or ``lr_multiplier`` inside included, so those go outside
    (``lr_schedule(layerwise_adaptation(adamw))`` is optax.lamb with a schedule).

    Example:
        >>> from optdsl import load, Interpreter
        >>> import numpy as np
        >>> opt = Interpreter(layerwise_adaptation(load("sgd")), lr=0.1)
        >>> w = {"w": np.array([3.0, 4.0])}
        >>> opt.step(w, {"w": np.array([0.0, 1.0])}, opt.init(w))[0]["w"]  # ||w|| = 5: step 0.1 * 5
        array([3. , 3.5])
    """
    b = Builder(program)
    eta = b.hyper("trust_coefficient", trust_coefficient, "positive")
    u = b.let("update", b.update)
    w_norm = b.let("w_norm", call("norm", "w"))
    u_norm = b.let("update_norm", call("norm", u))
    zero = call("or", call("eq", w_norm, 0), call("eq", u_norm, 0))
    scaled = call("mul", call("div", call("mul", call("mul", "lr", eta), w_norm), u_norm), u)
    b.update = call("where", zero, u, scaled)
    return b.build("layerwise", f"Derived: layer-wise trust ratio, lr {eta.name} ||w|| update / ||update||.")
