"""Equivalence of two programs: the same update sequence, whatever the gradients, and what kind.

Programs ``a`` and ``b`` are equivalent when, started from their initial states, they hand back
the same update at every step for every sequence of weights and gradients. States may differ in
number, order and names. Hyperparameters are bound to their defaults, or to ``values``. A state
that stays at its start value (``v = sign(v)`` from 0) is that number in both first
(:mod:`optdsl.passes.constant_states`).

The verdict names what was shown (:class:`Equivalence`):

``equal (exact)``
    The same canonical form (:func:`~optdsl.canonical.structural_hash`) after binding and
    dead-code removal, or sympy proves the update and the new states equal under a pairing of the
    states *and* both programs are singular at the same points: the same denominators (factored;
    ``1/x`` and ``1/x**2`` count alike), the same arguments of ``rsqrt``/``log``, the same domains
    of ``arcsin``... So they are equal wherever one is defined in real arithmetic, and undefined
    at the same points (where either may give inf or nan). By induction over steps the update
    sequences are equal. (Real arithmetic, not floats: where rounding decides a comparison,
    ``tanh(w) < 1`` is false in floats from w = 19.1, or a factor underflows, as in ``sign(g *
    exp(-1000 w * w))``, their float values can differ.) A state that starts at 0 or 1 and whose
    new value the op table's range facts show >= 0 whenever it is stays >= 0, and sympy is told so
    (``max(-0.6, v)`` is ``v``). Where a nan can reach a finite value, the proof is checked by the
    nan trial of ``tested`` below: a nan or inf gradient tells ``not (g < 0)`` from ``g >= 0`` and
    ``where(isfinite(g * 0), g, 0)`` from ``g``, which are then equal (generic: wherever every value
    is finite).
``equal (generic: ...)``
    sympy proves them equal, but one program divides by a value (or takes the log, rsqrt... of
    one) that the other does not: equal wherever none of those arguments is zero (or outside the
    op's domain). The paper's ``m / sqrt(m*m) = sign(m)`` is of this kind (it differs at m = 0),
    and so is ``lr*g/g = lr``. The detail lists the singular arguments and, where the tested
    trajectories (below) hit one, where the two differ.
``equal (tested: ...)``
    No proof (or none within :data:`PROVE_SECONDS`); both run through the reference interpreter
    (float64) on random weights (the first trial's first one starting at 0, as a bias does) and
    gradients for ``steps`` steps and ``trials`` seeds, on a 1-d, a 2-d and a 3-d parameter
    together (and a shape for each shape variant those do not reach, ``size(w) >= 128``:
    :func:`covering_shapes`), the gradients of each seed at a scale of its own (1, 30,
    0.03: a threshold such as ``sign(0.1 g + 1.4)`` shows), those of the second seed and its
    weights rounded to one decimal (a floor or comparison of the binary values can differ from the
    same of decimals, which is how sympy reads literals: ``g // 0.1`` is 236 at 23.7,
    ``floor(10 g)`` 237). A quarter of the gradient coordinates
    are exactly 0 at every step (a constant input feature) and a fifth more at random steps, so a
    0/0 shows. Where a nan can reach a finite value in either program (a nan guard such as Tiger's
    ``amax(g != g)``, a comparison, ``where``: :func:`~optdsl.symbolic.nan_sensitive`), which a
    proof in real arithmetic cannot see, one more trial puts a nan, an inf or a -inf into one
    gradient coordinate of each parameter every third step. Updates agree to a
    relative tolerance; nan counts as agreement only at the same places, and a run whose updates
    are mostly non-finite is no evidence (``undecided``).
``different``
    With a counterexample: the step, the shape, both updates. A proof is checked against the
    tested trajectories: where the updates differ and both are finite, on finite gradients, sympy
    was wrong (its assumptions took ``atan`` of a 0/1 value as positive) and the verdict is this.

Which ops are singular, and at which argument, is read off each op's numpy form (an argument
is singular where changing it alone turns a finite result into inf or nan), so the op table
stays the one source.

Example:
    >>> from optdsl import load, parse
    >>> lion2 = parse(load("lion").source.replace("beta2=0.99", "beta2=0.9"))
    >>> str(equivalent(load("lion"), lion2))
    'different'
    >>> a = parse("def f(w, g, lr=0.1):\\n    return lr * g / g\\n")
    >>> b = parse("def f(w, g, lr=0.1):\\n    return lr + 0 * g\\n")
    >>> equivalent(a, b).kind
    'generic'
"""

from __future__ import annotations

import cmath
import contextlib
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import sympy
from sympy.core.function import AppliedUndef

from .errors import DslError
from .interpreter import Interpreter
from .ir import Call, Const, Expr, Program, substitute, walk
from .passes import eliminate_constant_states, eliminate_dead_code, fold, variants
from .symbolic import (
    expr_to_sympy,
    nan_sensitive,
    nonnegative_states,
    number,
    only_at_zero,
    sign_rewrite,
    singular_args,
    step_powers,
    symbol,
    to_sympy,
)
from .time_limit import time_limit
from .typecheck import input_kinds

