"""JAX target: a program -> a standalone module defining an optax ``GradientTransformationExtraArgs``.

For each parameter leaf ``w`` with gradient ``g`` the generated transformation runs::

    update, *states = program(w, g, *states, lr, step, **hyperparameters)   # step = count + 1
    updates = -update                                                       # optax adds updates

in float32 (or the leaf's dtype when wider), states stored in that dtype, updates returned in the
gradient's dtype. The module imports only ``typing``, ``jax``, ``jax.numpy`` and ``optax``.

How a program becomes code:
  - Static shape branches (``if ndim(w) >= 2``) are resolved at generation time into one function
    per distinct specialisation (a *variant*); a Python-level shape test picks the variant of each
    leaf while JAX traces, so jit sees straight-line code. A state a variant does not use is held
    as an empty array.
  - Row/col values broadcast against full ones exactly as :func:`optdsl.interpreter.expand` does.
  - Global reductions cut every variant into :func:`optdsl.passes.segments`: segment ``k`` of
    every leaf runs, its per-leaf partials combine into the global value, then segment ``k + 1``.
  - The hyperparameters are the factory's plain arguments (``lr`` is spelled ``learning_rate`` as
    in optax and may be a schedule of the 0-based step count), so ``optax.inject_hyperparams``
    works.

Example:
    >>> import optdsl
    >>> text = emit(optdsl.load("lion"))
    >>> "def lion(learning_rate=0.0001, beta1=0.9, beta2=0.99, weight_decay=0):" in text
    True
"""

from __future__ import annotations

import ast
import copy
import itertools
import re
from typing import ClassVar

from optdsl.checkpoints import without_declarations
from optdsl.errors import DslError
from optdsl.ir import Call, Const, Expr, Program, Var, fresh_name, names_in, substitute, walk
from optdsl.ops import COL, ELEMENTWISE, GLOBAL, OPS, REDUCE, ROW, STATIC
from optdsl.passes import global_statements, segments, variants
from optdsl.passes.specialize import shape_value
from optdsl.printer import (
    ATOM,
    UNARY,
    Code,
    CodePrinter,
    DslPrinter,
    docstring,
    float_literal,
    precedence_of,
    template_shape,
    to_source,
)
from optdsl.source import load, zoo_names
from optdsl.typecheck import expr_kind, input_kinds, join

from .generated import OPTAX_BY, check_identifier, domain_entries, number
from .layout import LINE, bracketed, function, hugging_call, literal, wrap_comprehension
from .runtime import functions as runtime_functions
from .shape_python import plain_python, shape_test

# A state's shape for a parameter ``w`` (as :func:`optdsl.interpreter.state_shape`).
STATE_SHAPE = {"full": "w.shape", "row": "w.shape[:-1]", "col": "w.shape[:-2] + w.shape[-1:]", "scalar": "()"}
STATE_INIT = {"zeros": "jnp.zeros({shape}, _dtype)", "ones": "jnp.ones({shape}, _dtype)", "w": "w.astype(_dtype)"}
# How the totals of a reduction's pieces combine across leaves (see optdsl.ops.Reduction).
COMBINE = {"sum": "jnp.sum(jnp.stack({0}))", "max": "jnp.max(jnp.stack({0}))"}
TOTAL = {"sum": "jnp.sum({0})", "max": "jnp.max({0}, initial=-jnp.inf)"}
IDENTITY = {"sum": "0.0", "max": "-jnp.inf"}  # the combination of no leaf's totals
MAX_NDIM = 64  # numpy's and jax's most axes: a test of ndim(w) against more is decided the same above
# Why a program's step is not one of each number on its own (a complex parameter's parts: see
# _not_elementwise), by the shape rule of the op that makes it so.
NOT_ELEMENTWISE = {REDUCE: "reduces over the whole tensor", ROW: "reduces within rows",
                   COL: "reduces across rows", GLOBAL: "reduces over all tensors",
                   STATIC: "reads the parameter's shape"}


