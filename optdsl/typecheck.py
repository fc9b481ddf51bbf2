"""Shape inference and validation: which shape every value has, and whether it fits where it goes.

Shapes form a small lattice, from least to most specific to one parameter tensor:

    const   a number in the source
    static  a fact about the parameter's shape (``ndim(w)``), a number once specialised
    uniform the same for every tensor: lr, step, hyperparameters, global reductions
    scalar  one number per parameter tensor (``norm(g)``, a scalar state)
    row     ``w.shape[:-1]``, broadcast along the last axis   } row ⊔ col = full: their product
    col     ``w.shape[:-2] + w.shape[-1:]``, broadcast along  } is the outer product that
            the second-last axis                             } factored AdaFactor needs
    full    ``w.shape``

An elementwise op takes the join of its arguments' shapes. A state's new value must not be
wider than the state (a full value cannot go into a row state).

Example:
    >>> from optdsl import parse
    >>> from optdsl.typecheck import infer
    >>> p = parse("def f(w, g, r: row, lr):\\n    r = rowmean(g * g)\\n    return lr * g / sqrt(r), r\\n")
    >>> infer(p)["r"]
    'row'
"""

from __future__ import annotations

from .checkpoints import torch_checkpoints
from .errors import DslError
from .ir import Call, Const, Expr, Program, Var, expect_program, walk
from .ops import COL, ELEMENTWISE, GLOBAL, OPS, REDUCE, ROW, STATIC

ORDER = {"const": 0, "static": 1, "uniform": 2, "scalar": 3, "row": 4, "col": 4, "full": 5}
SCALAR_LIKE = ("const", "static", "uniform", "scalar")


def join(*kinds: str) -> str:
    """The narrowest shape every argument broadcasts into: the least upper bound in the lattice
    ``const < static < uniform < scalar < row, col < full`` with ``row ⊔ col = full``.

    Example:
        >>> join("row", "col"), join("uniform", "scalar"), join("row", "scalar"), join()
        ('full', 'scalar', 'row', 'const')
    """
    out = "const"
    for k in kinds:
        if {out, k} == {"row", "col"}:
            out = "full"
        elif ORDER[k] > ORDER[out]:
            out = k
    return out


def fits(value: str, slot: str) -> bool:
    """May a value of shape ``value`` be stored in a state of shape ``slot``? Yes when
    ``value == slot``, ``value`` is one number (const, static, uniform, scalar) or ``slot`` is full.

    Example:
        >>> fits("scalar", "row"), fits("row", "full"), fits("full", "row"), fits("row", "col")
        (True, True, False, False)
    """
    return value == slot or value in SCALAR_LIKE or slot == "full"


def input_kinds(program: Program) -> dict[str, str]:
    """The shape of each input before the body runs: ``w`` and ``g`` full, ``lr``, ``step`` and
    the hyperparameters uniform, each state its declared kind.

    Example:
        >>> from optdsl import load
        >>> kinds = input_kinds(load("adafactor"))
        >>> kinds["g"], kinds["r"], kinds["c"], kinds["eps1"]
        ('full', 'row', 'col', 'uniform')
    """
    kinds = {"w": "full", "g": "full", "lr": "uniform", "step": "uniform"}
    kinds.update({h.name: "uniform" for h in program.hypers})
    kinds.update({s.name: s.kind for s in program.states})
    return kinds


