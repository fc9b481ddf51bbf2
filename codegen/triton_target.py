"""Triton target: the torch module plus fused, multi-tensor Triton kernels (``backend="triton"``).

Each parameter ``w`` with gradient ``g`` runs its static path's program (see
:func:`optdsl.passes.variants`): ``update, *states = program(w, g, *states, lr, step)``;
``w <- w - update``. Math is float32 (float64 for float64 parameters), states are kept in that
dtype and ``w`` in its own dtype (bf16/fp16 too). The per-step numbers (lr, the hyperparameters,
``1 - beta``) reach a kernel as float64 arguments (``lr: tl.float64``: unannotated, Triton types a
Python float as float32), cast to the math's dtype there; reductions are summed in float64 where a
tensor's math is, and a number a function takes is a value of the math's dtype (Triton would make
it a float32 constant). So float64 parameters keep the float64 interpreter's values (1e-13), where
float32 arguments held them to ~1e-7 until 2026-12-05.

How one step runs on the device (``_TritonStep`` of :mod:`codegen.runtime.triton_kernels`):
  - Tensors of one path and dtype form a group with a table of int64 rows
    ``(numel, &w, &g, &state..., &next..., shape facts..., C, R*C, row/col accumulator offsets...)``
    and a table of chunks ``(tensor, chunk)``, built once and cached while no address changes,
    so one launch covers hundreds of small tensors (like torch's multi-tensor apply).
  - The *final pass* does every tensor's elementwise work: it reads ``w``, ``g`` and each state
    once, writes each once. Row, column and scalar states are shared by many chunks, so their
    new values go to ``next`` buffers, copied back after the pass in one multi-tensor copy.
  - Reductions are computed by earlier *reduction passes*, each chunk adding its partial into an
    accumulator with an atomic: per-tensor ones (``norm``, ``rms``, ``mean``, ``dot``, ...),
    per-row ones (``rowmean``: a segmented scan sums each row's run of the chunk, then one atomic
    per run), per-column ones (``colmean``) and global ones (``global_norm``). The pass that reads
    the value finishes it (``sqrt(sum x^2)``).
  - A column's elements lie C apart, so in a chunk each takes an atomic of its own. A pass with a
    column sum therefore has a *tiled* twin (``_pathK_passL_tiles``), whose programs each take a
    tile of rows by 64 columns of one matrix (the last two dimensions) and add each column's
    and each row's sum over the tile once; the runtime runs it on the matrices at least 64 wide,
    the chunked pass on the others.
    A reduction that reads another runs one pass later (its *level*), so global reductions sit
    between :func:`~optdsl.passes.segments` as the interpreter requires.
  - Each pass is two launches: whole chunks with a constant mask (16-byte vector loads and
    stores when every address is 16-byte aligned), then each tensor's last, partial chunk.
  - ``lr``, ``step`` and the hyperparameters are float kernel arguments: Triton specialises
    only on integers, so a learning-rate schedule never recompiles. A hyperparameter that weighs an
    ``interp`` also comes as ``1 - beta``, computed by the host in float64 (in float32, 1 - 0.999
    keeps 4 digits), as the interpreter and torch.optim take it.

The module joins the torch target's through its extra-backend hook
(``torch_target.emit(program, extra_backends={"triton": kernels_source(program)})``): the runtime of
:mod:`codegen.runtime.triton_kernels`, copied in verbatim, then the kernels, the table ``_TRITON``
of them and the backend's two functions, ``_triton_group_step`` (non-contiguous tensors go to the
eager step) and ``_triton_available`` (CUDA, or TRITON_INTERPRET=1). Programs with global
reductions run through ``_TRITON.runner()`` only: the Optimizer class refuses extra backends for them.

Atomic float sums make reductions non-deterministic in their last bits.

Example:
    >>> import optdsl
    >>> "def _triton_group_step(" in emit(optdsl.load("lion"))
    True
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from optdsl.errors import DslError
from optdsl.ir import (
    Assign,
    Call,
    Const,
    Expr,
    Program,
    Var,
    free_vars,
    fresh_name,
    map_calls,
    substitute,
    walk,
)
from optdsl.ops import COL, GLOBAL, OPS, REDUCE, ROW, STATIC
from optdsl.passes import variants
from optdsl.printer import ATOM, UNARY, Code, CodePrinter, float_literal
from optdsl.typecheck import expr_kind

from . import torch_target
from .layout import LINE, bracketed, literal
from .runtime import source as runtime_source

#: The columns a temporary's assignment takes before its value (``_t100 = ``): values are printed
#: narrow enough that binding one to a temporary still fits a line.
_TEMP = len("_t100 = ")

VECTOR_KINDS = ("full", "row", "col")  # values held as one number per element in the kernel
#: Values of per-step numbers alone (lr, step, hyperparameters) and of shape facts (``size(w)``,
#: loaded from the tensor's table row) are float64 in the kernel, as the interpreter computes them;
#: where one meets a tensor's values it is rounded to the math's dtype, once (in float32, lr * 1e30 *
#: 1e30 * 1e-50 overflowed, 1 + 1e-8 step - 1 lost the step, and exp(size(w) / 10) was inf).
F64_KINDS = ("static", "uniform")
_NUMBERS = re.compile(r"[-+*/(). 0-9e]+")  # printed arithmetic of numbers alone (no names)
_CALL = re.compile(r"[A-Za-z_][\w.]*\(")  # a template that calls a function (not one that only groups)
_ATOMIC = {"sum": "add", "max": "max"}  # how a chunk's total joins the accumulator (op.reduction.combine)


def _is_number(text) -> bool:
    """Is the printed ``text`` a float or arithmetic of floats alone (a Python float in a kernel)?"""
    return isinstance(text, str) and bool(_NUMBERS.fullmatch(text)) and ("." in text or "e" in text)


class TritonUnsupported(NotImplementedError):
    """The program needs something the Triton kernel cannot do."""


class TritonPrinter(CodePrinter):
    """Prints an expression as Triton code through the op table's ``triton`` templates.

    Truth values become float 1.0/0.0 as in the language; numbers print as float literals so
    integer arithmetic never sneaks in; a per-tensor reduction of a value that is already one
    number per tensor prints in place (its :meth:`~optdsl.ops.Reduction.of_number`).

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, lr):\\n    return lr * sign(g)\\n")
        >>> TritonPrinter().doprint(p.update)[:12]
        'lr * tl.wher'
    """

    target = "triton"

    def __init__(self, kinds: dict[str, str] | None = None, complements: dict[str, str] | None = None):
        super().__init__()
        self.kinds = kinds or {}
        self._in_f64 = False  # printing a value of numbers alone (see F64_KINDS)
        # hyperparameter -> the kernel argument holding 1 - it, computed by the host in float64: an
        # interp weight near 1 (0.999) loses 4 digits of 1 - a if the kernel subtracts in float32
        self.complements = complements or {}

    def _print_Const(self, expr: Const) -> Code:
        text = float_literal(expr.value)
        return Code(text, UNARY if text.startswith("-") else ATOM)

    def _print_Var(self, expr: Var) -> Code:
        return Code(expr.name, ATOM)  # kernel names: fresh, or the kernel's own ``_`` names

    def fill(self, template: str, args) -> Code:
        """As :meth:`CodePrinter.fill`; a number (or arithmetic of numbers) that a function of the
        kernel takes is made a value of the math's dtype first: Triton passes a Python float there
        as a float32 constant, so ``libdevice.pow(g, 0.3)`` or ``log1p(0.9 - 1.0)`` lost the digits
        past float32's in a float64 kernel (an operator's number takes the other operand's dtype)."""
        if _CALL.search(template):
            args = [self._typed(a) for a in args]
        return super().fill(template, args)

    def _typed(self, arg):
        if isinstance(arg, Call) and self.kind_is(arg, ("const",)):
            arg = self._print(arg)  # arithmetic of numbers (a reduction of one: c * c)
            if not _is_number(arg):
                return arg
        if isinstance(arg, Const):
            value = arg.value
            if not self._in_f64 and (not math.isfinite(value) or float(np.float32(value)) == value):
                return arg  # float32 holds it: the same value either way (a float64 call takes float64)
        elif not _is_number(arg):
            return arg
        return self._valued(self._print(arg) if isinstance(arg, Const) else arg)

    def _valued(self, number) -> Code:
        """The printed ``number`` as a value of the math's dtype (float64 among per-step numbers)."""
        return Code(f"tl.full([], {number}, {'tl.float64' if self._in_f64 else '_CT'})", ATOM)

    def temp(self, text) -> Code:
        """:meth:`CodePrinter.temp`; a number (or arithmetic of numbers) bound to a temporary is made
        a value (:meth:`_valued`): Triton makes an assigned Python float a float32 value, which took a
        float64 kernel's long constant to float32's digits."""
        return super().temp(self._valued(text) if _is_number(text) else text)

    def kind_is(self, expr: Expr, kinds: tuple[str, ...]) -> bool:
        """Is ``expr``'s kind among ``kinds`` (a name the kinds do not know is one of the kernel
        writer's, a value of the math's dtype: no)?"""
        try:
            return expr_kind(expr, self.kinds, _fail) in kinds
        except DslError:
            return False

    def f64(self, expr: Expr) -> bool:
        """Is ``expr`` a value of numbers alone, float64 here?"""
        return self.kind_is(expr, F64_KINDS)

    def rounded(self, expr: Expr):
        """``expr`` as the math's dtype: a float64 value rounded once (a call's through a temporary,
        so that a spelling that reads it twice repeats a name, not the computation)."""
        if not self.f64(expr):
            return expr
        if isinstance(expr, Var):
            return Code(f"{expr.name}.to(_CT)", ATOM)
        return self.temp(f"({self._print(expr)}).to(_CT)")

    def operands(self, expr: Call) -> list:
        args = super().operands(expr)
        return args if self.f64(expr) else [self.rounded(a) for a in args]

    def bound(self, expr: Expr) -> Expr:
        """``expr`` itself if it is a name or a number, else a temporary holding it; a float64 value
        rounded to the math's dtype (what a reduction takes)."""
        if self.f64(expr):
            return Var(str(self.rounded(expr)))
        return expr if not isinstance(expr, Call) else Var(self.temp(self._print(expr)))

    # per-step scalars: see CodePrinter.per_step_power
    PRECISE: ClassVar[dict[str, str]] = {"exp": "tl.exp({0})", "expm1": "libdevice.expm1({0})",
                                         "log1p": "libdevice.log1p({0})", "log": "tl.log({0})",
                                         "where": "tl.where({0}, {1}, {2})"}

    def per_step_power(self, expr: Expr) -> bool:
        return (isinstance(expr, Call) and expr.op == "power" and free_vars(expr) <= self.kinds.keys()
                and all(expr_kind(a, self.kinds, _fail) in ("const", "uniform") for a in expr.args))

    def _print_Call(self, expr: Call) -> Code:
        outer, self._in_f64 = self._in_f64, self.f64(expr)
        try:
            return self._call(expr)
        finally:
            self._in_f64 = outer

    def _call(self, expr: Call) -> Code:
        op = OPS[expr.op]
        if op.shape == REDUCE:
            return self._print(op.reduction.of_number(*[self.bound(a) for a in expr.args]))
        if expr.op == "interp" and isinstance(expr.args[2], Var) and expr.args[2].name in self.complements:
            x, y, a = expr.args
            weights = [Var(self.complements[a.name]), a]
            if not self._in_f64:  # (the complement is a float64 argument, as the weight is)
                x, y = self.rounded(x), self.rounded(y)
                weights = [Code(f"{w.name}.to(_CT)", ATOM) for w in weights]
            return self.fill("{2} * {0} + {3} * {1}", [x, y, *weights])
        text = super()._print_Call(expr)
        return self.fill("{0}.to(tl.float32)", [text]) if op.truth else text


