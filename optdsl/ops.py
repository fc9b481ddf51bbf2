"""The op table: every function of the language, defined once.

Each :class:`Op` says how the op is spelled in source, how many arguments it takes, which shape
rule it follows, what it means (numpy and sympy), how it prints (LaTeX, torch, jax, triton, C++) and
whether the search may draw it. The parser, the type checker, the reference interpreter, the
symbolic layer, every code printer, the search's mutation vocabulary and the README's op
reference all read this table; adding an op is adding one entry here.

Conventions (from the search paper): ``sqrt``, ``rsqrt`` and the ``log`` family act on ``|x|``;
``interp(x, y, a) = (1 - a) * x + a * y``; comparisons and logic return 1.0 or 0.0, and
``where(c, a, b)`` picks ``a`` where ``c != 0``.

Shape rules (``Op.shape``):
  - ``elementwise``: result broadcasts its arguments (see :mod:`optdsl.typecheck`).
  - ``reduce``: any value -> one scalar per parameter tensor (norm, rms, mean, ...).
  - ``row`` / ``col``: a full tensor ``(..., R, C)`` -> its mean over the last axis ``(..., R)``
    or over the second-last axis ``(..., C)``; needs ``ndim(w) >= 2``.
  - ``global``: a reduction over every parameter of the model -> one scalar for all.
  - ``static``: a fact about the parameter's shape, known when code is specialised.

Properties a printer needs are fields of the entry, never lists keyed by op name elsewhere:
``infix``/``precedence`` (source spelling), ``truth`` (the value is 1.0/0.0: comparisons, logic,
isfinite), ``python_raises`` (Python's operator raises on some numbers: ``1 / 0``),
``numbers_ok`` (the torch spelling takes Python numbers), ``foreach`` (the ``torch._foreach_*``
calls computing it on lists; ``foreach_tensor_numbers``: they take a number fastest as 0-d
tensors) and ``reduction`` (how a reduction splits into per-chunk or per-tensor totals, combined,
then finished: :class:`Reduction`). ``tests/test_ops_table.py`` checks that every printer spells
every op.

Templates use ``{0}``, ``{1}``... for the printed arguments. Torch templates may call the functions
of ``codegen/runtime/torch_math.py`` (``_sign``), which generated modules and the search's
evaluator define; JAX templates those of ``codegen/runtime/jax_math.py`` (``_root``, a square
root with derivative 0 at 0), which generated modules copy in. Triton templates name ``libdevice``,
which the generated module binds to ``triton.language.extra.libdevice`` (triton 3.x). Backends needing more than a
template (e.g. reductions over lists of tensors) handle the op by its ``shape`` rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy

from .ir import Call, Const, Expr, Var, substitute

ELEMENTWISE, REDUCE, ROW, COL, GLOBAL, STATIC = "elementwise", "reduce", "row", "col", "global", "static"


@dataclass(frozen=True)
class Reduction:
    """How a reduction is computed in pieces (chunks of a tensor, tensors of a model).

    Each piece reduces the elementwise ``terms`` over its elements with ``combine`` (``"sum"`` or
    ``"max"``); the pieces' totals combine the same way; ``finish`` makes the value from the totals
    ``a0, a1, ...`` and the number of elements ``n``. Terms and finish are expressions of the
    language over ``x`` (and ``y``), so every printer spells them with its own printer. On a single
    number (one value per tensor) the reduction is ``finish`` with each ``a_k`` its term and n = 1.

    Example: ``norm`` is ``Reduction((x * x,), "sum", sqrt(a0))``.
    """

    terms: tuple[Expr, ...]
    combine: str
    finish: Expr

    def of_number(self, *xs: Expr) -> Expr:
        """The reduction of one number per tensor ``xs`` (``norm(s) = sqrt(s * s)``), as an expression."""
        env = {"x": xs[0], "y": xs[-1], "n": Const(1.0)}
        env.update({f"a{k}": substitute(t, env) for k, t in enumerate(self.terms)})
        return substitute(self.finish, env)

    def numpy(self, parts: list[list[float]], n: float) -> float:
        """The value from each piece's totals ``parts[piece][k]`` over ``n`` elements (float64)."""
        pick = sum if self.combine == "sum" else lambda v: max(v, default=-math.inf)
        totals = [pick(float(p[k]) for p in parts) for k in range(len(self.terms))]
        return float(evaluate(self.finish, {**{f"a{k}": t for k, t in enumerate(totals)}, "n": float(n)}))

    def totals(self, *xs) -> list[float]:
        """One piece's totals: each term reduced over the elements of numpy arrays ``xs``."""
        env = {"x": xs[0], "y": xs[-1]}
        red = np.sum if self.combine == "sum" else lambda v: np.max(v, initial=-np.inf)
        return [float(red(np.asarray(evaluate(t, env), dtype=np.float64))) for t in self.terms]


def evaluate(expr: Expr, env: dict):
    """``expr`` (elementwise ops only) on numbers or same-shaped arrays bound in ``env``, each op by
    its ``numpy`` meaning.

    Example:
        >>> e = Call("interp", (Var("g"), Var("m"), Const(0.75)))  # (1 - 0.75) g + 0.75 m
        >>> evaluate(e, {"g": np.array([4.0, 8.0]), "m": np.zeros(2)})
        array([1., 2.])
    """
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Var):
        return env[expr.name]
    return OPS[expr.op].numpy(*[evaluate(a, env) for a in expr.args])


