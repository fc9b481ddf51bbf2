"""Simplification: a shorter program that computes the same updates.

Three stages, each kept only when it helps:

1. hyperparameters named in ``values`` become numbers (``lr`` keeps its name, with the value as
   its new default), then constant folding and dead-code removal (dead states included);
2. each output goes through sympy (:mod:`optdsl.symbolic`): the folded form, its expansion, its
   logarithms expanded where that is safe (``log2(exp2(g)) -> g``), and
   ``sympy.simplify`` for small expressions, plus the rewrite ``x / |x| -> sign(x)``; the
   candidate with the fewest ops wins, and shared subexpressions become statements again;
3. the sympy result replaces the program only when it is strictly smaller: fewer ops, or as many
   and fewer numbers (:func:`program_size`: ``dot(0.48, 0.0023 w)`` -> ``0.0011 sum(w)``).

Stage 2 runs on whole outputs up to :data:`INLINE_LIMIT` ops, statement by statement up to
:data:`LOCAL_LIMIT`, and not at all beyond (linear time for long programs).

Rewrites this finds: ``m / sqrt(m * m) -> sign(m)`` (``sqrt`` acts on ``|x|``, so the quotient
is ``m / |m|``), ``interp(g, interp(g, m, a), b) -> interp(g, m, a * b)``, ``x * 2 - x -> x``.
A positive factor leaves ``sign`` (``sign(m / sqrt(rms(g*g))) -> sign(m)``, by the op table's
range facts). These change the meaning only where a denominator (or the dropped factor) is zero:
``m / |m|`` is nan at ``m = 0`` where ``sign(m)`` is 0; :func:`optdsl.equiv.equivalent` calls
such an equality *generic*. Beyond that, sympy's identities hold over the reals, so results
agree with the interpreter wherever the inputs and the original's values are finite. A form is kept
only if a run of both (random gradients with exact zeros) agrees wherever the original's updates are
finite: sympy's assumptions can be wrong (``sign(arctan(step > 1))`` became 1) and a fold can
underflow (``g * 5e-324 * 1e300``). A nan or inf gradient is no real number: where one can reach a
finite value (``where(isfinite(g * 0), g, 0)``, ``not (g < 0)``;
:func:`optdsl.symbolic.nan_sensitive`), that run has nan and inf gradients too.

Example:
    >>> from optdsl import parse, to_source
    >>> p = parse('''
    ... def f(w, g, m, lr):
    ...     m = interp(g, interp(g, m, 0.9), 0.5)
    ...     return lr * m / sqrt(m * m), m
    ... ''')
    >>> print(to_source(simplify(p)))
    def f(w, g, m, lr):
        m = interp(g, m, 0.45)
        return lr * sign(m), m
    <BLANKLINE>
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from .checkpoints import without_stale
from .domains import check_domains
from .equiv import trajectories
from .errors import DslError
from .ir import Call, Const, Program, Var, free_vars, substitute, walk
from .parser import parse
from .passes import eliminate_dead_code, fold
from .printer import format_number, to_source
from .symbolic import (
    NotExpressible,
    expr_from_sympy,
    expr_to_sympy,
    from_sympy,
    sign_rewrite,
    symbol,
    to_sympy,
    uniform_names,
)
from .time_limit import time_limit
from .typecheck import SCALAR_LIKE, expr_kind, input_kinds, validate

#: Seconds a simplified form may take to build (sympy may take minutes on some expressions); past
#: them the form is left out.
FORM_SECONDS = 15
#: sympy.simplify is tried only on outputs at most this large (sympy's count_ops): it can take
#: seconds on big expressions, and the search calls this for every child program.
SIMPLIFY_LIMIT = 30
#: Expansion can grow expressions exponentially; skip it above this size.
EXPAND_LIMIT = 150
#: Programs longer than this (ops, after dead-code removal) skip the whole-program sympy form:
#: inlining them makes expressions sympy handles slowly; each statement is still simplified.
INLINE_LIMIT = 30
#: Programs longer than this (ops, after dead-code removal) skip sympy altogether: statement by
#: statement it costs tens of milliseconds a statement, and inlining single-use temporaries is
#: quadratic. They are folded and cleaned of dead code only, in linear time (20,000 statements
#: in a few seconds).
LOCAL_LIMIT = 400


def op_count(program: Program) -> int:
    """How many op applications the program spells out (body and outputs): the first part of
    :func:`program_size`.

    Example:
        >>> from optdsl import load
        >>> op_count(load("sgd")), op_count(load("lion"))
        (1, 6)
    """
    return program_size(program)[0]


def _size(exprs) -> tuple[int, int]:
    """``(ops, numbers)`` spelled out in ``exprs``: of two forms with as many ops, the one with fewer
    numbers is simpler (``dot(0.4831, 0.00234 * w)`` -> ``0.001130454 * sum(w)``)."""
    nodes = [node for e in exprs for node in walk(e)]
    return sum(isinstance(n, Call) for n in nodes), sum(isinstance(n, Const) for n in nodes)


def program_size(program: Program) -> tuple[int, int]:
    """:func:`_size` of the program's body and outputs: the measure simplification must decrease.

    Example:
        >>> from optdsl import load
        >>> program_size(load("sgd")), program_size(load("lion"))
        ((1, 0), (6, 0))
    """
    return _size([a.expr for a in program.body] + list(program.outputs()))


def bind(program: Program, values: dict[str, float] | None) -> Program:
    """``program`` with the hyperparameters in ``values`` replaced by those numbers; ``lr``
    keeps its name and takes the value as its default. Unknown names raise DslError. A docstring
    gains a line naming the bound values, and loses a torch checkpoint declaration that maps onto
    one of them (:mod:`optdsl.checkpoints`).

    Example:
        >>> from optdsl import load
        >>> print(to_source(bind(load("lion"), {"beta1": 0.95, "lr": 3e-4}), doc=False), end="")
        def lion(w, g, m, lr=0.0003, beta2=0.99, weight_decay=0):
            update = sign(interp(g, m, 0.95)) + weight_decay * w
            update = update * lr
            m = interp(g, m, beta2)
            return update, m
    """
    if not values:
        return program
    defaults = program.hyper_defaults
    unknown = set(values) - set(defaults) - {"lr"}
    if unknown:
        raise DslError(f"{program.name} has no hyperparameter {', '.join(sorted(unknown))}",
                       hint=f"it has: {', '.join(defaults) or 'none'}")
    check_domains(program, values)  # (as the interpreter refuses them)
    fixed = {k: float(v) for k, v in values.items() if k != "lr"}
    if "lr" in values:
        program = program.with_lr(values["lr"])
    hypers = [h for h in program.hypers if h.name not in fixed]
    doc = program.doc
    if doc and fixed:  # the description stays the original's: say what is no longer free in it
        doc += ("\n" if "\n" in doc else "\n\n") + "Hyperparameters bound: " + ", ".join(
            f"{k}={format_number(v)}" for k, v in fixed.items()) + "."
    bound = fold(program, values=fixed) if fixed else program
    return without_stale(replace(bound, hypers=tuple(hypers), doc=doc))


def _attempt(fn, *args, **kw):
    """``fn(*args, **kw)``, or None when sympy fails inside: its internals raise many kinds of
    errors on unusual input (a KeyError from piecewise rewriting, say), and every form is optional."""
    try:
        return fn(*args, **kw)
    except Exception:  # noqa: BLE001
        return None


def _within_time(make):
    """``make()`` under :data:`FORM_SECONDS`' limit (:class:`~optdsl.time_limit.SymbolicTimeout` past it)."""
    with time_limit(FORM_SECONDS):
        return make()