@dataclass
class Reduction:
    """``name = op(*args)``, a value that needs a pass over the tensor (args in kernel names).

    ``scope``: ``tensor`` (one number per parameter), ``global`` (one for all), ``row`` or
    ``col`` (rowmean/colmean). ``over``: the kind of the reduced value (a row value is summed
    once per row, not once per element). ``slots`` index its accumulators; ``level`` is the pass
    that computes it."""

    name: str
    op: str
    args: tuple[Expr, ...]
    scope: str
    over: str = "full"
    slots: list[int] = field(default_factory=list)
    level: int = 1


@dataclass
class Family:
    """One path lowered for the kernel: single-assignment statements over kernel names, their
    kinds, the reductions cut out of them, its states and the shape facts it reads."""

    spec: Program
    stmts: list[Assign]
    kinds: dict[str, str]
    reductions: dict[str, Reduction]
    states: tuple[tuple[str, str], ...]  # (name, kind)
    names: dict[str, str]  # input name -> kernel name
    facts: dict[str, tuple]  # kernel name -> ("ndim",) | ("size",) | ("dim", i)
    update: Expr
    new_states: tuple[Expr, ...]
    n_slots: int = 0

    @property
    def narrow(self) -> list[str]:
        """States shared by several elements (row, col, scalar) that the step changes: written
        through ``next``, then copied in (one the step leaves as it is has no ``next``: an unwritten
        buffer copied in gave it uninitialised memory)."""
        changed = [new != Var(self.names[n]) for (n, _), new in zip(self.states, self.new_states)]
        return [n for (n, k), c in zip(self.states, changed) if k != "full" and c]

    @property
    def wide(self) -> list[Reduction]:
        return [r for r in self.reductions.values() if r.scope in ("row", "col")]

    @property
    def needs_2d(self) -> bool:
        return bool(self.wide) or any(k in ("row", "col") for k in self.kinds.values())

    def deps(self, name: str, memo: dict[str, set[str]]) -> set[str]:
        """Reductions that the value ``name`` reads, directly or through statements."""
        if name not in memo:
            memo[name] = set()
            defs = {a.target: a for a in self.stmts}
            out = {name} if name in self.reductions else set()
            if name in defs:
                for v in free_vars(defs[name].expr):
                    out |= self.deps(v, memo)
            memo[name] = out
        return memo[name]