@dataclass(frozen=True)
class Op:
    """One function of the language. ``numpy`` is its meaning; everything else is a spelling."""

    name: str
    arity: int
    shape: str
    numpy: Callable
    sympy: Callable | None
    latex: str
    torch: str
    jax: str
    triton: str | None
    doc: str
    infix: str | None = None  # source spelling for binary operators (`+`) and `-x`
    precedence: int = 100  # for printing infix ops: higher binds tighter
    flops: int = 1  # per element, for the cost model
    search: bool = True  # may the search's mutations draw it?
    commutative: bool = False
    truth: bool = False  # the value is a truth value (1.0 / 0.0): comparisons, logic, isfinite
    logic: bool = False  # its operands are read for their truth alone (and, or, not)
    python_raises: bool = False  # Python's own operator raises on some numbers (1 / 0, 10.0 ** 400)
    numbers_ok: bool = False  # the torch spelling takes a Python number in any argument, next to a tensor
    foreach: tuple[str, ...] = ()  # torch._foreach_<f> calls that compute it on lists, applied in turn
    # its binary foreach call, given a Python number, wraps it in a new tensor for every tensor of
    # the list on a CPU (~1.2 us each, torch 2.13): the multi-tensor printer hands it 0-d tensors
    foreach_tensor_numbers: bool = False
    reduction: Reduction | None = None  # how a reduce/row/col/global op is computed in pieces
    # a reduction's sympy value where every argument is a number (a 0-d value in every backend:
    # lr, step, a per-tensor scalar): mean(-0.93) is -0.93, norm(lr) is |lr|, cosine_sim(0.9, step) is 1
    same_value: Callable | None = None
    # a reduction whose value grows with the count of elements it sees (``sum(0 * g + 1)`` is the
    # tensor's size): sympy must know its argument's shape, which it cannot see in ``norm(0 * g + 1)``
    counts: bool = False
    # arguments whose sign the value ignores, bit for bit (it reads |x| or x * x there): an abs()
    # given there is dropped (optdsl.passes.fold), sqrt(abs(g)) being sqrt(g)
    even: tuple[int, ...] = ()
    # C++ spelling (elementwise ops; codegen.cpp_target), over scalars of a floating type T whose
    # arguments are names (so a repeated {0} costs nothing); op_max/op_min propagate nan as numpy does
    cpp: str | None = None
    # Python spelling over float arguments (a generated module's per-step scalars, computed once per
    # step from lr, step and the hyperparameters): the meaning of ``numpy`` up to libm's rounding, or
    # an exception (ZeroDivisionError, OverflowError, ValueError) where IEEE gives inf or nan, on
    # which the caller computes with tensors instead. May call ``math`` and the functions of
    # codegen/runtime/float_math.py. None: no such spelling (the scalars are computed with tensors).
    python: str | None = None
    # ``python`` is IEEE float64 itself on Python floats, never raising (+ - *, comparisons, logic,
    # where): shape arithmetic may be printed in it (codegen/shape_python.py)
    python_exact: bool = False
    # Python spelling in a shape test over shape facts and finite numbers, where no nan and no sign
    # of a zero can show (max, min: Python's builtins; codegen/shape_python.py)
    python_test: str | None = None


def _safe(fn):
    """numpy evaluation with IEEE results (inf/nan) rather than warnings."""

    def wrapped(*args):
        with np.errstate(all="ignore"):
            return fn(*args)

    wrapped.__name__ = getattr(fn, "__name__", "op")
    return wrapped


def _bool(cond, like):
    """A truth value as 1.0/0.0, in the float dtype of the operands."""
    out = np.where(cond, 1.0, 0.0)
    dt = np.result_type(*[a for a in like if isinstance(a, np.ndarray)] or [np.float64])
    return out.astype(dt if np.issubdtype(dt, np.floating) else np.float64)


def _cmp(fn):
    return lambda *a: _bool(fn(*a), a)


#: sympy's value of ``x != x``: real arithmetic calls it 0, but it is how a program asks whether x is
#: nan (Tiger's guard), so it stays a function of x that no simplification can drop
#: (:mod:`optdsl.symbolic` reads it back as ``x != x``).
IS_NAN = sympy.Function("isnan")


def _sym_cmp(rel, np_fn):
    """The comparison as a sympy 1/0, where a comparison of a value with itself that tells a nan from
    every number (``x != x``, ``x == x``, ``x <= x``: numpy's value at nan is not its value at 1) is
    :data:`IS_NAN` (or 1 minus it), not the constant real arithmetic makes it."""
    with np.errstate(invalid="ignore"):
        at_nan, at_number = bool(np_fn(np.nan, np.nan)), bool(np_fn(1.0, 1.0))

    def sym(a, b):
        if a == b and not a.is_number and at_nan != at_number:
            return IS_NAN(a) if at_nan else 1 - IS_NAN(a)
        return sympy.Piecewise((1, rel(a, b)), (0, True))

    return sym


def _mean_last(x):
    return np.sum(x, axis=-1) / np.shape(x)[-1]  # not np.mean: an empty tensor is nan, not a warning


def _mean_second_last(x):
    return np.sum(x, axis=-2) / np.shape(x)[-2]


