"""The symbolic layer: a program as sympy expressions, and sympy expressions back as a program.

:func:`to_sympy` inlines the body, so the update and each state's new value become one sympy
expression of the step's inputs (``w``, ``g``, ``lr``, ``step``, the incoming states and the
hyperparameters, all real symbols; ``step`` a positive integer). Every op means what its
``sympy`` field in the op table says (``sqrt(x) = sqrt(|x|)``, ``interp(x, y, a) = (1 - a) x + a y``);
reductions (``norm``, ``rowmean``, ``global_norm``...) are uninterpreted functions of their
elementwise argument, which is sound because equal elementwise expressions give equal tensors.
Shape facts (``ndim(w)``) are resolved when a ``shape`` is given, else kept as uninterpreted
functions. Numbers become exact rationals of their decimal text, so ``1 - 0.9`` is ``1/10``.
Range facts come from the op table (``norm``, ``rms``, ``global_norm`` are nonnegative; sympy
itself knows ``|x|``, ``x**2``, ``exp``, ``cosh``); a reduction of a value that is the same for
every element folds (``mean(-0.93) = -0.93``, ``rms(c) = |c|``).

:func:`from_sympy` goes back: ``sympy.cse`` names the common subexpressions as statements, and
sums are read back into the language's own ops (``(1 - a) x + a y`` -> ``interp(x, y, a)``,
``x * y**-1`` -> ``x / y``, ``|x|**(1/2)`` -> ``sqrt(x)``).

Example:
    >>> from optdsl import load, to_source
    >>> sp = to_sympy(load("lion"))
    >>> sp.new_states[0]
    beta2*m + g*(1 - beta2)
    >>> print(to_source(from_sympy(sp), doc=False).splitlines()[-1])
        return lr * (weight_decay * w + sign(interp(g, m, beta1))), interp(g, m, beta2)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from functools import cache, reduce

import numpy as np
import sympy
from sympy.core.relational import Relational

from .homogeneity import degree
from .ir import INPUTS, START_VALUES, Assign, Call, Const, Expr, Program, Var, free_vars, made_from, walk
from .ops import COL, GLOBAL, IS_NAN, OPS, REDUCE, ROW, STATIC
from .passes.fold import fold_expr
from .time_limit import time_limit
from .typecheck import ORDER, SCALAR_LIKE, expr_kind, input_kinds, join

_PROBES = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5)


def _finite(op_name: str, args) -> bool:
    return bool(np.all(np.isfinite(OPS[op_name].numpy(*[np.full((1, 1), x) for x in args]))))


@cache
def singular_args(op_name: str) -> tuple[int, ...]:
    """Argument positions where ``op_name`` can turn finite inputs into inf or nan, read off its
    numpy form: position i counts when changing argument i alone, among a few probe values, makes
    a non-finite result finite (``div``: (1,); ``log``: (0,); ``power``: (0, 1); ``mul``: ()).

    Example:
        >>> singular_args("div"), singular_args("log"), singular_args("power"), singular_args("mul")
        ((1,), (0,), (0, 1), ())
    """
    op = OPS[op_name]
    if op.shape == STATIC:
        return ()
    finite = {c: _finite(op_name, c) for c in itertools.product(_PROBES, repeat=op.arity)}
    return tuple(i for i in range(op.arity) if any(
        not ok and any(finite[c[:i] + (x,) + c[i + 1:]] for x in _PROBES) for c, ok in finite.items()))


@cache
def only_at_zero(op_name: str, i: int) -> bool:
    """Is argument ``i`` of ``op_name`` singular at 0 alone (a denominator, ``log``'s argument),
    rather than outside a domain (``arcsin``'s)?

    Example:
        >>> only_at_zero("div", 1), only_at_zero("log", 0), only_at_zero("arcsin", 0)
        (True, True, False)
    """
    at = lambda x: _finite(op_name, [x if j == i else 1.0 for j in range(OPS[op_name].arity)])
    return not at(0.0) and all(at(x) for x in _PROBES if x != 0)


@cache
def absorbs_nan(op_name: str) -> bool:
    """Can ``op_name`` make a number of a nan argument? Read off its numpy form at the probe values:
    comparisons (``nan < 0`` is 0), ``and``/``or``/``not``, ``where``'s condition, ``isfinite``,
    ``power`` (``nan ** 0`` is 1); not ``mul`` or ``sqrt``, which pass a nan on.

    Real arithmetic has no nan and cancels what makes one (``g * 0`` and ``g - g`` are 0, ``not (g
    < 0)`` is ``g >= 0``), so where such an op sees a nan, a proof and a float run can disagree.

    Example:
        >>> absorbs_nan("lt"), absorbs_nan("where"), absorbs_nan("isfinite"), absorbs_nan("mul")
        (True, True, True, False)
    """
    op = OPS[op_name]
    if op.shape == STATIC:
        return False
    with np.errstate(all="ignore"):
        return any(_finite(op_name, [*others[:i], np.nan, *others[i:]])
                   for i in range(op.arity) for others in itertools.product(_PROBES, repeat=op.arity - 1))


def nan_sensitive(program: Program) -> bool:
    r"""Can a nan or inf gradient reach a finite update or state through an op that
    :func:`absorbs_nan` (a nan guard such as Tiger's ``amax(g != g)``, ``isfinite(g * 0)``, ``where(g <
    0, -1, 1)``)? Real arithmetic, and so a proof, cannot see what such an op makes of it; a run
    with nan and inf gradients can. Constants, ``lr``, ``step`` and hyperparameters are never nan.

    Example:
        >>> from optdsl import parse
        >>> nan_sensitive(parse("def f(w, g, lr):\n    return lr * where(g != g, 0, g)\n"))
        True
        >>> nan_sensitive(parse("def f(w, g, lr, b=0.9):\n    return lr * g * (b < 1)\n"))
        False
    """
    tensors = made_from(program, {"w", "g", *program.state_names})  # a temporary of them can be nan too
    return any(isinstance(e, Call) and absorbs_nan(e.op) and any(free_vars(x) & tensors for x in e.args)
               for root in [a.expr for a in program.body] + list(program.outputs()) for e in walk(root))


#: Ops that are nan outside a domain (arcsin, power of a negative base): sympy's forms would be
#: complex there, so where sympy cannot tell that a result is real it stays an uninterpreted,
#: real-valued function of the op's name (every value of the language is real, or nan).
DOMAIN_OPS = frozenset(n for n, o in OPS.items() if o.shape == "elementwise" and o.sympy is not None
                       and any(not only_at_zero(n, i) for i in singular_args(n)))
#: Uninterpreted sympy functions stand for reductions and shape facts; their names are op names.
_FUNCTION_OPS = {name for name, o in OPS.items() if o.shape != "elementwise"} | {"isfinite"} | DOMAIN_OPS


@dataclass(frozen=True)
class SymbolicProgram:
    """A program's outputs as sympy expressions of its inputs.

    ``program`` is the source of states, hyperparameters and name; ``symbols`` maps every input
    name to its sympy symbol; ``update`` and ``new_states`` (in ``program.states`` order) are the
    values the step hands back.
    """

    program: Program
    symbols: dict[str, sympy.Symbol]
    update: sympy.Expr
    new_states: tuple[sympy.Expr, ...]

    def outputs(self) -> tuple[sympy.Expr, ...]:
        """``(update, *new_states)`` as sympy expressions."""
        return (self.update, *self.new_states)

    def with_outputs(self, outputs) -> SymbolicProgram:
        """A copy whose update and new states are ``outputs`` (in :meth:`outputs`' order)."""
        outputs = tuple(outputs)
        return replace(self, update=outputs[0], new_states=outputs[1:])


def symbol(name: str) -> sympy.Symbol:
    """The sympy symbol for input ``name`` (real; ``step`` is a positive integer).

    Example:
        >>> symbol("lr").is_real, symbol("step").is_integer, symbol("step").is_positive
        (True, True, True)
    """
    if name == "step":
        return sympy.Symbol(name, integer=True, positive=True)
    return sympy.Symbol(name, real=True)


def number(value: float) -> sympy.Expr:
    """The exact rational a source literal denotes (``0.1`` -> ``1/10``); NotExpressible for inf or
    nan (a default of ``inf``).

    Example:
        >>> number(0.1), number(2.0), number(1e-08)
        (1/10, 2, 1/100000000)
    """
    if isinstance(value, sympy.Basic):  # already exact (a folded lr: 61.04 * 0.001 / 0.1278)
        return value
    if not math.isfinite(value):  # (sympy's oo is no IEEE inf: its callers fall back, as for any op)
        raise NotExpressible(f"{value} is not a rational number")
    return sympy.Rational(repr(float(value))) if not float(value).is_integer() else sympy.Integer(int(value))


#: the prefix of the symbol naming a counting reduction's argument kind (``Op.counts``)
_TAG = "shape_"


def _fail(msg, hint=None):
    raise NotExpressible(msg)


def expr_to_sympy(expr: Expr, env: dict[str, sympy.Expr], shape: tuple[int, ...] | None = None,
                  kinds: dict[str, str] | None = None) -> sympy.Expr:
    """One IR expression as sympy, with names looked up in ``env``; ``kinds`` (name -> shape,
    see :mod:`optdsl.typecheck`) tags counting reductions with their argument's shape.

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, m, lr):\\n    return lr * m / sqrt(m * m), interp(g, m, 0.9)\\n")
        >>> env = {n: symbol(n) for n in ("g", "m", "lr")}
        >>> expr_to_sympy(p.update, env), expr_to_sympy(p.new_states[0], env)
        (lr*m/Abs(m), g/10 + 9*m/10)
    """
    if isinstance(expr, Const):
        return number(expr.value)
    if isinstance(expr, Var):
        return env[expr.name]
    op = OPS[expr.op]
    if op.shape == STATIC:
        if shape is not None:
            return number(fold_expr(expr, tuple(shape)).value)
        return sympy.Function(op.name)(*[expr_to_sympy(a, env) for a in expr.args])
    args = [expr_to_sympy(a, env, shape, kinds) for a in expr.args]
    factor = sympy.S.One
    if op.shape in (REDUCE, ROW, COL, GLOBAL):  # (a factor leaves an argument's kind as it was)
        factor, args = _factors_out(op, args)
    return factor * _call_to_sympy(op, expr, args, kinds)


def _factors_out(op, args: list[sympy.Expr]) -> tuple[sympy.Expr, list[sympy.Expr]]:
    """``(c^p, args with x for c x)`` where an argument of the reduction ``op`` is a number c times x
    and ``op`` is of degree p in it (:func:`~optdsl.homogeneity.degree`: ``f(c x) = c^p f(x)`` for c >
    0; for c < 0 where ``op`` is even there, ``|c|^p``): ``dot(0.48, 0.0023 w)`` is ``0.0011 dot(1,
    w)`` (which the op table reads as ``sum(w)``), ``rms(0.5 g)`` is ``rms(g) / 2``, ``cosine_sim(0.57 x,
    y)`` is ``cosine_sim(x, y)``.

    Example:
        >>> from optdsl.ops import OPS
        >>> g = symbol("g")
        >>> _factors_out(OPS["norm"], [-3 * g])
        (3, [g])
    """
    factor, out = sympy.S.One, list(args)
    for i, a in enumerate(args):
        p = degree(op.name, i)
        c, x = a.as_coeff_Mul()
        # a number argument beside a tensor one comes out whole: dot(0.48, w) is 0.48 dot(1, w)
        whole = x == 1 and any(not b.is_number for b in args)
        if p is None or c in (0, 1) or (x.is_number and not whole) or not c.is_Number:
            continue
        if c < 0:
            if i not in op.even:
                continue
            c = -c
        factor, out[i] = factor * c ** sympy.Rational(p.numerator, p.denominator), x
    return factor, out


def _call_to_sympy(op, expr: Call, args: list[sympy.Expr], kinds: dict[str, str] | None) -> sympy.Expr:
    """:func:`expr_to_sympy` of ``expr``, a call of ``op``, given its arguments in sympy, ``args``."""
    if (op.same_value is not None and kinds is not None
            and all(expr_kind(a, kinds, _fail) in SCALAR_LIKE for a in expr.args)):
        return op.same_value(*args)  # mean(-0.93) is -0.93: one value, whatever the count
    if op.shape in (REDUCE, ROW, COL, GLOBAL) and kinds is not None and any(
            a == 0 and (degree(op.name, i) or 0) > 0 for i, a in enumerate(args)):
        # sympy reads 0 * g as 0 but would keep norm(0, shape_full) or rowmean(0) unknown, and x /
        # norm(0 * g) singular only where that unknown is 0 (a program nan at every step was "equal
        # (generic)" to one that is 0): a reduction of positive degree in a zero argument is 0 (a
        # mean or rms of an empty tensor aside, where there is no coordinate to update)
        return sympy.S.Zero
    if op.counts and kinds is not None:
        kind = join(*(expr_kind(a, kinds, _fail) for a in expr.args))
        result = op.sympy(*args)  # (dot(1, w) is sum(w))
        return result.func(*result.args, sympy.Symbol(_TAG + kind))  # keeps its range facts
    try:
        result = op.sympy(*args)
    except (TypeError, ValueError) as e:  # e.g. max(arccos(2), x): sympy cannot order complex values
        raise NotExpressible(f"sympy rejects {op.name}{tuple(args)}: {e}") from None
    if op.name in DOMAIN_OPS and not result.is_number and result.is_extended_real is not True:
        return sympy.Function(op.name, real=True)(*args)
    if result.is_number and not result.is_Rational and all(a.is_Rational for a in args):
        # arccos(0.5786) is the one float the language computes (as constant folding does).
        value = float(np.asarray(op.numpy(*[np.float64(float(a)) for a in args])))
        if math.isfinite(value):
            return number(value)
    return result


def to_sympy(program: Program, shape: tuple[int, ...] | None = None,
             values: dict[str, float] | None = None, nonnegative: frozenset[str] = frozenset()) -> SymbolicProgram:
    """The update and every new state value as sympy expressions of the inputs.

    ``shape`` resolves shape facts (``ndim(w)`` -> 2); ``values`` binds hyperparameters to
    (exact) numbers; the states in ``nonnegative`` are symbols sympy knows to be >= 0
    (:func:`nonnegative_states`). Counting reductions carry their argument's shape as a last
    argument (``norm(2*g, shape_full)``). Raises :class:`NotExpressible` where sympy rejects a
    value (``max`` of a complex constant such as ``arccos(2)``, which numpy evaluates to nan).
    Example: for lion, ``new_states[0] == beta2*m + (1 - beta2)*g``.
    """
    names = list(INPUTS) + list(program.state_names) + [h.name for h in program.hypers]
    symbols = {n: symbol(n) for n in dict.fromkeys(names)}
    symbols.update({n: sympy.Symbol(n, nonnegative=True) for n in nonnegative})
    env: dict[str, sympy.Expr] = {**symbols, **{k: number(v) for k, v in (values or {}).items()}}
    kinds = input_kinds(program)
    for a in program.body:
        env[a.target] = expr_to_sympy(a.expr, env, shape, kinds)
        kinds[a.target] = expr_kind(a.expr, kinds, _fail)
    update = expr_to_sympy(program.update, env, shape, kinds)
    new_states = tuple(expr_to_sympy(e, env, shape, kinds) for e in program.new_states)
    return SymbolicProgram(program, symbols, update, new_states)


def nonnegative_states(program: Program, values: dict[str, float] | None = None) -> frozenset[str]:
    """The states that stay >= 0 from their start on: they start at 0 or 1, and the op table's
    range facts show each new value >= 0 whenever these states are (induction over the steps;
    the largest such set; ``values`` binds hyperparameters as in :func:`to_sympy`). ``v = interp(g*g, v, 0.999)`` is one; so is ``m`` in
    ``m = max(-0.6, interp(g*g, m, 0.99))``, where the ``max`` therefore does nothing.

    Example:
        >>> from optdsl import load
        >>> adam = load("adam")
        >>> sorted(nonnegative_states(adam, adam.hyper_defaults)), sorted(nonnegative_states(adam))
        (['v'], [])

    (``beta2`` unbound might be 2, and ``2 v - g*g`` can be negative.)
    """
    kept = frozenset(s.name for s in program.states if s.init in START_VALUES and START_VALUES[s.init] >= 0)
    while kept:
        sp = to_sympy(program, values=values, nonnegative=kept)
        still = frozenset(s.name for s, e in zip(program.states, sp.new_states)
                          if s.name in kept and e.is_nonnegative is True)
        if still == kept:
            return kept
        kept = still
    return kept


def still_at_zero_gradient(program: Program) -> bool:
    """Does a gradient of zeros leave the weights and every state as they are, at every step and
    every value of the hyperparameters: ``update(g = 0) = 0`` and ``s'(g = 0) = s``, as sympy
    writes them (False where it does not show it)? Then a step on the rows a sparse gradient
    touches is the whole step (the torch target's sparse-row path).

    Example:
        >>> from optdsl import load, parse
        >>> lazy = parse("def f(w, g, m, lr):\\n    t = rowmean(abs(g)) != 0\\n"
        ...              "    return where(t, lr * m, 0), where(t, interp(g, m, 0.9), m)\\n")
        >>> [still_at_zero_gradient(p) for p in (load("sgd"), load("momentum"), lazy)]
        [True, False, True]

    (:func:`optdsl.extend.lazy_updates` makes such programs, but its ``ndim(w) >= 2`` test is
    unknown here: each shape path of it answers for itself.)
    """
    try:
        with time_limit(2.0):  # (every torch module build asks: a long program answers False, not late)
            sp = to_sympy(program, values={"g": 0})
            still = [sp.update, *(e - sp.symbols[s] for s, e in zip(program.state_names, sp.new_states))]
            return all(sympy.expand(e) == 0 for e in still)
    except Exception:  # noqa: BLE001 - sympy fails in many ways (inf: no sympy number; w % g at g = 0 is
        return False  # a ZeroDivisionError): then the program is not known to be lazy


# --- generic rewrites -------------------------------------------------------------------------

def generically_positive(e: sympy.Expr) -> bool:
    """Is ``e`` > 0 wherever it is finite and non-zero? (``|x|``, ``x**2``, ``rms(g)``,
    ``1 / sqrt(|v|)``, products of such): the range facts of the op table, through sympy.

    Example:
        >>> x = symbol("x")
        >>> generically_positive(sympy.Abs(x)), generically_positive(x**-2), generically_positive(x)
        (True, True, False)
    """
    if e.is_nonnegative:
        return True
    if isinstance(e, sympy.Pow):
        return generically_positive(e.base) or (e.exp.is_even is True)
    if isinstance(e, sympy.Mul):
        return all(generically_positive(f) for f in e.args)
    return False


def _core(e: sympy.Expr) -> sympy.Expr:
    """What ``e`` is 0 with: ``x`` of ``x``, ``|x|``, ``x ** p`` and ``|x| ** p`` (p > 0)."""
    if isinstance(e, sympy.Pow) and e.exp.is_positive:
        e = e.base
    return e.args[0] if isinstance(e, sympy.Abs) else e


def _drops_from_sign(f: sympy.Expr, others: list[sympy.Expr]) -> bool:
    """May ``sign(f * ...)`` drop ``f``? It is > 0 wherever it is finite and non-zero
    (:func:`generically_positive`), and where it is 0 either it is a denominator (the product is
    singular there: ``1 / sqrt(rms(g))``) or one of ``others`` (the other factors inside the sign
    and beside it) is 0 too: ``sign(x |x|)``, ``|x| ** (1/3) sign(x)``. Not ``sign(g |w|)``, 0 where
    w is."""
    if not generically_positive(f):
        return False
    if isinstance(f, sympy.Pow) and f.exp.is_negative:
        return True
    core = _core(f)
    return any(core in (_core(o), -_core(o)) for o in others)


def sign_rewrite(expr: sympy.Expr) -> sympy.Expr:
    """``x / |x| -> sign(x)``, ``x / |-x| -> sign(x)`` (equal except at x = 0), and a positive
    factor inside ``sign`` dropped where its zeros are singular points or zeros of the rest
    (:func:`_drops_from_sign`): ``sign(x / sqrt(rms(g))) -> sign(x)`` (equal except where the
    root is 0 or not finite), ``sign(x |x|) -> sign(x)``; sympy already drops factors that are
    strictly positive, such as ``exp``.

    Example:
        >>> x, y = symbol("x"), symbol("y")
        >>> sign_rewrite(2 * x / sympy.Abs(-x)), sign_rewrite(sympy.sign(x / sympy.Abs(y)))
        (2*sign(x), sign(x))
        >>> sign_rewrite(sympy.sign(x * sympy.Abs(y)))  # 0 where y is
        sign(x*Abs(y))
    """

    def positive_out(s: sympy.sign, beside=()) -> sympy.Expr:
        factors = sympy.Mul.make_args(s.args[0])
        kept = [f for i, f in enumerate(factors)
                if not _drops_from_sign(f, [*factors[:i], *factors[i + 1:], *beside])]
        return sympy.sign(sympy.Mul(*kept)) if len(kept) < len(factors) and kept else s

    def in_product(mul: sympy.Mul) -> sympy.Expr:
        return sympy.Mul(*[positive_out(f, [o for o in mul.args if o is not f]) if isinstance(f, sympy.sign)
                           else f for f in mul.args])

    def rewrite(mul: sympy.Mul) -> sympy.Expr:
        factors = list(mul.args)
        for i, f in enumerate(factors):
            if isinstance(f, sympy.Pow) and f.exp == -1 and isinstance(f.base, sympy.Abs):
                y = f.base.args[0]
                for j, x in enumerate(factors):
                    if j == i or not x.free_symbols:
                        continue
                    ratio = sympy.cancel(x / y)  # x = r y with r a number: x / |y| = r sign(y)
                    if ratio.is_number and ratio != 0:
                        rest = [z for k, z in enumerate(factors) if k not in (i, j)]
                        return sympy.Mul(ratio, sympy.sign(y), *rest)
        return mul

    expr = expr.replace(lambda e: isinstance(e, sympy.Mul), rewrite)
    expr = expr.replace(lambda e: isinstance(e, sympy.Mul) and e.has(sympy.sign), in_product)
    return expr.replace(lambda e: isinstance(e, sympy.sign), positive_out)


# --- sympy -> IR ---------------------------------------------------------------------------------

class NotExpressible(ValueError):
    """A sympy expression with no faithful spelling in the language (e.g. ``log`` of a value
    that may be negative, since the language's ``log`` acts on ``|x|``)."""


def _finite_real(e: sympy.Expr) -> float:
    """The value of the sympy number ``e`` as a float; NotExpressible where it is complex, nan or
    infinite (the language's numbers are finite reals).

    Example: ``_finite_real(sympy.sqrt(2))`` is 1.4142135623730951."""
    v = complex(sympy.N(e, 17))
    if v.imag != 0 or not math.isfinite(v.real):
        raise NotExpressible(f"{e} is not a finite real number")
    return v.real


def _call(name: str, *args: Expr) -> Expr:
    return Call(name, tuple(args))


def _chain(name: str, items: list[Expr]) -> Expr:
    return reduce(lambda x, y: _call(name, x, y), items)


def step_powers(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with each ``c ** step`` (``c`` a positive number; ``c ** (k step)`` as its k-th
    power) written ``1 / (1 + q)`` for ``c < 1`` and ``1 + q`` for ``c > 1``, ``q`` a positive
    symbol of its own: at every step >= 1 that is what it is, and sympy then knows the sign of
    ``1 - 0.999 ** step`` (so that ``|sqrt(v) / sqrt(1 - c**step)|`` and ``sqrt(|v / (1 - c**step)|)``
    are seen to agree). An identity in ``q`` holds at each step's value, so what it proves holds
    for the program.

    Example:
        >>> step = symbol("step")
        >>> step_powers(1 - sympy.Rational(999, 1000) ** step)
        1 - 1/(_q_999/1000 + 1)
    """
    step = symbol("step")

    def positive_part(power: sympy.Pow) -> sympy.Expr:  # c ** (k step) is (c ** step) ** k
        q = sympy.Symbol(f"_q_{power.base}", positive=True)
        return (1 / (1 + q) if power.base < 1 else 1 + q) ** (power.exp / step)

    return expr.replace(lambda e: isinstance(e, sympy.Pow) and e.base.is_Rational and e.base.is_positive
                        and e.base != 1 and e.exp.has(step) and (e.exp / step).is_Rational, positive_part)


def step_signs(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with each ``sign(x)`` of an ``x`` in the step count alone whose sign
    :func:`step_powers` shows (the same at every step >= 1) as that number: sympy splits
    ``cbrt(v / (1 - 0.999 ** step))`` into ``sign(1 / (0.999 ** step - 1))`` times a root, and
    cannot tell that the sign is -1 (the reader drops the root's ``|1 - 0.999 ** step|`` likewise).

    Example:
        >>> step_signs(sympy.sign(1 / (sympy.Rational(999, 1000) ** symbol("step") - 1)))
        -1
    """
    return expr.replace(lambda e: isinstance(e, sympy.sign) and _step_sign(e.args[0]) is not None,
                        lambda e: sympy.Integer(_step_sign(e.args[0])))


def _step_sign(x: sympy.Expr) -> int | None:
    """1 or -1 where ``x`` is in the step count alone and :func:`step_powers` shows its sign."""
    if x.free_symbols != {symbol("step")}:
        return None
    x = sympy.together(step_powers(x))
    return 1 if x.is_positive else -1 if x.is_negative else None


def _cube_roots(factors: list) -> tuple[list, tuple[list, list]]:
    """The cube roots among a product's ``factors``, as the language's ``cbrt`` reads them: the
    op table spells ``cbrt(x)`` as ``sign(x) * |x| ** (1/3)``, and sympy splits that over a
    product (``cbrt(m / (1.571 d))`` with ``d > 0`` is ``0.86 sign(m) |m| ** (1/3) d ** (-1/3)``).
    Returns the other factors, and the arguments of the cube roots in the numerator and in the
    denominator: ``sign(x)`` with ``|x| ** (1/3)``, and ``x ** (1/3)`` or ``x ** (-1/3)`` for an
    ``x`` sympy knows is >= 0, where ``|x| = x``.

    Example:
        >>> m, d = symbol("m"), sympy.sqrt(sympy.Abs(symbol("v"))) + 1
        >>> _cube_roots([sympy.sign(m), sympy.Abs(m) ** sympy.Rational(1, 3), d ** sympy.Rational(-1, 3)])
        ([], ([m], [sqrt(Abs(v)) + 1]))
    """
    third = sympy.Rational(1, 3)
    rest, top, bottom = list(factors), [], []
    for f in factors:
        if not (isinstance(f, sympy.Pow) and f.exp in (third, -third)):
            continue
        pair = sympy.sign(f.base.args[0]) if isinstance(f.base, sympy.Abs) else None
        if f.exp == third and pair is not None and pair in rest:
            rest = [x for x in rest if x is not f and x != pair]
            top.append(f.base.args[0])
        elif f.base.is_extended_nonnegative:  # (+inf too: its cube root is inf, as cbrt's)
            rest.remove(f)
            (top if f.exp == third else bottom).append(f.base)
    return rest, (top, bottom)


def _positive_factors(arg: sympy.Expr) -> sympy.Expr:
    """``arg`` up to its sign: each negative number among its factors, and each factor in the step
    count alone that :func:`step_powers` shows negative at every step, negated. Under the
    language's |x| (``abs``, ``sqrt``, ``log``) the two are the same, and they read as people
    write them: sympy keeps ``|1 - 0.999**step|`` as ``|0.999**step - 1|``, and a search's
    ``sqrt(v / -1.778)`` is ``sqrt(v / 1.778)`` (a factor's power must be an integer, so the sign
    only moves). The same holds through a function that sympy evaluates as odd (``|arctan(-x)|``
    is ``|arctan(x)|``).

    Example:
        >>> step, v = symbol("step"), symbol("v")
        >>> _positive_factors(v / (sympy.Rational(999, 1000) ** step - 1))
        v/(1 - (999/1000)**step)
        >>> _positive_factors(-v / 2)
        v/2
        >>> _positive_factors(sympy.atan(v / (sympy.Rational(19, 20) ** step - 1)))
        atan(v/(1 - (19/20)**step))
    """
    def positive(f: sympy.Expr) -> sympy.Expr:
        if f.is_number and f.is_negative:
            return -f
        if isinstance(f, sympy.Function) and len(f.args) == 1:
            inner = _positive_factors(f.args[0])
            if inner != f.args[0] and f.func(-inner) == -f.func(inner):  # odd, as sympy evaluates it
                return f.func(inner)
        base, k = (f.base, f.exp) if isinstance(f, sympy.Pow) and f.exp.is_integer else (f, 1)
        if (isinstance(base, sympy.Add) and base.free_symbols == {symbol("step")}
                and sympy.together(step_powers(base)).is_negative):
            return (-base) ** k
        return f

    return sympy.Mul(*map(positive, sympy.Mul.make_args(arg)))


def _ordered(e: sympy.Min | sympy.Max) -> list[sympy.Expr]:
    """The arguments of ``e`` less those :func:`step_powers` shows it never picks: sympy cannot
    order ``1`` and ``0.999**step``, and ``min(1, 0.999 ** step)`` is ``0.999 ** step`` at every step.

    Example:
        >>> _ordered(sympy.Min(1, sympy.Rational(999, 1000) ** symbol("step")))
        [(999/1000)**step]
    """
    written = {step_powers(a): a for a in e.args}
    picked = e.func(*written)
    kept = picked.args if isinstance(picked, e.func) else (picked,)
    return [written[k] for k in kept] if all(k in written for k in kept) else list(e.args)


class _Reader:
    """Reads sympy back into IR. ``uniform`` symbols (lr, step, hyperparameters) are the same
    for every element, so they form the weights of ``interp``; ``states`` are preferred as its
    second argument (the older value of a moving average)."""

    def __init__(self, names: dict[sympy.Symbol, str], uniform: set[sympy.Symbol],
                 states: set[sympy.Symbol] = frozenset(), kinds: dict[sympy.Symbol, str] | None = None):
        self.names, self.uniform, self.states = names, uniform, states
        self.kinds = kinds if kinds is not None else {s: "uniform" if s in uniform else "full" for s in names}

    def kind(self, e: sympy.Expr) -> str:
        """The shape an expression has in the language (the type checker's rules)."""
        if isinstance(e, sympy.Symbol):
            return self.kinds.get(e, "full")
        if e.is_number:
            return "const"
        name = getattr(e.func, "__name__", "")
        op = OPS.get(name) if name in _FUNCTION_OPS else None
        if op is not None and op.shape == GLOBAL:
            return "uniform"
        if op is not None and op.shape in (ROW, COL):
            return op.shape
        if op is not None and op.shape == STATIC:
            return "static"
        k = join(*(self.kind(a) for a in e.args if not _is_tag(a)))
        if op is not None and op.shape == REDUCE:
            return "scalar" if ORDER[k] >= ORDER["scalar"] else k
        return k

    def is_uniform(self, e: sympy.Expr) -> bool:
        return all(s in self.uniform for s in e.free_symbols)

    def read(self, e: sympy.Expr) -> Expr:
        if isinstance(e, sympy.Symbol):
            if e not in self.names:
                raise NotExpressible(f"unknown symbol {e}")
            return Var(self.names[e])
        if isinstance(e, (sympy.logic.boolalg.BooleanTrue, sympy.logic.boolalg.BooleanFalse)):
            return Const(1.0 if bool(e) else 0.0)
        if e.is_number:
            return Const(_finite_real(e))
        if isinstance(e, sympy.Add):
            e = _expm1_terms(e)
            return self.add(e) if isinstance(e, sympy.Add) else self.read(e)
        if e.func == _EXPM1:
            return _call("expm1", self.read(e.args[0]))
        if e.func == IS_NAN:
            x = self.read(e.args[0])
            return _call("ne", x, x)
        if isinstance(e, sympy.Mul):
            return self.mul(e)
        if isinstance(e, sympy.Pow):
            return self.power(e.base, e.exp)
        if isinstance(e, sympy.exp):
            return _call("exp", self.read(e.args[0]))
        if isinstance(e, sympy.log):
            rest = e.args[0] - 1  # log(1 + |x|) is log1p(x), exact in float32 where 1 + |x| rounds
            if isinstance(e.args[0], sympy.Add) and sympy.Integer(1) in e.args[0].args and (
                    isinstance(rest, sympy.Abs) or rest.is_nonnegative):
                return _call("log1p", self.abs_arg(rest, "log1p"))
            return _call("log", self.abs_arg(e.args[0], "log"))
        if isinstance(e, sympy.Abs):
            arg = _positive_factors(e.args[0])  # |1 - 0.999 ** step| is positive: no abs
            return self.read(arg) if _step_sign(arg) == 1 else _call("abs", self.read(arg))
        if (clipped := _clip(e)) is not None:
            return _call("clip", self.read(clipped[0]), self.read(clipped[1]))
        if isinstance(e, (sympy.Max, sympy.Min)):
            return _chain("max" if isinstance(e, sympy.Max) else "min", [self.read(a) for a in _ordered(e)])
        if isinstance(e, sympy.Mod):
            return _call("mod", self.read(e.args[0]), self.read(e.args[1]))
        if isinstance(e, sympy.Piecewise):
            return self.piecewise(e.args)
        if isinstance(e, (Relational, sympy.And, sympy.Or, sympy.Not)):
            return self.condition(e, as_value=True)
        name = _SYMPY_NAMES.get(type(e)) or getattr(e.func, "__name__", "")
        if name in OPS and (name in _FUNCTION_OPS or type(e) in _SYMPY_NAMES):
            sargs = [a for a in e.args if not _is_tag(a)]
            tags = [a.name[len(_TAG):] for a in e.args if _is_tag(a)]
            # A counting reduction must see an argument of its original shape, and a row/col
            # mean a full one: sympy may have simplified `0 * g + 1` to `1`.
            if tags and join(*(self.kind(a) for a in sargs)) != tags[0]:
                raise NotExpressible(f"{name}() of {sargs} lost its argument's shape ({tags[0]})")
            if OPS[name].shape in (ROW, COL) and self.kind(sargs[0]) != "full":
                raise NotExpressible(f"{name}() of a value that is no longer full-shaped")
            args = [self.read(a) for a in sargs]
            if len(args) != OPS[name].arity:
                raise NotExpressible(f"{name} with {len(args)} arguments")
            return Call(name, tuple(args))
        raise NotExpressible(f"no spelling for {type(e).__name__}")

    def abs_arg(self, arg: sympy.Expr, what: str) -> Expr:
        """The language's sqrt/log act on |x|: read ``|x|`` as ``x``, and accept ``x >= 0``."""
        if isinstance(arg, sympy.Abs):
            return self.read(_positive_factors(arg.args[0]))
        if arg.is_extended_nonnegative:  # (+inf too: |inf| is inf)
            return self.read(arg)
        raise NotExpressible(f"{what} of a value that may be negative")

    def add(self, e: sympy.Add) -> Expr:
        # Group terms by their per-element part so `(1 - a) x + a y` reads as interp(x, y, a).
        groups: dict[sympy.Expr, sympy.Expr] = {}
        for term in e.args:
            coeff, rest = self.split(term)
            groups[rest] = groups.get(rest, 0) + coeff
        if list(groups) == [1]:  # only uniform terms: nothing to group
            terms = [(t, sympy.Integer(1)) for t in e.args]
        else:
            terms = [(sympy.factor_terms(c), x) for x, c in groups.items() if c != 0]
        out: list[tuple[int, Expr]] = []  # (sign, expression)
        while (pair := self.interp_pair(terms)) is not None:
            (_cx, x), (cy, y) = pair
            terms = [t for t in terms if t[1] is not x and t[1] is not y]
            out.append((1, _call("interp", self.read(x), self.read(y), self.read(cy))))
        while (pair := self.scaled_average(terms)) is not None:
            (cx, x), (cy, y) = pair
            terms = [t for t in terms if t[1] is not x and t[1] is not y]
            out.append((1, _call("interp", self.product([cx / (1 - cy), x]), self.read(y), self.read(cy))))
        for c, x in terms:
            sign = -1 if c.could_extract_minus_sign() else 1
            c = sign * c
            if x == 1:
                out.append((sign, self.read(c)))
            else:
                out.append((sign, self.product([c, x])))
        if not out:
            return Const(0.0)
        # positive terms first (a - b rather than -b + a), numbers last among each sign, as people
        # write them: sqrt(v) + 1e-08, g * g - 0.94, but 1 - 0.9 ** step
        out.sort(key=lambda t: (-t[0], isinstance(t[1], Const)))
        sign, acc = out[0]
        if sign < 0:
            acc = _call("neg", acc)
        for sign, x in out[1:]:
            acc = _call("add" if sign > 0 else "sub", acc, x)
        return acc

    def interp_pair(self, terms):
        """Two terms ``cx x + cy y`` with ``cx + cy == 1``, ordered as interp(x, y, cy): a moving
        average of x into y (y the older value: a state if one is), else the simpler weight last."""
        for i, (cx, x) in enumerate(terms):
            for cy, y in terms[i + 1:]:
                if x == 1 or y == 1 or sympy.expand(cx + cy - 1) != 0:
                    continue
                key = lambda c, e: (-len(e.free_symbols & self.states), sympy.count_ops(c),
                                    -float(c) if c.is_number else 0)
                return ((cx, x), (cy, y)) if key(cy, y) <= key(cx, x) else ((cy, y), (cx, x))
        return None

    def scaled_average(self, terms):
        """Two terms ``cx x + cy s`` of a state ``s``, with numbers ``0 < cx != 1`` and
        ``0 < cy < 1``: a moving average of a multiple of x, read as interp(k x, s, cy) with
        ``k = cx / (1 - cy)``, one op shorter (``0.9311 v + 0.01771 g^2`` is
        ``interp(0.257 g^2, v, 0.9311)``; ``0.999 v + g^2`` stays)."""
        for cx, x in terms:
            for cy, y in terms:
                if (y in self.states and x != 1 and x is not y and cx.is_number and cy.is_number
                        and cx.is_positive and cx != 1 and cy.is_positive and bool(cy < 1)):
                    return (cx, x), (cy, y)
        return None

    def split(self, term: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
        """``term`` as (uniform coefficient, per-element rest)."""
        factors = term.args if isinstance(term, sympy.Mul) else (term,)
        coeff = [f for f in factors if self.is_uniform(f)]
        rest = [f for f in factors if not self.is_uniform(f)]
        return sympy.Mul(*coeff), sympy.Mul(*rest)

    def mul(self, e: sympy.Mul) -> Expr:
        return self.product(e.args)

    def product(self, factors) -> Expr:
        """A product read as ``c * a * b / (d * e)``, without letting sympy distribute ``c``."""
        flat = [a for f in factors for a in (f.args if isinstance(f, sympy.Mul) else (f,))]
        coeff = sympy.Mul(*[f for f in flat if f.is_number])  # 2**(1/3) is one number, not a power to spell
        rest = [f for f in flat if not f.is_number]
        if _finite_real(coeff) < 0:  # (a complex coefficient, (-1/8) ** 0.5, is no number of ours)
            return _call("neg", self.product([-coeff, *rest]))
        half = sympy.Rational(1, 2)
        roots = [[f for f in rest if isinstance(f, sympy.Pow) and f.exp == sign * half] for sign in (1, -1)]
        if all(len(r) == 1 for r in roots):  # sqrt(a) / sqrt(b) is sqrt(a / b): both are of |x|
            (top,), (bottom,) = roots
            rest = [f for f in rest if f is not top and f is not bottom]
            ratio = _call("div", self.abs_arg(top.base, "sqrt"), self.abs_arg(bottom.base, "sqrt"))
            merged = [_call("sqrt", ratio)]
        else:
            merged = []
        rest, roots = _cube_roots(rest)
        num, den = [], []
        for f in rest:
            if isinstance(f, sympy.Pow) and f.exp.is_number and f.exp.is_extended_real and f.exp < 0:
                den.append(self.power(f.base, -f.exp))
            else:
                num.append(self.read(f))
        top_roots, bottom_roots = ([self.read(x) for x in xs] for xs in roots)
        if len(top_roots) == len(bottom_roots) == 1:  # cbrt(a) / cbrt(b) is cbrt(a / b)
            merged.append(_call("cbrt", _call("div", top_roots[0], bottom_roots[0])))
        else:
            merged += [_call("cbrt", x) for x in top_roots]
            den += [_call("cbrt", x) for x in bottom_roots]
        num += merged
        if coeff != 1:
            num.insert(0, Const(float(coeff)))
        top = _chain("mul", num) if num else Const(1.0)
        return _call("div", top, _chain("mul", den)) if den else top

    def power(self, base: sympy.Expr, exp: sympy.Expr) -> Expr:
        if exp == 1:
            return self.read(base)
        if exp == sympy.Rational(1, 2):
            return _call("sqrt", self.abs_arg(base, "sqrt"))
        if exp == sympy.Rational(-1, 2):
            return _call("rsqrt", self.abs_arg(base, "sqrt"))
        if exp == -1:
            return _call("reciprocal", self.read(base))
        if exp == 2:
            return _call("square", self.read(base))
        if exp == 3:
            return _call("cube", self.read(base))
        if base == 2:
            return _call("exp2", self.read(exp))
        if base == 10:
            return _call("exp10", self.read(exp))
        # sympy leaves a value that may be +inf (sqrt(|a / b|)) only *extended* non-negative
        if exp.is_number and not exp.is_integer and not base.is_extended_nonnegative:
            raise NotExpressible(f"fractional power {exp} of a value that may be negative: {base}")
        return _call("power", self.read(base), self.read(exp))

    def piecewise(self, pieces) -> Expr:
        (value, cond), rest = pieces[0], pieces[1:]
        if cond == sympy.true or not rest:
            return self.read(value)
        if value == 1 and len(rest) == 1 and rest[0][0] == 0:
            return self.condition(cond, as_value=True)
        return _call("where", self.condition(cond, as_value=False), self.read(value), self.piecewise(rest))

    def condition(self, c, as_value: bool) -> Expr:
        """A sympy truth value as IR: 1/0 when ``as_value``, else any value nonzero when true."""
        if isinstance(c, sympy.Symbol):  # a shared truth value, named by cse: 1 or 0
            return self.read(c)
        if isinstance(c, sympy.Ne) and c.rhs == 0 and not as_value:
            return self.read(c.lhs)
        if isinstance(c, Relational) and type(c) in _RELATIONS:
            return _call(_RELATIONS[type(c)], self.read(c.lhs), self.read(c.rhs))
        if isinstance(c, (sympy.And, sympy.Or)):
            return _chain("and" if isinstance(c, sympy.And) else "or",
                          [self.condition(a, as_value) for a in c.args])
        if isinstance(c, sympy.Not):
            return _call("not", self.condition(c.args[0], as_value))
        if c in (sympy.true, sympy.false):
            return Const(1.0 if c == sympy.true else 0.0)
        raise NotExpressible(f"no spelling for condition {c}")


_EXPM1 = sympy.Function("expm1")


def _expm1_terms(e: sympy.Add) -> sympy.Expr:
    """``c exp(x) - c + ...`` with ``c exp(x) - c`` as ``c expm1(x)``: the sympy form of expm1 is
    ``exp(x) - 1``, which float32 rounds to 0 for ``|x| < 6e-8`` (a second moment of rare
    gradients) and computes with few correct digits well above; the language's expm1 does not.

    Example:
        >>> x = sympy.Symbol("x")
        >>> _expm1_terms(2 * sympy.exp(x) - 2 + x)
        x + 2*expm1(x)
    """
    number = sum((a for a in e.args if a.is_number), sympy.Integer(0))
    for term in e.args:
        c, rest = term.as_coeff_Mul()
        if isinstance(rest, sympy.exp) and number != 0 and abs(float(number + c)) <= 1e-6 * abs(float(c)):
            others = [a for a in e.args if a is not term and not a.is_number]
            return sympy.Add(c * _EXPM1(rest.args[0]), number + c, *others)
    return e


def _clip(e: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """``(x, c)`` when ``e`` is clip's form ``max(-|c|, min(x, |c|))`` (in either nesting)."""
    outer, inner = (sympy.Max, sympy.Min) if isinstance(e, sympy.Max) else (sympy.Min, sympy.Max)
    if not isinstance(e, outer) or len(e.args) != 2:
        return None
    for bound, rest in (e.args, e.args[::-1]):
        if isinstance(rest, inner) and len(rest.args) == 2:
            for c, x in (rest.args, rest.args[::-1]):
                lo, hi = (bound, c) if outer is sympy.Max else (c, bound)
                if hi.is_nonnegative and sympy.expand(lo + hi) == 0:
                    return x, (hi.args[0] if isinstance(hi, sympy.Abs) else hi)
    return None


def _is_tag(e) -> bool:
    return isinstance(e, sympy.Symbol) and e.name.startswith(_TAG)


_RELATIONS = {sympy.StrictLessThan: "lt", sympy.LessThan: "le", sympy.StrictGreaterThan: "gt",
              sympy.GreaterThan: "ge", sympy.Equality: "eq", sympy.Unequality: "ne"}
_SYMPY_NAMES = {sympy.sign: "sign", sympy.sin: "sin", sympy.cos: "cos", sympy.tan: "tan",
                sympy.asin: "arcsin", sympy.acos: "arccos", sympy.atan: "arctan", sympy.sinh: "sinh",
                sympy.cosh: "cosh", sympy.tanh: "tanh", sympy.asinh: "arcsinh", sympy.acosh: "arccosh",
                sympy.atanh: "arctanh", sympy.floor: "floor"}


def expr_from_sympy(e: sympy.Expr, symbols: dict[str, sympy.Symbol],
                    uniform: set[str] = frozenset(), states: set[str] = frozenset(),
                    kinds: dict[str, str] | None = None) -> Expr:
    """One sympy expression as IR; ``uniform`` names (hyperparameters, lr, step) count as
    coefficients when reading sums back as ``interp``, whose second argument is preferably one
    of ``states``; ``kinds`` gives each name's shape (default: uniform or full).
    Raises :class:`NotExpressible`.

    Example:
        >>> from optdsl.printer import DslPrinter
        >>> s = {n: symbol(n) for n in ("g", "m", "lr")}
        >>> e = expr_from_sympy((1 - s["lr"]) * s["g"] + s["lr"] * s["m"], s, uniform={"lr"}, states={"m"})
        >>> DslPrinter().doprint(e)
        'interp(g, m, lr)'
    """
    return _reader(symbols, uniform, states, kinds).read(e)


def _reader(symbols, uniform, states, kinds) -> _Reader:
    sym_kinds = None if kinds is None else {symbols[n]: k for n, k in kinds.items() if n in symbols}
    return _Reader({s: n for n, s in symbols.items()}, {symbols[n] for n in uniform if n in symbols},
                   {symbols[n] for n in states if n in symbols}, sym_kinds)


def uniform_names(program: Program) -> set[str]:
    """The names whose value is the same for every element of a tensor: ``lr``, ``step`` and the
    hyperparameters (the ``uniform`` argument of :func:`expr_from_sympy`: they may weigh an interp).

    Example:
        >>> from optdsl import load
        >>> sorted(uniform_names(load("lion")))
        ['beta1', 'beta2', 'lr', 'step', 'weight_decay']
    """
    return {"lr", "step"} | {h.name for h in program.hypers}


def _keep_guarded(replacements, reduced):
    """Undo cse where it named a ``dim(w, i)`` expression: a shared statement would compute it
    outside the ``where`` branch that guards it, for parameters that lack axis i."""
    inline, out = {}, []
    for tmp, value in replacements:  # in dependency order
        value = value.xreplace(inline)
        if value.has(sympy.Function("dim")):
            inline[tmp] = value
        else:
            out.append((tmp, value))
    return out, [r.xreplace(inline) for r in reduced]


def _nonnegative_temps(replacements, reduced):
    """cse's names (only real) swapped, where the value they name is >= 0, for names that say so:
    ``sqrt(t) / sqrt(1 - 0.999 ** step)`` reads as one root only where ``t`` is known >= 0."""
    renamed, out = {}, []
    for tmp, value in replacements:  # in dependency order
        value = value.xreplace(renamed)
        if value.is_extended_nonnegative:
            renamed[tmp] = sympy.Symbol(tmp.name, nonnegative=True)
        out.append((renamed.get(tmp, tmp), value))
    return out, [r.xreplace(renamed) for r in reduced]


def from_sympy(sp: SymbolicProgram) -> Program:
    """``sp`` as a program: ``sympy.cse`` names shared subexpressions ``t1, t2, ...``; a shared
    value that is a state's new value takes the state's name when no later line reads the old one.

    Example: ``from_sympy(to_sympy(p))`` computes what ``p`` computes. Raises
    :class:`NotExpressible` when an expression has no faithful spelling.
    """
    template = sp.program
    used = set(sp.symbols) | {a.target for a in template.body}
    counter = iter(range(1, 10**9))
    temps = sympy.numbered_symbols("_cse", real=True)
    replacements, reduced = sympy.cse(list(sp.outputs()), symbols=temps, optimizations=None)
    replacements, reduced = _nonnegative_temps(*_keep_guarded(replacements, reduced))
    symbols = dict(sp.symbols)
    state_of = {e: s.name for s, e in zip(template.states, sp.new_states)}
    later_reads = [set().union(*[x.free_symbols for _, x in replacements[i + 1:]],
                               *[r.free_symbols for r in reduced]) for i in range(len(replacements))]
    uniform, states = uniform_names(template), set(template.state_names)
    kinds = input_kinds(template)
    body, expanded = [], {}
    for i, (tmp, value) in enumerate(replacements):
        reader = _reader(symbols, uniform, states, kinds)
        body_expr = reader.read(value)
        kind = reader.kind(value)
        expanded[tmp] = value.xreplace(expanded)  # in terms of the inputs only
        state = state_of.get(expanded[tmp])
        if state and sp.symbols[state] not in later_reads[i] and symbols.get(state) is sp.symbols[state]:
            name = state
        else:
            while (name := f"t{next(counter)}") in used:
                pass
            used.add(name)
        symbols[name], kinds[name] = tmp, kind
        body.append(Assign(name, body_expr))
    outs = [expr_from_sympy(e, symbols, uniform, states, kinds) for e in reduced]
    return template.with_body(body, update=outs[0], new_states=outs[1:])


__all__ = [
    "NotExpressible",
    "SymbolicProgram",
    "expr_from_sympy",
    "expr_to_sympy",
    "from_sympy",
    "number",
    "only_at_zero",
    "sign_rewrite",
    "singular_args",
    "step_powers",
    "symbol",
    "to_sympy",
    "uniform_names",
]