def _fail(msg, hint=None):
    raise DslError(msg, hint=hint)


def lower(spec: Program) -> Family:
    """Single-assignment form of a straight-line program with its reductions cut out.

    Every assignment gets a kernel name of its own (``m`` -> ``m_1`` when ``m`` is reassigned);
    each reduction over a vector value becomes a :class:`Reduction` read through a name, so the
    passes after it can load its finished value; shape facts become float64 numbers
    (kind ``static``) read from the tensor's table row.

    Example:
        >>> from optdsl import parse
        >>> fam = lower(parse("def f(w, g, lr):\\n    return lr * g / norm(g)\\n"))
        >>> [(r.op, r.scope) for r in fam.reductions.values()]
        [('norm', 'tensor')]
    """
    used = {"tl", "triton", "torch", "libdevice", "math", "os", "float"}
    kinds: dict[str, str] = {}

    def bind(name: str, kind: str) -> str:
        kname = fresh_name(name if not name.startswith("_") else "u" + name, used)
        kinds[kname] = kind
        return kname

    inputs = {"w": "full", "g": "full", "lr": "uniform", "step": "uniform",
              **{h.name: "uniform" for h in spec.hypers}, **{s.name: s.kind for s in spec.states}}
    names = {n: bind(n, k) for n, k in inputs.items()}
    env = dict(names)  # DSL name -> its current kernel name
    reductions: dict[str, Reduction] = {}
    facts: dict[str, tuple] = {}
    stmts: list[Assign] = []

    def rename(expr: Expr) -> Expr:
        if isinstance(expr, Var):
            return Var(env[expr.name])
        if isinstance(expr, Call):
            if OPS[expr.op].shape == STATIC:
                fact = (expr.op,) + tuple(int(a.value) for a in expr.args[1:])
                name = next((k for k, v in facts.items() if v == fact), None)
                if name is None:
                    name = bind("_".join(str(f).replace("-", "m") for f in fact), "static")
                    facts[name] = fact
                return Var(name)
            return Call(expr.op, tuple(rename(a) for a in expr.args))
        return expr

    def kind_of(expr: Expr) -> str:
        return expr_kind(expr, kinds, _fail)

    def cut(call: Call) -> Expr:
        op = OPS[call.op]
        if op.shape not in (REDUCE, GLOBAL, ROW, COL):
            return call
        over = kind_of(call.args[0]) if len(call.args) == 1 else kind_of(Call("add", call.args))
        if op.shape == REDUCE and over not in VECTOR_KINDS:
            return call  # one number per tensor already: printed in place
        scope = {REDUCE: "tensor", GLOBAL: "global", ROW: "row", COL: "col"}[op.shape]
        name = bind(call.op, {"tensor": "scalar", "global": "uniform"}.get(scope, scope))
        reductions[name] = Reduction(name, call.op, call.args, scope, over)
        return Var(name)

    for a in spec.body:
        expr = map_calls(rename(a.expr), cut)
        kname = bind(a.target, kind_of(expr))
        stmts.append(Assign(kname, expr, a.loc))
        env[a.target] = kname
    update = map_calls(rename(spec.update), cut)
    new_states = tuple(map_calls(rename(e), cut) for e in spec.new_states)
    for e in [a.expr for a in stmts] + [update, *new_states]:
        for node in walk(e):
            if isinstance(node, Call) and OPS[node.op].triton is None and OPS[node.op].shape != REDUCE:
                raise TritonUnsupported(f"{node.op}() has no Triton spelling")
    fam = Family(spec, stmts, kinds, reductions, tuple((s.name, s.kind) for s in spec.states), names, facts,
                 update, new_states)
    for r in reductions.values():
        if r.scope == "tensor":
            r.slots = list(range(fam.n_slots, fam.n_slots + len(OPS[r.op].reduction.terms)))
            fam.n_slots += len(r.slots)
    return fam