class JaxPrinter(CodePrinter):
    """Prints expressions as jax.numpy code through the op table's ``jax`` templates.

    ``kinds`` maps every name in scope to its shape (see :mod:`optdsl.typecheck`); row and col
    values are expanded where they meet full ones, and truth values become 1.0 / 0.0 floats.
    Parentheses are added only where Python's precedence needs them. Names starting with ``_``
    are the generated code's own (the identifier policy keeps them out of programs).

    Example:
        >>> p = JaxPrinter({"g": "full", "m": "full", "beta1": "uniform"})
        >>> p.doprint(Call("interp", (Var("g"), Var("m"), Var("beta1"))))
        '(1 - beta1) * g + beta1 * m'
    """

    target = "jax"

    def __init__(self, kinds: dict[str, str], python: set[str] = frozenset(), in_f64: bool = False,
                 roots: bool = False):
        super().__init__()
        self.kinds = kinds
        # printing a reduction's finish, whose sqrt is a norm's root: _root, differentiable at 0
        self.roots = roots
        self.python = set(python)
        self.names = itertools.count()  # numbers of the statements bound to keep lines short (_fitted)
        self.in_f64 = in_f64  # printing the inside of an _f64(lambda: ...): see shape_arithmetic

    def shape_arithmetic(self, expr: Expr, test: bool = False) -> Code:
        """Shape arithmetic (shape facts and numbers: a Python value while JAX traces) in float64,
        as the interpreter computes it: plain Python where that is exact, else jax.numpy inside the
        runtime's ``_f64`` (float64 whatever ``jax_enable_x64`` says). Its temporaries are bound by
        lambdas inside it, not by statements, which would run outside ``_f64``. ``test``: only its
        truth counts (a comparison is then jax's boolean, not 1.0 / 0.0)."""
        plain = plain_python(expr, "jax")
        if plain is not None:
            return Code(plain, precedence_of(plain))
        return Code(f"_f64(lambda: {self._in_f64(expr, test)})", ATOM)

    def hyper_arithmetic(self, expr: Call) -> Code:
        """An expression of hyperparameters and numbers alone that calls jax (``sqrt(h)``,
        ``isfinite(h)``): in float64 where they are Python numbers, rounded once, as the interpreter
        and the torch target compute it (in float32, ``sqrt(1e39)`` was inf and ``log(0.999)``
        200 ulp off), and traced as it stands where optax.inject_hyperparams makes them arrays
        (the runtime's ``_exact``)."""
        names = ", ".join(sorted(_numbers_read(expr)))
        if not names:  # numbers alone (1 / 0): float64's value, as shape arithmetic's
            return Code(f"_f64(lambda: {self._in_f64(expr)})", ATOM)
        return Code(f"_exact(lambda: {self._in_f64(expr)}, {names})", ATOM)

    def _in_f64(self, expr: Expr, test: bool = False) -> str:
        """``expr`` printed to run inside ``_f64``: its temporaries bound by lambdas, not by
        statements, which would run outside it."""
        inner = JaxPrinter(dict(self.kinds), self.python, in_f64=True)
        inner._counter = self._counter  # names no temporary of this printer's has
        cut = inner._cut(expr)
        truth = test and isinstance(cut, Call) and OPS[cut.op].truth
        text = str(inner.boolean(cut) if truth else inner._print(cut))
        for name, value in reversed(inner.temps):
            text = f"(lambda {name}: {text})({value})"
        return text

    def is_python(self, expr: Expr) -> bool:
        """May ``expr`` be a plain Python number while tracing (a literal, a shape fact, a
        hyperparameter given as a float, or arithmetic on those)?"""
        if isinstance(expr, Const):
            return True
        if isinstance(expr, Var):
            return expr.name in self.python
        op = OPS[expr.op]
        if op.shape == STATIC or (not self.in_f64 and self.kind(expr) == "static"):
            return True  # (shape arithmetic is a Python float: see shape_arithmetic)
        if self.in_f64 and op.truth:
            return False  # printed through jnp.where
        # a call of jax on hyperparameters is a Python float too, where they are (hyper_arithmetic)
        return op.shape == ELEMENTWISE and all(self.is_python(a) for a in expr.args)

    def bind_temp(self, name: str, expr: Expr) -> None:
        self.bind(name, expr)

    def bind(self, name: str, expr: Expr) -> None:
        """Record that ``name`` now holds the value of ``expr``."""
        self.kinds[name] = self.kind(expr)
        (self.python.add if self.is_python(expr) else self.python.discard)(name)

    def kind(self, expr: Expr) -> str:
        def fail(msg, hint=None):
            raise DslError(msg, hint=hint)

        return expr_kind(expr, self.kinds, fail)

    def _print_Const(self, expr: Const) -> Code:
        # a float literal: integer jax arrays cannot take x ** -1
        text = float_literal(expr.value, inf="jnp.inf", nan="jnp.nan")
        return Code(text, UNARY if text.startswith("-") else ATOM)

    def _print_Var(self, expr: Var) -> Code:
        return Code(expr.name if expr.name.startswith("_") else check_identifier(expr.name), ATOM)

    def _print_dim(self, expr: Call) -> Code:  # a float, as the interpreter's shape arithmetic is float64
        return self.fill(f"float({OPS['dim'].jax})", [expr.args[0], Code(str(int(expr.args[1].value)), ATOM)])

    def operands(self, expr: Call) -> list[Code]:
        """The printed arguments of ``expr``, row/col ones expanded to meet full ones, the first
        made an array when Python itself would raise on the numbers (``1 / 0``, ``0.0 ** -1``)."""
        op = OPS[expr.op]
        kinds = [self.kind(a) for a in expr.args]
        to = join(*kinds) if op.shape in (ELEMENTWISE, REDUCE) else None
        out = []
        for i, (a, k) in enumerate(zip(expr.args, kinds)):
            text = self.condition(a) if self._condition_slot(op.name, i) else self._print(a)
            if i == 0 and op.python_raises and all(self.is_python(x) for x in expr.args):
                text = self.fill("jnp.asarray({0})", [text])
            if to == "full" and k in (ROW, COL):
                text = self.fill("{0}[..., :, None]" if k == ROW else "{0}[..., None, :]", [text])
            out.append(text)
        return out

    def _reduced(self, expr: Expr) -> bool:
        """Is ``expr`` a reduction's value (a mean, a row's mean...), not one per element? The root of
        one costs nothing more through ``_root``; of a full tensor it would."""
        reduction = isinstance(expr, Call) and OPS[expr.op].shape in (REDUCE, ROW, COL)
        return reduction or self.kind(expr) in (ROW, COL)

    @staticmethod
    def _condition_slot(op: str, i: int) -> bool:
        return (op == "where" and i == 0) or OPS[op].logic

    def condition(self, expr: Expr) -> Code:
        """``expr`` as a jax boolean where a condition is expected (no 1.0/0.0 round trip): the
        op table's jax ``where`` and the logic ops take one as it is (``!= 0`` is added here, once)."""
        if isinstance(expr, Call) and OPS[expr.op].truth and OPS[expr.op].shape != STATIC:
            return self.boolean(expr)
        return self.fill("{0} != 0", [expr])

    def boolean(self, expr: Call) -> Code:
        """A truth-valued op as a jax boolean."""
        args = self.operands(expr)
        if OPS[expr.op].logic:
            slots = ", ".join(f"{{{i}}}" for i in range(len(args)))
            return self.fill(f"jnp.logical_{expr.op}({slots})", args)
        return self.fill(OPS[expr.op].jax, args)

    # Per-step scalars (see CodePrinter.per_step_power): b - 1 is Python's float64 arithmetic while
    # b is a Python number, so log1p(b - 1) is exact to float32 even for b = 0.999.
    PRECISE: ClassVar[dict[str, str]] = {"exp": "jnp.exp({0})", "expm1": "jnp.expm1({0})", "log1p": "jnp.log1p({0})",
               "log": "jnp.log({0})", "where": "jnp.where({0}, {1}, {2})"}

    def per_step_power(self, expr: Expr) -> bool:
        return (isinstance(expr, Call) and expr.op == "power"
                and all(self.kind(a) in ("const", "uniform") for a in expr.args)
                and not all(self.is_python(a) for a in expr.args))

    def _print_Call(self, expr: Call) -> Code:
        op = OPS[expr.op]
        if not self.in_f64 and self.kind(expr) == "static":
            return self.shape_arithmetic(expr)
        if not self.in_f64 and self.is_python(expr) and _calls_jax(expr):
            return self.hyper_arithmetic(expr)
        if expr.op == "sqrt" and (self.roots or self._reduced(expr.args[0])):
            # a norm's root, or the root of a reduced value (sqrt(rowmean(w * w)), a row's RMS): _root,
            # differentiable where it is 0 (in a finish, of a sum of squares: no abs needed)
            return self.fill("_root({0})" if self.roots else "_root(jnp.abs({0}))", self.operands(expr))
        if op.truth:
            return self.fill("jnp.where({0}, 1.0, 0.0)", [self.boolean(expr)])
        if op.shape == STATIC:
            return self.fill(f"float({op.jax})", expr.args)
        # operands come printed, so fill cannot see a call: one its template repeats (sign's) gets
        # a name here, or nesting would print 2**depth copies
        repeats = template_shape(op.jax)[2]
        return self.fill(op.jax, [self.temp(t) if n > 1 and isinstance(a, Call) else t
                                  for a, t, n in zip(expr.args, self.operands(expr), repeats)])


