"""Where a search starts: the paper's AdamW program, or any program the user names.

The search paper warm-starts from AdamW written in its program form (no bias correction, no
eps, the learning rate folded in as ``lr * 0.001``)::

    m = interp(g, m, 0.9);  v = interp(g * g, v, 0.999)
    update = m / sqrt(v) + w * 0.01;  update = update * (lr * 0.001)

Any other program (``--init SRC``) is brought into the same form by :func:`prepare`:
hyperparameters become constants (so mutations can change them) and nested expressions are
flattened to one call per statement.

Example:
    >>> from optdsl import to_source
    >>> print(to_source(adamw_program()).splitlines()[0])
    def train(w, g, m, v, lr):
"""

from __future__ import annotations

from optdsl.ir import Program
from optdsl.parser import parse
from optdsl.passes import flatten, fold
from optdsl.source import load
from optdsl.typecheck import validate

ADAMW_SOURCE = '''\
def train(w, g, m, v, lr):
    """AdamW as the search paper writes it (no bias correction, no eps)."""
    m = interp(g, m, 0.9)
    v = interp(g * g, v, 0.999)
    update = m / sqrt(v) + w * 0.01
    update = update * (lr * 0.001)
    return update, m, v
'''


def prepare(program: Program) -> Program:
    """``program`` in the searchable form: hyperparameters (other than lr) bound to their
    defaults as constants, one call per statement, renamed ``train``."""
    values = {k: v for k, v in program.hyper_defaults.items() if k != "lr"}
    bound = fold(program, values=values)
    bound = bound.with_body(bound.body, hypers=tuple(h for h in bound.hypers if h.name == "lr"))
    if bound.hypers:  # lr with a default: drop the default, the search sweeps lr itself
        bound = bound.with_body(bound.body, hypers=())
    flat = flatten(bound)
    return validate(flat.with_body(flat.body, name="train", doc="", source=None))


def adamw_program() -> Program:
    """The paper's AdamW program (the default warm start)."""
    return prepare(parse(ADAMW_SOURCE, "<warm-start:adamw>"))


def initial_program(init: str = "adamw") -> Program:
    """``--init``: ``adamw`` for the paper's program, else any SRC :func:`optdsl.load` accepts."""
    if init == "adamw":
        return adamw_program()
    return prepare(load(init))