def assign_levels(families: list[Family]) -> int:
    """Give every reduction its pass, ``level(r) = 1 + max(level(d) for the reductions d that r
    reads, default 0)``; a global reduction gets the same pass in every family. Returns the number
    of passes, the largest level.

    Example:
        >>> import optdsl
        >>> fams = families(optdsl.load("adafactor"))
        >>> assign_levels(fams)  # rms(w) and the means of g^2; then the mean of r; then rms(u)
        3
        >>> [(r.op, r.level) for r in fams[0].reductions.values()]
        [('rms', 1), ('rowmean', 1), ('colmean', 1), ('colmean', 2), ('rms', 3)]
    """
    glevel: dict[str, int] = {}
    while True:
        for fam in families:
            memo: dict[str, set[str]] = {}
            for r in fam.reductions.values():  # statement order: what it reads comes first
                reads = set().union(*[fam.deps(v, memo) for a in r.args for v in free_vars(a)])
                r.level = 1 + max((fam.reductions[d].level for d in reads), default=0)
                if r.scope == "global":
                    r.level = max(r.level, glevel.get(r.name, 0))
        new: dict[str, int] = {}
        for fam in families:
            for r in fam.reductions.values():
                if r.scope == "global":
                    new[r.name] = max(new.get(r.name, 0), r.level)
        if new == glevel:
            return max([r.level for fam in families for r in fam.reductions.values()], default=0)
        glevel = new


# --- kernel text ---