def _sym_power(a, b):
    """``a ** b`` for sympy; between two numbers whose exact power sympy would take hours to work
    out (``0.999 ** 2.718281828459045`` is a 10**15-th root of a power of 999), left unevaluated,
    so that the symbolic layer takes the float the language computes (as it does for ``arccos(0.5)``).

    Example:
        >>> quarter, e = sympy.Rational(1, 4), sympy.Rational(2718281828459045, 10**15)
        >>> _sym_power(quarter, sympy.Rational(1, 2)), _sym_power(quarter, e).is_Pow
        (1/2, True)
    """
    if a.is_Rational and b.is_Rational and max(abs(b.p), b.q) > 1024:
        return sympy.Pow(a, b, evaluate=False)
    return a**b


# Uninterpreted sympy functions for what sympy cannot see through (reductions over a tensor).
def _sym_fn(name: str, **facts):
    """``facts`` are sympy assumptions that hold for every input (a range fact: ``nonnegative``)."""
    return sympy.Function(name, **facts)


def _dot_sympy(x, y):
    """``dot(x, y)``; ``sum(y)`` where x is 1 (and the other way round): ``dot(1, w)`` is ``sum(w)``."""
    if x == 1 or y == 1:
        return _sym_fn("sum")(y if x == 1 else x)
    return _sym_fn("dot")(x, y)


_OPS: list[Op] = []


def op(name, arity, shape, numpy, sympy_, latex, torch, jax, triton, doc, **kw):
    """Add an :class:`Op` to the table (``op("div", 2, E, np.divide, ...)`` below), its ``numpy``
    meaning wrapped to give IEEE results (inf, nan) without warnings; ``kw`` are the optional
    fields of :class:`Op`.

    Example:
        >>> OPS["div"].numpy(np.array([1.0, 0.0]), np.array([0.0, 0.0]))  # 1 / 0 and 0 / 0, no warning
        array([inf, nan])
    """
    _OPS.append(Op(name, arity, shape, _safe(numpy), sympy_, latex, torch, jax, triton, doc, **kw))


A, B = "{0}", "{1}"
E = ELEMENTWISE

# --- arithmetic (binary operators print infix) ---
op("add", 2, E, np.add, lambda a, b: a + b, "{0} + {1}", "{0} + {1}", "{0} + {1}", "{0} + {1}",
   "x + y", infix="+", precedence=10, commutative=True, numbers_ok=True, foreach=("add",),
   foreach_tensor_numbers=True, cpp="{0} + {1}", python="{0} + {1}", python_exact=True)
op("sub", 2, E, np.subtract, lambda a, b: a - b, "{0} - {1}", "{0} - {1}", "{0} - {1}", "{0} - {1}",
   "x - y", infix="-", precedence=10, numbers_ok=True, foreach=("sub",), foreach_tensor_numbers=True,
   cpp="{0} - {1}", python="{0} - {1}", python_exact=True)
op("mul", 2, E, np.multiply, lambda a, b: a * b, "{0} {1}", "{0} * {1}", "{0} * {1}", "{0} * {1}",
   "x * y", infix="*", precedence=20, commutative=True, numbers_ok=True,
   foreach=("mul",), foreach_tensor_numbers=True, cpp="{0} * {1}", python="{0} * {1}", python_exact=True)
op("div", 2, E, np.divide, lambda a, b: a / b, r"\frac{{{0}}}{{{1}}}", "{0} / {1}", "{0} / {1}",
   "{0} / {1}", "x / y (IEEE: x/0 is inf or nan)", infix="/", precedence=20, numbers_ok=True,
   python_raises=True, foreach=("div",), foreach_tensor_numbers=True, cpp="{0} / {1}", python="{0} / {1}")
op("mod", 2, E, np.mod, lambda a, b: sympy.Mod(a, b), r"{0} \bmod {1}", "_remainder({0}, {1})",
   "_mod({0}, {1})", "_py_mod({0}, {1})", "x mod y, sign of y (Python's %)", infix="%",
   precedence=20, search=False, numbers_ok=True, python_raises=True, cpp="op_mod({0}, {1})",
   python="{0} % {1}")
op("floordiv", 2, E, np.floor_divide, lambda a, b: sympy.floor(a / b),
   r"\left\lfloor {0} / {1} \right\rfloor", "_floor_divide({0}, {1})",
   "_floordiv({0}, {1})", "_py_floordiv({0}, {1})", "floor(x / y)", infix="//", precedence=20,
   search=False, numbers_ok=True, python_raises=True, cpp="op_floordiv({0}, {1})", python="{0} // {1}")
op("power", 2, E, np.power, _sym_power, "{{{0}}}^{{{1}}}", "torch.pow({0}, {1})",
   "jnp.power({0}, {1})", "libdevice.pow({0}, {1})", "x ** y", infix="**",
   precedence=40, flops=8, numbers_ok=True, python_raises=True, foreach=("pow",), cpp="std::pow({0}, {1})",
   python="math.pow({0}, {1})")
op("neg", 1, E, np.negative, lambda a: -a, "-{0}", "-{0}", "-{0}", "-{0}", "-x", infix="-",
   precedence=30, numbers_ok=True, foreach=("neg",), cpp="-{0}", python="-{0}", python_exact=True)
op("max", 2, E, np.maximum, lambda a, b: sympy.Max(a, b), r"\max({0}, {1})", "torch.maximum({0}, {1})",
   "jnp.maximum({0}, {1})", "_nan_max({0}, {1})", "elementwise maximum", commutative=True,
   foreach=("maximum",), cpp="op_max({0}, {1})", python="_fmax({0}, {1})", python_test="max({0}, {1})")