def _calls_jax(expr: Expr) -> bool:
    """Does ``expr``'s jax spelling call jax (not plain Python arithmetic), when it is numbers alone?
    An op Python's operator raises on (``1 / 0``) is computed on ``jnp.asarray`` of them
    (:meth:`JaxPrinter.operands`): jax too, in float32 unless inside ``_exact``."""
    return any(OPS[n.op].truth or OPS[n.op].python_raises or "jnp." in OPS[n.op].jax
               or "jax." in OPS[n.op].jax for n in walk(expr) if isinstance(n, Call))


def _numbers_read(expr: Expr) -> set[str]:
    """The names whose values ``expr`` reads: not ``w`` where only its shape is read (``size(w)`` is a
    Python int while JAX traces, which ``_exact`` computes with in float64)."""
    if isinstance(expr, Var):
        return {expr.name}
    if not isinstance(expr, Call) or OPS[expr.op].shape == STATIC:
        return set()
    return set().union(*map(_numbers_read, expr.args))


def _shape_test(cond: Expr) -> str:
    """A shape test, run while JAX traces: plain Python where that is exact (``w.ndim >= 2``;
    :func:`codegen.shape_python.shape_test`), else its value in float64
    (:meth:`JaxPrinter.shape_arithmetic`, where ``1 / 0`` is inf and ``2 ** 2000`` does not
    raise) compared with 0."""
    float64 = lambda e: f"{JaxPrinter({'w': 'full'}).shape_arithmetic(e, test=True)} != 0"
    return shape_test(cond, "jax", float64)


# --- the generated module ------------------------------------------------------------------------


def _probe(printer: JaxPrinter) -> JaxPrinter:
    """A copy of ``printer`` to measure printed text with: what it prints, binds and numbers leaves
    ``printer`` as it was."""
    probe = copy.copy(printer)
    probe.kinds, probe.python, probe.temps = dict(printer.kinds), set(printer.python), list(printer.temps)
    probe._counter = copy.copy(printer._counter)
    return probe


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Program"


def _not_elementwise(programs: list[Program]) -> str | None:
    """None where the step of each number is its own (one variant: no shape test; elementwise ops
    and full states only), so that a complex parameter steps as its real and imaginary parts, as in
    the torch target; else why not."""
    if len(programs) > 1:
        return "its step depends on the parameter's shape"
    (spec,) = programs
    for s in spec.states:
        if s.kind != "full":
            return f"state {s.name} is {s.kind}-shaped"
    for e in [a.expr for a in spec.body] + list(spec.outputs()):
        for n in walk(e):
            if isinstance(n, Call) and OPS[n.op].shape != ELEMENTWISE:
                return f"{n.op}() {NOT_ELEMENTWISE[OPS[n.op].shape]}"
    return None


# --- the variants a parameter can reach -----------------------------------------------------------
# passes.variants asks each shape test where the tests above it leave it undecided as expressions,
# so amos's `if ndim(w) == 2` then `if ndim(w) > 2` printed `if w.ndim == 2: if w.ndim > 2:`. A test of
# ndim(w) alone (comparisons with numbers, and/or/not) is decided here over the numbers of axes it
# can tell apart: 0 to one past its largest number, which stands for every larger one.