SHAPES = ((7,), (5, 6), (2, 3, 4))
RTOL = 1e-7
MAX_BIJECTIONS = 120
SIMPLIFY_LIMIT = 80  # sympy.simplify is tried on differences at most this large
PROVE_LIMIT = 800  # ops in both programs together; beyond, sympy's inlined forms grow too large
DEAD_FRACTION = 0.25  # gradient coordinates that are 0 at every step (a constant input feature)
ZERO_FRACTION = 0.2  # and coordinates that are 0 at a given step
# The gradients' scale in trial k is GRADIENT_SCALES[k % 3]: programs that differ only past a
# threshold (sign(0.1 g + 1.38) against sign(0.1 g + 0.76), arctanh of a momentum) agreed at scale 1
GRADIENT_SCALES = (1.0, 30.0, 0.03)
MIN_FINITE = 0.5  # a tested run is evidence only if this share of the compared values is finite
PROVE_SECONDS = 10  # sympy's proof may take minutes on some expressions; then testing decides
GENERIC = "wherever no denominator, sqrt or log argument is zero"


@dataclass(frozen=True)
class Equivalence:
    """The verdict. ``kind`` is ``exact``, ``generic``, ``tested`` (equal), ``different`` or
    ``undecided`` (not shown equal); ``detail`` says how; ``counterexample`` where they differ;
    ``where`` what a generic equality leaves out."""

    equal: bool
    kind: str
    detail: str = ""
    counterexample: str | None = None
    where: str = GENERIC

    @property
    def method(self) -> str:
        """``symbolic`` (proved) or ``tested`` (run on trajectories)."""
        return "symbolic" if self.kind in ("exact", "generic") else "tested"

    def __str__(self) -> str:
        if self.kind == "exact":
            return "equal (exact)"
        if self.kind == "generic":
            return f"equal (generic: {self.where})"
        if self.kind == "tested":
            return f"equal (tested: {self.detail})"
        return self.kind

    def __bool__(self) -> bool:
        return self.equal


def bound(program: Program, values: dict[str, float] | None) -> tuple[Program, dict[str, float]]:
    """``program`` without dead code, ignoring ``keep`` (only updates count here), and without
    the states that stay at their start value (:mod:`optdsl.passes.constant_states`), and its
    hyperparameter values: the defaults, overridden by ``values``.

    Example:
        >>> from optdsl import load, parse, to_source
        >>> bound(load("lion"), {"beta2": 0.9})[1]
        {'lr': 0.0001, 'beta1': 0.9, 'beta2': 0.9, 'weight_decay': 0.0}
        >>> p = parse("def f(w, g, n: scalar(keep=True), lr=0.1):\\n    n = n + 1\\n    return lr * g, n\\n")
        >>> print(to_source(bound(p, None)[0]), end="")
        def f(w, g, lr=0.1):
            return lr * g
    """
    # (an exact sympy number stays one: the proof reads it as it is, the trajectories as a float)
    binding = {**program.hyper_defaults, **{k: v if isinstance(v, sympy.Basic) else float(v)
                                             for k, v in (values or {}).items()
                                             if k in program.hyper_defaults or k == "lr"}}
    unkept = replace(program, states=tuple(replace(s, keep=False) for s in program.states))
    floats = {k: float(v) for k, v in binding.items()}
    return eliminate_constant_states(eliminate_dead_code(unkept), floats), binding


def _trial_value(atom: sympy.Expr, sign: int, p: int, q: int) -> sympy.Expr:
    """A value ``atom`` may take, from a draw: ``sign * p / q``; ``p`` for the step count (a positive
    integer: at ``step = 41/73``, ``(-0.6698) ** step`` is complex, and sympy spent minutes on the
    cube roots of such numbers), ``p / q`` for a value known to be >= 0."""
    if atom.is_integer and atom.is_positive:
        return sympy.Integer(p)
    return sympy.Rational(p if atom.is_nonnegative else sign * p, q)


def _surely_nonzero(expr: sympy.Expr) -> bool:
    """``expr`` evaluated to 30 digits at a few rational points (reductions and other
    uninterpreted functions taking values of their own) is clearly not 0 at one of them: then no
    proof is needed, and sympy.simplify, which can take minutes on logs of numbers, is skipped.
    A zero at every point proves nothing; sympy decides then."""
    atoms = sorted(expr.atoms(AppliedUndef) | expr.free_symbols, key=sympy.default_sort_key)
    for trial in range(3):
        rng = random.Random(trial)
        draws = {a: (rng.choice((-1, 1)), rng.randint(1, 97), rng.randint(1, 89)) for a in atoms}
        point = {a: _trial_value(a, *d) for a, d in draws.items()}
        try:
            value = complex(expr.xreplace(point).evalf(30))
            size = complex(sum(abs(t) for t in sympy.Add.make_args(sympy.expand(expr.xreplace(point)))).evalf(30))
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if cmath.isfinite(value) and cmath.isfinite(size) and abs(value) > 1e-25 * max(1.0, abs(size)):
            return True
    return False