op("min", 2, E, np.minimum, lambda a, b: sympy.Min(a, b), r"\min({0}, {1})", "torch.minimum({0}, {1})",
   "jnp.minimum({0}, {1})", "_nan_min({0}, {1})", "elementwise minimum", commutative=True,
   foreach=("minimum",), cpp="op_min({0}, {1})", python="_fmin({0}, {1})", python_test="min({0}, {1})")
op("interp", 3, E, lambda x, y, a: (1 - a) * x + a * y, lambda x, y, a: (1 - a) * x + a * y,
   r"(1 - {2}) {0} + {2} {1}", "torch.lerp({0}, {1}, {2})", "(1 - {2}) * {0} + {2} * {1}",
   "(1.0 - {2}) * {0} + {2} * {1}", "(1 - a) * x + a * y: moving average of x into y with weight a "
   "(torch runs it as lerp, as torch.optim does: where x, y or a is infinite, nan may come "
   "where this is +-inf, or the reverse)",
   flops=3, cpp="(T(1) - {2}) * {0} + {2} * {1}", python="(1 - {2}) * {0} + {2} * {1}")

# --- unary math (sqrt/log act on |x|, as in the search paper) ---
# sign, arcsinh and cbrt are spelt with codegen/runtime/torch_math.py's functions (torch.sign(nan) is
# 0 where the language keeps nan; torch.asinh and torch.where are slow on CPUs; torch has no cube
# root, and a power of 1/3 rounded to float32 is 12 ulp off at 1e30); expm1, arctanh and arccosh
# too, for torch.compile (its CPU lowering lost digits and range). No foreach for sign;
# the log/sqrt family act on |x|, so their foreach form takes abs first.
_UNARY_FIELDS = {
    **{n: {"foreach": (n,)} for n in ("abs", "exp", "expm1", "sin", "cos", "tan", "sinh", "cosh", "tanh",
                                      "floor")},
    **{n: {"foreach": ("abs", n)} for n in ("sqrt", "rsqrt", "log", "log2", "log10", "log1p")},
    **{n: {"foreach": (n.replace("arc", "a"),)} for n in ("arcsin", "arccos", "arctan")},
    "reciprocal": {"foreach": ("reciprocal",), "python_raises": True},
    "cube": {"numbers_ok": True},
}
for _name in ("abs", "sqrt", "rsqrt", "square", "log", "log2", "log10", "log1p", "cos", "cosh"):
    _UNARY_FIELDS.setdefault(_name, {})["even"] = (0,)
