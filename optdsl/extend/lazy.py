"""Lazy (row-sparse) updates for embedding tables."""

from __future__ import annotations

from ..ir import Program, made_from
from ._build import Builder, call


def lazy_updates(program: Program) -> Program:
    """Only rows whose gradient is not all zero change, in the weights and in the states:

        touched = rowmean(|g|) != 0   (one flag per row, i.e. per embedding vector)
        update' = update where touched, else 0;  s' = s_new where touched, else s (full and row
        states); col and scalar states are shared by all rows and update as in the inner rule.

    Tensors with fewer than 2 axes are updated densely. A program whose gradient is made from its
    state (``gradient_accumulation``'s sum) is refused: apply this inside it instead. With Adam inside this is
    torch.optim.SparseAdam on row-sparse gradients (up to where eps enters: SparseAdam adds it
    to sqrt(v) before the bias correction).

    Example:
        >>> from optdsl import load, Interpreter
        >>> import numpy as np
        >>> opt = Interpreter(lazy_updates(load("sgd")), lr=1.0)
        >>> p = {"e": np.zeros((2, 2))}
        >>> opt.step(p, {"e": np.array([[1.0, 1.0], [0.0, 0.0]])}, opt.init(p))[0]["e"]
        array([[-1., -1.],
               [ 0.,  0.]])
    """
    if "g" in made_from(program, program.state_names):
        # gradient_accumulation's g is the sum of earlier micro-steps' gradients: a row the boundary's
        # micro-batch misses was touched before, and masking its sum froze it (and the sum grew)
        raise ValueError("lazy_updates: the program's gradient is made from its state (a gradient "
                         "accumulation's sum), so a zero row of this step's g does not mean the row is "
                         "untouched; apply lazy_updates inside: gradient_accumulation(lazy_updates(p))")
    b = Builder(program)
    masked = [s.name for s in program.states if s.kind in ("full", "row")]
    incoming = b.incoming(masked)
    # The shape test keeps rowmean away from 1-d tensors (specialisation drops the other branch).
    touched = b.let("touched", call("where", call("ge", call("ndim", "w"), 2),
                                    call("ne", call("rowmean", call("abs", "g")), 0), 1), "before")
    for i, s in enumerate(program.states):
        if s.name in incoming:
            b.new_states[i] = call("where", touched, b.new_states[i], incoming[s.name])
    b.update = call("where", touched, b.update, 0)
    return b.build("lazy", "Derived: lazy updates, rows with an all-zero gradient keep weights and state.")