def _is_zero(expr: sympy.Expr) -> bool:
    if expr == 0:
        return True
    if _surely_nonzero(expr):
        return False
    expanded = sympy.expand(expr)
    if expanded == 0:
        return True
    # over one denominator: c (a g + b m) / X - (c a g + c b m) / X is too long to simplify
    if sympy.expand(sympy.fraction(sympy.together(expr))[0]) == 0:
        return True
    if sympy.count_ops(expanded) <= SIMPLIFY_LIMIT:
        return sympy.simplify(expanded) == 0
    return False


def _zero_set(e: sympy.Expr) -> frozenset:
    """Factors whose zeros are where ``e`` is zero (up to sign, multiplicity, ``|x|``)."""
    num = sympy.fraction(sympy.together(e))[0]
    out, parts = set(), list(sympy.Mul.make_args(num))
    while parts:  # |x|, x**k (k > 0) and products are zero where their factors are
        part = parts.pop()
        if part.is_number or part.is_nonzero:  # (the step count is >= 1)
            continue
        if isinstance(part, sympy.Abs) or part.is_Mul or (part.is_Pow and part.exp.is_positive):
            parts += sympy.Mul.make_args(part.args[0] if not part.is_Mul else part)
            continue
        factors = [part]
        # Only polynomials are factored: factor_list on exp(a + 1881/2.5e11) - 1 (a search's
        # program) never returned, it factors over the algebraic extension exp(1881/2.5e11)
        if part.is_polynomial(*part.free_symbols):
            with contextlib.suppress(Exception):  # not a polynomial in anything sympy can factor
                factors = [f for f, _ in sympy.factor_list(part)[1]]
        out.update(-f if f.could_extract_minus_sign() else f for f in factors)
    return frozenset(out)


def singularities(program: Program, values: dict[str, float] | None = None,
                  nonnegative: frozenset[str] = frozenset()) -> frozenset:
    """Where ``program`` (its outputs, every name inlined, as sympy expressions of its inputs) may be
    singular: ``("zero", factor)`` for an argument that must not be zero, ``(op, argument)`` for one
    that must lie in ``op``'s domain (``arcsin``). Constant arguments are no condition; the states in
    ``nonnegative`` are known >= 0 (as in :func:`~optdsl.symbolic.to_sympy`). A singular argument
    inside a branch of ``where(c, a, b)`` holds only where that branch is taken: it carries a third
    item, the guards ``((c, True), ...)`` on its way out (``where(n == 0, 1, m / n)`` is finite at
    n = 0, where ``m / n`` is not).

    Example:
        >>> from optdsl import parse
        >>> sorted(singularities(parse("def f(w, g, lr):\\n    return lr * arcsin(g) / (g * w)\\n")), key=str)
        [('arcsin', g), ('zero', g), ('zero', w)]
        >>> p = parse("def f(w, g, v, lr):\\n    v = interp(g*g, v, 0.9)\\n    return lr * g / sqrt(v), v\\n")
        >>> singularities(p, nonnegative=frozenset({"v"}))
        frozenset({('zero', g**2 + 9*v)})
        >>> singularities(parse("def f(w, g, lr):\\n    return lr * where(w == 0, 1, g / w)\\n"))
        frozenset({('zero', w, ((Piecewise((1, Eq(w, 0)), (0, True)), False),))})
    """
    env = {**{n: symbol(n) for n in ("w", "g", "lr", "step", *program.state_names)},
           **{h.name: symbol(h.name) for h in program.hypers},
           **{n: sympy.Symbol(n, nonnegative=True) for n in nonnegative}}
    env.update({k: number(v) for k, v in (values or {}).items()})
    kinds = input_kinds(program)
    inlined: dict[str, Expr] = {}
    for a in program.body:
        inlined[a.target] = substitute(a.expr, inlined)
    as_sympy: dict[int, sympy.Expr] = {}  # by node: inlined names share their subtrees
    out: set = set()
    seen: set = set()

    def sym(e: Expr) -> sympy.Expr:
        if id(e) not in as_sympy:
            as_sympy[id(e)] = expr_to_sympy(e, env, kinds=kinds)
        return as_sympy[id(e)]

    def visit(e: Expr, guards: tuple = ()) -> None:
        if not isinstance(e, Call) or (id(e), guards) in seen:
            return
        seen.add((id(e), guards))
        if e.op == "where":
            c, taken, other = e.args
            visit(c, guards)
            visit(taken, (*guards, (sym(c), True)))
            visit(other, (*guards, (sym(c), False)))
            return
        for i in singular_args(e.op):
            arg = sym(e.args[i])
            if arg.is_number:
                continue
            # singular at 0 (a denominator), or outside a domain (arcsin), or where power's exponent decides
            if only_at_zero(e.op, i):
                found = [("zero", f) for f in _zero_set(step_powers(arg))]
            else:
                found = [(e.op, arg)]
            out.update((*x, guards) if guards else x for x in found)
        for x in e.args:
            visit(x, guards)

    for e in program.outputs():
        visit(substitute(e, inlined))
    return frozenset(out)


