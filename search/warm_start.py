"""Where a search starts: AdamW, in torch's form or the paper's, or any program the user names.

By default (``torch_adamw``) the search starts from AdamW as torch defines it, whose bias
correction reads ``step``: at a constant lr the proxies rewarded dropping that correction (an
implicit step decay) and real training punished it; under the default cosine decay they agree
(docs/search.md, "Bias correction").

The search paper warm-starts from AdamW written in its program form (``--init adamw``; no bias
correction, the learning rate folded in as ``lr * 0.001``)::

    m = interp(g, m, 0.9);  v = interp(g * g, v, 0.999)
    update = m / (sqrt(v) + 1e-8) + w * 0.01;  update = update * (lr * 0.001)

The paper's listing has no eps; ours keeps AdamW's, because the proxy tasks have gradient
coordinates that are exactly zero (constant inputs, untouched embedding rows, a zero-initialised
layer), where ``m / sqrt(v)`` is ``0 / 0``: without eps the warm start itself would fail them.
``--init paper_adamw`` names the listing as printed, which the guards refuse for that 0 / 0
(:mod:`search.guards`, "an exact zero is a gradient too").

Any other program (``--init SRC``) is brought into the same form by :func:`prepare`:
hyperparameters become constants (so mutations can change them) and nested expressions are
flattened to one call per statement.

Example:
    >>> from optdsl import to_source
    >>> print(to_source(adamw_program()).splitlines()[0])
    def train(w, g, m, v, lr):
"""

from __future__ import annotations

import os

from optdsl.ir import Call, Const, Program, Var, substitute
from optdsl.parser import parse
from optdsl.passes import flatten, fold
from optdsl.source import file_and_name, load, names_file
from optdsl.typecheck import validate

ADAMW_SOURCE = '''\
def train(w, g, m, v, lr):
    """AdamW in the search paper's program form (no bias correction), with AdamW's eps."""
    m = interp(g, m, 0.9)
    v = interp(g * g, v, 0.999)
    update = m / (sqrt(v) + 1e-8) + w * 0.01
    update = update * (lr * 0.001)
    return update, m, v
'''
PAPER_ADAMW_SOURCE = ADAMW_SOURCE.replace("(sqrt(v) + 1e-8)", "sqrt(v)").replace(
    ", with AdamW's eps", " (Program 3: no eps)")


def prepare(program: Program) -> Program:
    """``program`` in the searchable form: hyperparameters (other than lr) bound to their
    defaults as constants, one call per statement, renamed ``train``.

    A default ``lr`` becomes a constant factor on every read of ``lr``: the search sweeps its
    ``lr`` input around 1 (0.04 .. 2384), so ``lr`` 1 means the program's own default, as it means
    AdamW's 1e-3 in the paper's ``lr * 0.001``.

    Example:
        >>> from optdsl import to_source
        >>> p = parse("def heavy_ball(w, g, m, lr=0.01, beta=0.9):\\n"
        ...           "    m = beta * m + g\\n    return lr * m, m\\n")
        >>> print(to_source(prepare(p)), end="")
        def train(w, g, m, lr):
            t = 0.9 * m
            m = t + g
            t_1 = lr * 0.01
            update = t_1 * m
            return update, m
    """
    values = {k: v for k, v in program.hyper_defaults.items() if k != "lr"}
    bound = fold(program, values=values)
    scale = bound.hyper_defaults.get("lr", 1.0)
    bound = bound.with_body(bound.body, hypers=())
    if scale != 1.0:
        lr = {"lr": Call("mul", (Var("lr"), Const(scale)))}
        bound = bound.with_exprs(lambda e: substitute(e, lr))
    flat = flatten(bound)
    return validate(flat.with_body(flat.body, name="train", doc="", source=None))


def adamw_program() -> Program:
    """The paper's AdamW program (``--init adamw``), flattened: one call per statement::

        m <- 0.9 m + 0.1 g;  v <- 0.999 v + 0.001 g^2     (no bias correction)
        update = 0.001 lr (m / (sqrt(v) + 1e-8) + 0.01 w)

    Example:
        >>> p = adamw_program()
        >>> p.state_names, len(p.body), p.body[0].target
        (('m', 'v'), 10, 'm')
    """
    return prepare(parse(ADAMW_SOURCE, "<warm-start:adamw>"))


WARM_STARTS = ("adamw", "paper_adamw", "torch_adamw")  # the names initial_program reads itself


def absolute_init(init: str) -> str:
    """``init`` with a file it names made absolute (the search's database keeps it, and
    ``--resume`` may run in another folder); a warm start, zoo name or stdin as it is, and a
    missing file as given (its error names it so).

    Example:
        >>> absolute_init("lion"), absolute_init("adamw")
        ('lion', 'adamw')
    """
    if init in WARM_STARTS or not names_file(init):
        return init
    path, name = file_and_name(init)
    return os.path.abspath(path) + (f":{name}" if name else "") if os.path.exists(path) else init


def initial_program(init: str) -> Program:
    """``--init``: ``adamw`` (the warm start above), ``paper_adamw`` (the paper's listing, no
    eps), ``torch_adamw`` (the zoo's AdamW as torch defines it: bias correction, so the program
    takes ``step``), else any SRC :func:`optdsl.load` accepts (a zoo name or a file), in the
    searchable form (:func:`prepare`).

    Example (the paper's listing is the warm start without its eps statement):
        >>> len(initial_program("adamw").body) - len(initial_program("paper_adamw").body)
        1
        >>> initial_program("lion").state_names, initial_program("lion").name
        (('m',), 'train')
        >>> initial_program("torch_adamw").uses("step")
        True
    """
    if init == "adamw":
        return adamw_program()
    if init == "paper_adamw":
        return prepare(parse(PAPER_ADAMW_SOURCE, "<warm-start:paper_adamw>"))
    if init == "torch_adamw":  # the zoo's adamw, which ``adamw`` above shadows
        return prepare(load("adamw"))
    return prepare(load(init))
