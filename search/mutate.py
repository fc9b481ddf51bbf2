"""Random programs and mutations in the search paper's program form.

A searched program is ``def train(w, g, m, v, lr): <statements>; return update, m, v``: a list
of assignments, each one call of a vocabulary op (:func:`optdsl.ops.search_vocabulary`) on
names or constants. A mutation does one of (Chen et al. 2023, sec. 2):

  - insert a random statement at a random place;
  - delete a random statement;
  - change one statement: its op (arguments kept where the arity allows), or one argument
    (another name, a fresh constant from N(0, 1), or a constant multiplied by 2^a, a ~ N(0, 1)).

Children that fail validation (undefined names, shape misuse, a missing ``update``) are
re-mutated, so every result type-checks and prints to source that parses back to it.
Redundant statements are allowed; dead-code removal happens before evaluation, not here.

Example:
    >>> import numpy as np
    >>> from optdsl import to_source
    >>> rng = np.random.default_rng(0)
    >>> parent = random_program(rng, n_statements=4)
    >>> child, what = mutate(parent, rng)
    >>> what.split()[0] in ("insert", "delete", "change")
    True
"""

from __future__ import annotations

import math

import numpy as np

from optdsl.ir import Assign, Call, Const, Expr, Program, State, Var, fresh_name, names_in
from optdsl.ops import Op, search_vocabulary
from optdsl.parser import parse
from optdsl.printer import DslPrinter, to_source
from optdsl.typecheck import valid

P_CONST = 0.2  # chance that a freshly drawn argument is a constant rather than a name
MAX_TRIES = 200  # re-mutation attempts before giving up (never reached in practice)
MAX_STATEMENTS = 40  # inserts stop growing a program past this


def vocabulary() -> list[Op]:
    """The ops mutations draw from (the op table's ``search=True`` entries).

    Example:
        >>> ops = vocabulary()
        >>> len(ops), [op.name for op in ops[:9]]
        (44, ['add', 'sub', 'mul', 'div', 'power', 'neg', 'max', 'min', 'interp'])
    """
    return search_vocabulary()


def draw_constant(rng: np.random.Generator) -> float:
    """A fresh constant ~ N(0, 1), rounded to 4 significant digits so programs stay readable.

    Example:
        >>> draw_constant(np.random.default_rng(0))
        0.1257
    """
    return _round(float(rng.normal()))


def scale_constant(value: float, rng: np.random.Generator) -> float:
    """``value * 2**a`` with ``a ~ N(0, 1)`` (the paper's multiplicative perturbation), rounded to
    4 significant digits.

    Example (the same draw, a = 0.1257, as :func:`draw_constant`'s):
        >>> scale_constant(1.0, np.random.default_rng(0)), scale_constant(-3.0, np.random.default_rng(0))
        (1.091, -3.273)
    """
    return _round(value * 2.0 ** float(rng.normal()))


def _round(v: float) -> float:
    return float(f"{v:.4g}")


def _readable(program: Program) -> set[str]:
    """Names every statement may read: inputs the program has, its states and hyperparameters."""
    names = {"w", "g", "lr", *program.state_names, *(h.name for h in program.hypers)}
    if program.uses("step"):
        names.add("step")
    return names


def _visible(program: Program, index: int) -> list[str]:
    """Names a statement at position ``index`` may read, sorted for reproducibility."""
    names = _readable(program) | {a.target for a in program.body[:index]}
    return sorted(names)


def _targets(program: Program) -> list[str]:
    """Names a new statement may assign: states, ``update`` and existing temporaries."""
    names = {"update", *program.state_names} | {a.target for a in program.body}
    return sorted(names - {"lr", "step"})


def _draw_arg(rng: np.random.Generator, names: list[str]) -> Expr:
    if not names or rng.random() < P_CONST:
        return Const(draw_constant(rng))
    return Var(names[rng.integers(len(names))])


def _draw_call(rng: np.random.Generator, names: list[str], keep: tuple[Expr, ...] = ()) -> tuple[Call, Op]:
    ops = vocabulary()
    op = ops[rng.integers(len(ops))]
    args = tuple(keep[:op.arity]) + tuple(_draw_arg(rng, names) for _ in range(op.arity - len(keep)))
    return Call(op.name, args), op


def _text(expr: Expr) -> str:
    return DslPrinter().doprint(expr)


def random_statement(program: Program, index: int, rng: np.random.Generator) -> Assign:
    """A random ``target = op(args)`` that may stand at ``index`` in ``program``'s body: its
    arguments are inputs, states or names assigned above ``index`` (or fresh constants); its target
    a new temporary, a state, ``update`` or an existing temporary.

    Example:
        >>> from optdsl.printer import DslPrinter
        >>> from search.warm_start import adamw_program
        >>> stmt = random_statement(adamw_program(), 2, np.random.default_rng(0))
        >>> print(stmt.target, "=", DslPrinter().doprint(stmt.expr))
        t_3 = sqrt(0.1049)
    """
    targets = _targets(program)
    used = names_in(program)
    target = fresh_name("t", used) if rng.random() < 0.3 or not targets else targets[rng.integers(len(targets))]
    call, _ = _draw_call(rng, _visible(program, index))
    return Assign(target, call)