def _ndim_test(test: Expr) -> bool:
    """Is ``test`` comparisons of ``ndim(w)`` with numbers, joined by and/or/not?"""
    if isinstance(test, Const):
        return True
    if not isinstance(test, Call):
        return False
    if test.op == "ndim":
        return True
    return OPS[test.op].truth and OPS[test.op].shape == ELEMENTWISE and all(map(_ndim_test, test.args))


def _tests(tree) -> list[Expr]:
    return [] if isinstance(tree, int) else [tree[0], *_tests(tree[1]), *_tests(tree[2])]


def _reachable(tree):
    """``tree`` without the tests of ndim(w) its path decides (the branch no parameter takes
    dropped), and the numbers of axes its ndim tests tell apart."""
    consts = [abs(n.value) for t in _tests(tree) if _ndim_test(t) for n in walk(t)
              if isinstance(n, Const) and n.value == n.value and abs(n.value) != float("inf")]
    # (capped: `ndim(w) < 1e9` asked for a billion numbers of axes; no array has more than MAX_NDIM)
    universe = frozenset(range(int(min(max(consts, default=0), MAX_NDIM)) + 2))

    def prune(tree, ndims):
        if isinstance(tree, int):
            return tree
        test, yes, no = tree
        if not _ndim_test(test):
            yes, no = prune(yes, ndims), prune(no, ndims)
            return yes if yes == no else (test, yes, no)
        holds = frozenset(n for n in ndims if shape_value(test, (1,) * n) != 0)
        if not holds or holds == ndims:
            return prune(yes if holds else no, ndims)
        yes, no = prune(yes, holds), prune(no, ndims - holds)
        return yes if yes == no else (test, yes, no)

    return prune(tree, universe), universe


def _leaves(tree) -> list[int]:
    return [tree] if isinstance(tree, int) else [*_leaves(tree[1]), *_leaves(tree[2])]


def _renumbered(tree, numbers: dict[int, int]):
    if isinstance(tree, int):
        return numbers[tree]
    return (tree[0], _renumbered(tree[1], numbers), _renumbered(tree[2], numbers))


def _paths(tree, count: int) -> list[tuple[tuple[Expr, bool], ...]]:
    """For each variant, the tests and outcomes that lead to it (the first path where several do)."""
    found: dict[int, tuple] = {}

    def walk_tree(tree, path):
        if isinstance(tree, int):
            found.setdefault(tree, path)
        else:
            walk_tree(tree[1], (*path, (tree[0], True)))
            walk_tree(tree[2], (*path, (tree[0], False)))

    walk_tree(tree, ())
    return [found[k] for k in range(count)]


def _fewest_tests(path: tuple, universe: frozenset) -> tuple:
    """``path`` without the ndim tests the others imply (``not w.ndim == 2`` beside ``w.ndim > 2``)."""

    def ndims(tests):
        return frozenset(n for n in universe if all((shape_value(t, (1,) * n) != 0) == held
                                                    for t, held in tests if _ndim_test(t)))

    kept = list(path)
    for step in list(path):
        if _ndim_test(step[0]) and ndims([s for s in kept if s != step]) == ndims(kept):
            kept.remove(step)
    return tuple(kept)