def _renamed(item, subs):
    """A :func:`singularities` item (nested tuples of strings, sympy expressions and bools) with
    ``subs`` applied to its expressions."""
    if isinstance(item, tuple):
        return tuple(_renamed(x, subs) for x in item)
    return item.xreplace(subs) if isinstance(item, sympy.Basic) else item


def _bijections(a: Program, b: Program):
    """Maps from b's states to a's, pairing states of the same kind and first value."""
    if len(a.states) != len(b.states):
        return
    group = lambda s: (s.kind, s.init)
    keys = sorted({group(s) for s in a.states})
    if sorted(group(s) for s in a.states) != sorted(group(s) for s in b.states):
        return
    per_key = []
    for k in keys:
        sa = [s.name for s in a.states if group(s) == k]
        sb = [s.name for s in b.states if group(s) == k]
        per_key.append([dict(zip(sb, perm)) for perm in itertools.permutations(sa)])
    for count, combo in enumerate(itertools.product(*per_key)):
        if count >= MAX_BIJECTIONS:
            return
        yield {k: v for m in combo for k, v in m.items()}


def prove(a: Program, b: Program, values_a: dict[str, float] | None = None,
          values_b: dict[str, float] | None = None) -> tuple[str, str] | None:
    """``(kind, how)`` when sympy shows that dead-code-free ``a`` and ``b`` (hyperparameters
    bound to ``values_a``/``values_b``) give the same updates, else None; ``kind`` is
    ``exact`` or ``generic`` (see the module docstring).

    Example:
        >>> from optdsl import parse
        >>> a = parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * m, m\\n")
        >>> b = parse("def f(w, g, k, lr):\\n    k = 0.1 * g + 0.9 * k\\n    return k * lr, k\\n")
        >>> prove(a, b)
        ('exact', 'sympy proves the update and new states equal under k -> m')
    """
    from .canonical import structural_hash
    from .simplify import op_count

    if structural_hash(fold(a, values=values_a)) == structural_hash(fold(b, values=values_b)):
        return "exact", "same canonical form"
    if op_count(a) + op_count(b) > PROVE_LIMIT:
        return None
    # Numbers enter sympy exactly (0.9 -> 9/10), so 1 - 0.9 and 0.1 agree. A state that each
    # program keeps >= 0 from its start is known to be (so ``max(-0.6, v)`` is ``v``): both
    # facts hold along every trajectory, so equality under them is equality of the sequences.
    nn_a, nn_b = nonnegative_states(a, values_a), nonnegative_states(b, values_b)
    sa, sb = to_sympy(a, values=values_a, nonnegative=nn_a), to_sympy(b, values=values_b, nonnegative=nn_b)
    for mapping in _bijections(a, b):
        subs = {sb.symbols[nb]: sa.symbols[na] for nb, na in mapping.items()}
        new_a = dict(zip(a.state_names, sa.new_states))
        new_b = dict(zip(b.state_names, sb.new_states))
        pairs = [(sa.update, sb.update.xreplace(subs))]
        pairs += [(new_a[na], new_b[nb].xreplace(subs)) for nb, na in mapping.items()]
        # Exactly (as they are, or with the signs of the step's powers known: step_powers), or
        # after the rewrites that hold wherever a value is non-zero (x/|x| = sign(x)).
        plain = [_is_zero(x - y) or _is_zero(step_powers(x) - step_powers(y)) for x, y in pairs]
        if not all(z or _is_zero(sign_rewrite(x) - sign_rewrite(y)) for z, (x, y) in zip(plain, pairs)):
            continue
        under = ", ".join(f"{nb} -> {na}" for nb, na in mapping.items())
        how = "sympy proves the update and new states equal" + (f" under {under}" if under else "")
        if nn_a or nn_b:
            kept = [f"{n} ({side})" for side, names in (("a", nn_a), ("b", nn_b)) for n in sorted(names)]
            how += f", with the states that stay >= 0 from their start: {', '.join(kept)}"
        if not all(plain):
            return "generic", how + " using x / |x| = sign(x) and sign(x * y) = sign(x) for y >= 0"
        sing_a = singularities(a, values_a, nn_a)
        sing_b = {_renamed(x, subs) for x in singularities(b, values_b, nn_b)}
        if sing_a == sing_b:
            return "exact", how + ("; both are singular at the same points" if sing_a else "")
        only = sorted({str(x[1]) for x in sing_a ^ sing_b})
        return "generic", how + f"; only one of them is singular where these are zero: {', '.join(only)}"
    return None


