"""A searched program in its simplest readable form, checked equal to the raw one.

The search hands back programs such as its #2688::

    def train(w, g, m, v, lr):
        m = interp(g, m, 0.5735)
        t_1 = m / sqrt(rms(g * g))
        update = sign(t_1)
        update = update * (lr * 0.001)
        return update, m, v

which, with the learning rate the search tuned for it (18.9), a person writes as::

    def train(w, g, m, lr=0.0189):
        m = interp(g, m, 0.5735)
        update = lr * sign(m)
        return update, m

:func:`readable` gets there in steps, each a rewrite of the symbolic layer:

1. constants folded, dead statements and dead states removed (across steps: a state whose old
   value nobody reads goes, and so does what only fed it; so does a state that step 2, or
   constant folding (``v = sign(v)``: :mod:`optdsl.passes.constant_states`), shows stays at its
   starting 0 or 1, and the rest is simplified again with the number);
2. each output as one sympy expression of the step's inputs, read back in its shortest form
   (:func:`optdsl.simplify.simplify`'s candidates): ``m / sqrt(m*m) -> sign(m)``, positive factors
   leave ``sign`` (``sign(m / sqrt(rms(g*g))) -> sign(m)``, using the op table's range facts),
   ``(1 - a) x + a y`` reads as ``interp(x, y, a)`` (and ``a s + c x`` of a state as
   ``interp(k x, s, a)`` where that is shorter), nested constant-weight interps merge, and
   an ``interp`` towards a number with a weight outside [0, 1], no average, reads as its line;
3. the learning-rate scaling is folded: an update ``c * lr * E`` (``c`` a number) becomes
   ``lr * E`` with ``lr``'s default ``c`` times the tuned ``lr`` (the search's swept value, or the
   program's own default), ``c`` taking the positive numbers that homogeneity lets out of ``E``
   and of the sums in its denominators (``cbrt(g / 0.28 / (4 sqrt(v) + 1e-8))``:
   :mod:`optdsl.homogeneity`); other reads of ``lr`` (``clip(g, lr)``) take the tuned value as a number;
4. readable names: states ``m`` (first moments) and ``v`` (second moments: kept >= 0, or even in
   ``g``, as ``interp(tanh(g) * g, v, 0.999)``), the step
   ``update``, a value computed from ``g`` alone and odd in it reassigns ``g`` (the paper's
   ``g = clip(g, lr)``; ``g * g`` is a ``t1``);
   one expression per state (a passing value read once joins its reader); ``x * x`` is ``square(x)``;
5. a number the steps made longer than the raw program's own (a folded ``lr`` default such as
   ``0.1 * 1.211 / 0.19 = 0.6373684210526317``) is shown to :data:`SHOWN_DIGITS` significant
   digits (or as many as the raw program's longest number has), one number at a time, where the
   updates then still agree with the raw program's to :data:`SHOWN_RTOL`, else to the fewest of
   up to :data:`SHOWN_MORE_DIGITS` more digits that do; ``equality`` lists each rounding.

The result (before step 5) is compared with the raw program by :func:`optdsl.equiv.compare` (the raw one
with the tuned ``lr``, the readable one with its default as the exact product or quotient it
folds, ``61.04 * 0.001 / 0.1278``; where that is not exact, with the raw program as every backend
runs it, its constant parts folded in float64: ``1 - log2(0.8212)``), and :attr:`Readable.equality`
says what was shown: ``exact``, ``generic: ...`` (equal wherever no denominator, sqrt or log argument is zero,
as for ``m / sqrt(m*m) = sign(m)``) or ``tested: ...``. It must also compute what the raw program
computes in float32 (:func:`optdsl.equiv.float32_agrees`: ``exp(x) - 1`` equals ``expm1(x)`` but
is 0 in float32 for tiny ``x``), or, where it does so at ordinary gradients and only the raw
program's own rounding differs at gradients near 1e-6, compute the raw program's exact values there
(``g * log2(exp2(g))`` shows as ``square(g)``; :data:`ROUNDING_NOTE` in ``equality``). A form
that could not be shown equal is never returned: the fallback is the folded, dead-code-free
program, which is exact.

Programs longer than :data:`SYMBOLIC_LIMIT` ops skip step 2 (sympy is slow on them) and take
:func:`~optdsl.simplify.simplify`'s statement-by-statement form; a form that takes longer than
:data:`optdsl.simplify.FORM_SECONDS` to build is left out, and a proof longer than
:data:`optdsl.equiv.PROVE_SECONDS` gives way to testing.

Example:
    >>> from optdsl import parse
    >>> raw = parse('''
    ... def train(w, g, m, v, lr):
    ...     m = interp(g, m, 0.5735)
    ...     t_1 = m / sqrt(rms(g * g))
    ...     update = sign(t_1)
    ...     update = update * (lr * 0.001)
    ...     return update, m, v
    ... ''')
    >>> r = readable(raw, lr=18.9)
    >>> print(r.source, end="")
    def train(w, g, m, lr=0.0189):
        m = interp(g, m, 0.5735)
        update = lr * sign(m)
        return update, m
    >>> r.equality.split(":")[0]
    'generic'
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import sympy

from . import equiv
from .equiv import compare, float32_agreement, float32_agrees, trajectories
from .errors import DslError
from .homogeneity import degree, positive_factor
from .interpreter import Interpreter
from .ir import (
    Assign,
    Call,
    Const,
    Expr,
    Program,
    Var,
    free_vars,
    fresh_name,
    map_calls,
    names_in,
    substitute,
    walk,
)
from .latex import to_latex
from .ops import OPS
from .parser import parse
from .passes import eliminate_constant_states, eliminate_dead_code, fold
from .passes.fold import fold_expr
from .printer import to_source
from .simplify import _best, _within_time, inline_single_use, op_count, simplify
from .symbolic import from_sympy, nonnegative_states, number, step_signs, to_sympy, uniform_names
from .time_limit import SymbolicTimeout, time_limit
from .typecheck import input_kinds, validate

#: Programs with more ops than this (after dead-code removal) are not inlined into sympy.
SYMBOLIC_LIMIT = 80
#: Significant digits of the numbers the search writes (its mutations round to 4), and so of
#: the numbers the readable form shows (step 5 of the module docstring).
SHOWN_DIGITS = 4
#: Digits beyond those that a number may take where its SHOWN_DIGITS do not keep the updates.
SHOWN_MORE_DIGITS = 3
#: How closely the updates with the shown (rounded) numbers must follow the raw program's.
SHOWN_RTOL = 1e-3
#: Names given to the states by their role (`_rename_states`); further states keep their own names.
STATE_NAMES = ("m", "v")
#: Seconds :func:`readable_within` gives the whole readable form before it shows the program as is.
READABLE_SECONDS = 60


@dataclass(frozen=True)
class Readable:
    """A program's readable form: the ``program``, its ``source`` and ``latex``, and the kind of
    ``equality`` with the raw program that was shown (``exact``, ``generic: ...``, ``tested: ...``),
    followed by ``; shown rounded ...`` where step 5 rounded numbers (the kind is of the form before).
    """

    program: Program
    source: str
    latex: str
    equality: str


#: ``equality``'s note for a form that computes in float32 what the raw program means where the raw
#: program's own float32 rounding differs, at gradients near 1e-6 only
#: (:func:`optdsl.equiv.float32_agrees`'s ``exact_a``)
ROUNDING_NOTE = ("in float32 it computes the raw program's exact values where, at gradients near 1e-6, the "
                 "raw program's own rounding differs")


def readable(program: Program, lr: float | None = None) -> Readable:
    """``program`` in its simplest readable form (see the module docstring); ``lr`` is the tuned
    learning rate to fold in (default: the program's own ``lr`` default, if any).

    Example: ``readable(raw, lr=18.9).source`` for the search's #2688 reads
    ``update = lr * sign(m)`` with ``m = interp(g, m, 0.5735)`` and ``lr=0.0189``.
    """
    tuned = lr if lr is not None else program.hyper_defaults.get("lr")
    base = eliminate_dead_code(fold(program))
    exact_tuned = None if tuned is None else number(tuned)
    candidates = _forms(base, exact_tuned)
    raw_values = {} if tuned is None else {"lr": tuned}
    # The one with fewer states wins, then the shorter (sympy can spell an interp it cannot
    # recognise, a weight that is not a number, as a longer sum), then, of forms that tie, one shown
    # exactly equal, else sympy's (made first): its form may be equal only where no denominator is
    # zero where the statement-by-statement one of the same size is exact.
    # A form must also compute what the program computes in float32 (sympy's ``exp(x) - 1`` is
    # expm1 in exact arithmetic and 0 in float32 for |x| < 6e-8: a winner's readable form that
    # spelled it so diverged where the program it came from trained).
    # A folded lr default is compared at its exact value (61.04 * 0.001 / 0.1278, not the float
    # nearest it), so the proof can be exact; the float is what the form then runs with.
    size = lambda form: (len(form.states), op_count(form))
    shown = None  # the first form of the smallest size found equal, while its ties are tried
    for candidate, exact_lr in sorted(candidates, key=lambda c: size(c[0])):
        if shown is not None and size(candidate) > size(shown[0]):
            break
        values = dict(candidate.hyper_defaults)
        exact_values = values if exact_lr is None else {**values, "lr": exact_lr}
        verdict = compare(program, candidate, raw_values, exact_values)
        if verdict.equal and verdict.kind != "exact":
            # The forms are made from the program as it runs, its constant parts folded in float64
            # (``log2(-0.8212)``, ``1 - 0.9 ** 2``): equal to that exactly is exact for what runs.
            as_run = compare(base, candidate, raw_values, exact_values)
            verdict = as_run if as_run.kind == "exact" else verdict
        at = {"lr": 1e-3}  # the lr where a program's values bind none (no tuned lr known)
        fits, rounding = (_float32_fit(program, candidate, {**at, **raw_values}, {**at, **values})
                          if verdict.equal else (False, None))
        if fits:
            if verdict.kind == "exact":
                return _shown(program, raw_values, candidate, verdict, rounding)
            shown = shown or (candidate, verdict, rounding)
    if shown is not None:
        return _shown(program, raw_values, *shown)
    fallback = _with_lr(base, exact_tuned)
    return _shown(program, raw_values, fallback, compare(program, fallback, raw_values,
                                                         dict(fallback.hyper_defaults)))


def _float32_fit(raw: Program, form: Program, raw_values: dict, form_values: dict) -> tuple[bool, str | None]:
    """``(taken, note)``: does ``form`` compute in float32 what ``raw`` computes
    (:func:`optdsl.equiv.float32_agreement`, scale by scale), or where it agrees at the gradients of
    the first two scales and only ``raw``'s own float32 rounding differs at the third, ``raw``'s exact
    values (``g * log2(exp2(g))`` as ``square(g)``, with :data:`ROUNDING_NOTE`)? ``log(1 + v)`` is 0
    in float32 at the second scale's second moments, where ``log1p(v)`` is not: not taken."""
    scales = float32_agreement(raw, form, raw_values, form_values)
    if not all(itertools.islice(scales, 2)):  # (computed as asked for: a form off at 1 stops there)
        return False, None
    if next(scales):
        return True, None
    if float32_agrees(raw, form, raw_values, form_values, exact_a=True):
        return True, ROUNDING_NOTE
    return False, None


def readable_within(program: Program, lr: float | None = None, seconds: float | None = None) -> Readable:
    """:func:`readable` within ``seconds`` (default :data:`READABLE_SECONDS`): past them, or where
    the symbolic layer fails, the program with its dead code removed and ``lr`` as its default,
    ``equality`` saying why it was not simplified. sympy's time grows with a program's inlined size
    (a chain of ``u = u * u + u`` doubles it per line), so no caller may wait on it unbounded.

    Example: ``readable_within(raw, lr=18.9, seconds=5).source``.
    """
    seconds = READABLE_SECONDS if seconds is None else seconds
    try:
        with time_limit(seconds) as limit:
            shown = readable(program, lr)
        # A step that catches every error to fall back on a cheaper answer can swallow the timeout
        # and finish with a weaker one: past the limit, the answer is the program as it is.
        if not limit.expired:
            return shown
        why = f"took more than {seconds:g} s"
    except Exception as e:  # noqa: BLE001 - the symbolic layer is an improvement, never a requirement
        why = str(e) if isinstance(e, SymbolicTimeout) else type(e).__name__
    return unsimplified(program, lr, why)


def unsimplified(program: Program, lr: float | None, why: str) -> Readable:
    """``program`` as it is, but for its dead code, with ``lr`` as its default: what a caller
    shows where the readable form is not made, ``equality`` saying ``why``.

    Example: ``unsimplified(raw, 18.9, "interrupted").equality`` is ``"exact (not simplified:
    interrupted)"``.
    """
    live = eliminate_dead_code(program)
    if lr is not None:
        live = live.with_lr(lr)
    return Readable(live, to_source(live), "", f"exact (not simplified: {why})")


def _forms(base: Program, tuned: sympy.Expr | None,
           again: bool = True) -> list[tuple[Program, sympy.Expr | None]]:
    """Steps 2-4 on ``base`` with the tuned lr ``tuned`` (exact): sympy's form (for programs short
    enough) and the statement-by-statement one, each with readable names and its lr default
    exactly (None where there is none); a form that fails is left out. Where a form shows a state to be
    constant (``m = t - t`` reads back as ``m = 0``), the program without that state is simplified
    again (once), so what read it is simplified with the number."""
    makers = []
    if op_count(base) <= SYMBOLIC_LIMIT:
        makers.append(lambda: _symbolic(base, tuned))
    makers.append(lambda: _plain(base, tuned))
    candidates = []
    for make in makers:
        try:
            form, exact_lr = _within_time(make)
            candidates.append((_named(form), exact_lr))
        except Exception:  # noqa: BLE001, S112 - sympy fails (or runs too long) in many ways; next is simpler
            continue
        reduced = eliminate_constant_states(form)
        if again and reduced is not form:
            candidates += _forms(eliminate_dead_code(fold(reduced)), exact_lr, again=False)
    return candidates


def _shown(raw: Program, raw_values: dict[str, float], form: Program, verdict,
           note: str | None = None) -> Readable:
    """Step 5 (module docstring): ``form`` with each number longer than the raw program's
    rounded, where the updates then agree with the raw program's to :data:`SHOWN_RTOL`
    (:func:`optdsl.equiv.trajectories`, 3 trials x 20 steps), and ``equality`` saying so (and
    ``note``, where there is one)."""
    equality = verdict.kind + (f": {verdict.detail}" if verdict.kind != "exact" else "")
    equality += f"; {note}" if note else ""
    digits = max([SHOWN_DIGITS, *map(_digits, _numbers(raw, raw_values))])
    raw_bound, raw_bind = equiv.bound(raw, raw_values)
    rounded, used = [], set()
    try:
        for x in dict.fromkeys(_numbers(form, {})):
            # the fewest digits from ``digits`` on that keep the updates (a winner showed
            # -1.7155649053185669, whose 4 digits did not, where -1.7156 does)
            for n in range(digits, min(_digits(x), digits + SHOWN_MORE_DIGITS + 1)):
                short = float(f"{x:.{n}g}")
                if short == 0:
                    break
                trial = _with_number(form, x, short)
                shown_bind = {"lr": 1e-3, **trial.hyper_defaults}
                run = trajectories(raw_bound, trial, {"lr": 1e-3, **raw_bind}, shown_bind, steps=20, trials=3,
                                   seed=0, rtol=SHOWN_RTOL)
                if run.difference is None:
                    form = trial
                    rounded.append(f"{x!r} -> {short!r}")
                    used.add(n)
                    break
    except DslError:  # no test shape runs it (dim(w, 3)): the numbers stay as they are
        pass
    if rounded:
        shown = "-".join(map(str, sorted({min(used), max(used)})))
        equality += (f"; shown rounded to {shown} significant digits ({', '.join(rounded)}): updates "
                     f"within {SHOWN_RTOL:g} of the raw program's, relative to the largest")
    return Readable(form, to_source(form, doc=False), to_latex(form), equality)


def _digits(x: float) -> int:
    """Significant digits of the shortest decimal that reads back as ``x`` (0 for inf, nan)."""
    if not math.isfinite(x):
        return 0
    return next(n for n in range(1, 18) if float(f"{x:.{n}g}") == x)


def _numbers(program: Program, values: dict[str, float]) -> list[float]:
    """Every number ``program`` is written with: its constants, ``values`` and its defaults."""
    consts = [n.value for e in (*(a.expr for a in program.body), *program.outputs()) for n in walk(e)
              if isinstance(n, Const)]
    return [*map(float, consts), *values.values(), *program.hyper_defaults.values()]


def _with_number(program: Program, old: float, new: float) -> Program:
    """``program`` with every constant and hyperparameter default ``old`` written ``new``."""
    def swap(e: Expr) -> Expr:
        return Const(new) if isinstance(e, Const) and e.value == old else e

    program = program.with_exprs(lambda e: swap(map_calls(e, lambda c: Call(c.op, tuple(map(swap, c.args))))))
    return replace(program, hypers=tuple(replace(h, default=new) if h.default == old else h
                                         for h in program.hypers))


def _with_lr(program: Program, tuned: sympy.Expr | None) -> Program:
    """``program`` with ``lr`` a hyperparameter defaulting to ``tuned`` (when known)."""
    return program if tuned is None else program.with_lr(float(tuned))


def _plain(base: Program, tuned: sympy.Expr | None) -> tuple[Program, sympy.Expr | None]:
    """The statement-by-statement form (for programs too long for sympy, or where sympy's form is
    longer): temporaries read once inlined, and where ``lr`` is only ever read as ``lr * c``, or once
    in an update whose numbers homogeneity lets out (:func:`_numbers_into_lr`), that scaling folded
    into the tuned default (``(t + cbrt(t)) * (lr * 0.0045)``, lr=1.3 -> ``lr * (t + cbrt(t))``,
    lr=0.00586); with that default, exactly."""
    # folded again once inlined: sqrt(v / -1.778) shows only then, and is sqrt(v / 1.778)
    program = fold(inline_single_use(simplify(base), reassigned=True))
    program = program.with_exprs(lambda e: map_calls(map_calls(e, _lr_itself), _as_line))
    if tuned is not None:
        program, tuned = _numbers_into_lr(program, tuned)
    scale = _lr_factor(program) if tuned is not None else None
    if scale is not None:
        bare = lambda c: Var("lr") if _lr_times(c) is not None else c
        program = program.with_exprs(lambda e: map_calls(e, bare))
        tuned = tuned * number(scale)  # 1.08 * 0.007021 = 0.00758268, exactly
    update = program.update
    if isinstance(update, Call) and update.op == "mul" and update.args[1] == Var("lr"):
        # lr first, as the paper writes it
        program = program.with_body(program.body, update=Call("mul", update.args[::-1]))
    return _with_lr(program, tuned), tuned


def _numbers_into_lr(program: Program, tuned: sympy.Expr) -> tuple[Program, sympy.Expr]:
    """An update ``lr * X`` (``lr`` read nowhere else) with positive numbers that homogeneity lets
    out of ``X`` (``lr * 0.001 * cbrt(g / 0.2837 / d)`` is ``0.001 * 0.2837^(-1/3) * lr * cbrt(g /
    d)``: :func:`optdsl.homogeneity.positive_factor`): those numbers folded into the tuned lr,
    exactly; else the program and lr as they are."""
    reads = lambda e: sum(n == Var("lr") for n in walk(e))
    if any(map(reads, (a.expr for a in program.body))) or reads(program.update) != 1:
        return program, tuned
    c, rest = positive_factor(program.update)
    if c == 1 or _degree_in_lr(rest) != 1:
        return program, tuned
    return program.with_body(program.body, update=fold_expr(rest)), tuned * c


def _degree_in_lr(e: Expr) -> Fraction | None:
    """The degree of ``e``, which reads ``lr`` once, in ``lr`` (``lr * t1 * x`` and ``x / (1 / lr)``
    1: then ``c * e`` is ``e`` at ``c * lr``), or None."""
    if e == Var("lr"):
        return Fraction(1)
    if not isinstance(e, Call):
        return None
    i = next(i for i, a in enumerate(e.args) if Var("lr") in walk(a))
    p, inner = degree(e.op, i), _degree_in_lr(e.args[i])
    return None if p is None or inner is None else p * inner


_LR = sympy.Symbol("lr", nonnegative=True)  # every runtime refuses a negative lr; _symbolic reads it so


def _lr_itself(call: Call) -> Expr:
    """``norm(lr)``, ``abs(lr)``, ``mean(lr)`` (a search's spelling of the scale it tunes) as ``lr``:
    the op table's value of the op on a number (``same_value``, else ``sympy``) is ``lr`` itself
    where ``lr >= 0``; any other call as it is."""
    if call.args == (Var("lr"),):
        op = OPS[call.op]
        value = op.same_value or op.sympy
        if value is not None and value(_LR) == _LR:
            return Var("lr")
    return call


def _as_line(call: Call) -> Expr:
    """``interp(x, c, a)`` with a number ``c`` and a weight ``a`` outside [0, 1], or ``c = 0``,
    as the line it is, ``(1 - a) x + a c``: no average, so ``interp(sqrt(v), 4.675e-08, -0.4453)``
    reads ``1.4453 * sqrt(v) - 2.0817775e-08`` and ``interp(g, 0, 0.743)`` (a state kept at 0)
    ``0.257 * g``; ``interp(g, g, 0.9)`` (a momentum of the gradient with itself) is ``g``."""
    if call.op == "interp" and call.args[0] == call.args[1]:
        return call.args[0]
    if call.op != "interp" or not all(isinstance(e, Const) for e in call.args[1:]):
        return call
    c, a = (number(e.value) for e in call.args[1:])
    if 0 <= a <= 1 and c != 0:
        return call
    x, k = call.args[0], 1 - a
    if isinstance(x, Call) and x.op == "mul" and any(isinstance(e, Const) for e in x.args):
        factor, x = x.args if isinstance(x.args[0], Const) else x.args[::-1]  # 1.4 * (y * 0.2) -> 0.28 * y
        k *= number(factor.value)
    if number(float(k)) != k or number(float(a * c)) != a * c:
        return call  # the numbers would be rounded: the form would no longer be exactly equal
    line, offset = Call("mul", (Const(float(k)), x)), float(a * c)
    if offset == 0:
        return line
    return Call("sub", (line, Const(-offset))) if offset < 0 else Call("add", (line, Const(offset)))


def _lr_times(call: Call) -> float | None:
    """``c`` when ``call`` is ``lr * c`` or ``c * lr`` with ``c`` a positive number."""
    if call.op == "mul" and Var("lr") in call.args:
        other = call.args[1] if call.args[0] == Var("lr") else call.args[0]
        if isinstance(other, Const) and other.value > 0:
            return other.value
    return None


def _lr_factor(program: Program) -> float | None:
    """The one ``c`` with every read of ``lr`` in ``program`` inside ``lr * c``, else None."""
    exprs = [a.expr for a in program.body] + list(program.outputs())
    nodes = [n for e in exprs for n in walk(e)]
    factors = [c for n in nodes if isinstance(n, Call) and (c := _lr_times(n)) is not None]
    reads = nodes.count(Var("lr"))
    return factors[0] if factors and len(factors) == reads and len(set(factors)) == 1 else None


def lr_scale(update: sympy.Expr, lr: sympy.Symbol) -> tuple[sympy.Expr, sympy.Expr] | None:
    """``(c, E)`` with ``update = c * lr * E``, ``c`` a positive number chosen so that the
    largest term of ``E`` has coefficient 1 (``lr/5000 * (sign(m) + 0.4602 w)`` ->
    ``(1/5000, sign(m) + 0.4602 w)``); None when some term lacks the factor ``lr``.

    Example:
        >>> from optdsl.symbolic import symbol
        >>> lr, m, w = symbol("lr"), symbol("m"), symbol("w")
        >>> lr_scale(lr / 5000 * (sympy.sign(m) + sympy.Rational(4602, 10000) * w), lr)
        (1/5000, 2301*w/5000 + sign(m))
        >>> lr_scale(lr * m + w, lr) is None
        True
    """
    parts = []
    for term in sympy.Add.make_args(sympy.expand_mul(update, deep=False)):
        c, rest = term.as_coeff_Mul()
        factors = sympy.Mul.make_args(rest)  # 2**(1/3) is a number too
        c *= sympy.Mul(*[f for f in factors if f.is_number])
        rest = sympy.Mul(*[f for f in factors if not f.is_number])
        power = sympy.sympify(rest.as_powers_dict().get(lr, 0))  # lr, or lr**2 (lr * |lr| with lr >= 0)
        if not (power.is_number and power >= 1):
            return None
        k, rest = _monic(rest / lr)
        parts.append((c * k, rest))
    c = abs(max(parts, key=lambda p: (sympy.count_ops(p[1]), abs(p[0])))[0])
    if c == 0:
        return None
    return c, sympy.Add(*[(ci / c) * rest for ci, rest in parts])


def _monic(expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """``(k, E)`` with ``expr = k * E`` and the largest term of each sum in ``expr``'s denominator,
    or under a root there, without a number in front (``g / (1250000 sqrt(v) + 0.0125)`` -> ``(1/1250000,
    g / (sqrt(v) + 1e-8))``, ``1 / cbrt(4 s + 1e-8)`` -> ``(4^(-1/3), 1 / cbrt(s + 2.5e-9))``), so that
    the number joins the lr scaling; ``(1, expr)`` when there is none to take out."""
    numerator, denominator = sympy.fraction(expr)
    k, factors = sympy.Integer(1), []
    for factor in sympy.Mul.make_args(denominator):
        base, power = factor.as_base_exp()
        if isinstance(base, sympy.Add) and power.is_Rational and power > 0:
            # (sympy counts 1/10**8 as an op, v as none: a number is no term to make monic)
            terms = [t for t in sympy.Add.make_args(base) if not t.is_number] or [1]
            largest = max(terms, key=sympy.count_ops)
            c = sympy.Mul(*[f for f in sympy.Mul.make_args(largest) if f.is_number])  # sqrt(2) too
            if c.is_number and c > 0 and c != 1:  # (c > 0: a root of c * x is c's root times x's)
                k *= c ** power
                factor = sympy.expand(base / c) ** power
        factors.append(factor)
    if k == 1:
        return sympy.Integer(1), expr
    return 1 / k, numerator / sympy.Mul(*factors)


def in_new_states(update: sympy.Expr, olds, news) -> tuple[sympy.Expr, dict, list]:
    """``update`` in terms of the states' new values where that is shorter: a new value linear
    in its old one (``m' = 0.1 g + 0.9 m``) lets ``m = (m' - 0.1 g) / 0.9`` be put in, so
    ``0.1 g + 0.9 m`` reads ``m'``. Returns the update over stand-in symbols for the new values,
    the map from each stand-in to its new value, and the new values, each other state's read over
    the stand-ins too where that removes the old value (``v' = interp(g m', v, 0.9)``).

    Example:
        >>> from optdsl.symbolic import symbol
        >>> lr, g, m = symbol("lr"), symbol("g"), symbol("m")
        >>> new_m = g / 10 + 9 * m / 10
        >>> update, stand_in, news = in_new_states(lr * sympy.sign(new_m), [m], [new_m])
        >>> update, stand_in
        (lr*sign(_m), {_m: g/10 + 9*m/10})
    """
    stand_in, news = {}, list(news)
    for i, old in enumerate(olds):
        new = news[i]  # over the stand-ins found so far
        a = sympy.diff(new, old)
        if not a.is_number or a == 0 or sympy.expand(new - a * old).has(old):
            continue
        d = sympy.Dummy(old.name, real=True, nonnegative=old.is_nonnegative)  # m' >= 0 where m is
        back = (d - (new - a * old)) / a
        candidate = update.subs(old, back)
        if not candidate.has(old) and sympy.count_ops(candidate) < sympy.count_ops(update):
            update, stand_in[d] = candidate, new
            for j, other in enumerate(news):
                rewritten = sympy.expand(other.subs(old, back)) if j != i and other.has(old) else other
                if not rewritten.has(old):
                    news[j] = rewritten
    return update, stand_in, news


def _symbolic(base: Program, tuned: sympy.Expr | None) -> tuple[Program, sympy.Expr | None]:
    """Steps 2 and 3: the outputs through sympy, the update over the new state values where
    shorter (so ``update = lr * sign(m)`` after ``m = interp(g, m, 0.57)``), the lr scaling folded."""
    # A state the steps keep >= 0 is simplified as such (``max(-0.6, v)`` is ``v``); the proof of
    # equality (optdsl.equiv) knows the same fact, so such a form can still be shown exact.
    sp = to_sympy(base, nonnegative=nonnegative_states(base))
    uniform, states, kinds = uniform_names(base), set(base.state_names), input_kinds(base)
    # lr >= 0 (every runtime refuses a negative one, and the form is compared at the tuned lr): a
    # search's norm(lr), read |lr|, is lr and joins the lr scaling
    lr = _LR
    outputs = [_best(e, sp.symbols, uniform, states, kinds).xreplace({sp.symbols["lr"]: lr})
               for e in sp.outputs()]
    sp = replace(sp, symbols={**sp.symbols, "lr": lr})
    update, stand_in, news = in_new_states(outputs[0], [sp.symbols[s] for s in base.state_names], outputs[1:])
    split = lr_scale(update, lr)
    scale, inner = split if split is not None else (None, update)
    if tuned is not None and split is not None:  # other reads of lr see the tuned value
        inner, *news = [o.xreplace({lr: tuned}) for o in (inner, *news)]
    inner, *news = map(step_signs, (inner, *news))  # the folding splits cube roots again
    # Each stand-in for a new state value reads back as a placeholder name, put in place below.
    used = names_in(base)
    placeholders = {fresh_name(f"{d.name}_new", used): d for d in stand_in}
    program = from_sympy(replace(sp, symbols={**sp.symbols, **placeholders}).with_outputs([inner, *news]))
    program = _new_values_first(program, {p: d.name for p, d in placeholders.items()})
    if split is None:
        return _with_lr(program, tuned), tuned
    if tuned is None:
        factor = Var("lr") if scale == 1 else Call("mul", (Var("lr"), Const(float(scale))))
        return program.with_body(program.body, update=Call("mul", (factor, program.update))), None
    update = Call("mul", (Var("lr"), program.update))
    return _with_lr(program.with_body(program.body, update=update), scale * tuned), scale * tuned


def _new_values_first(program: Program, placeholders: dict[str, str]) -> Program:
    """Each placeholder (the new value of a state, read by the update) replaced by the state
    itself, assigned as early as what it reads allows, after the states placed before it (the
    paper's order, ``m`` then ``v``): ``m = interp(g, m, 0.57); update = lr * sign(m)``.
    Raises ValueError where a later line still needs the old value."""
    body, update = list(program.body), program.update
    news = dict(zip(program.state_names, program.new_states))
    floor = 0  # after the states placed so far
    for placeholder, state in _readers_first(placeholders, news):
        readers = [i for i, a in enumerate(body) if placeholder in free_vars(a.expr)]
        value = news[state]
        temporaries = free_vars(value) - {"w", "g", "lr", "step", *news, *placeholders,
                                          *(h.name for h in program.hypers)}
        needed = [i + 1 for i, a in enumerate(body) if a.target in temporaries or state in free_vars(a.expr)]
        at = min(max([floor, *needed]), readers[0] if readers else len(body))
        later = [a.expr for a in body[at:]] + [update] + [e for s, e in news.items() if s != state]
        if not temporaries <= {a.target for a in body[:at]} or any(state in free_vars(e) for e in later):
            raise ValueError(f"the update reads the new {state} where a later line reads the old one")
        floor = at + 1
        mapping = {placeholder: Var(state)}
        body = body[:at] + [Assign(state, value)] + [replace(a, expr=substitute(a.expr, mapping))
                                                     for a in body[at:]]
        update = substitute(update, mapping)
        news = {s: Var(state) if s == state else substitute(e, mapping) for s, e in news.items()}
    return program.with_body(body, update=update, new_states=[news[s] for s in program.state_names])


def _readers_first(placeholders: dict[str, str], news: dict[str, Expr]) -> list[tuple[str, str]]:
    """The placeholders in the order their states are placed: a state whose new value reads
    another's placeholder first (``v = interp(g * m_new, v, b)`` before ``m``), so that the state it
    reads is then assigned above it. Raises ValueError for new values that read each other."""
    pending, order = dict(placeholders), []
    while pending:
        ready = [p for p in pending if not any(p in free_vars(news[s]) for q, s in pending.items() if q != p)]
        if not ready:
            raise ValueError("new state values that read each other")
        order += [(p, pending.pop(p)) for p in ready]
    return order


def _clip(call: Call) -> Expr:
    """``max(-abs(c), min(abs(c), x))`` or ``min(abs(c), max(-abs(c), x))`` (clip's meaning, in any
    argument order) -> ``clip(x, c)``."""
    if call.op not in ("max", "min"):
        return call
    inner = "min" if call.op == "max" else "max"
    for bound, rest in (call.args, call.args[::-1]):
        if not (isinstance(rest, Call) and rest.op == inner):
            continue
        for limit, x in (rest.args, rest.args[::-1]):
            high, low = (limit, bound) if call.op == "max" else (bound, limit)
            if isinstance(high, Call) and high.op == "abs" and low == Call("neg", (high,)):
                return Call("clip", (x, high.args[0]))
    return call


def _square(call: Call) -> Expr:
    """``x * x`` -> ``square(x)``, as sympy's forms print it, so that every form reads the same."""
    return Call("square", call.args[:1]) if call.op == "mul" and call.args[0] == call.args[1] else call


def _main_term_first(expr: Expr) -> Expr:
    """``a + b`` as ``b + a`` when ``b`` is the bigger term (``sign(m) + 0.46 * w``), and
    ``lr * (m / sqrt(v))`` as ``lr * m / sqrt(v)`` (equal in real arithmetic)."""
    size = lambda e: sum(isinstance(n, Call) for n in walk(e))
    if isinstance(expr, Call) and expr.op == "add" and size(expr.args[1]) > size(expr.args[0]):
        return Call("add", expr.args[::-1])
    if isinstance(expr, Call) and expr.op == "mul":
        left, right = (_main_term_first(a) for a in expr.args)
        if isinstance(right, Call) and right.op == "div":
            return Call("div", (Call("mul", (left, right.args[0])), right.args[1]))
        return Call("mul", (left, right))
    return expr


def _named(program: Program) -> Program:
    """Step 4: the update as a statement ``update = ...``, each new state value as a statement
    ``m = ...`` (where no later line reads the old value), states named ``m`` or ``v``, temporaries
    computed from ``g`` alone named ``g``, the others ``t1``, ``t2``..."""
    # sympy names |lr| when clip(g, lr) reads it twice: put it back and read clip's form as clip.
    atoms_abs = {a.target: a.expr for a in program.body if isinstance(a.expr, Call) and a.expr.op == "abs"
                 and not isinstance(a.expr.args[0], Call) and a.target not in program.state_names}
    program = program.with_exprs(lambda e: map_calls(map_calls(substitute(e, atoms_abs), _clip), _square))
    program = eliminate_dead_code(fold(program))
    body = list(program.body)
    used = names_in(program)
    update = _main_term_first(program.update)
    if "update" in used:  # the searched program's own `update` lines become temporaries
        body, update = _renamed_targets(body, update, "update", used)
    body.append(Assign("update", update))
    news = list(program.new_states)
    pending = {s.name: e for s, e in zip(program.states, news) if e != Var(s.name)}
    while pending:  # a state is reassigned once no other pending value reads its old value
        ready = [n for n in pending if not any(n in free_vars(e) for m, e in pending.items() if m != n)]
        if not ready:
            break
        name = ready[0]
        body.append(Assign(name, pending.pop(name)))
    outs = [Var(s.name) if s.name not in pending else pending[s.name] for s in program.states]
    named = program.with_body(body, update=Var("update"), new_states=outs)
    named = _rename_states(named)
    if op_count(named) <= SYMBOLIC_LIMIT:  # renaming is quadratic in the number of temporaries
        named = _rename_temporaries(named)
    validate(named)
    reparsed = parse(to_source(named, doc=False), named.filename, named.name)
    if reparsed != named:
        raise ValueError("the readable form does not read back as itself")
    return named


def _renamed_targets(body: list, update: Expr, name: str, used: set[str]) -> tuple[list, Expr]:
    """Every assignment to ``name`` given a fresh name, in order (a name may be reassigned): the
    body and the update reading them; a last line that is the update itself is returned as it."""
    current: dict[str, Expr] = {}
    out = []
    for a in body:
        expr = substitute(a.expr, current)
        if a.target == name:
            fresh = fresh_name("t", used)
            used.add(fresh)
            current[name] = Var(fresh)
            out.append(replace(a, target=fresh, expr=expr))
        else:
            out.append(replace(a, expr=expr))
    update = substitute(update, current)
    if isinstance(update, Var) and out and out[-1].target == update.name:
        update = out.pop().expr
    return out, update


def _rename(program: Program, mapping: dict[str, str]) -> Program:
    """Every name in ``mapping`` renamed (simultaneously), in states, targets and reads."""
    as_vars = {k: Var(v) for k, v in mapping.items()}
    body = [replace(a, target=mapping.get(a.target, a.target), expr=substitute(a.expr, as_vars))
            for a in program.body]
    states = tuple(replace(s, name=mapping.get(s.name, s.name)) for s in program.states)
    return program.with_body(body, update=substitute(program.update, as_vars),
                             new_states=[substitute(e, as_vars) for e in program.new_states],
                             states=states)


def _rename_states(program: Program) -> Program:
    """States named by their role, as the paper names them: a second moment is ``v`` (the op
    table's range facts keep it >= 0, ``interp(g*g, v, 0.999)``, or it is even in ``g``, as
    ``interp(tanh(g) * g, v, 0.999)``, whose sign no range fact shows), any other ``m``; where the
    role's name is taken, the next free one of ``m``, ``v``, else the state's own name."""
    taken = names_in(program) - set(program.state_names)
    second = nonnegative_states(program, values=program.hyper_defaults) | _even_in_g(program)
    mapping: dict[str, str] = {}
    for state in program.states:
        free = [n for n in STATE_NAMES if n not in taken and n not in mapping.values()]
        role = "v" if state.name in second else "m"
        mapping[state.name] = role if role in free else (free[0] if free else state.name)
    return _rename(program, mapping) if len(set(mapping.values())) == len(mapping) else program


def _rename_temporaries(program: Program) -> Program:
    """Temporaries (not inputs, states, ``update``) renamed in order of definition: one computed
    from ``g`` alone (and uniform values) that is still a gradient, odd in it (``clip(g, lr)``,
    ``g / norm(g)``; not ``g * g``), reassigns ``g`` when nothing later reads the old ``g``; the
    others are ``t1``, ``t2``..."""
    fixed = {"w", "g", "lr", "step", "update", *program.state_names, *(h.name for h in program.hypers)}
    uniform = {"lr", "step", *(h.name for h in program.hypers)}
    temps = list(dict.fromkeys(a.target for a in program.body if a.target not in fixed))
    current, count = program, 0
    for name in temps:
        index = next(i for i, a in enumerate(current.body) if a.target == name)
        a = current.body[index]
        later = [b.expr for b in current.body[index + 1:]] + list(current.outputs())
        reads = free_vars(a.expr)
        if ("g" in reads and reads <= {"g"} | uniform and not any("g" in free_vars(e) for e in later)
                and _odd_in_g(current, a.expr)):
            new = "g"
        else:
            used = names_in(current) - {name}
            while (new := f"t{count + 1}") in used:
                count += 1
            count += 1
        if new != name:
            current = _rename_after(current, index, name, new)
    return current


_PROBE_G = np.array([-3.0, -0.7, -1e-3, 0.0, 2e-4, 0.4, 1.5, 40.0])  # gradients of every size and sign


def _runs(program: Program, scales: tuple[float, ...], steps: int) -> list[list[dict]] | None:
    """Per gradient scale ``k``, the program's outputs (``update`` and each new state) at each of
    ``steps`` steps for gradients ``k G_t`` (``G_t`` the probe rolled by t; w held at 1), at the
    hyperparameters' defaults and lr 0.01 (float64); None where the interpreter refuses."""
    lr = {} if "lr" in program.hyper_defaults else {"lr": 0.01}
    interp = Interpreter(program, dtype=np.float64, **lr)
    params = {"w": np.ones_like(_PROBE_G)}
    runs = []
    try:
        with np.errstate(all="ignore"):
            for k in scales:
                state, seen = interp.init(params), []
                for t in range(1, steps + 1):
                    update, state = interp.updates(params, {"w": k * np.roll(_PROBE_G, t)}, state, t)
                    seen.append({"update": update["w"], **state["w"]})
                runs.append(seen)
    except DslError:
        return None
    return runs


def _odd_in_g(program: Program, expr: Expr) -> bool:
    """Is ``expr`` (of ``g`` and uniform values) odd in ``g``, ``f(-g) = -f(g)``, at the
    hyperparameters' defaults and lr 0.01 on a few gradients (nan where the other is)?"""
    probe = program.with_body([], update=expr, new_states=[Var(s.name) for s in program.states])
    runs = _runs(probe, (1.0, -1.0), 3)
    return runs is not None and _agree([r["update"] for r in runs[1]], [-r["update"] for r in runs[0]])


def _even_in_g(program: Program) -> frozenset[str]:
    """The states whose values over three steps are even in ``g`` (the same for ``-g``) and move
    with it (not what a zero gradient gives): second moments, whatever their form."""
    runs = _runs(program, (1.0, -1.0, 0.0), 3)
    if runs is None:
        return frozenset()
    plus, minus, zero = runs
    return frozenset(s.name for s in program.states
                     if _agree([r[s.name] for r in plus], [r[s.name] for r in minus])
                     and not _agree([r[s.name] for r in plus], [r[s.name] for r in zero]))


def _agree(xs: list, ys: list) -> bool:
    """Do two runs' values agree step by step, to rounding (nan where the other is)?"""
    return all(np.allclose(x, y, rtol=1e-12, atol=0, equal_nan=True) for x, y in zip(xs, ys))


def _rename_after(program: Program, index: int, old: str, new: str) -> Program:
    """Statement ``index`` (assigning ``old``) and the reads of that value (up to the next
    assignment of ``old``) now use ``new``."""
    mapping = {old: Var(new)}
    body = list(program.body)
    body[index] = replace(body[index], target=new)
    for i in range(index + 1, len(body)):
        body[i] = replace(body[i], expr=substitute(body[i].expr, mapping))
        if body[i].target == old:
            return program.with_body(body)
    return program.with_body(body, update=substitute(program.update, mapping),
                             new_states=[substitute(e, mapping) for e in program.new_states])


__all__ = ["SYMBOLIC_LIMIT", "Readable", "lr_scale", "readable"]