class _KernelWriter:
    """Writes the passes of one family as ``@triton.jit`` functions.

    Table row layout (int64): numel, &w, &g, &state..., &next (narrow states)..., shape facts...,
    then C and R*C and one accumulator offset per row/col reduction when the family is 2-d."""

    def __init__(self, fam: Family, gslots: dict[str, list[int]], complemented: tuple[str, ...] = ()):
        self.fam, self.gslots = fam, gslots
        self.complements = {fam.names[h]: f"_one_minus_{fam.names[h]}" for h in complemented}
        self.printer = TritonPrinter(fam.kinds, self.complements)
        self.tiles = False  # writing a tiled pass (see write)
        self.col = {"w": 1, "g": 2, **{s: 3 + i for i, (s, _) in enumerate(fam.states)}}
        k = 3 + len(fam.states)
        self.next_col = {s: k + i for i, s in enumerate(fam.narrow)}
        k += len(fam.narrow)
        self.fact_col = {n: k + i for i, n in enumerate(fam.facts)}
        k += len(fam.facts)
        self.shape_col = k if fam.needs_2d else None
        k += 2 if fam.needs_2d else 0
        self.wide_col = {r.name: k + i for i, r in enumerate(fam.wide)}
        self.ncol = k + len(fam.wide)

    def needed(self, roots: list[Expr]) -> tuple[list[Assign], set[str]]:
        """Statements (in order) and names of inputs/reductions that ``roots`` read."""
        want = set().union(*[free_vars(e) for e in roots]) if roots else set()
        keep = []
        for a in reversed(self.fam.stmts):
            if a.target in want:
                keep.append(a)
                want |= free_vars(a.expr)
        return keep[::-1], want

    def kind(self, e: Expr) -> str:
        return expr_kind(e, self.fam.kinds, _fail)

    def write(self, name: str, level: int | None, tiles: bool = False) -> str:
        """The kernel of pass ``level`` (None: the final pass). ``tiles``: a reduction pass whose
        programs each take a tile of ``_BLOCK // _TC`` rows by ``_TC`` columns of one matrix of a
        tensor (its last two dimensions) instead of a chunk of ``_BLOCK`` consecutive elements, so
        a column's sum over the tile joins its accumulator in one atomic, not one per element."""
        fam = self.fam
        self.tiles = tiles
        final = level is None
        names = fam.names
        state_kind = dict(fam.states)
        if final:
            stores = [(s, e) for (s, _), e in zip(fam.states, fam.new_states) if e != Var(names[s])]
            roots, todo = [fam.update] + [e for _, e in stores], []
        else:
            todo = [r for r in fam.reductions.values() if r.level == level]
            roots = [a for r in todo for a in r.args]
        stmts, want = self.needed(roots)
        if final:
            want.add(names["w"])
        constants = ("_BLOCK", "_DT", "_GT", "_CT", "_MASKED", "_ALIGNED", *(("_TC",) if tiles else ()))
        params = ["_table", "_chunks", "_acc", "_gacc", "_wacc", *(f"{p}: tl.float64" for p in self.params()),
                  *(f"{c}: tl.constexpr" for c in constants)]
        lines = [
            "@triton.jit",
            bracketed(f"def {name}(", params, "):"),
            "    _c = tl.program_id(0)",
            "    _t = tl.load(_chunks + 2 * _c)",
            "    _chunk = tl.load(_chunks + 2 * _c + 1)",
            f"    _entry = _table + _t * {self.ncol}",
            "    _n = tl.load(_entry)",
            "    _numel = _n.to(_CT)",
        ]
        if fam.needs_2d:
            lines += [f"    _C = tl.load(_entry + {self.shape_col})",
                      f"    _RC = tl.load(_entry + {self.shape_col + 1})"]
        if tiles:  # _chunk numbers the tiles: across a row of tiles, down the matrix, then matrix by matrix
            lines += [
                "    _R = _RC // _C",
                "    _across = (_C + _TC - 1) // _TC",
                "    _down = (_R + _BLOCK // _TC - 1) // (_BLOCK // _TC)",
                "    _mat = _chunk // (_across * _down)",
                "    _rows = _chunk // _across % _down * (_BLOCK // _TC) + tl.arange(0, _BLOCK // _TC)",
                "    _cols = _chunk % _across * _TC + tl.arange(0, _TC)",
                "    _rmask = _rows < _R",
                "    _cmask = _cols < _C",
                "    _mask = _rmask[:, None] & _cmask[None, :]",
                "    _offs = _mat * _RC + _rows[:, None] * _C + _cols[None, :]",
                "    _ri = tl.broadcast_to((_mat * _R + _rows)[:, None], [_BLOCK // _TC, _TC])",
                "    _ci = tl.broadcast_to((_mat * _C + _cols)[None, :], [_BLOCK // _TC, _TC])",
            ]
        else:
            lines += [
                "    _offs = _chunk.to(tl.int64) * _BLOCK + tl.arange(0, _BLOCK)",
                "    if _MASKED:  # the tensor's last chunk",
                "        _mask = _offs < _n",
                "    else:  # a whole chunk: a constant mask, so loads and stores are 16-byte vectors",
                "        _mask = tl.full([_BLOCK], 1, tl.int1)",
            ]
            if fam.needs_2d:
                lines += ["    _ri = _offs // _C", "    _ci = (_offs // _RC) * _C + _offs % _C"]
        used = want | {c for h, c in self.complements.items() if h in want}
        for p in self.params():  # float64 in and kept (F64_KINDS; a Python float under TRITON_INTERPRET)
            if p in used:
                lines.append(f"    {p} = {p} + tl.zeros([], tl.float64)")
        index = {"full": "_offs", "row": "_ri", "col": "_ci"}
        # a full state the final pass writes needs its pointer, whether or not the pass reads it
        stored = {s for s, _ in stores if state_kind[s] == "full"} if final else set()
        for src in ["w", "g", *state_kind]:
            kname = names[src]
            if kname not in want and src not in stored:
                continue
            kind = state_kind.get(src, "full")
            dt = {"w": "_DT", "g": "_GT"}.get(src, "_CT")
            lines.append(f"    _{kname}_ptr = _pointer(_entry, {self.col[src]}, {dt}, _ALIGNED)")
            if kname not in want:
                continue
            if kind == "scalar":
                lines.append(f"    {kname} = tl.load(_{kname}_ptr).to(_CT)")
            else:
                lines.append(f"    {kname} = tl.load(_{kname}_ptr + {index[kind]}, mask=_mask).to(_CT)")
        for kname, col in self.fact_col.items():
            if kname in want:
                lines.append(f"    {kname} = tl.load(_entry + {col}).to(tl.float64)")
        for r in fam.reductions.values():
            if r.name in want:
                lines += self._line(f"{r.name} = {{}}", self._finished(r, len(f"{r.name} = ")))
        for a in stmts:
            self._narrow(len(f"{a.target} = "))
            lines += ["    " + line for line in self.printer.statement(a.target, a.expr)]
        if final:
            w = names["w"]
            lines += self._line(f"tl.store(_{w}_ptr + _offs, ({w} - {{}}).to(_DT), mask=_mask)",
                                self._vector(fam.update))
            for s, e in stores:
                lines += self._store(s, state_kind[s], e)
        for r in todo:
            lines += self._accumulate(r)
        return "\n".join(lines) + "\n"

    def _store(self, s: str, kind: str, e: Expr) -> list[str]:
        kname = self.fam.names[s]
        if kind == "full":
            return self._line(f"tl.store(_{kname}_ptr + _offs, {{}}, mask=_mask)", self._vector(e))
        lines = [f"    _{kname}_next = _pointer(_entry, {self.next_col[s]}, _CT, False)"]
        if kind == "scalar":  # one value per tensor: the tensor's first chunk writes it
            self._narrow(len("(") + len(" + tl.zeros([], _CT)).to(_CT)"))
            text = self.printer.doprint(e)
            if self.kind(e) == "const":  # a Python number: made a tensor first (a float has no .to)
                text = f"{text} + tl.zeros([], _CT)"
            value = self.printer.temp(f"({text}).to(_CT)")
            return lines + self._flush() + ["    if _chunk == 0:", f"        tl.store(_{kname}_next, {value})"]
        first = "(_offs % _C == 0)" if kind == "row" else "(_offs % _RC < _C)"  # one element per entry
        index = "_ri" if kind == "row" else "_ci"
        store = f"tl.store(_{kname}_next + {index}, {{}}, mask=_mask & {first})"
        return lines + self._line(store, self._vector(e))

    def _flush(self) -> list[str]:
        """The kernel lines binding the printer's temporaries (they go before the line using them)."""
        return ["    " + line for line in self.printer.flush()]

    def _narrow(self, around: int) -> None:
        """Print what comes next narrow enough for a line of the kernel's body (``around`` columns of
        it taken by what surrounds the value), and for a temporary's line should it be bound to one."""
        self.printer.width = LINE - 4 - max(around, _TEMP)

    def _line(self, template: str, value: str) -> list[str]:
        """The kernel body's line ``template`` with ``value`` in its ``{}``, after the temporaries it
        reads. Where black would split the line, ``value`` goes to a temporary first: the printer
        lays the file out, whether black is installed or not (issue 10, item 7)."""
        if 4 + len(template) - 2 + len(value) > LINE:
            value = self.printer.temp(value)
        return self._flush() + ["    " + template.format(value)]

    def _count(self, r: Reduction) -> str:
        """The number of elements ``r`` averages over (bound to a temporary: no parentheses)."""
        counts = {"row": "_numel / _C.to(_CT)", "col": "_numel * _C.to(_CT) / _RC.to(_CT)"}
        return counts.get(r.over, "_numel")

    def _finished(self, r: Reduction, around: int) -> str:
        if r.scope in ("row", "col"):
            index = "_ri" if r.scope == "row" else "_ci"
            count = "_C.to(_CT)" if r.scope == "row" else "(_RC // _C).to(_CT)"
            wide = f"_wacc + tl.load(_entry + {self.wide_col[r.name]}) + {index}"
            return f"tl.load({wide}, mask=_mask).to(_CT) / {count}"
        totals = {f"a{k}": Var(self.printer.temp(f"tl.load({self._address(r, s)}).to(_CT)"))
                  for k, s in enumerate(self._slots(r))}
        finish = OPS[r.op].reduction.finish
        if "n" in free_vars(finish):
            totals["n"] = Var(self.printer.temp(self._count(r)))
        self._narrow(around)
        return self.printer.doprint(substitute(finish, totals))

    def _accumulate(self, r: Reduction) -> list[str]:
        """Each chunk's totals of ``r`` (op.reduction's terms) added (or maxed) into its accumulators."""
        if r.scope in ("row", "col"):
            start = f"_wacc + tl.load(_entry + {self.wide_col[r.name]})"
            value = self._vector(r.args[0])
            if self.tiles:  # one sum per row (or column) of the tile
                index, axis, mask = ("_mat * _R + _rows", 1, "_rmask") if r.scope == "row" else (
                    "_mat * _C + _cols", 0, "_cmask")
                total = f"_{r.name}_tile"
                return (self._line(f"{total} = tl.sum(tl.where(_mask, {{}}, 0.0), axis={axis})", value)
                        + [f"    tl.atomic_add({start} + {index}, {total}, mask={mask})"])
            target = f"{start} + {'_ri' if r.scope == 'row' else '_ci'}"
            if r.scope == "col":  # a column's elements are C apart: one atomic each
                return self._line(f"tl.atomic_add({target}, {{}}, mask=_mask)", value)
            # a row's elements are a run of the chunk: summed by a segmented scan, each run's total
            # added by its last element (one atomic per row and chunk, not one per element, which
            # serialises the C atomics on one address)
            total = f"_{r.name}_run"
            ends = "_mask & (((_offs + 1) % _C == 0) | (tl.arange(0, _BLOCK) == _BLOCK - 1))"
            scan = f"{total}, _ = tl.associative_scan((tl.where(_mask, {{}}, 0.0), _ri), 0, _segment_sum)"
            return (self._line(scan, value)
                    + [f"    {total}_at = {target}",
                       f"    _run_ends = {ends}", f"    tl.atomic_add({total}_at, {total}, mask=_run_ends)"])
        reduction = OPS[r.op].reduction
        self._narrow(0)
        xs = [self.printer.bound(a) for a in r.args]
        terms = [self.printer.doprint(substitute(t, {"x": xs[0], "y": xs[-1]})) for t in reduction.terms]
        # each term is summed over its own values, as the interpreter does (cosine_sim(g, c) adds c * c
        # once): a row value appears C times among the elements, a column value R times, so it is
        # weighed down; a number per tensor is added once
        kinds = [self.kind(substitute(t, {"x": r.args[0], "y": r.args[-1]})) for t in reduction.terms]
        how = reduction.combine
        axis = "" if self.tiles else ", axis=0"  # a tile's total: over both of its axes
        lines = []
        for term, kind, slot in zip(terms, kinds, self._slots(r)):
            target = self._address(r, slot)
            weight = {"row": " / _C.to(_CT)", "col": " * _C.to(_CT) / _RC.to(_CT)"}.get(kind, "")
            if kind not in VECTOR_KINDS:  # one number per tensor: its first chunk adds it, once
                value = self.printer.temp(term if how == "sum" else f"_nan_positive({term})")
                add = f"        tl.atomic_{_ATOMIC[how]}({target}, {value})"
                lines += self._flush() + ["    if _chunk == 0:", add]
            elif how == "sum":
                add = f"tl.atomic_add({target}, tl.sum(tl.where(_mask, {{}}{weight}, 0.0){axis}))"
                lines += self._line(add, f"({term})" if weight else term)
            else:
                most = f'tl.atomic_max({target}, _nan_amax(tl.where(_mask, {{}}, -float("inf"))))'
                lines += self._line(most, term)
        return lines + self._flush()

    def _slots(self, r: Reduction) -> list[int]:
        return r.slots if r.scope == "tensor" else self.gslots[r.name]

    def _address(self, r: Reduction, slot: int) -> str:
        """The accumulator of ``r``'s total at ``slot`` (this tensor's, or the global one)."""
        return f"_acc + _t * {self.fam.n_slots} + {slot}" if r.scope == "tensor" else f"_gacc + {slot}"

    def _vector(self, e: Expr) -> str:
        """``e`` as one _CT value per element of the chunk (temporaries pending in the printer)."""
        shape = "[_BLOCK // _TC, _TC]" if self.tiles else "[_BLOCK]"
        self._narrow(len("((") + len(f" + tl.zeros({shape}, _CT))).to(_CT)"))
        text = self.printer.doprint(e)
        if self.kind(e) in F64_KINDS:
            text = f"(({text}).to(_CT) + tl.zeros({shape}, _CT))"
        elif self.kind(e) not in VECTOR_KINDS:
            text = f"({text} + tl.zeros({shape}, _CT))"
        return f"({text}).to(_CT)"

    def params(self) -> list[str]:
        names = self.fam.names
        return ([names["lr"], names["step"]] + [names[h.name] for h in self.fam.spec.hypers if h.name != "lr"]
                + list(self.complements.values()))