def expr_kind(expr: Expr, env: dict[str, str], fail) -> str:
    """The shape of ``expr`` given the shapes of the names it reads; ``fail(msg)`` raises.

    Example:
        >>> def fail(msg):
        ...     raise DslError(msg)
        >>> env = {"g": "full", "r": "row", "lr": "uniform"}
        >>> expr_kind(Call("mul", (Var("lr"), Var("r"))), env, fail)  # lr * r
        'row'
        >>> expr_kind(Call("norm", (Var("g"),)), env, fail)  # norm(g)
        'scalar'
        >>> expr_kind(Var("v"), env, fail)
        Traceback (most recent call last):
        ...
        optdsl.errors.DslError: undefined name 'v'
    """
    if isinstance(expr, Const):
        return "const"
    if isinstance(expr, Var):
        if expr.name not in env:
            fail(f"undefined name {expr.name!r}")
        return env[expr.name]
    op = OPS.get(expr.op)
    if op is None:
        fail(f"unknown function {expr.op!r}")
    if len(expr.args) != op.arity:
        fail(f"{op.name}() takes {op.arity} argument(s), got {len(expr.args)}")
    if op.shape == STATIC:
        return _static_kind(expr, env, fail)
    kinds = [expr_kind(a, env, fail) for a in expr.args]
    if op.shape == ELEMENTWISE:
        if op.name == "where" and kinds[0] in ("const", "static"):
            return join(*kinds[1:], "static" if kinds[0] == "static" else "const")
        return join(*kinds)
    if op.shape == REDUCE:
        k = join(*kinds)
        return "scalar" if ORDER[k] >= ORDER["scalar"] else k
    if op.shape in (ROW, COL):
        if kinds[0] != "full":
            fail(f"{op.name}() reduces a full tensor, got a {kinds[0]}-shaped value")
        return op.shape
    if op.shape == GLOBAL:
        return "uniform"
    raise AssertionError(op.shape)


def _static_kind(expr: Call, env: dict[str, str], fail) -> str:
    target = expr.args[0]
    if not (isinstance(target, Var) and env.get(target.name) == "full"):
        fail(f"{expr.op}() asks about the parameter's shape: pass `w` (or g, or a full state)")
    if expr.op == "dim":
        i = expr.args[1]
        if not (isinstance(i, Const) and float(i.value).is_integer()):
            fail("dim(w, i) needs a whole-number literal i")
    return "static"


def infer(program: Program) -> dict[str, str]:
    """Shape of every name after the body runs (inputs included); raises DslError on misuse.

    Example:
        >>> from optdsl import load
        >>> kinds = infer(load("adafactor"))
        >>> kinds["alpha"], kinds["vh"], kinds["u"]
        ('scalar', 'full', 'full')
    """
    env = input_kinds(program)

    def located(loc):
        def fail(msg, hint=None):
            line, col = loc if loc else (None, None)
            raise DslError(msg, program.filename, line, col, program.source, hint)
        return fail

    for a in program.body:
        env[a.target] = expr_kind(a.expr, env, located(a.loc))
    fail = located(program.return_loc)
    expr_kind(program.update, env, fail)
    last_loc = {a.target: a.loc for a in program.body}
    for s, e in zip(program.states, program.new_states):
        k = expr_kind(e, env, fail)
        if not fits(k, s.kind):
            where = last_loc.get(e.name) if isinstance(e, Var) else None
            located(where or program.return_loc)(
                f"state {s.name!r} is {s.kind}-shaped but gets a {k}-shaped value",
                "reduce it (rowmean/colmean/mean) or declare the state wider")
    return env


def validate(program: Program) -> Program:
    """Check ``program`` and hand it back unchanged; raises DslError with the location.

    Example (the bad program is built by hand, so the parser never saw it):
        >>> from dataclasses import replace
        >>> from optdsl import load
        >>> p = load("sgd")
        >>> validate(p) is p
        True
        >>> try:
        ...     validate(replace(p, update=Call("sign", (Var("v"),))))
        ... except DslError as e:
        ...     print(e.message)
        undefined name 'v'
    """
    infer(expect_program(program))
    torch_checkpoints(program)  # the declared name map, so that `optdsl check` and the targets agree
    # Each shape's program must check too: a shape test that picks a number for a column state
    # (`c = where(ndim(w) >= 2, 1.1, c)`) leaves `colmean(r + 0 * c)` a mean over a row there,
    # which no target computes. (The interpreter and every target run these variants.)
    from .passes.specialize import variants  # (the passes read the kinds this module infers)

    exprs = [a.expr for a in program.body] + list(program.outputs())
    if any(isinstance(n, Call) and OPS[n.op].shape == STATIC for e in exprs for n in walk(e)):
        try:
            variants(program)
        except DslError as e:
            raise DslError(e.message, e.filename, e.line, e.col, e.source, e.hint or NARROWED) from None
    return program


def valid(program: Program) -> bool:
    """Does ``program`` pass :func:`validate`? Example: ``valid(load("sgd"))`` is True."""
    try:
        validate(program)
    except DslError:
        return False
    return True


NARROWED = ("once the shape tests are decided for some parameter shapes, a value read here is a "
            "number or a row/column (a `where` on ndim/dim/size chose it): keep it full-shaped there")