def _candidates(expr: sympy.Expr) -> list[sympy.Expr]:
    out = [expr]
    size = sympy.count_ops(expr)
    if size <= EXPAND_LIMIT:
        expanded = _attempt(sympy.expand, expr, power_base=False, power_exp=False, log=False,
                            multinomial=False)
        if expanded is not None:
            out += [expanded, _attempt(sympy.factor_terms, expanded)]
        if expr.has(sympy.log):  # where it is safe: log(2^g) is g log(2), so log2(exp2(g)) is g
            out.append(_attempt(sympy.expand_log, expr))
    # sympy.simplify rewrites sign and |x| as piecewise functions, which is slow, and its
    # logcombine ran for minutes on `lr g / (log(1 + interp(g^2, v, 0.999)) + 1e-8)`: only on
    # small expressions without them.
    if size <= SIMPLIFY_LIMIT and not expr.has(sympy.Piecewise, sympy.sign, sympy.Abs, sympy.log):
        out.append(_attempt(sympy.simplify, expr))
    out = [e for e in out if e is not None]
    return [sign_rewrite(e) for e in out] + out


def _best(expr: sympy.Expr, symbols, uniform, states, kinds=None) -> sympy.Expr:
    """The candidate form of ``expr`` that reads back into the fewest ops."""
    best, best_ops = expr, None
    for cand in _candidates(expr):
        try:
            ops = sum(isinstance(n, Call) for n in walk(expr_from_sympy(cand, symbols, uniform, states, kinds)))
        except NotExpressible:
            continue
        if best_ops is None or ops < best_ops:
            best, best_ops = cand, ops
    return best