def weights_of(fam: Family, hyper: str) -> bool:
    """Is the hyperparameter ``hyper`` an ``interp`` weight in ``fam`` (then the kernel takes
    ``1 - hyper`` as an argument of its own)?"""
    roots = [a.expr for a in fam.stmts] + [fam.update, *fam.new_states]
    weight = Var(fam.names[hyper])
    return any(isinstance(n, Call) and n.op == "interp" and n.args[2] == weight
               for e in roots for n in walk(e))


def families(program: Program) -> list[Family]:
    """One :class:`Family` per variant of ``program`` (:func:`optdsl.passes.variants`, whose order
    the torch module's ``PATHS`` keeps: the torch dispatch picks the family).

    Example:
        >>> import optdsl
        >>> len(families(optdsl.load("adamw"))), len(families(optdsl.load("adafactor")))
        (1, 3)
    """
    return [lower(spec) for spec in variants(program).programs]


def kernels_source(program: Program) -> str:
    """The Triton part of the generated module: the runtime (:mod:`codegen.runtime.triton_kernels`),
    the kernels, their table ``_TRITON`` and ``_triton_group_step``, ``_triton_available``.

    Raises :class:`TritonUnsupported` when the kernel cannot run ``program``.

    Example:
        >>> import optdsl, re
        >>> re.findall(r"def (_path\\w+)\\(", kernels_source(optdsl.load("lamb")))  # norms, then the update
        ['_path0_pass1', '_path0_final']
    """
    fams = families(program)
    n_passes = assign_levels(fams)
    hypers = tuple(h.name for h in program.hypers if h.name != "lr")
    complemented = tuple(h for h in hypers if any(weights_of(fam, h) for fam in fams))
    gslots: dict[str, list[int]] = {}
    n_global = 0
    for fam in fams:
        for r in fam.reductions.values():
            if r.scope == "global" and r.name not in gslots:
                k = len(OPS[r.op].reduction.terms)
                gslots[r.name] = list(range(n_global, n_global + k))
                n_global += k
    kernels, table = [], []
    for i, fam in enumerate(fams):
        writer = _KernelWriter(fam, gslots, complemented)
        passes, tiles = [], []
        for level in [*range(1, n_passes + 1), None]:
            at_level = [r for r in fam.reductions.values() if r.level == level]
            if level is not None and not at_level:
                passes.append("None")
                tiles.append("None")
                continue
            kname = f"_path{i}_" + ("final" if level is None else f"pass{level}")
            kernels.append(writer.write(kname, level))
            passes.append(kname)
            # a pass with a column sum has a tiled twin, which the runtime runs on wide matrices
            tiled = any(r.scope == "col" for r in at_level)
            if tiled:
                kernels.append(writer.write(f"{kname}_tiles", level, tiles=True))
            tiles.append(f"{kname}_tiles" if tiled else "None")
        amax = tuple(s for r in fam.reductions.values() if r.scope == "tensor"
                     and OPS[r.op].reduction.combine == "max" for s in r.slots)
        wide = tuple(r.scope for r in fam.wide)
        fields = {"states": literal(fam.states, used=12 + len("states="), indent=12),
                  "facts": literal(tuple(fam.facts.values()), used=12 + len("facts="), indent=12),
                  "narrow": literal(tuple(fam.narrow)),
                  "needs_2d": fam.needs_2d, "slots": fam.n_slots, "amax_slots": literal(amax),
                  "wide": literal(wide), "passes": bracketed("(", passes, ")", used=12 + len("passes=")),
                  "tiles": bracketed("(", tiles, ")", used=12 + len("tiles="))}
        entry = bracketed("_Family(", [f"{k}={v}" for k, v in fields.items()], "),", used=8)
        table.append(textwrap.indent(entry, " " * 8))
    names = {k: literal(v, used=4 + len(f"{k}="), indent=4)
             for k, v in (("hypers", hypers), ("complements", complemented))}
    kernels_table = "\n".join(["_TRITON = _TritonKernels(", "    families=[", *table, "    ],",
                                *(f"    {k}={v}," for k, v in names.items()),
                                f"    global_slots={n_global},", ")", ""])
    return "\n\n".join([runtime_source("triton_kernels"), *kernels, kernels_table, GLUE])