_CPP_UNARY = {  # C++ spellings of the unary ops below (the log/sqrt family on |x|, as the language has it)
    "abs": "std::abs({0})", "sign": "({0} > 0 ? T(1) : ({0} < 0 ? T(-1) : ({0} == 0 ? T(0) : {0})))",
    "sqrt": "std::sqrt(std::abs({0}))", "rsqrt": "T(1) / std::sqrt(std::abs({0}))", "square": "{0} * {0}",
    "cube": "{0} * {0} * {0}", "cbrt": "std::cbrt({0})", "reciprocal": "T(1) / {0}", "exp10": "std::pow(T(10), {0})",
    **{n: f"std::{n}(std::abs({{0}}))" for n in ("log", "log2", "log10", "log1p")},
    **{n: f"std::{n.replace('arc', 'a')}({{0}})" for n in ("exp", "exp2", "expm1", "sin", "cos", "tan", "arcsin",
                                                           "arccos", "arctan", "sinh", "cosh", "tanh", "arcsinh",
                                                           "arccosh", "arctanh", "floor")},
}
_PYTHON_UNARY = {  # Python spellings of the unary ops below, over floats (see Op.python); none for floor
    # (math.floor(-0.0) is the int 0, whose sign is lost) and cbrt (math.cbrt needs Python 3.11); none
    # for clip below (np.clip keeps -0.0 in [-0.0, 0.0], a min of a max does not)
    "abs": "abs({0})", "sign": "_fsign({0})", "sqrt": "math.sqrt(abs({0}))", "rsqrt": "1 / math.sqrt(abs({0}))",
    "square": "{0} * {0}", "cube": "{0} * {0} * {0}", "reciprocal": "1 / {0}", "exp2": "math.pow(2.0, {0})",
    "exp10": "math.pow(10.0, {0})",
    **{n: f"math.{n}(abs({{0}}))" for n in ("log", "log2", "log10", "log1p")},
    **{n: f"math.{n.replace('arc', 'a')}({{0}})" for n in ("exp", "expm1", "sin", "cos", "tan", "arcsin", "arccos",
                                                             "arctan", "sinh", "cosh", "tanh", "arcsinh", "arccosh",
                                                             "arctanh")},
}
_abs = np.abs
for name, fn, sym, lx, tt, jx, tr, doc, fl in [
    ("abs", np.abs, sympy.Abs, r"\left|{0}\right|", "torch.abs({0})", "jnp.abs({0})", "tl.abs({0})", "|x|", 1),
    ("sign", np.sign, sympy.sign, r"\operatorname{{sign}}({0})",
     "_sign({0})", "jnp.where({0} == 0, 0.0, jnp.sign({0}))",
     "tl.where({0} > 0, 1.0, tl.where({0} < 0, -1.0, tl.where({0} == 0, 0.0, {0})))",
     "-1, 0 or 1 (nan stays nan; sign(-0.0) = 0.0)", 1),
    ("sqrt", lambda x: np.sqrt(_abs(x)), lambda x: sympy.sqrt(sympy.Abs(x)), r"\sqrt{{\left|{0}\right|}}",
     "torch.sqrt(torch.abs({0}))", "jnp.sqrt(jnp.abs({0}))", "tl.sqrt(tl.abs({0}))", "sqrt(|x|)", 4),
    ("rsqrt", lambda x: 1 / np.sqrt(_abs(x)), lambda x: 1 / sympy.sqrt(sympy.Abs(x)),
     r"\frac{{1}}{{\sqrt{{\left|{0}\right|}}}}", "torch.rsqrt(torch.abs({0}))", "jax.lax.rsqrt(jnp.abs({0}))",
     "tl.rsqrt(tl.abs({0}))", "1 / sqrt(|x|)", 4),
    ("square", np.square, lambda x: x**2, "{{{0}}}^2", "torch.square({0})", "jnp.square({0})",
     "{0} * {0}", "x * x", 1),
    ("cube", lambda x: x * x * x, lambda x: x**3, "{{{0}}}^3", "({0} * {0} * {0})", "({0} * {0} * {0})",
     "{0} * {0} * {0}", "x ** 3", 2),
    ("cbrt", np.cbrt, lambda x: sympy.sign(x) * sympy.Abs(x) ** sympy.Rational(1, 3), r"\sqrt[3]{{{0}}}",
     "_cbrt({0})", "jnp.cbrt({0})",
     "libdevice.cbrt({0})", "real cube root", 8),
    ("reciprocal", lambda x: np.divide(1.0, x), lambda x: 1 / x, r"\frac{{1}}{{{0}}}", "torch.reciprocal({0})",
     "(1 / {0})", "1.0 / {0}", "1 / x", 1),
    ("exp", np.exp, sympy.exp, "e^{{{0}}}", "torch.exp({0})", "jnp.exp({0})", "tl.exp({0})", "e ** x", 8),
    ("exp2", np.exp2, lambda x: _sym_power(sympy.Integer(2), x), "2^{{{0}}}", "torch.exp2({0})",
     "jnp.exp2({0})", "tl.exp2({0})",
     "2 ** x", 8),
    ("exp10", lambda x: np.power(10.0, x), lambda x: _sym_power(sympy.Integer(10), x),
     "10^{{{0}}}", "torch.pow(10.0, {0})",
     "jnp.power(10.0, {0})", "tl.exp2({0} * 3.321928094887362)", "10 ** x", 8),
    ("expm1", np.expm1, lambda x: sympy.exp(x) - 1, "(e^{{{0}}} - 1)", "_expm1({0})",
     "jnp.expm1({0})", "libdevice.expm1({0})", "e ** x - 1", 8),
    ("log", lambda x: np.log(_abs(x)), lambda x: sympy.log(sympy.Abs(x)), r"\log\left|{0}\right|",
     "torch.log(torch.abs({0}))", "jnp.log(jnp.abs({0}))", "tl.log(tl.abs({0}))", "log(|x|)", 8),
    ("log2", lambda x: np.log2(_abs(x)), lambda x: sympy.log(sympy.Abs(x), 2), r"\log_2\left|{0}\right|",
     "torch.log2(torch.abs({0}))", "jnp.log2(jnp.abs({0}))", "tl.log2(tl.abs({0}))", "log2(|x|)", 8),
    ("log10", lambda x: np.log10(_abs(x)), lambda x: sympy.log(sympy.Abs(x), 10),
     r"\log_{{10}}\left|{0}\right|", "torch.log10(torch.abs({0}))", "jnp.log10(jnp.abs({0}))",
     "tl.log(tl.abs({0})) * 0.4342944819032518", "log10(|x|)", 8),
    ("log1p", lambda x: np.log1p(_abs(x)), lambda x: sympy.log(1 + sympy.Abs(x)),
     r"\log(1 + \left|{0}\right|)", "torch.log1p(torch.abs({0}))", "jnp.log1p(jnp.abs({0}))",
     "libdevice.log1p(tl.abs({0}))", "log(1 + |x|)", 8),
    ("sin", np.sin, sympy.sin, r"\sin({0})", "torch.sin({0})", "jnp.sin({0})", "tl.sin({0})", "sine", 8),
    ("cos", np.cos, sympy.cos, r"\cos({0})", "torch.cos({0})", "jnp.cos({0})", "tl.cos({0})", "cosine", 8),
    ("tan", np.tan, sympy.tan, r"\tan({0})", "torch.tan({0})", "jnp.tan({0})",
     "libdevice.tan({0})", "tangent", 8),
    ("arcsin", np.arcsin, sympy.asin, r"\arcsin({0})", "torch.asin({0})", "jnp.arcsin({0})",
     "libdevice.asin({0})", "inverse sine (nan outside [-1, 1])", 8),
    ("arccos", np.arccos, sympy.acos, r"\arccos({0})", "torch.acos({0})", "jnp.arccos({0})",
     "libdevice.acos({0})", "inverse cosine (nan outside [-1, 1])", 8),
    ("arctan", np.arctan, sympy.atan, r"\arctan({0})", "torch.atan({0})", "jnp.arctan({0})",
     "libdevice.atan({0})", "inverse tangent", 8),
    ("sinh", np.sinh, sympy.sinh, r"\sinh({0})", "torch.sinh({0})", "jnp.sinh({0})",
     "libdevice.sinh({0})", "hyperbolic sine", 8),
    ("cosh", np.cosh, sympy.cosh, r"\cosh({0})", "torch.cosh({0})", "jnp.cosh({0})",
     "libdevice.cosh({0})", "hyperbolic cosine", 8),
    ("tanh", np.tanh, sympy.tanh, r"\tanh({0})", "torch.tanh({0})", "jnp.tanh({0})",
     "libdevice.tanh({0})", "hyperbolic tangent", 8),
    ("arcsinh", np.arcsinh, sympy.asinh, r"\operatorname{{arcsinh}}({0})", "_arcsinh({0})",
     "jnp.arcsinh({0})", "libdevice.asinh({0})", "inverse hyperbolic sine", 8),
    ("arccosh", np.arccosh, sympy.acosh, r"\operatorname{{arccosh}}({0})", "_arccosh({0})",
     "jnp.arccosh({0})", "libdevice.acosh({0})", "inverse hyperbolic cosine (nan < 1)", 8),
    ("arctanh", np.arctanh, sympy.atanh, r"\operatorname{{arctanh}}({0})", "_arctanh({0})",
     "jnp.arctanh({0})", "libdevice.atanh({0})", "inverse hyperbolic tangent", 8),
    ("floor", np.floor, sympy.floor, r"\lfloor {0} \rfloor", "torch.floor({0})", "jnp.floor({0})",
     "tl.floor({0})", "round down", 1),
]:
    op(name, 1, E, fn, sym, lx, tt, jx, tr, doc, flops=fl, search=name not in ("floor",), cpp=_CPP_UNARY[name],
       python=_PYTHON_UNARY.get(name), **_UNARY_FIELDS.get(name, {}))