class _Module:
    """Names and text of one generated module. The program's names are used as written; every
    name of the module's own starts with ``_`` (or is optax's API: ``updates``, ``state``,
    ``params``, ``learning_rate``), which the identifier policy keeps out of programs."""

    def __init__(self, program: Program):
        check_identifier(program.name, "program name")
        for n in sorted(names_in(program)):
            check_identifier(n)
        if "learning_rate" in program.hyper_defaults:
            raise DslError(f"{program.name}: a hyperparameter may not be called 'learning_rate'",
                           hint="the jax target spells lr as learning_rate, as optax does")
        self.program = program
        found = variants(program)
        # only the variants a parameter can reach, numbered as the pruned tree first meets them
        tree, universe = _reachable(found.tree)
        self.original = list(dict.fromkeys(_leaves(tree)))  # their indices in found.programs
        self.tree = _renumbered(tree, {k: v for v, k in enumerate(self.original)})
        self.found, self.variants = found, [found.programs[k] for k in self.original]
        self.paths = [_fewest_tests(path, universe) for path in _paths(self.tree, len(self.variants))]
        self.not_elementwise = _not_elementwise(self.variants)  # why a complex leaf is refused, or None
        self.leaf = "_array" if self.not_elementwise else "_as_real"  # how a leaf becomes a jax array
        self.used = names_in(program) | {program.name, "learning_rate"}
        self.hypers = [h for h in program.hypers if h.name != "lr"]
        self.inputs = [n for n in ("w", "g") if n == "g" or any(v.uses("w") for v in self.variants)]
        self.inputs += list(program.state_names)
        self.inputs += [n for n in ("lr", "step") if program.uses(n)]
        self.inputs += [h.name for h in self.hypers if program.uses(h.name)]
        self.needs_params = program.uses("w") or any(s.init == "w" for s in program.states)
        taken: set[str] = set(program.state_names)
        self.fields = {s.name: s.name for s in program.states}  # NamedTuple fields: attributes, not locals
        self.count = fresh_name("count", taken)
        self.state_class = fresh_name(_camel(program.name) + "State", self.used)
        self.init_leaf = f"_{program.name}_init"
        self.pick = f"_{program.name}_code" if len(self.variants) > 1 else None
        nseg = len(global_statements(self.variants[0])) + 1
        # (a suffix always: the bare _update, _init, _fit... of a program so named shadowed the module's own)
        self.fns = [[f"_{program.name}_step" + (f"_{v}" if len(self.variants) > 1 else "")
                     + (f"_part{k}" if nseg > 1 else "") for k in range(nseg)]
                    for v in range(len(self.variants))]

    # --- per-variant step functions --------------------------------------------------------------
    def variant_functions(self, v: int, spec: Program) -> list[str]:
        kinds = input_kinds(spec)
        kinds.update({n: "uniform" for n in ("lr", "step")})
        printer = JaxPrinter(kinds, {"lr", *(h.name for h in self.hypers)})
        cuts = [spec.body[i] for i in global_statements(spec)]
        segs = segments(spec)
        available = set(self.inputs)
        carries: list[list[str]] = []
        out = []
        for k, seg in enumerate(segs):
            lines = []
            if k == 0:
                params = list(self.inputs)
                lines.append(f'"""{self._variant_doc(v)}"""' if len(self.variants) > 1 else
                             '"""One leaf\'s step: ``update, (states...)`` from its inputs."""')
            else:
                params = ["_carry", cuts[k - 1].target]
                carried = carries[k - 1]
                lines.append(f'"""After {cuts[k - 1].expr.op}: the rest of the step."""')
                unpacked = _tuple(carried, paren=len(carried) == 1)  # black writes (v,) = ..., not v, = ...
                lines.append(f"{unpacked} = _carry" if carried else "del _carry")
            for a in seg:
                lines += self._fitted(printer, check_identifier(a.target), a.expr)
                printer.bind(a.target, a.expr)
                available.add(a.target)
            if k < len(cuts):
                g = cuts[k]
                later = [e for s in segs[k + 1:] for e in (x.expr for x in s)]
                later += [c.expr for c in cuts[k + 1:]] + list(spec.outputs())
                read = set().union(*(set(_free(e)) for e in later))
                order = self.inputs + [a.target for a in spec.body]
                carried = list(dict.fromkeys(n for n in order if n in read and n in available))
                carried = [n for n in carried if n != g.target]
                carries.append(carried)
                lines += self._totals(printer, g.expr)
                lines.append(f"return {_tuple(carried, paren=True)}, _totals")
                kinds[g.target] = "uniform"
                printer.python.discard(g.target)
                available.add(g.target)
            else:
                lines += self._final_return(spec, printer)
            out.append(function(self.fns[v][k], params, lines))
        return out

    @staticmethod
    def _totals(printer: JaxPrinter, call: Call) -> list[str]:
        """Lines binding ``_totals``: this leaf's totals of a global reduction (op.reduction's terms
        summed or maxed over the leaf), and its element count when the finish reads ``n``."""
        reduction = OPS[call.op].reduction
        lines = _Module._fitted(printer, "_x", call.args[0])
        printer.bind("_x", call.args[0])
        totals = [printer.fill(TOTAL[reduction.combine], [substitute(t, {"x": Var("_x")})])
                  for t in reduction.terms]
        if "n" in _free(reduction.finish):
            totals.append(Code("jnp.size(_x)", ATOM))
        return lines + printer.flush() + [f"_totals = {_tuple(totals, paren=True)}"]

    def _final_return(self, spec: Program, printer: JaxPrinter) -> list[str]:
        """``return update, (states...)``; where that line would be too wide, each output is bound
        to a name of its own first (``_out0``, ...)."""
        new = dict(zip(spec.state_names, spec.new_states))
        outs = [spec.update, *(new.get(s.name) for s in self.program.states)]
        slots = ["full", *(s.kind for s in self.program.states)]

        def line(pr: JaxPrinter, outs: list[Expr | None]) -> str:
            texts = []
            for e, slot in zip(outs, slots):
                text = "None" if e is None else pr.doprint(e)
                if e is not None and slot == "full" and pr.kind(e) in (ROW, COL):
                    text = pr.fill("{0}[..., :, None]" if pr.kind(e) == ROW else "{0}[..., None, :]", [text])
                texts.append(str(text))
            return f"return {texts[0]}, {_tuple(texts[1:], paren=True)}"

        probe = _probe(printer)
        tried = line(probe, outs)
        if max(len(x) for x in [*probe.flush(), tried]) + 4 <= LINE:
            last = line(printer, outs)  # (printed first: it may name temporaries, flushed before it)
            return printer.flush() + [last]
        lines = []
        for i, e in enumerate(outs):
            if isinstance(e, Call):
                lines += self._fitted(printer, f"_out{i}", e)
                printer.bind(f"_out{i}", e)
                outs[i] = Var(f"_out{i}")
        last = line(printer, outs)
        return lines + printer.flush() + [last]

    @staticmethod
    def _fitted(printer: JaxPrinter, target: str, expr: Expr, indent: int = 4) -> list[str]:
        """``printer.statement(target, expr)``, laid out for LINE columns at ``indent``: while a line
        would be wider (black would split it), the widest argument is bound to a name of its own
        first (``_e0``, ``_e1``..., recursively), as a statement before this one."""
        probe = _probe(printer)
        if all(indent + len(x) <= LINE for x in probe.statement(target, expr)):
            return printer.statement(target, expr)
        # (a precise 1 - b ** t is one expm1: its power taken out would be 1 - exp(...), which cancels)
        whole = (not isinstance(expr, Call) or OPS[expr.op].shape == STATIC
                 or printer.precise_sub(expr) is not None)
        widths = [len(_probe(printer).doprint(a)) if isinstance(a, Call) else -1
                  for a in (() if whole else expr.args)]
        if not widths or max(widths) < 0:  # one op whose spelling is long: its printed parts cut
            printer.width = LINE - indent - len(f"{target} = ")
            try:
                return printer.statement(target, expr)
            finally:
                printer.width = None
        sub = expr.args[widths.index(max(widths))]
        name = f"_e{next(printer.names)}"
        lines = _Module._fitted(printer, name, sub, indent)
        printer.bind(name, sub)
        cut = Call(expr.op, tuple(Var(name) if a is sub else a for a in expr.args))
        return lines + _Module._fitted(printer, target, cut, indent)

    def _variant_doc(self, v: int) -> str:
        tests = {c: plain_python(c, "jax", test=True) or DslPrinter().doprint(c) for c, _ in self.paths[v]}
        shown = " and ".join(f"``{tests[c]}``" if t else f"not ``{tests[c]}``" for c, t in self.paths[v])
        return f"One leaf's step for parameters where {shown}."

    # --- dispatch and init -----------------------------------------------------------------------
    def _tree_lines(self, tree, leaf, indent: int = 4) -> list[str]:
        """The shape tests choosing a variant, ``return leaf(v, indent)`` at each leaf (``indent``:
        the column the return statement starts at)."""
        if isinstance(tree, int):
            return [f"return {leaf(tree, indent)}"]
        cond, yes, no = tree
        yes_lines, no_lines = self._tree_lines(yes, leaf, indent + 4), self._tree_lines(no, leaf, indent)
        if yes_lines == no_lines:  # variants that differ in their step but not here
            return yes_lines
        return [*_if_lines(_shape_test(cond), indent), *(_indent(yes_lines).split("\n")), *no_lines]

    def pick_function(self) -> str:
        def leaf(v, indent):
            if len(self.fns[v]) == 1:
                return self.fns[v][0]
            return bracketed("(", self.fns[v], ")", used=indent + len("return "))

        doc = '"""The step code for a parameter shaped like ``w`` (a Python test, run while tracing)."""'
        return f"def {self.pick}(w):\n" + _indent([doc, *self._tree_lines(self.tree, leaf)])

    def init_function(self) -> str:
        names = ", ".join(self.program.state_names)

        def leaf(v, indent):
            spec = self.variants[v]
            own = {s.name: s for s in spec.states}
            parts = []
            for s in self.program.states:
                s = own.get(s.name)
                parts.append(STATE_INIT[s.init].format(shape=STATE_SHAPE[s.kind]) if s else
                             "jnp.zeros((0,), _dtype)")
            # refused as the interpreter and torch refuse it (jnp.mean(x, axis=-1) of a 1-d x is a number)
            if not self.found.needs_2d(self.original[v]):
                return bracketed("(", parts, ")", used=indent + len("return "))
            init = bracketed("(", parts, ")", used=indent + 5)  # an argument on a line of its own, then ","
            return hugging_call("_needs_2d", ["w", init], used=indent + len("return "), indent=indent)

        doc = f'"""Initial ({names}) for the parameter ``w``; a state its code does not use is empty."""'
        lines = [doc, "_dtype = jnp.promote_types(w.dtype, jnp.float32)", *self._tree_lines(self.tree, leaf)]
        return f"def {self.init_leaf}(w):\n" + _indent(lines)

    # --- the factory -----------------------------------------------------------------------------
    def factory(self) -> str:
        p = self.program
        defaults = p.hyper_defaults
        args = ["learning_rate" + (f"={number(defaults['lr'])}" if "lr" in defaults else "")]
        args += [f"{h.name}={number(h.default)}" for h in self.hypers]
        field_args = [f"{self.count}=jnp.zeros([], jnp.int32)"]
        field_args += [f"{self.fields[n]}=_treedef.unflatten([s[{i}] for s in _states])"
                       for i, n in enumerate(p.state_names)]
        refuse = [] if self.not_elementwise is None else [hugging_call(
            "_refuse_complex", ["params", literal(p.name), literal(self.not_elementwise)], used=8, indent=8)]
        init_lines = ["def _init(params):", *_indent([
            *refuse,
            "_leaves, _treedef = jax.tree.flatten(params)",
            wrap_comprehension(f"_states = [{self.init_leaf}({self.leaf}(w)) for w in _leaves]", 8),
            "return " + hugging_call(self.state_class, field_args, used=len("        return "), indent=8),
        ]).split("\n")]

        body = ["del _extra"]
        if self.needs_params:
            body += ["if params is None:",
                     f'    raise ValueError("{p.name} reads the parameters: pass params to update")']
        if p.uses("lr"):
            lr = f"learning_rate(state.{self.count}) if callable(learning_rate) else learning_rate"
            body.append(f'lr = _float({lr}, "learning_rate")')
        if p.uses("step"):  # (the count a float first: jax_numpy_dtype_promotion="strict" refuses int + 1.0)
            body.append(f'step = _float(state.{self.count}, "step") + 1.0  # the language\'s step is 1-based')
        body.append("_leaves, _treedef = jax.tree.flatten(updates)")
        body.append(f"_grads = [{self.leaf}(g) for g in _leaves]")
        seqs = {"g": "_grads"}
        if "w" in self.inputs:
            seqs["w"] = "_ws"
            body.append(f"_ws = [{self.leaf}(w) for w in _treedef.flatten_up_to(params)]")
        for i, n in enumerate(p.state_names):
            seqs[n] = f"_state{i}"
            body.append(f"{seqs[n]} = _treedef.flatten_up_to(state.{self.fields[n]})")
        leaf_vars = [n for n in self.inputs if n in seqs]
        call_args = [f"_upcast({n})" if n in ("w", "g") else n for n in self.inputs]
        zipped = ", ".join(seqs[n] for n in leaf_vars)
        if self.pick:
            body.append(f"_codes = [{self.pick}(g) for g in _grads]")
            first = "_code[0]" if len(self.fns[0]) > 1 else "_code"
            loop = f"for _code, {', '.join(leaf_vars)} in zip(_codes, {zipped})"
        else:
            first = self.fns[0][0]
            loop = f"for {', '.join(leaf_vars)} in zip({zipped})"
            if len(leaf_vars) == 1:
                loop = f"for {leaf_vars[0]} in {zipped}"
        out = wrap_comprehension(f"_out = [{first}({', '.join(call_args)}) {loop}]", 8)
        if max(8 + len(line) for line in out.split("\n")) > LINE:  # the numbers every leaf takes, first
            shared = [a for a in call_args
                      if a not in self.program.state_names and not a.startswith("_upcast")]
            body.append("_shared = " + bracketed("(", shared, ")", used=len("        _shared = ")))
            call_args = [*(a for a in call_args if a not in shared), "*_shared"]
            out = wrap_comprehension(f"_out = [{first}({', '.join(call_args)}) {loop}]", 8)
        body.append(out)
        cuts = [self.variants[0].body[i] for i in global_statements(self.variants[0])]
        for k, g in enumerate(cuts, start=1):
            reduction = OPS[g.expr.op].reduction
            totals = {f"a{j}": Var(f"_a{j}") for j in range(len(reduction.terms))}
            # an empty leaf takes no part (as in the interpreter and the torch runtime, which skip it)
            nonempty = "for (_, _p), _g in zip(_out, _grads) if _g.size"
            for j in range(len(reduction.terms)):
                parts = f"[{IDENTITY[reduction.combine]}, *(_p[{j}] {nonempty})]"
                body.append(f"_a{j} = " + COMBINE[reduction.combine].format(parts))
            if "n" in _free(reduction.finish):
                body.append(f"_n = sum(_p[{len(reduction.terms)}] {nonempty})")
                totals["n"] = Var("_n")
            finish = JaxPrinter({v.name: "uniform" for v in totals.values()}, roots=True)
            body += finish.statement(f"_global{k}", substitute(reduction.finish, totals))
            if self.pick:
                body.append(f"_out = [_code[{k}](_c, _global{k}) for _code, (_c, _) in zip(_codes, _out)]")
            else:
                body.append(f"_out = [{self.fns[0][k]}(_c, _global{k}) for _c, _ in _out]")
        if any(s.kind != "full" for s in p.states):  # an empty leaf's row, column or scalar states hold
            # numbers: kept as they are (a mean of its no values is nan), as every target keeps them
            body.append("_out = [(_u, _s if _g.size else (None,) * len(_s)) "
                        "for (_u, _s), _g in zip(_out, _grads)]")
        new_fields = [f"{self.count}=optax.safe_int32_increment(state.{self.count})"]
        for i, n in enumerate(p.state_names):
            new_fields.append(f"{self.fields[n]}=_treedef.unflatten([_fit(_s[{i}], _old) for (_, _s), _old "
                              f"in zip(_out, {seqs[n]})])")
        body.append("updates = _treedef.unflatten([_fit(-_u, _g) for (_u, _), _g in zip(_out, _leaves)])")
        used = len("        return updates, ")
        body.append("return updates, " + hugging_call(self.state_class, new_fields, used=used, indent=8))
        update_lines = ["def _update(updates, state, params=None, **_extra):", *_indent(body).split("\n")]
        ret = "return optax.GradientTransformationExtraArgs(_init, _update)"
        # black's blank lines: after the docstring and around the nested functions
        # every number of the language is a float: an int given (or made by inject_hyperparams) is one
        domain = {h.name: f', _DOMAINS["{h.name}"]' for h in p.hypers if h.domain}
        floats = [f'{h.name} = _float({h.name}, "{h.name}"{domain.get(h.name, "")})' for h in self.hypers]
        if "lr" in domain:  # a number (a schedule's values, as torch's schedulers' values, are not looked at)
            floats += ["if not callable(learning_rate):",
                       f'    _float(learning_rate, "learning_rate"{domain["lr"]})']
        lines = [_docstring(self.factory_doc()), *floats, "", *init_lines, "", *update_lines, "", ret]
        return function(p.name, args, lines)

    def factory_doc(self) -> str:
        p = self.program
        hyper_lines = [f"    {h.name}: the program's ``{h.name}`` (default {number(h.default)})."
                       for h in self.hypers]
        lr_default = p.hyper_defaults.get("lr")
        # (not its torch.optim checkpoint declaration: the torch target's, which loads them)
        doc = without_declarations(p.doc).strip()
        summary = (doc + "\n\n") if doc else ""
        example_args = "" if lr_default is not None else "learning_rate=1e-3"
        return (
            f"{summary}The ``{p.name}`` program as an optax transformation; ``-update`` is returned\n"
            f"(optax adds updates to the parameters).\n\n"
            f"Args:\n"
            f"    learning_rate: ``lr``, a number or an optax schedule of the step count"
            + (f" (default {number(lr_default)}).\n" if lr_default is not None else ".\n")
            + "".join(line + "\n" for line in hyper_lines)
            + "\nExample:\n"
            f"    >>> import jax.numpy as jnp\n"
            f"    >>> opt = {p.name}({example_args})\n"
            f"    >>> params = {{\"w\": jnp.ones((2, 3))}}\n"
            f"    >>> state = opt.init(params)\n"
            f"    >>> updates, state = opt.update(params, state, params)"
        )

    def module_doc(self) -> str:
        p = self.program
        source = to_source(p, doc=False)
        # the zoo's name where it is the zoo's program; else the file the user keeps it in
        zoo = p.name in zoo_names() and p == load(p.name)
        src = p.name if zoo else "FILE.py"
        text = (f"The optimizer ``{p.name}`` {OPTAX_BY}"
                f"\n\nRegenerate rather than edit: ``optdsl compile {src} --target jax``"
                f"{'' if zoo else ', FILE.py holding the program'}."
                f"\n\nProgram::\n\n" + "".join("    " + line + "\n" if line else "\n"
                                                   for line in source.splitlines()))
        latex = _latex(p)
        if latex:
            text += "\nRule (LaTeX)::\n\n" + "".join(f"    {line}\n" for line in latex.splitlines())
        return text

    def text(self) -> str:
        p = self.program
        field_lines = [f"{self.count}: jax.Array"] + [f"{self.fields[n]}: optax.Updates" for n in p.state_names]
        state_class = (f"class {self.state_class}(NamedTuple):\n"
                       + _indent([f'"""State of ``{p.name}``: the step count and one pytree per state."""',
                                  "", *field_lines]))
        helpers = []
        if any(self.found.needs_2d(k) for k in self.original):
            helpers.append(runtime_functions("torch_optimizer", {"_needs_2d"}))  # torch's refusal
        exprs = [a.expr for a in p.body] + list(p.outputs())
        if any(isinstance(n, Call) and n.op == "dim" for e in exprs for n in walk(e)):
            # the torch runtime's _dim (only .ndim and .shape: a jax array has both), which says what the
            # interpreter says where the axis is missing, not an IndexError
            helpers.append(runtime_functions("torch_math", {"_dim"}))
        functions = [f for v, spec in enumerate(self.variants) for f in self.variant_functions(v, spec)]
        if self.pick:
            functions.append(self.pick_function())
        functions += [self.init_function(), self.factory()]
        # the runtime's functions the code calls (names the module's own; runtime_functions adds what
        # they call): _float for the factory's numbers, _f64 for shape arithmetic in float64, _exact
        # for that of hyperparameters, _root for a norm's root (the op table's templates call it)...
        # (any name called: runtime_functions takes those jax_math defines, so a helper added there is
        # copied in where called without a list of them here)
        called = set(re.findall(r"\b(_\w+)\(", "\n".join(functions)))
        helpers.append(runtime_functions("jax_math", called))
        imports = "from typing import NamedTuple\n\nimport jax\nimport jax.numpy as jnp\nimport optax"
        blocks = [_docstring(self.module_doc()) + "\n\n" + imports,  # one blank line after the docstring
                  state_class, *helpers, *functions]
        # each declared domain's words and test, printed from the table (optdsl.domains)
        domains = domain_entries(p)
        if domains:
            blocks.insert(2, "_DOMAINS = " + bracketed("{", domains, "}", used=len("_DOMAINS = ")))
        return "\n\n\n".join(blocks) + "\n"