def random_program(rng: np.random.Generator, n_statements: int = 5, name: str = "train") -> Program:
    """A valid random program ``def train(w, g, m, v, lr): ...; return update, m, v``.

    ``n_statements`` random statements, the last one assigning ``update`` (so the program is
    well formed); every statement reads only names defined above it.

    Example:
        >>> import numpy as np
        >>> p = random_program(np.random.default_rng(1), n_statements=3)
        >>> len(p.body), p.body[-1].target, p.state_names
        (3, 'update', ('m', 'v'))
    """
    base = Program(name, (State("m"), State("v")), (), (), Var("update"), (Var("m"), Var("v")))
    for _ in range(MAX_TRIES):
        prog = base
        for i in range(n_statements):
            stmt = random_statement(prog, i, rng)
            if i == n_statements - 1:
                stmt = Assign("update", stmt.expr)
            prog = prog.with_body(prog.body + (stmt,))
        if _valid(prog):
            return _reparse(prog)
    raise RuntimeError("could not draw a valid random program")  # pragma: no cover


def _valid(program: Program) -> bool:
    return valid(program) and not any(_negated_constant(a.expr) for a in program.body) and all(
        math.isfinite(e.value) for a in program.body for e in _consts(a.expr))


def _negated_constant(expr: Expr) -> bool:
    """``neg(1.5)`` prints as ``-1.5``, which reads back as a constant, not as a call: a statement
    of that form would not survive :func:`_reparse` in the paper's one-call form."""
    return isinstance(expr, Call) and expr.op == "neg" and isinstance(expr.args[0], Const)


def _reparse(program: Program) -> Program:
    """The program as its printed source reads back (``-(1.5)`` becomes the constant ``-1.5``),
    so a stored program and the one in memory are always equal."""
    return parse(to_source(program), "<search>")


def _consts(expr: Expr):
    if isinstance(expr, Const):
        yield expr
    elif isinstance(expr, Call):
        for a in expr.args:
            yield from _consts(a)


def _insert(program: Program, rng: np.random.Generator) -> tuple[Program, str]:
    i = int(rng.integers(len(program.body) + 1))
    stmt = random_statement(program, i, rng)
    body = program.body[:i] + (stmt,) + program.body[i:]
    return program.with_body(body), f"insert {stmt.target} = {_text(stmt.expr)} at {i}"


def _delete(program: Program, rng: np.random.Generator) -> tuple[Program, str]:
    i = int(rng.integers(len(program.body)))
    stmt = program.body[i]
    return program.with_body(program.body[:i] + program.body[i + 1:]), f"delete {stmt.target} = {_text(stmt.expr)}"


def _change(program: Program, rng: np.random.Generator) -> tuple[Program, str]:
    i = int(rng.integers(len(program.body)))
    stmt = program.body[i]
    names = _visible(program, i)
    expr = stmt.expr
    args = expr.args if isinstance(expr, Call) else (expr,)
    if rng.random() < 0.3 or not isinstance(expr, Call):
        new, _ = _draw_call(rng, names, keep=args)
        what = "op"
    else:
        k = int(rng.integers(len(args)))
        old = args[k]
        if isinstance(old, Const) and rng.random() < 0.5:
            arg: Expr = Const(scale_constant(old.value, rng))
        else:
            arg = _draw_arg(rng, names)
        new = Call(expr.op, args[:k] + (arg,) + args[k + 1:])
        what = f"argument {k}"
    body = program.body[:i] + (Assign(stmt.target, new),) + program.body[i + 1:]
    return program.with_body(body), f"change {what}: {stmt.target} = {_text(new)} (was {_text(expr)})"


def mutate(program: Program, rng: np.random.Generator) -> tuple[Program, str]:
    """A valid child of ``program`` and a one-line description of the mutation.

    Draws insert / delete / change with equal odds (insert only while the body is short,
    delete and change only when it is not empty) and re-draws until the child validates.

    Example:
        >>> import numpy as np
        >>> from search.warm_start import adamw_program
        >>> child, what = mutate(adamw_program(), np.random.default_rng(3))
        >>> child != adamw_program()
        True
    """
    kinds = []
    if len(program.body) < MAX_STATEMENTS:
        kinds.append(_insert)
    if program.body:
        kinds += [_delete, _change]
    for _ in range(MAX_TRIES):
        child, what = kinds[rng.integers(len(kinds))](program, rng)
        if child != program and _valid(child):
            return child, what  # prints to source that parses back to it (tested), like the parent
    raise RuntimeError("no valid mutation found")  # pragma: no cover


__all__ = ["draw_constant", "mutate", "random_program", "random_statement", "scale_constant", "vocabulary"]