def sympy_form(program: Program) -> Program:
    """The program rebuilt from the simplest sympy form of each inlined output (may be longer;
    may raise :class:`~optdsl.symbolic.NotExpressible`).

    Example:
        >>> p = parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * m / sqrt(m*m), m\\n")
        >>> print(to_source(sympy_form(p)), end="")
        def f(w, g, m, lr):
            m = interp(g, m, 0.9)
            return lr * sign(m), m
    """
    sp = to_sympy(program)
    uniform, states = uniform_names(program), set(program.state_names)
    kinds = input_kinds(program)
    outputs = [_best(e, sp.symbols, uniform, states, kinds) for e in sp.outputs()]
    return from_sympy(sp.with_outputs(outputs))


def local_form(program: Program) -> Program:
    """Each statement simplified on its own, over the names it reads (after temporaries used
    once are inlined into their reader): keeps the program's shape, and stays cheap.

    Example:
        >>> p = parse("def f(w, g, lr):\\n    a = g * 2\\n    b = a - g\\n    return lr * b\\n")
        >>> print(to_source(local_form(p)), end="")
        def f(w, g, lr):
            return g * lr
    """
    program = inline_single_use(program)
    states = set(program.state_names)
    kinds = input_kinds(program)
    symbols: dict[str, sympy.Symbol] = {}

    def rewrite(expr):
        if isinstance(expr, Call) and len(set(expr.args)) == len(expr.args) and not any(
                isinstance(a, Call) for a in expr.args):
            return expr  # one op on distinct atoms: folding already did all there is to do
        for n in free_vars(expr):
            symbols.setdefault(n, symbol(n))
        # Values the same for every element (scalars included) may weigh an interp.
        uniform = {n for n, k in kinds.items() if k in SCALAR_LIKE}
        try:
            best = _best(expr_to_sympy(expr, symbols, kinds=kinds), symbols, uniform, states, kinds)
            new = expr_from_sympy(best, symbols, uniform, states, kinds)
        except Exception:  # noqa: BLE001 - NotExpressible, or sympy failing inside: keep the statement
            return expr
        return new if _size([new]) < _size([expr]) else expr

    body = []
    for a in program.body:
        body.append(replace(a, expr=rewrite(a.expr)))
        kinds[a.target] = expr_kind(a.expr, kinds, _fail)
    outs = [rewrite(e) for e in program.outputs()]
    return program.with_body(body, update=outs[0], new_states=outs[1:])


def _fail(msg, hint=None):
    raise DslError(msg, hint=hint)