# the module's backend functions (the extra-backend protocol of codegen.torch_target)
GLUE = '''def _triton_group_step(path, params, grads, states, /, *, lr, step, **hyper):
    """One step of a group through the Triton kernels (the eager step where they cannot run)."""
    _TRITON.group_step(_PROGRAM, path, params, grads, states, lr=lr, step=step, **hyper)


_triton_available = _TRITON.available
'''


def unsupported_source(reason: str) -> str:
    """The extra-backend source for a program the kernel cannot run: never available, and an
    explicit ``backend="triton"`` says why.

    Example:
        >>> namespace = {}
        >>> exec(unsupported_source("no kernel for this program"), namespace)
        >>> namespace["_triton_available"]("cuda")
        False
        >>> namespace["_triton_group_step"](0, [], [], [], lr=0.1, step=1)
        Traceback (most recent call last):
        NotImplementedError: no kernel for this program
    """
    return (f"_TRITON_UNSUPPORTED = {reason!r}\n\n\ndef _triton_available(device):\n    return False\n\n\n"
            "def _triton_group_step(path, params, grads, states, /, *, lr, step, **hyper):\n"
            "    raise NotImplementedError(_TRITON_UNSUPPORTED)\n")


def emit(program: Program) -> str:
    """The torch module of :mod:`codegen.torch_target` with the Triton kernels as backend ``"triton"``.

    Example:
        >>> import optdsl
        >>> src = emit(optdsl.load("adamw"))
        >>> "@triton.jit" in src and "class AdamW(_Optimizer)" in src
        True
    """
    try:
        extra = kernels_source(program)
    except TritonUnsupported as e:
        extra = unsupported_source(f"the Triton kernel cannot run {program.name}: {e}")
    return torch_target.emit(program, extra_backends={"triton": extra})


def entry_point(module, program: Program):
    """The optimizer class of a loaded generated module (``backend="triton"`` selects the kernels):
    its attribute :func:`codegen.torch_target.class_name` names.

    Example:
        >>> import types, optdsl
        >>> module = types.SimpleNamespace(AdamW="the AdamW class")  # stands in for a loaded module
        >>> entry_point(module, optdsl.load("adamw"))
        'the AdamW class'
    """
    return torch_target.entry_point(module, program)