def covering_shapes(*programs: Program, shapes=SHAPES) -> tuple[tuple[int, ...], ...]:
    """``shapes``, then for every shape variant of ``programs`` (their shape tests, ``ndim(w) >= 2``,
    ``size(w) >= 128``: :func:`~optdsl.passes.variants`) that none of them runs, the first shape of
    a pool that does: element counts beside each number the tests hold (up to 100,000) and powers of
    10, laid out with 1 to 5 axes. A program that differs only on tensors of 128 elements and more
    was 'equal (tested)' on shapes of at most 30.

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, lr=0.1):\\n    return lr * where(size(w) >= 128, sign(g), g)\\n")
        >>> covering_shapes(p)[len(SHAPES):]
        ((128,),)
    """
    trees = [variants(p) for p in programs]

    def reaches(shape):
        try:
            return {(i, tree.pick(shape)) for i, tree in enumerate(trees)}
        except DslError:  # a test of an axis the shape lacks
            return set()

    # and the decades: a threshold no literal of the test holds (size(w) / 1000 > 1.5)
    sizes = {1, 2, 3, *(10**k for k in range(1, 6))}
    for tree in trees:
        for path in tree.paths():
            for test, _ in path:
                for node in walk(test):
                    if isinstance(node, Const) and 0 <= node.value <= 100_000:
                        sizes |= {max(int(node.value) - 1, 0), int(node.value), int(node.value) + 1}
    pool = [(), (0,)] + [(1,) * axes + (n,) for n in sorted(sizes) for axes in range(5)]
    pool += [(n, 1) for n in sorted(sizes)]  # a test of the first axis
    reached, extra = set().union(*map(reaches, shapes)), []
    for shape in pool:
        new = reaches(shape) - reached
        if new:
            extra.append(shape)
            reached |= new
    return tuple(shapes) + tuple(extra)


def _runnable(program: Program, values, shapes) -> list[tuple[int, ...]]:
    interp = Interpreter(program, **values)
    ok = []
    for shape in shapes:
        try:
            interp.spec(shape)
            ok.append(shape)
        except DslError:
            pass
    return ok


def _difference(x: np.ndarray, y: np.ndarray) -> str:
    """Where two updates differ most, and by how much: |x - y|, 0 where they are equal (the same
    infinity, whose difference is nan) or both nan, inf where one alone is nan.

    Example:
        >>> _difference(np.array([-np.inf, 1.0]), np.array([-np.inf, 2.0]))
        "at index (1,): a's update is 1, b's is 2"
    """
    with np.errstate(invalid="ignore"):  # (inf - inf: masked below)
        gap = np.where((x == y) | (np.isnan(x) & np.isnan(y)), 0.0, np.abs(x - y))
    gap = np.where(np.isnan(gap), np.inf, gap)
    i = np.unravel_index(int(np.argmax(gap)), x.shape)
    return f"at index {tuple(int(k) for k in i)}: a's update is {x[i]:.9g}, b's is {y[i]:.9g}"


def gradients(rng: np.random.Generator, dead: np.ndarray) -> np.ndarray:
    """Normal gradients with exact zeros: on the ``dead`` coordinates and a random fifth
    (:data:`ZERO_FRACTION`).

    Example:
        >>> g = gradients(np.random.default_rng(0), dead=np.arange(8) < 3)
        >>> g.shape, g[:3].tolist()
        ((8,), [0.0, 0.0, 0.0])
    """
    g = rng.normal(size=dead.shape)
    return np.where(dead | (rng.random(dead.shape) < ZERO_FRACTION), 0.0, g)


@dataclass(frozen=True)
class Run:
    """What :func:`trajectories` saw: the first difference (or None) and how many compared
    update values were finite."""

    difference: str | None
    finite: int
    compared: int
    nonfinite: bool = False  # a trial's gradients held nan and inf (a program tests for them)