def _docstring(text: str) -> str:
    """``text`` as a docstring literal, written as it reads (raw when it holds backslashes, as LaTeX
    does); escaped by :func:`optdsl.printer.docstring` only when it could end the literal early."""
    if '"""' in text or text.endswith(('"', "\\")):
        return docstring(text)
    return ('r"""' if "\\" in text else '"""') + text + ('\n"""' if "\n" in text else '"""')


def _if_lines(test: str, indent: int) -> list[str]:
    """``if test:`` at column ``indent``; where that is wider than LINE and the test is an ``and``
    or ``or`` of parts, one part a line inside parentheses, as black lays it out.

    Example:
        >>> for line in _if_lines("w.ndim >= 2 and " + "x" * 100 + " != 0", 4):
        ...     print(line[:20])
        if (
            w.ndim >= 2
            and xxxxxxxxxxxx
        ):
    """
    line = f"if {test}:"
    node = ast.parse(test, mode="eval").body
    if indent + len(line) <= LINE or not isinstance(node, ast.BoolOp):
        return [line]
    word = "and" if isinstance(node.op, ast.And) else "or"
    # a part that binds more loosely than `and` keeps its parentheses: `(a if c else b) and d`
    loose = (ast.IfExp, ast.BoolOp, ast.Lambda, ast.NamedExpr)
    parts = [f"({ast.unparse(v)})" if isinstance(v, loose) else ast.unparse(v) for v in node.values]
    return ["if (", *(f"    {word + ' ' if i else ''}{p}" for i, p in enumerate(parts)), "):"]