op("clip", 2, E, lambda x, c: np.clip(x, -_abs(c), _abs(c)),
   lambda x, c: sympy.Max(-sympy.Abs(c), sympy.Min(x, sympy.Abs(c))),
   r"\operatorname{{clip}}({0}, \pm {1})", "torch.clamp({0}, -abs({1}), abs({1}))",
   "jnp.clip({0}, -jnp.abs({1}), jnp.abs({1}))",
   "_nan_min(_nan_max({0}, -tl.abs({1})), tl.abs({1}))", "clamp x into [-|c|, |c|]", flops=2,
   cpp="op_min(op_max({0}, -std::abs({1})), std::abs({1}))", even=(1,))
op("clamp", 3, E, lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi),
   lambda x, lo, hi: sympy.Min(sympy.Max(x, lo), hi), r"\operatorname{{clamp}}({0}, {1}, {2})",
   "torch.minimum(torch.maximum({0}, {1}), {2})", "jnp.minimum(jnp.maximum({0}, {1}), {2})",
   "_nan_min(_nan_max({0}, {1}), {2})", "min(max(x, lo), hi)", flops=2, search=False,
   cpp="op_min(op_max({0}, {1}), {2})", python="_fmin(_fmax({0}, {1}), {2})")

# --- comparisons, logic, selection (1.0 = true, 0.0 = false) ---
for name, sym_src, np_fn, rel, lx in [
    ("lt", "<", np.less, sympy.Lt, "<"), ("le", "<=", np.less_equal, sympy.Le, r"\le"),
    ("gt", ">", np.greater, sympy.Gt, ">"), ("ge", ">=", np.greater_equal, sympy.Ge, r"\ge"),
    ("eq", "==", np.equal, sympy.Eq, "="), ("ne", "!=", np.not_equal, sympy.Ne, r"\ne"),
]:
    op(name, 2, E, _cmp(np_fn), _sym_cmp(rel, np_fn), "[{0} " + lx + " {1}]", "({0} " + sym_src + " {1})",
       "({0} " + sym_src + " {1})", "({0} " + sym_src + " {1})", f"1 if x {sym_src} y else 0",
       infix=sym_src, precedence=5, search=False, truth=True, numbers_ok=True,
       cpp="({0} " + sym_src + " {1} ? T(1) : T(0))", python="(1.0 if {0} " + sym_src + " {1} else 0.0)",
       python_exact=True)
op("and", 2, E, _cmp(lambda a, b: (a != 0) & (b != 0)),
   lambda a, b: sympy.Piecewise((1, sympy.And(sympy.Ne(a, 0), sympy.Ne(b, 0))), (0, True)),
   r"[{0} \wedge {1}]", "(({0} != 0) & ({1} != 0))", "(({0} != 0) & ({1} != 0))",
   "tl.where({0} != 0, {1} != 0, False)", "1 if both are non-zero", infix="and", precedence=3,
   commutative=True, search=False, truth=True, logic=True, numbers_ok=True,
   cpp="({0} != 0 && {1} != 0 ? T(1) : T(0))",
   python="(1.0 if {0} != 0 and {1} != 0 else 0.0)", python_exact=True)
op("or", 2, E, _cmp(lambda a, b: (a != 0) | (b != 0)),
   lambda a, b: sympy.Piecewise((1, sympy.Or(sympy.Ne(a, 0), sympy.Ne(b, 0))), (0, True)),
   r"[{0} \vee {1}]", "(({0} != 0) | ({1} != 0))", "(({0} != 0) | ({1} != 0))",
   "tl.where({0} != 0, True, {1} != 0)", "1 if either is non-zero", infix="or", precedence=2,
   commutative=True, search=False, truth=True, logic=True, numbers_ok=True,
   cpp="({0} != 0 || {1} != 0 ? T(1) : T(0))",
   python="(1.0 if {0} != 0 or {1} != 0 else 0.0)", python_exact=True)
