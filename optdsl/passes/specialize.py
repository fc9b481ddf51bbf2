"""Specialisation by shape: the straight-line programs one program runs, one per outcome of its
shape tests (its *variants*), and the program one tensor of a given shape runs.

A *shape test* is the condition of a ``where`` (an ``if`` in source) that depends on the
parameter's shape only (``ndim(w) >= 2``, ``dim(w, -1) > 3``, ``size(w) == 1``). Each parameter
tensor takes one outcome of every test, so it runs one *variant*: the program with those
branches taken, folded, and stripped of what they left dead. :func:`variants` finds them all
once, as a decision tree over the tests; the interpreter picks a tensor's variant with
:meth:`Variants.pick`, and every backend prints the tree as a Python test on the parameter.

The meaning of a test (the interpreter's, which every backend's printed test keeps): it is
evaluated as Python evaluates it. ``and`` and ``or`` short-circuit from left to right and a
``where`` evaluates only the branch it takes, so ``ndim(w) >= 2 and dim(w, -1) > 3`` is false
on a 0-d parameter without asking for its last axis; a ``dim(w, i)`` that is evaluated on a
parameter without axis ``i`` is an error.

Global reductions are hoisted into statements of their own and every one live in the program
stays live in every variant, so the variants' :func:`~optdsl.passes.segments` line up across
tensors (each tensor contributes to a global value even where it does not read it).

For a backend: ``v = variants(program)``; print one function per ``v.programs[k]`` (shape facts
used as numbers, ``dim(w, 1)``, remain in them), and print ``v.tree`` as nested ``if`` on the
parameter (its tests are asked of ``w``; :class:`~optdsl.printer.DslPrinter` prints them as
Python, whose ``and``/``or`` short-circuit exactly as :func:`shape_value` does), or call
:meth:`Variants.pick` with the parameter's shape at run time. :meth:`Variants.paths` gives each
variant's tests for its docstring. The jax target does the first; the interpreter the second.

Example:
    >>> from optdsl import parse
    >>> p = parse("def f(w, g, lr):\\n    u = sign(g) if ndim(w) >= 2 else g\\n    return lr * u\\n")
    >>> v = variants(p)
    >>> len(v.programs), v.pick((3, 4)), v.pick((5,))
    (2, 0, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import DslError
from ..ir import Assign, Call, Const, Expr, Program, Var, map_calls, substitute, walk
from ..ops import COL, OPS, ROW, STATIC
from ..typecheck import expr_kind, input_kinds
from .deadcode import eliminate_dead_code, liveness
from .fold import fold, fold_expr
from .globals import global_statements, hoist_globals

#: At most this many variants (six independent two-way tests).
MAX_VARIANTS = 64

#: A decision tree: a variant's index, or ``(test, tree if it holds, tree if not)``.
Tree = int | tuple


class MissingAxis(DslError):
    """A shape test or a shape fact asks for an axis the parameter does not have."""


def on_w(expr: Expr) -> Expr:
    """``expr`` with every shape fact asked of ``w``: ``g`` and full states share its shape.

    Example:
        >>> on_w(Call("ndim", (Var("g"),)))
        Call(op='ndim', args=(Var(name='w'),))
    """
    return map_calls(expr, lambda c: Call(c.op, (Var("w"), *c.args[1:])) if OPS[c.op].shape == STATIC else c)


def shape_value(expr: Expr, shape: tuple[int, ...]) -> float:
    """A shape test (or shape arithmetic) evaluated for a parameter of ``shape``, as Python would:
    ``and``/``or`` short-circuit left to right, ``where`` evaluates the branch it takes. Raises
    :class:`MissingAxis` when an evaluated ``dim`` asks for an axis ``shape`` lacks.

    Example:
        >>> from optdsl import parse
        >>> test = parse("def f(w, g, lr):\\n    return lr * (ndim(w) >= 2 and dim(w, -1) > 3)\\n").update.args[1]
        >>> shape_value(test, ()), shape_value(test, (2, 5))
        (0.0, 1.0)
    """
    if isinstance(expr, Const):
        return expr.value
    if not isinstance(expr, Call):
        raise DslError(f"{expr.name!r} is not a shape fact")
    op, args = OPS[expr.op], expr.args
    if op.shape == STATIC:
        value = fold_expr(expr, tuple(shape))
        if not isinstance(value, Const):
            raise MissingAxis(f"dim(w, {int(args[1].value)}) asks for an axis a parameter of shape "
                              f"{tuple(shape)} does not have", hint="guard it with `if ndim(w) > ...:`")
        return value.value
    if op.name in ("and", "or"):
        first = shape_value(args[0], shape) != 0
        if first == (op.name == "or"):  # settled by the left operand: the right one is not evaluated
            return float(first)
        return float(shape_value(args[1], shape) != 0)
    if op.name == "where":
        return shape_value(args[1] if shape_value(args[0], shape) != 0 else args[2], shape)
    return float(op.numpy(*[np.float64(shape_value(a, shape)) for a in args]))


@dataclass(frozen=True)
class Variants:
    """The variants of one program: ``programs[k]`` is straight-line (no shape test left; shape
    facts used as numbers remain), ``tree`` decides which one a parameter runs."""

    tree: Tree
    programs: tuple[Program, ...]

    def pick(self, shape: tuple[int, ...]) -> int:
        """The index of the variant a parameter of ``shape`` runs."""
        tree = self.tree
        while not isinstance(tree, int):
            test, yes, no = tree
            tree = yes if shape_value(test, shape) != 0 else no
        return tree

    def needs_2d(self, k: int) -> bool:
        """Does variant ``k`` need a parameter with 2 or more axes (a row or column state, a row
        or column mean)? Every target refuses a smaller one there, as the interpreter does.

        Example:
            >>> from optdsl import load
            >>> found = variants(load("adafactor"))
            >>> [found.needs_2d(k) for k in range(len(found.programs))]
            [True, True, False]
        """
        spec = self.programs[k]
        return any(s.kind in ("row", "col") for s in spec.states) or any(
            isinstance(n, Call) and OPS[n.op].shape in (ROW, COL)
            for e in [a.expr for a in spec.body] + list(spec.outputs()) for n in walk(e))

    def paths(self) -> list[tuple[tuple[Expr, bool], ...]]:
        """For each variant, the tests (asked of ``w``) and outcomes that lead to it (the first
        path when several do)."""
        found: dict[int, tuple] = {}

        def walk(tree, path):
            if isinstance(tree, int):
                found.setdefault(tree, path)
                return
            test, yes, no = tree
            walk(yes, path + ((test, True),))
            walk(no, path + ((test, False),))

        walk(self.tree, ())
        return [found[k] for k in range(len(self.programs))]


def _static_wheres(program: Program):
    """``(statement index or None, where-call, its test inlined)`` for every ``where`` whose
    condition is a shape test, in the order Python asks them (a ``where`` before the tests in its
    branches); inlining follows static assignments."""
    kinds = input_kinds(program)
    statics: dict[str, Expr] = {}

    def located(loc):
        def fail(msg, hint=None):
            raise DslError(msg, program.filename, *(loc or (None, None)), program.source, hint)
        return fail

    def pre_order(e: Expr):
        yield e
        if isinstance(e, Call):
            for a in e.args:
                yield from pre_order(a)

    def scan(e: Expr, i, fail):
        for node in pre_order(e):
            if isinstance(node, Call) and node.op == "where" and expr_kind(node.args[0], kinds, fail) == "static":
                yield i, node, on_w(substitute(node.args[0], statics))

    for i, a in enumerate(program.body):
        yield from scan(a.expr, i, located(a.loc))
        kinds[a.target] = expr_kind(a.expr, kinds, located(a.loc))
        if kinds[a.target] == "static":
            statics[a.target] = substitute(a.expr, statics)
        else:
            statics.pop(a.target, None)
    for e in program.outputs():
        yield from scan(e, None, located(program.return_loc))


def _simplified(test: Expr, known: dict[Expr, bool], as_truth: bool = True) -> Expr:
    """A test given the outcomes of the tests already taken on this path (a Const if settled).
    Only a *left* operand of ``and``/``or`` settles it: the right one may be undefined there.
    An outcome is a truth, so a known test stands for it only where it is read as one (``as_truth``:
    the test, an operand of and/or/not, a where's condition) or where its value is one (a
    comparison): ``ndim(w)`` known non-zero leaves ``ndim(w) > 2`` open."""
    def settled(e: Expr, as_truth: bool) -> bool:
        return e in known and (as_truth or (isinstance(e, Call) and OPS[e.op].truth))

    if settled(test, as_truth):
        return Const(float(known[test]))
    if not isinstance(test, Call):
        return test
    op = OPS[test.op]
    reads_truth = [op.logic or (op.name == "where" and (i == 0 or as_truth)) for i in range(len(test.args))]
    t = Call(test.op, tuple(_simplified(a, known, r) for a, r in zip(test.args, reads_truth)))
    if settled(t, as_truth):
        return Const(float(known[t]))
    if t.op in ("and", "or") and isinstance(t.args[0], Const):
        if (t.args[0].value != 0) == (t.op == "or"):  # or(1, x) = 1; and(0, x) = 0
            return Const(float(t.op == "or"))
        other = t.args[1]
        t = other if isinstance(other, Call) and OPS[other.op].truth else Call("ne", (other, Const(0.0)))
    elif t.op == "where" and isinstance(t.args[0], Const):
        return t.args[1] if t.args[0].value != 0 else t.args[2]
    out = fold_expr(t)
    # folding may give a test already taken: `(not ndim(w)) * size(w)` is `size(w)` once ndim(w) is 0
    return Const(float(known[out])) if settled(out, as_truth) else out


def _decided(test: Expr, known: dict[Expr, bool]) -> bool | None:
    out = _simplified(test, known)
    return out.value != 0 if isinstance(out, Const) else None


def _resolve(program: Program, decide) -> Program:
    """``program`` with every static ``where`` whose test ``decide`` settles replaced by its arm."""
    picks = {}
    for _, node, test in _static_wheres(program):
        truth = decide(test)
        if truth is not None:
            picks[id(node)] = truth

    def pick(e: Expr) -> Expr:
        if isinstance(e, Call):
            if id(e) in picks:
                return pick(e.args[1] if picks[id(e)] else e.args[2])
            return Call(e.op, tuple(pick(a) for a in e.args))
        return e

    outs = [pick(e) for e in program.outputs()]
    body = [Assign(a.target, pick(a.expr), a.loc) for a in program.body]
    return program.with_body(body, update=outs[0], new_states=outs[1:])


@lru_cache(maxsize=1024)
def variants(program: Program) -> Variants:
    """The shape tests of ``program`` as a decision tree, and the straight-line program at each leaf.

    Tests are split in the order the program asks them (outermost condition first), each asked
    only where the tests above it leave it undecided, so a printed tree evaluates exactly what
    :func:`shape_value` evaluates.

    Example:
        >>> from optdsl import load
        >>> v = variants(load("adafactor"))
        >>> len(v.programs), [s.name for s in v.programs[v.pick((8,))].states]
        (3, ['v'])
    """
    hoisted = hoist_globals(program)
    live, _ = liveness(hoisted)
    forced = frozenset(i for i in global_statements(hoisted) if i in live)
    found: list[Program] = []

    def grow(p: Program, known: dict[Expr, bool]) -> Tree:
        p = fold(_resolve(p, lambda t: _decided(t, known)))
        undecided = [_simplified(t, known) for _, _, t in _static_wheres(p) if _decided(t, known) is None]
        if not undecided:
            spec = eliminate_dead_code(p, force=forced)
            if spec not in found:
                if len(found) == MAX_VARIANTS:
                    raise DslError(f"{program.name}: more than {MAX_VARIANTS} shape specialisations",
                                   program.filename, hint="use fewer independent shape tests")
                found.append(spec)
            return found.index(spec)
        test = undecided[0]  # the first one Python would ask: tests inside its branches wait for it
        yes, no = grow(p, {**known, test: True}), grow(p, {**known, test: False})
        return yes if yes == no else (test, yes, no)

    return Variants(grow(hoisted, {}), tuple(found))


def _located(program: Program):
    """(expression, location) for every statement and output."""
    return [(a.expr, a.loc) for a in program.body] + [(e, program.return_loc) for e in program.outputs()]


@lru_cache(maxsize=4096)
def specialize(program: Program, shape: tuple[int, ...]) -> Program:
    """The straight-line program a tensor of ``shape`` runs: its variant (see :func:`variants`)
    with the shape facts made numbers, folded, and without dead code.

    Example:
        >>> from optdsl import load
        >>> [s.name for s in specialize(load("adafactor"), (8,)).states]
        ['v']
    """
    shape = tuple(shape)
    where = (program.filename, None, None, program.source)
    try:
        chosen = variants(program).programs[variants(program).pick(shape)]
    except MissingAxis as e:
        raise MissingAxis(e.message, *where, hint=e.hint) from None
    folded = fold(chosen, shape=shape)
    spec = eliminate_dead_code(folded, force=frozenset(global_statements(folded)))
    for expr, loc in _located(spec):
        for node in walk(expr):
            if isinstance(node, Call) and OPS[node.op].shape == STATIC:
                raise MissingAxis(f"dim(w, {int(node.args[1].value)}) asks for an axis a parameter of shape "
                                  f"{shape} does not have", program.filename, *(loc or (None, None)),
                                  program.source, hint="guard it with `if ndim(w) > ...:`")
    if len(shape) < 2:
        for expr, loc in _located(spec):
            for node in walk(expr):
                if isinstance(node, Call) and OPS[node.op].shape in (ROW, COL):
                    raise DslError(f"{node.op}() needs a parameter with 2 or more axes, got shape "
                                   f"{shape}", program.filename, *(loc or (None, None)),
                                   program.source, hint="guard it with `if ndim(w) >= 2:`")
        for s in spec.states:
            if s.kind in ("row", "col"):
                raise DslError(f"state {s.name!r} is {s.kind}-shaped but the parameter has shape "
                               f"{shape}", program.filename, hint="guard its use with `if ndim(w) >= 2:`")
    return spec


def static_key(program: Program, shape: tuple[int, ...]) -> tuple:
    """Which code a tensor of ``shape`` runs: its variant and the shape facts that variant reads
    as numbers. Tensors with equal keys share code.

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, lr):\\n    return lr * g / sqrt(size(w))\\n")
        >>> static_key(p, (4, 4)), static_key(p, (16,)), static_key(p, (8,))
        ((0, 16.0), (0, 16.0), (0, 8.0))
    """
    v = variants(program)
    k = v.pick(tuple(shape))
    facts = [fold_expr(node, tuple(shape)) for e, _ in _located(v.programs[k]) for node in walk(e)
             if isinstance(node, Call) and OPS[node.op].shape == STATIC]
    return (k, *(f.value if isinstance(f, Const) else None for f in facts))