def _free(e: Expr) -> list[str]:
    return [n.name for n in walk(e) if isinstance(n, Var)]


def _tuple(items: list[str], paren: bool = False) -> str:
    if len(items) == 1:
        return f"({items[0]},)" if paren else f"{items[0]},"
    text = ", ".join(items)
    return f"({text})" if paren or not items else text


def _indent(lines: list[str]) -> str:
    return "\n".join(("    " + line) if line else "" for text in lines for line in text.split("\n"))


def _latex(program: Program) -> str | None:
    try:
        from optdsl.latex import to_latex
    except ModuleNotFoundError as e:
        if e.name != "optdsl.latex":
            raise
        return None
    return to_latex(program)


def emit(program: Program) -> str:
    """The generated module's source: an optax transformation factory named after the program.

    Example:
        >>> import optdsl
        >>> "import optax" in emit(optdsl.load("sgd"))
        True
    """
    return _Module(program).text()


def entry_point(module, program: Program):
    """The factory function of a loaded generated module (``lion(learning_rate=..., ...)``): its
    attribute named after the program (:func:`codegen.build` loads the module, then calls this).

    Example:
        >>> import types, optdsl
        >>> module = types.SimpleNamespace(lion="lion's factory")  # stands in for a loaded module
        >>> entry_point(module, optdsl.load("lion"))
        "lion's factory"
    """
    return getattr(module, program.name)