def trajectories(a: Program, b: Program, values_a: dict[str, float], values_b: dict[str, float],
                 steps: int, trials: int, seed: int, shapes=None, rtol: float = RTOL,
                 finite_in: str = "", nan_trial: bool = True) -> Run:
    """Run both on the same random weights and gradients (with exact zeros, see
    :func:`gradients`); stops at the first update that differs by more than
    ``|u_a - u_b| <= rtol (|u_b| + max |u|)``. ``finite_in="a"`` compares only where a's update is
    finite, ``"both"`` where both are (a generic equality differs at the singular points alone);
    ``nan_trial=False`` leaves out the trial of nan and inf gradients. ``shapes``: by default
    :func:`covering_shapes`, so that every shape variant of either program runs.

    Example:
        >>> from optdsl import parse
        >>> a = parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * m, m\\n")
        >>> b = parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.5)\\n    return lr * m, m\\n")
        >>> trajectories(a, a, {"lr": 0.1}, {"lr": 0.1}, steps=3, trials=1, seed=0)  # 3 x (7 + 30 + 24)
        Run(difference=None, finite=183, compared=183, nonfinite=False)
        >>> trajectories(a, b, {"lr": 0.1}, {"lr": 0.1}, steps=3, trials=1, seed=0).difference.split(",")[0]
        'step 1'
    """
    shapes = covering_shapes(a, b) if shapes is None else shapes
    ok_a, ok_b = _runnable(a, values_a, shapes), _runnable(b, values_b, shapes)
    if ok_a != ok_b:
        shape = next(s for s in shapes if (s in ok_a) != (s in ok_b))
        which = "a" if shape not in ok_a else "b"
        return Run(f"shape {shape}: {which} cannot run on this shape and the other can", 0, 0)
    if not ok_a:
        try:  # why the first fails on the first shape, located in its source
            Interpreter(a, **values_a).spec(shapes[0])
        except DslError as e:
            raise DslError(f"no test shape runs {'it' if a == b else 'either program'}: {e.message}", e.filename,
                           e.line, e.col, e.source, hint=f"tried {list(shapes)}") from None
        raise DslError("no test shape runs either program", hint=f"tried {list(shapes)}")  # (spec raised above)
    ia = Interpreter(a, np.float64, **values_a)
    ib = Interpreter(b, np.float64, **values_b)
    finite = compared = 0
    nonfinite = nan_trial and (nan_sensitive(a) or nan_sensitive(b))
    for trial in range(trials + nonfinite):
        rng = np.random.default_rng([seed, trial])
        # trial 1: weights and gradients of one decimal (23.7, 0.3), where a floor or a comparison
        # of the binary values the program computes can differ from the same of decimals (g // 0.1
        # is 236 at 23.7, floor(10 g) 237): sympy reads the literal 0.1 as 1/10
        grid = (lambda x: np.round(x, 1)) if trial == 1 else (lambda x: x)
        params = {f"p{i}": grid(rng.normal(size=s)) for i, s in enumerate(ok_a)}
        if trial == 0:  # a zero-initialised layer (a bias): |w|, norm(w), w > 0 are 0 at step 1
            params["p0"] = np.zeros_like(params["p0"])
        dead = {n: rng.random(p.shape) < DEAD_FRACTION for n, p in params.items()}
        pa, pb = dict(params), dict(params)
        state_a, state_b = ia.init(pa), ib.init(pb)
        g_scale = GRADIENT_SCALES[trial % len(GRADIENT_SCALES)]
        for t in range(1, steps + 1):
            grads = {n: grid(g_scale * gradients(rng, dead[n])) for n in params}
            if trial == trials and t % 3 == 0:  # the nan guards' trial (after the usual ones: same draws)
                for g in grads.values():
                    if g.size:
                        g.flat[rng.integers(g.size)] = (np.nan, np.inf, -np.inf)[t // 3 % 3]
            ua, state_a = ia.updates(pa, grads, state_a, t)
            ub, state_b = ib.updates(pb, grads, state_b, t)
            for n in params:
                x, y = ua[n], ub[n]
                if finite_in:
                    compared_here = np.isfinite(x) & (np.isfinite(y) if finite_in == "both" else True)
                    x, y = np.where(compared_here, x, 0.0), np.where(compared_here, y, 0.0)
                scale = max(np.max(np.abs(x[np.isfinite(x)]), initial=0.0),
                            np.max(np.abs(y[np.isfinite(y)]), initial=0.0))
                # equal_nan: nan agrees with nan only at the same index.
                if not np.allclose(x, y, rtol=rtol, atol=rtol * scale, equal_nan=True):
                    where = f"step {t}, parameter of shape {x.shape} (trial {trial}), {_difference(x, y)}"
                    return Run(where, finite, compared, nonfinite)
                finite += int(np.count_nonzero(np.isfinite(x)))
                compared += x.size
            with np.errstate(all="ignore"):
                pa = {n: pa[n] - ua[n] for n in params}
                pb = {n: pb[n] - ub[n] for n in params}
    return Run(None, finite, compared, nonfinite)


#: Gradient scales at which :func:`float32_agrees` runs: ``exp(x) - 1`` equals ``expm1(x)``
#: exactly, but float32 rounds it to 0 once a second moment of gradients near 1e-4 is below 6e-8.
FLOAT32_SCALES = (1.0, 1e-3, 1e-6)
#: Share of update values allowed to differ in float32 (an op such as ``sign`` or ``floor`` may
#: turn a one-ulp difference of its argument into a different value).
FLOAT32_MISMATCH = 0.01


def float32_agrees(a: Program, b: Program, values_a: dict[str, float], values_b: dict[str, float],
                   steps: int = 10, seed: int = 0, exact_a: bool = False) -> bool:
    """Do ``a`` and ``b`` compute the same updates in float32, at each of :data:`FLOAT32_SCALES`
    of the gradient (:func:`float32_agreement` at every scale)? Both step the same weights (``a``'s
    updates move them) from the same states' starts; where ``a``'s update is finite, ``b``'s agrees
    to ``|u_a - u_b| <= 1e-3 (|u_b| + max |u_a|)`` but for :data:`FLOAT32_MISMATCH` of the values. Two programs proved equal can still
    differ here: ``exp(x) - 1`` against ``expm1(x)``, ``log(1 + x)`` against ``log1p(x)``.
    ``exact_a``: ``a`` runs in float64 (on the same float32 inputs), so the question is whether
    ``b`` in float32 computes what ``a`` means, its own float32 rounding aside: ``g * g`` does for
    ``g * log2(exp2(g))``, whose float32 value is 10% off at gradients near 1e-6.

    Example:
        >>> from optdsl import parse
        >>> head = "def f(w, g, v, lr):\\n    v = interp(g * g, v, 0.9)\\n"
        >>> a = parse(head + "    return lr * g / expm1(v), v\\n")
        >>> b = parse(head + "    return lr * g / (exp(v) - 1), v\\n")
        >>> float32_agrees(a, a, {"lr": 0.1}, {"lr": 0.1}), float32_agrees(a, b, {"lr": 0.1}, {"lr": 0.1})
        (True, False)
        >>> a = parse("def f(w, g, lr):\\n    return lr * g * log2(exp2(g))\\n")
        >>> b = parse("def f(w, g, lr):\\n    return lr * g * g\\n")
        >>> lr = {"lr": 0.1}
        >>> float32_agrees(a, b, lr, lr), float32_agrees(a, b, lr, lr, exact_a=True)
        (False, True)
    """
    return all(float32_agreement(a, b, values_a, values_b, steps, seed, exact_a))


def float32_agreement(a: Program, b: Program, values_a: dict[str, float], values_b: dict[str, float],
                      steps: int = 10, seed: int = 0, exact_a: bool = False) -> Iterator[bool]:
    """:func:`float32_agrees` scale by scale: for each of :data:`FLOAT32_SCALES` in turn, whether
    ``b`` agrees with ``a`` there (computed as it is asked for: ``all()`` stops at the first that
    does not).

    Example:
        >>> from optdsl import parse
        >>> a = parse("def f(w, g, lr):\\n    return lr * g * log2(exp2(g))\\n")
        >>> b = parse("def f(w, g, lr):\\n    return lr * g * g\\n")
        >>> list(float32_agreement(a, b, {"lr": 0.1}, {"lr": 0.1}))  # exp2(g) is 1 + 7e-7 at g = 1e-6
        [True, True, False]
    """
    shapes = _runnable(a, values_a, SHAPES[:2])
    ia = Interpreter(a, np.float64 if exact_a else np.float32, **values_a)
    ib = Interpreter(b, np.float32, **values_b)

    def agrees_at(k: int, scale: float) -> bool:
        rng = np.random.default_rng([seed, k])
        params = {f"p{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
        dead = {n: rng.random(p.shape) < DEAD_FRACTION for n, p in params.items()}
        state_a, state_b = ia.init(params), ib.init(params)
        for t in range(1, steps + 1):
            grads = {n: (scale * gradients(rng, dead[n])).astype(np.float32) for n in params}
            with np.errstate(all="ignore"):
                ua, state_a = ia.updates(params, grads, state_a, t)
                ub, state_b = ib.updates(params, grads, state_b, t)
                for n in params:
                    x, y = ua[n].astype(np.float64), ub[n].astype(np.float64)
                    top = np.max(np.abs(x[np.isfinite(x)]), initial=0.0)
                    # where a is not finite, b may be (a generic equality: sign(m) for m / |m|)
                    same = np.isclose(x, y, rtol=1e-3, atol=1e-3 * top) | ~np.isfinite(x)
                    if np.count_nonzero(~same) > FLOAT32_MISMATCH * x.size:
                        return False
                params = {n: (params[n] - np.nan_to_num(ua[n])).astype(np.float32) for n in params}
        return True

    for k, scale in enumerate(FLOAT32_SCALES):
        yield agrees_at(k, scale)


def check_values(values: dict[str, float] | None) -> None:
    """Hyperparameter values must be numbers, inf included (a threshold's "off"), not nan: with
    ``lr = nan`` every update is nan, and nan agreeing with nan shows nothing.

    Example:
        >>> check_values({"lr": 0.1, "beta1": 0.9})
        >>> check_values({"max_norm": float("inf")})  # a threshold's "off", as a default may be
        >>> check_values({"lr": float("nan")})
        Traceback (most recent call last):
        ...
        optdsl.errors.DslError: nan value for lr=nan; hyperparameter values must be numbers
    """
    bad = {k: v for k, v in (values or {}).items() if math.isnan(float(v))}
    if bad:
        raise DslError(f"nan value for {', '.join(f'{k}={v}' for k, v in bad.items())}",
                       hint="hyperparameter values must be numbers")


def compare(a: Program, b: Program, values_a: dict[str, float] | None = None,
            values_b: dict[str, float] | None = None, steps: int = 20, trials: int = 3,
            seed: int = 0) -> Equivalence:
    """:func:`equivalent` with each program's own values (a readable form whose ``lr`` folds the
    raw program's scaling, say). Example: ``compare(raw, nice, {"lr": 18.9}, {"lr": 0.00378})``."""
    check_values(values_a)
    check_values(values_b)
    ba, bind_a = bound(a, values_a)
    bb, bind_b = bound(b, values_b)
    try:
        with time_limit(PROVE_SECONDS) as limit:
            proof = prove(ba, bb, bind_a, bind_b)
        # a timeout that a step inside caught (to try a cheaper way) still ends the proof: else where
        # the timer landed would decide the verdict
        proof = None if limit.expired else proof
    except Exception:  # noqa: BLE001 - sympy fails (or runs too long) in many ways; then testing decides
        proof = None
    # A program without a default lr runs with lr = 1.37e-3, not 1e-3: `lr * lr` and the paper's
    # `lr * 0.001` agreed there, and were said equal (tested)
    floats = lambda bind: {"lr": 1.37e-3, **{k: float(v) for k, v in bind.items()}}
    shapes = covering_shapes(ba, bb)  # (each run below would find them anew)
    if proof:  # sympy's assumptions can be wrong (atan of a 0/1 value taken as positive): a
        # difference where both updates are finite, on finite gradients, outweighs any proof
        run = trajectories(ba, bb, floats(bind_a), floats(bind_b), steps, trials, seed, shapes,
                           finite_in="both", nan_trial=False)
        if run.difference:
            return Equivalence(False, "different", "the update sequences differ where both are finite, "
                               f"though sympy found them equal ({proof[1]})", run.difference)
    if proof and proof[0] == "exact":
        if not (nan_sensitive(ba) or nan_sensitive(bb)):
            return Equivalence(True, *proof)
        try:
            # the nan trial alone
            nan_run = trajectories(ba, bb, floats(bind_a), floats(bind_b), steps, 0, seed, shapes)
        except DslError:  # no test shape runs them (dim(w, 4)): the proof stands alone
            return Equivalence(True, *proof)
        if nan_run.difference is None:
            return Equivalence(True, *proof)
        return Equivalence(True, "generic", f"{proof[1]}; a nan or inf gradient tells them apart: "
                           f"{nan_run.difference}", where="wherever every value is finite")
    run = trajectories(ba, bb, floats(bind_a), floats(bind_b), steps, trials, seed, shapes)
    if proof:  # generic: say where the tested trajectories met a point where they differ
        kind, how = proof
        return Equivalence(True, kind, how + (f"; they differ there: {run.difference}" if run.difference else ""))
    if run.difference:
        return Equivalence(False, "different", "the update sequences differ", run.difference)
    if run.finite < MIN_FINITE * run.compared:
        return Equivalence(False, "undecided", f"no symbolic proof, and only {run.finite} of {run.compared} "
                           "compared update values were finite: not evidence")
    detail = (f"{trials + run.nonfinite} trials x {steps} steps on shapes {', '.join(map(str, shapes))}, "
              f"gradients with exact zeros{' (and nan and inf in one trial)' if run.nonfinite else ''}; "
              f"updates agree to {RTOL:g}, relative to each and to the largest")
    return Equivalence(True, "tested", detail)


def equivalent(a: Program, b: Program, values: dict[str, float] | None = None, steps: int = 20,
               trials: int = 3, seed: int = 0) -> Equivalence:
    """Decide whether ``a`` and ``b`` give the same update sequence, and what kind of equality
    was shown (see the module docstring); ``values`` bind hyperparameters in both. Where one
    program has a default ``lr`` and the other none, both run at that one (the other would run at
    1.37e-3); where their defaults differ, a "different" verdict says so.

    Example: ``str(equivalent(load("adamw"), renamed_adamw))`` -> ``'equal (exact)'``.
    """
    values = dict(values or {})
    unknown = set(values) - set(a.hyper_defaults) - set(b.hyper_defaults) - {"lr"}
    if unknown:
        raise DslError(f"neither program has a hyperparameter {', '.join(sorted(unknown))}")
    lrs = [p.hyper_defaults["lr"] for p in (a, b) if "lr" in p.hyper_defaults]
    if "lr" not in values and len(lrs) == 1:
        values["lr"] = lrs[0]
    verdict = compare(a, b, values, values, steps, trials, seed)
    if verdict.kind == "different" and "lr" not in values and len(lrs) == 2 and lrs[0] != lrs[1]:
        verdict = replace(verdict, detail=f"{verdict.detail}, at each program's default lr ({lrs[0]:g} and "
                          f"{lrs[1]:g}; --set lr=X compares them at one)")
    return verdict


__all__ = ["Equivalence", "bound", "compare", "equivalent", "prove", "singularities", "trajectories"]