def inline_single_use(program: Program, reassigned: bool = False) -> Program:
    """Temporaries whose value is read exactly once substituted into that reader. With
    ``reassigned``, also a value read once before (or by) the next assignment to its name, a
    state's passing value included: ``update = a + b; update = update * c`` becomes ``update = (a
    + b) * c``, ``v = interp(g*g, v, 0.999); v = v ** 1.011`` one line.

    Example:
        >>> p = parse("def f(w, g, lr):\\n    u = g + w\\n    u = u * lr\\n    return u\\n")
        >>> print(to_source(inline_single_use(p)), end="")
        def f(w, g, lr):
            u = g + w
            return u * lr
        >>> print(to_source(inline_single_use(p, reassigned=True)), end="")
        def f(w, g, lr):
            return (g + w) * lr
    """
    body = list(program.body)
    outputs = list(program.outputs())
    i = 0
    while i < len(body):
        a = body[i]
        later = body[i + 1:]
        end = next((j for j, b in enumerate(later) if b.target == a.target), None)
        if end is not None and not reassigned:
            i += 1
            continue
        scope = later if end is None else later[:end + 1]  # the statements that can read this value
        readers = [b.expr for b in scope] + (outputs if end is None else [])
        reads = sum(list(walk(e)).count(Var(a.target)) for e in readers)
        # the next assignment to the name reads the value before it replaces it: no clobber
        clobbered = any(b.target in free_vars(a.expr) for b in (scope if end is None else scope[:-1]))
        if reads == 1 and not clobbered and (end is not None or a.target not in program.state_names):
            n = len(scope)
            body = body[:i] + [replace(b, expr=substitute(b.expr, {a.target: a.expr})) for b in later[:n]] + later[n:]
            if end is None:
                outputs = [substitute(e, {a.target: a.expr}) for e in outputs]
            continue
        i += 1
    return program.with_body(body, update=outputs[0], new_states=outputs[1:])


def _agrees(base: Program, candidate: Program) -> bool:
    """Does ``candidate`` give ``base``'s updates wherever base's are finite (on random gradients
    with exact zeros, :func:`optdsl.equiv.trajectories`), and make of nan and inf gradients what base
    makes of them where base is nan-sensitive? sympy's identities hold over the reals, where
    ``isfinite(g * 0)`` is 1 and ``not (g < 0)`` is ``g >= 0``; and its assumptions can be wrong
    (``sign(arctan(step > 1))`` became 1) or a fold can underflow (``g * 5e-324 * 1e300``)."""
    values = lambda p: {"lr": 1e-3, **p.hyper_defaults}
    try:
        run = trajectories(base, candidate, values(base), values(candidate), steps=12, trials=2, seed=0,
                           finite_in="a")
        return run.difference is None
    except DslError:  # no test shape runs them (dim(w, 4)), or a hyperparameter has no value
        return True


def _checked(candidate: Program) -> Program:
    candidate = eliminate_dead_code(fold(candidate))
    validate(candidate)
    return candidate


def simplify(program: Program, values: dict[str, float] | None = None) -> Program:
    """A program with the same updates and no more ops: fold, remove dead code, then keep the
    sympy-simplified form if it is strictly smaller (see the module docstring).

    Example: ``simplify(p, {"beta1": 0.95})`` also replaces ``beta1`` by 0.95.
    """
    base = eliminate_dead_code(fold(bind(program, values)))
    candidates = []
    size = op_count(base)
    forms = (local_form, sympy_form) if size <= INLINE_LIMIT else (local_form,) if size <= LOCAL_LIMIT else ()
    for form in forms:
        candidate = _attempt(_within_time, lambda f=form: _checked(f(base)))  # NotExpressible, sympy failing
        if candidate is not None:
            candidates.append(candidate)
    candidates = [c for c in candidates if _agrees(base, c)]
    candidate = min(candidates, key=program_size, default=base)
    if program_size(candidate) >= program_size(base):
        return base
    # The result must print as source that parses back to itself.
    reparsed = parse(to_source(candidate), program.filename, candidate.name)
    return reparsed if reparsed == candidate else base


__all__ = ["LOCAL_LIMIT", "SIMPLIFY_LIMIT", "bind", "op_count", "program_size", "sign_rewrite", "simplify",
           "sympy_form"]