op("not", 1, E, _cmp(lambda a: a == 0), lambda a: sympy.Piecewise((1, sympy.Eq(a, 0)), (0, True)),
   r"[\neg {0}]", "({0} == 0)", "({0} == 0)", "({0} == 0)", "1 if x is zero", infix="not",
   precedence=4, search=False, truth=True, logic=True, cpp="({0} == 0 ? T(1) : T(0))",
   python="(1.0 if {0} == 0 else 0.0)", python_exact=True)
op("where", 3, E, lambda c, a, b: np.where(np.asarray(c) != 0, a, b),
   lambda c, a, b: sympy.Piecewise((a, sympy.Ne(c, 0)), (b, True)),
   r"\begin{{cases}} {1} & \text{{if }} {0} \\ {2} & \text{{otherwise}} \end{{cases}}",
   "torch.where({0} != 0, {1}, {2})", "jnp.where({0}, {1}, {2})", "tl.where({0} != 0, {1}, {2})",
   "a where c is non-zero, else b; a static c (a shape test) is resolved per parameter",
   search=False, numbers_ok=True, cpp="({0} != 0 ? {1} : {2})", python="({1} if {0} != 0 else {2})",
   python_exact=True)
op("isfinite", 1, E, _cmp(np.isfinite), lambda x: _sym_fn("isfinite")(x),
   r"[{0} \text{{ finite}}]", "torch.isfinite({0})", "jnp.isfinite({0})",
   '(({0} == {0}) & (tl.abs({0}) < float("inf")))', "1 where x is neither inf nor nan",
   search=False, truth=True, cpp="(std::isfinite({0}) ? T(1) : T(0))",
   python="(1.0 if math.isfinite({0}) else 0.0)")

# --- per-tensor reductions: one scalar per parameter ---
R = REDUCE
_X, _Y, _N, _A0, _A1, _A2 = (Var(n) for n in ("x", "y", "n", "a0", "a1", "a2"))


def _c(name, *args):
    return Call(name, tuple(Const(float(a)) if isinstance(a, (int, float)) else a for a in args))


_SUM_SQ = (_c("mul", _X, _X),)
_NORM = Reduction(_SUM_SQ, "sum", _c("sqrt", _A0))
_MEAN = Reduction((_X,), "sum", _c("div", _A0, _N))
_ALLFINITE = Reduction((_c("sub", 1, _c("isfinite", _X)),), "sum", _c("eq", _A0, 0))  # no non-finite one
op("norm", 1, R, lambda x: np.sqrt(np.sum(np.square(x))), lambda x: _sym_fn("norm", nonnegative=True)(x),
   r"\lVert {0} \rVert", "torch.linalg.vector_norm({0})",
   "_root(jnp.sum(jnp.square(jnp.ravel({0}))))", None,
   "L2 norm of the whole tensor", flops=2, reduction=_NORM, even=(0,), same_value=sympy.Abs, counts=True)
op("rms", 1, R, lambda x: np.sqrt(np.sum(np.square(x)) / np.size(x)), lambda x: _sym_fn("rms", nonnegative=True)(x),
   r"\operatorname{{RMS}}({0})", "torch.sqrt(torch.mean(torch.square({0})))",
   "_root(jnp.mean(jnp.square({0})))", None, "root mean square of the tensor", flops=2,
   reduction=Reduction(_SUM_SQ, "sum", _c("sqrt", _c("div", _A0, _N))), even=(0,), same_value=sympy.Abs)
op("mean", 1, R, lambda x: np.sum(x) / np.size(x), lambda x: _sym_fn("mean")(x), r"\operatorname{{mean}}({0})",
   "torch.mean({0})", "jnp.mean({0})", None, "mean of the tensor's elements", reduction=_MEAN,
   same_value=lambda x: x)
op("sum", 1, R, np.sum, lambda x: _sym_fn("sum")(x), r"\sum {0}", "torch.sum({0})", "jnp.sum({0})",
   None, "sum of the tensor's elements", search=False,
   reduction=Reduction((_X,), "sum", _A0), same_value=lambda x: x, counts=True)
op("amax", 1, R, lambda x: np.max(x, initial=-np.inf), lambda x: _sym_fn("amax")(x), r"\max {0}", "torch.amax({0})", "jnp.max({0}, initial=-jnp.inf)",
   None, "largest element of the tensor", search=False,
   reduction=Reduction((_X,), "max", _A0), same_value=lambda x: x)
op("allfinite", 1, R, lambda x: _bool(np.all(np.isfinite(x)), (x,)), lambda x: _sym_fn("allfinite")(x),
   r"[{0} \text{{ finite}}]", "torch.isfinite({0}).all()", "jnp.all(jnp.isfinite({0}))", None,
   "1 if no element is inf or nan (a NaN guard)", search=False,
   truth=True, reduction=_ALLFINITE)
op("dot", 2, R, lambda x, y: np.sum(np.multiply(x, y)), lambda x, y: _dot_sympy(x, y),
   r"\langle {0}, {1} \rangle", "torch.sum({0} * {1})", "jnp.sum({0} * {1})", None,
   "sum of x * y over the tensor", flops=2, commutative=True,
   reduction=Reduction((_c("mul", _X, _Y),), "sum", _A0), same_value=lambda x, y: x * y,
   counts=True)
op("cosine_sim", 2, R,
   lambda x, y: np.sum(np.multiply(x, y)) / (np.sqrt(np.sum(np.square(x))) * np.sqrt(np.sum(np.square(y)))),
   lambda x, y: _sym_fn("cosine_sim")(x, y), r"\cos\angle({0}, {1})",
   "_cosine_sim({0}, {1})",
   "(jnp.sum({0} * {1}) / (_root(jnp.sum(jnp.square(jnp.ravel({0}))))"
   " * _root(jnp.sum(jnp.square(jnp.ravel({1}))))))", None,
   "cosine of the angle between x and y", flops=6, commutative=True,
   reduction=Reduction((_c("mul", _X, _Y), _c("mul", _X, _X), _c("mul", _Y, _Y)), "sum",
                       _c("div", _A0, _c("mul", _c("sqrt", _A1), _c("sqrt", _A2)))),
   same_value=lambda x, y: x * y / (sympy.Abs(x) * sympy.Abs(y)))

# --- factored reductions: (..., R, C) -> (..., R) or (..., C) ---
op("rowmean", 1, ROW, _mean_last, lambda x: _sym_fn("rowmean")(x), r"\overline{{{0}}}^{{\text{{row}}}}",
   "torch.mean({0}, dim=-1)", "jnp.mean({0}, axis=-1)", None,
   "mean over the last axis: a row-shaped value (needs ndim(w) >= 2)", search=False,
   reduction=_MEAN)
op("colmean", 1, COL, _mean_second_last, lambda x: _sym_fn("colmean")(x),
   r"\overline{{{0}}}^{{\text{{col}}}}", "torch.mean({0}, dim=-2)", "jnp.mean({0}, axis=-2)", None,
   "mean over the second-last axis: a column-shaped value (needs ndim(w) >= 2)", search=False,
   reduction=_MEAN)

# --- global reductions over every parameter: ``numpy`` is the value for one tensor, ``reduction``
# says how tensors combine; the torch template is one tensor's partial (its first total) ---
op("global_norm", 1, GLOBAL, lambda x: np.sqrt(np.sum(np.square(x))),
   lambda x: _sym_fn("global_norm", nonnegative=True)(x),
   r"\lVert {0} \rVert_{{\text{{global}}}}", "torch.sum(torch.square({0}))", "jnp.sum(jnp.square({0}))",
   None, "L2 norm over all parameters together", flops=2, reduction=_NORM, even=(0,), counts=True)
op("global_allfinite", 1, GLOBAL, lambda x: _bool(np.all(np.isfinite(x)), (x,)),
   lambda x: _sym_fn("global_allfinite")(x), r"[{0} \text{{ finite everywhere}}]",
   "torch.isfinite({0}).all()", "jnp.all(jnp.isfinite({0}))", None,
   "1 if no parameter's value holds inf or nan", search=False,
   truth=True, reduction=_ALLFINITE)

# --- static facts about the parameter's shape (resolved per parameter) ---
op("ndim", 1, STATIC, lambda x: np.ndim(x), None, r"\operatorname{{ndim}}({0})", "{0}.ndim", "{0}.ndim",
   None, "number of axes of the parameter (static)", search=False)
op("size", 1, STATIC, lambda x: np.size(x), None, r"\operatorname{{size}}({0})", "{0}.numel()",
   "{0}.size", None, "number of elements of the parameter (static)", search=False)
op("dim", 2, STATIC, lambda x, i: np.shape(x)[int(i)], None, r"\operatorname{{dim}}({0}, {1})",
   "_dim({0}, {1})", "_dim({0}, {1})", None, "length of axis i of the parameter (static)", search=False)

OPS: dict[str, Op] = {o.name: o for o in _OPS}
INFIX: dict[str, str] = {o.infix: o.name for o in _OPS if o.infix and o.arity == 2}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan}


def lookup(name: str) -> Op | None:
    """The op named ``name`` in the op table (``add`` for ``x + y``), or None.

    Example:
        >>> lookup("rsqrt").arity, lookup("rsqrt").doc
        (1, '1 / sqrt(|x|)')
        >>> lookup("softmax") is None
        True
    """
    return OPS.get(name)


def search_vocabulary() -> list[Op]:
    """Ops the search's mutations may insert (elementwise math and per-tensor/global reductions),
    in table order.

    Example:
        >>> names = [o.name for o in search_vocabulary()]
        >>> names[:5], "global_norm" in names, "where" in names
        (['add', 'sub', 'mul', 'div', 'power'], True, False)
    """
    return [o for o in _OPS if o.search]


def reference_table() -> str:
    """The op reference as a Markdown table (written into the README and docs).

    Example:
        >>> print("\\n".join(reference_table().splitlines()[:3]))
        | function | args | shape rule | meaning |
        |---|---|---|---|
        | `x + y` | 2 | elementwise | x + y |
    """
    rows = ["| function | args | shape rule | meaning |", "|---|---|---|---|"]
    for o in _OPS:
        spelled = f"`x {o.infix} y`" if o.infix and o.arity == 2 else f"`{o.name}`"
        if o.infix == "-" and o.arity == 1:
            spelled = "`-x`"
        if o.infix == "not":
            spelled = "`not x`"
        rows.append(f"| {spelled} | {o.arity} | {o.shape} | {o.doc} |")
    return "\n".join(rows)
