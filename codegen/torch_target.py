"""PyTorch target: a validated Program -> a standalone module holding a functional step and a
``torch.optim.Optimizer`` subclass.

The generated module (``optdsl compile SRC --target torch``) imports only torch. It holds the
runtime (:mod:`codegen.runtime.torch_optimizer`, copied verbatim between two marker lines: the
Optimizer base class, the step plan, state_dict handling, sparse rows, AMP) and, after it, what is
specific to the program ``lion``:

  - per path ``k``: ``_path<k>_segment<j>`` (one tensor's step, cut at the global reductions),
    ``_path<k>_uniforms`` (the per-step scalars: bias corrections...) and ``_path<k>_group`` (the
    step over a list of tensors with ``torch._foreach_*`` ops, states updated in place), after
    ``_path<k>_stage<d>`` where the path has per-tensor or global reductions (see :func:`_split`;
    the runtime combines a global's partial totals over every group between stages), and
    ``_path<k>_group_<n>``, the step printed for a common case of one of its tests, to which it
    hands a group in that case (Tiger's: no nan in any grad; see :func:`_variants`);
  - ``_PROGRAM = _Program(...)``: the table the runtime reads (paths, shape conditions, functions,
    extra backends, the torch.optim checkpoints the program loads);
  - ``lion_step(params, grads, states, *, lr, step, **hyper) -> (new_params, new_states)``: a pure
    function over lists of tensors. No in-place ops, no ``.item()``, no data-dependent Python
    control flow: it runs under ``torch.func.vmap`` and ``torch.compile``;
  - ``class Lion(_Optimizer)`` with ``backend="eager" | "compiled" | <extra>``; ``Lion.functional``
    is ``lion_step``.

Paths (static specialisation). Every ``where`` whose condition is a static shape fact
(``ndim(w) >= 2``) is resolved at generation time: each assignment of truth values to those
conditions gives one *path*, a straight-line program with its own states (dead ones dropped, as
:func:`optdsl.passes.specialize` does for one shape). At run time the runtime evaluates the
conditions with Python-level shape tests and picks the path.

Printed code stays linear in the program: an argument that a torch spelling repeats (``cbrt``) and
any large subexpression is bound to a temporary first. Numbers are printed as tensors where
Python would raise (``1 / 0`` is inf at step(), as in the interpreter). Per-step scalars are
computed in float64 and cast once. The output is laid out here, line by line, for a 110-column
width: it is the same text on every machine, whatever formatter is installed.

Hook for extra backends (the Triton target uses it)::

    emit(program, extra_backends={"triton": SOURCE})

``SOURCE`` is Python text placed after the program's functions (so it may use ``torch``, the
runtime, ``PATHS``, ``STATE_NAMES``, ``HYPER_DEFAULTS`` and ``_eager_group_step`` at call time). It
must define, for a backend called ``NAME``:

  - ``_NAME_group_step(path, params, grads, states, *, lr, step, **hyper) -> None``: one optimizer
    step for a group of tensors that share ``path`` (an index into ``PATHS``), device and dtype.
    ``params``/``grads`` are lists of tensors (params may be bf16/fp16/fp32/fp64); ``states`` maps
    each state name of ``PATHS[path].states`` to a list of tensors in the compute dtype (float32,
    float64 for float64 params), shaped as their kind says (full: like w; row: ``w.shape[:-1]``;
    col: ``w.shape[:-2] + w.shape[-1:]``; scalar: ``()``). ``lr``, ``step`` (1-based) and every
    hyperparameter are Python floats. Update ``params`` and the state tensors in place.
  - ``_NAME_available(device: torch.device) -> bool``: may this backend run on ``device``?

``_eager_group_step`` has exactly this signature. The optimizer calls an extra backend's group
steps only for programs without global reductions (``GLOBALS == ()``); for other programs one is
refused with a ValueError, but for the built-in ``cpp`` where it runs them (below).

The ``cpp`` backend is built in through the same hook: a program whose every path has full, row or
column states and no shape fact (:func:`codegen.cpp_target.supports`; its per-tensor, row and
column reductions become passes), and whose global reductions, if any, each reduce an input before
anything else (``clip_by_global_norm``: :meth:`_Module.kernel_programs`; the runtime takes them
over all groups and hands each kernel their values as hyperparameters), gets C++ kernels printed
from its hoisted paths, with the runtime of :mod:`codegen.runtime.cpp_kernels` (compiled on first
use with the machine's compiler, cached by source hash; no compiler: eager, after a warning).
The default backend is the first available of: each extra backend in ``extra_backends`` order
(only on non-CPU devices; on a CPU only ``cpp``), ``"compiled"`` (when a C++ compiler is found),
``"eager"``; on a CPU a model under 2**20 elements takes its first 1,000 steps eager (a shorter
run would not repay the build) and never compiles with torch.compile (the runtime's
``_backend_for``).

Example:
    >>> import optdsl
    >>> src = emit(optdsl.load("lion"))
    >>> "class Lion(_Optimizer)" in src and "def lion_step(" in src
    True
"""

from __future__ import annotations

import keyword
import math
import re
import textwrap
from dataclasses import dataclass

import numpy as np

from optdsl.checkpoints import torch_checkpoints
from optdsl.errors import DslError
from optdsl.ir import (
    Assign,
    Call,
    Const,
    Expr,
    Hyper,
    Program,
    Var,
    free_vars,
    fresh_name,
    names_in,
    substitute,
    walk,
)
from optdsl.latex import to_latex
from optdsl.ops import COL, ELEMENTWISE, GLOBAL, OPS, REDUCE, ROW, STATIC
from optdsl.passes import eliminate_common, flatten, global_statements, segments, variants
from optdsl.passes.specialize import Tree
from optdsl.printer import ATOM, Code, CodePrinter, docstring, parenthesize, precedence_of, to_source
from optdsl.source import summary
from optdsl.symbolic import still_at_zero_gradient
from optdsl.typecheck import expr_kind, input_kinds, join

from . import cpp_target
from .eager_program import (
    _defer_branches,
    _fold_addcdiv,
    _fold_addcmul,
    _fold_axpy,
    _fold_nan_test,
    _inline_static,
    _live_after,
    _Split,
    _split,
    _step_cost,
    _Test,
    _variants,
    _where_blocks,
    _whole,
)
from .float_printer import FloatPrinter, NoFloatSpelling
from .float_printer import called_functions as float_called
from .generated import COMPILED_BY, check_identifier, domain_entries, number
from .layout import LINE
from .layout import bracketed as _layout
from .layout import call as _call
from .layout import function as _function
from .layout import literal as _literal
from .layout import wrap_comprehension as _wrap_comprehension
from .runtime import functions as runtime_functions
from .runtime import source as runtime_source
from .shape_python import plain_python, shape_test

NUMBER_KINDS = ("const", "static")
# Ops whose torch spelling accepts a Python number in any argument, next to a tensor.
CLASS_NAMES = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "lamb": "LAMB", "lars": "LARS",
               "adax": "AdaX", "adafactor": "Adafactor", "adagrad": "Adagrad", "rmsprop": "RMSprop"}


def class_name(program_name: str) -> str:
    """The optimizer class for a program: ``lion -> Lion``, ``adafactor_optax -> AdafactorOptax``.

    A name that would be a Python keyword (``none``, ``true_``) takes the suffix ``Optimizer``.

    Example:
        >>> class_name("lion"), class_name("adamw"), class_name("adafactor_optax"), class_name("none")
        ('Lion', 'AdamW', 'AdafactorOptax', 'NoneOptimizer')
    """
    name = "".join(CLASS_NAMES.get(part, part[:1].upper() + part[1:]) for part in program_name.split("_"))
    return f"{name}Optimizer" if keyword.iskeyword(name) else name


# --- paths: the program's static specialisations (optdsl.passes.variants) ----------------------
@dataclass(frozen=True)
class Path:
    """One straight-line specialisation (hoisted, dead code removed) and whether it needs ndim >= 2."""

    program: Program
    needs_2d: bool


def paths(program: Program) -> tuple[Tree, tuple[Expr, ...], list[Path]]:
    """``(tree, tests, paths)``: :func:`optdsl.passes.variants` of ``program`` (the decision tree of
    shape tests, the tests it asks, one straight-line program per leaf), each leaf with whether it
    needs ndim >= 2. ``paths[k]`` is the generated module's ``PATHS[k]``.

    Example:
        >>> import optdsl
        >>> tree, tests, ps = paths(optdsl.load("adafactor"))
        >>> len(tests), len(ps)
        (2, 3)
    """
    found = variants(program)
    out = [Path(spec, found.needs_2d(k)) for k, spec in enumerate(found.programs)]
    tests: list[Expr] = []
    pending = [found.tree]
    while pending:
        node = pending.pop()
        if not isinstance(node, int):
            tests += [] if node[0] in tests else [node[0]]
            pending += [node[2], node[1]]
    return found.tree, tuple(tests), out


def row_separable(found: list[Path]) -> str | None:
    """None when every path is *row-separable* (a step on some rows of w, g and the states equals
    those rows of the step on all rows), else why not: ops are elementwise or ``rowmean`` (within
    a row), shape facts are ``ndim(w)`` or ``dim(w, -1)``, and states are full or row-shaped.

    Example:
        >>> import optdsl
        >>> row_separable(paths(optdsl.load("adam"))[2]) is None, row_separable(paths(optdsl.load("lamb"))[2])
        (True, 'norm() reduces over the whole tensor')
    """
    for path in found:
        for s in path.program.states:
            if s.kind not in ("full", "row"):
                return f"state {s.name} is {s.kind}-shaped (shared by rows)"
        for e in [a.expr for a in path.program.body] + list(path.program.outputs()):
            for n in walk(e):
                if not isinstance(n, Call):
                    continue
                shape = OPS[n.op].shape
                last_axis = n.op == "dim" and isinstance(n.args[1], Const) and n.args[1].value == -1
                if shape in (REDUCE, COL, GLOBAL) or (shape == STATIC and n.op != "ndim" and not last_axis):
                    what = {REDUCE: "reduces over the whole tensor", COL: "reduces across rows",
                            GLOBAL: "reduces over all tensors"}.get(shape, "reads the number of rows")
                    return f"{n.op}() {what}"
    return None


# --- the per-tensor printer -----------------------------------------------------------------------
#: The ``ref`` whose numbers are float64 0-d tensors on the CPU: shape arithmetic's (the interpreter's
#: precision), where plain Python would raise (1 / 0) or differ (-0.0).
FLOAT64 = "torch.float64"


def float64_printer(kinds: dict[str, str], fail) -> TorchPrinter:
    """The printer of shape arithmetic where plain Python will not do: its shape facts are float64
    0-d tensors on the CPU and only literals are Python numbers, so that every op computes in
    float64, where ``1 / 0`` is inf and ``2 ** 2000`` does not raise."""
    return TorchPrinter(kinds, fail, ref=FLOAT64, scalars=("const",))


class TorchPrinter(CodePrinter):
    """One tensor's expressions as torch code. ``kinds`` maps names to shapes (see typecheck);
    row/col values are unsqueezed where they meet full ones (the interpreter's ``expand``), and
    Python numbers are made tensors where a torch function needs one. Truth values are 1.0/0.0.
    Parentheses come from precedence (:class:`optdsl.printer.CodePrinter`); statements arrive
    already cut to a bounded size (:func:`_cut`), so no temporaries are made here."""

    target = "torch"
    max_depth = 10_000

    def __init__(self, kinds: dict[str, str], fail, ref: str = "w", scalars: tuple[str, ...] = NUMBER_KINDS,
                 pick: bool = False, dtype: str | None = None):
        super().__init__()
        self.kinds, self.fail, self.ref, self.scalars = kinds, fail, ref, scalars
        self.pick = pick  # where() on a scalar condition (one per tensor) as the runtime's _pick
        self.dtype = dtype  # the dtype numbers made tensors take, where ref's may not be the step's

    def kind(self, expr: Expr) -> str:
        return expr_kind(expr, self.kinds, self.fail)

    def _print_Const(self, expr: Const) -> Code:
        text = number(expr.value)
        return Code(text, precedence_of(text))

    def _print_Var(self, expr: Var) -> Code:
        name = check_identifier(expr.name)
        if self.ref == FLOAT64 and self.kinds.get(expr.name) == "static":
            # a name bound to shape arithmetic: a Python float where that was plain Python, else a
            # tensor; the float64 arithmetic here needs a float64 tensor (`n >= 2` of a float has no .to)
            return self.tensor(name)
        return Code(name, ATOM)

    def dtype_text(self) -> str:
        """The dtype of the values printed here, as code (``ref`` is a tensor or a dtype)."""
        if self.dtype is not None:
            return self.dtype
        return self.ref if self.ref in (FLOAT64, "_dtype") else f"{self.ref}.dtype"

    def tensor(self, text: str) -> Code:
        return Code(f"_tensor({text}, {self.ref}{'' if self.dtype is None else ', ' + self.dtype})", ATOM)

    def _print_Call(self, expr: Call) -> Code:
        op = OPS.get(expr.op)
        if op is None:
            self.fail(f"unknown function {expr.op!r}")
        if self.kind(expr) == "static" and self.ref != FLOAT64:  # shape arithmetic in plain Python,
            plain = plain_python(expr, "torch")  # where that is exact
            if plain is not None:
                return Code(plain, precedence_of(plain))
            # else all of it in float64 0-d tensors, then in w's dtype (not computed in w's dtype:
            # 1e30 * size(w) * 1e10 / 1e39 overflowed, inf / inf; not made a Python float: float()
            # of a tensor breaks a torch.compile graph)
            return self.tensor(float64_printer(self.kinds, self.fail).doprint(expr))
        kinds = [self.kind(a) for a in expr.args]
        args = [self._print(a) for a in expr.args]
        if op.shape == STATIC:  # (reached in float64_printer only: elsewhere a fact is plain Python)
            return self.tensor(self.fill(f"float({op.torch})", args))
        numbers = [k in self.scalars for k in kinds]
        if op.shape in (ELEMENTWISE, REDUCE):  # (a two-argument reduction broadcasts as x * y does)
            out = join(*kinds)
            args = [_expand(a, k, out) for a, k in zip(args, kinds)]
            # a float zero: torch.compile (2.13) rewrites x * 0, the int 0, as zeros, inf and nan too
            args = [Code("0.0", ATOM) if a == "0" else a for a in args]
        if op.name == "where" and numbers[1] and numbers[2]:  # (of two numbers it makes a float32 tensor)
            args[1], numbers[1] = self.tensor(args[1]), False
        if all(numbers) and op.numbers_ok:  # IEEE results (1/0 = inf), not ZeroDivisionError
            args[0] = self.tensor(args[0])
            numbers = [False] * len(numbers)
        elif all(numbers) or not (op.numbers_ok or op.name in ("max", "min", "interp")):
            args = [self.tensor(a) if n else a for a, n in zip(args, numbers)]
            numbers = [False] * len(numbers)
        name = op.name
        if name == "where" and self.pick and kinds[0] == "scalar" and join(*kinds[1:]) in ("full", "row", "col"):
            return self.fill("_pick({0}, {1}, {2})", args)  # one tensor's condition: see _pick
        if name == "where" and numbers[0]:  # torch.where needs a tensor condition
            args[0] = self.tensor(args[0])
        if op.truth:  # the table's spelling is a bool tensor; the language's truth is 1.0 / 0.0, in
            # the step's dtype (torch.where's 1.0 and 0.0 made float32, which a float64 step then
            # summed into in place: 3e-7 off)
            return self.fill(f"{{0}}.to({self.dtype_text()})", [self.fill(op.torch, args)])
        if name in ("max", "min"):
            if numbers[0] or numbers[1]:
                t, n = (args[1], args[0]) if numbers[0] else (args[0], args[1])
                return self.fill(f"torch.clamp_{'min' if name == 'max' else 'max'}({{0}}, {{1}})", [t, n])
            return self.fill(f"torch.{name}imum({{0}}, {{1}})", args)
        if name == "interp":
            # a number weight a: 1 - a in Python's float64, as the interpreter takes it (torch.lerp
            # takes 1 - a in the tensors' dtype for a >= 0.5: in float32 1 - 0.999 keeps 4 digits,
            # and Amos's eager v was 1.3e-5 off after its first step)
            if any(numbers):
                return self.fill("(1 - {2}) * {0} + {2} * {1}", args)
            return self.fill("torch.lerp({0}, {1}, {2})", args)
        if op.shape == GLOBAL:
            self.fail(f"{name}() should have been hoisted")
        return self.fill(op.torch, args)


def _expand(text: str, kind: str, to: str) -> str:
    """A row (col) value where it meets a full one: one more axis, last (second-last)."""
    if to != "full" or kind not in ("row", "col"):
        return text
    return Code(f"{parenthesize(text, ATOM)}.unsqueeze({-1 if kind == 'row' else -2})", ATOM)


STATE_SHAPE = {"full": "w.shape", "row": "w.shape[:-1]", "col": "w.shape[:-2] + w.shape[-1:]", "scalar": "()"}


def _fit(text: str, kind: str, slot: str, ref: str = "w", scalars: tuple[str, ...] = NUMBER_KINDS) -> str:
    """A value of ``kind`` as a tensor of the state's (or parameter's) ``slot`` shape (``scalars``:
    the kinds that are Python numbers here)."""
    if kind == slot:
        return text
    shape = STATE_SHAPE[slot].replace("w.", f"{ref}.")
    if kind in scalars and kind != "uniform" and not _float32_literal(text):
        # a number float32 may not hold (1e39, shape arithmetic): torch.full refuses it beside a
        # float32 w ("cannot be converted ... without overflow"); as a tensor of w's dtype it is
        # rounded as the reference's cast rounds it (inf). (A group's uniform numbers come rounded.)
        return Code(f"torch.broadcast_to(_tensor({text}, {ref}), {shape})", ATOM)
    if kind in scalars:
        return f"torch.full({shape}, {text}, dtype={ref}.dtype, device={ref}.device)"
    if slot == "scalar":  # one uniform tensor must not become every parameter's state
        return f"{text}.clone()" if kind == "uniform" and text.isidentifier() else text
    return Code(f"torch.broadcast_to({_expand(text, kind, slot)}, {shape})", ATOM)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float32_literal(text: str) -> bool:
    """Is ``text`` a printed number (:func:`number`) that torch.full takes beside float32 tensors:
    inf, nan, or finite within float32's range?

    Example:
        >>> [_float32_literal(text) for text in ("0.9", "-1e999", "(1e999 * 0)", "1e+39", "w.numel()")]
        [True, True, True, False, False]
    """
    if text == number(math.nan):
        return True
    try:
        value = float(text)
    except ValueError:
        return False
    return not math.isfinite(value) or abs(value) <= _FLOAT32_MAX


# --- the multi-tensor printer (eager backend) --------------------------------------------------------
LIST_KINDS = ("full", "row", "col", "scalar", "static")
GROUP_SCALARS = (*NUMBER_KINDS, "uniform")  # the group function gets uniform values as Python floats
SHARED, FRESH = "<shared>", "<fresh>"  # owners of a list besides a state (see GroupPrinter.owner)
SHARED_FRESH = f"<shared {FRESH}>"  # a temporary read under two names


class GroupPrinter:
    """One flattened path over a *group* of tensors: values of a per-tensor kind are lists, uniform
    values Python floats. An op becomes one ``torch._foreach_*`` call when the table has one and no
    row/col broadcast is needed; otherwise a list comprehension of the per-tensor code.

    ``owner[name]`` says whose tensors the list ``name`` holds: a state's own (that state's name:
    updated in place, as torch.optim does), a fresh temporary made here (``FRESH``: may be
    overwritten once no later statement reads it; ``SHARED_FRESH`` once it is read under two names:
    never written, but copied into a state as it is), or tensors shared with the caller (``SHARED``:
    params, grads, aliases; never written; ``<shared s>``: state s's own, read under two names,
    so that the step needs no copy of them into s)."""

    def __init__(self, program: Program, fail, used: set[str], kinds: dict[str, str]):
        self.kinds = kinds
        self.fail, self.used = fail, used
        self.loop: dict[str, str] = {}
        self.stacked: set[str] = set()  # per-tensor numbers held as a 1-d tensor <name>_st (see stackable)
        self.unlisted: set[str] = set()  # ... of which no list form has been made yet
        self.stacks: dict[str, str] = {}  # their names
        self.owner: dict[str, str] = {s.name: s.name for s in program.states} | {"w": SHARED, "g": SHARED}
        self.numbers = False  # does a call take a number through _n (see operand)?

    def is_list(self, e: Expr) -> bool:
        return isinstance(e, Var) and self.kinds[e.name] in LIST_KINDS

    def atom(self, e: Expr) -> str:
        return number(e.value) if isinstance(e, Const) else check_identifier(e.name)

    def operand(self, op: str, text: str) -> str:
        """The printed number ``text`` as ``op``'s multi-tensor call takes it fastest: through
        ``_n`` (bound in the group function's head to the runtime's ``_numbers``) where the op
        table says the call takes numbers fastest as tensors."""
        if not OPS[op].foreach_tensor_numbers:
            return text
        self.numbers = True
        return f"_n({text})"

    def loop_var(self, name: str) -> str:
        if name not in self.loop:
            self.loop[name] = fresh_name(f"{name}_i", self.used)
        return self.loop[name]

    def comprehension(self, expr: Expr, kind: str, slot: str | None = None, wrap: str = "{}",
                      pick: bool = False) -> str:
        """``[<per-tensor code> for w_i, x_i in zip(w, x)]`` (the code put in ``wrap``'s braces;
        ``pick``: a where() on one tensor's condition may hand back one of its arguments)."""
        names = ["w"] + sorted(n for n in free_vars(expr) if n != "w" and self.kinds[n] in LIST_KINDS)
        loops = {n: self.loop_var(n) for n in names}
        kinds = {**self.kinds, **{loops[n]: self.kinds[n] for n in names}}
        local = substitute(expr, {n: Var(v) for n, v in loops.items()})
        printer = TorchPrinter(kinds, self.fail, ref=loops["w"], scalars=GROUP_SCALARS, pick=pick)
        text = printer.doprint(local)
        if slot is not None:
            text = _fit(text, kind, slot, ref=loops["w"], scalars=GROUP_SCALARS)
        if len(names) > 1 and "w" not in free_vars(expr) and not re.search(rf"\b{loops['w']}\b", text):
            names.remove("w")  # w only lends its dtype, device or shape: drop it when unused
        targets = ", ".join(loops[n] for n in names)
        source = names[0] if len(names) == 1 else f"zip({', '.join(names)})"
        return f"[{wrap.format(text)} for {targets} in {source}]"

    def group_kind(self, expr: Expr) -> str:
        """expr_kind, except that a value reading a shape fact differs per tensor (a scalar)."""
        kind = expr_kind(expr, self.kinds, self.fail)
        if kind == "static" or (kind not in LIST_KINDS and any(
                isinstance(n, Call) and OPS[n.op].shape == STATIC for n in walk(expr))):
            return "scalar"
        return kind

    def statement(self, expr: Expr) -> str:
        kind = self.group_kind(expr)
        if kind not in LIST_KINDS:  # one Python number for the whole group
            if all(n.op == "where" or OPS[n.op].truth for n in walk(expr) if isinstance(n, Call)):
                try:  # a choice or a truth value: exact in Python floats, and Python never raises on it
                    return FloatPrinter().doprint(expr)
                except NoFloatSpelling:
                    pass
            # (made a tensor where an op needs one: of the step's dtype, _dtype, on the CPU; see _tensor)
            return TorchPrinter(self.kinds, self.fail, ref="_dtype", scalars=GROUP_SCALARS).doprint(expr)
        if isinstance(expr, Var):
            return expr.name
        if expr_kind(expr, self.kinds, self.fail) == "static":  # shape arithmetic: each tensor's number
            if plain_python(expr, "torch") is None:  # (printed as a tensor of w's dtype already)
                return self.comprehension(expr, kind)
            as_tensor = TorchPrinter(self.kinds, self.fail, ref=self.loop_var("w")).tensor("{}")
            return self.comprehension(expr, kind, wrap=str(as_tensor))  # a 0-d tensor, as a reduction's value is
        foreach = self.foreach(expr, kind)
        return foreach[0] if foreach is not None else self.comprehension(expr, kind, pick=True)

    def foreach(self, expr: Expr, kind: str, reuse: frozenset[str] = frozenset(),
                target: str | None = None) -> tuple[str, str | None] | None:
        """``(code, name overwritten or None)``: one ``torch._foreach_*`` call for ``expr``, or None.
        When a list argument is in ``reuse`` (free to overwrite), the in-place variant writes into it,
        into ``target``'s own list first (a state updated in place needs no copy afterwards)."""
        if isinstance(expr, Call) and expr.op in ("add", "sub") and isinstance(expr.args[1], Call):
            fused = {"div": self.addcdiv, "mul": self.axpy}.get(expr.args[1].op)  # (x + sqrt(y): neither)
            return fused(expr, kind, reuse) if fused else None
        if isinstance(expr, Call) and expr.op == "interp" and isinstance(expr.args[0], Call):
            return self.addcmul(expr, kind, reuse)
        if not isinstance(expr, Call) or not all(isinstance(a, (Var, Const)) for a in expr.args):
            return None
        kinds = [expr_kind(a, self.kinds, self.fail) for a in expr.args]
        if any(k == "static" or (k in LIST_KINDS and k not in (kind, "scalar")) for k in kinds):
            return None
        args = [self.atom(a) for a in expr.args]
        lists = [self.is_list(a) for a in expr.args]
        free = [a in reuse and k == kind for a, k in zip(args, kinds)]
        if len(free) == 2 and free[0] and free[1] and args[1] == target:
            free[0] = False  # both may be overwritten: write into the target's own list
        op, names = expr.op, OPS[expr.op].foreach
        if op == "interp" and lists[0] and lists[1]:
            if free[1] and args[1] == target:
                free[0] = False
            if not lists[2]:  # a number weight: torch's lerp from the end it weighs more (_interp_lists)
                into = args[1] if free[1] and not free[0] else args[0] if free[0] else None
                return f"_interp_lists({', '.join(args)}{'' if into is None else f', into={into}'})", into
            suffix = "_" if free[0] else ""
            return f"torch._foreach_lerp{suffix}({args[0]}, {args[1]}, {args[2]})", args[0] if free[0] else None
        binary = OPS[op].arity == 2 and names
        if binary and (not lists[0] or (lists[1] and free[1] and not free[0])):
            if not OPS[op].commutative:
                return None if not lists[0] else (f"torch._foreach_{names[0]}({args[0]}, {args[1]})", None)
            args.reverse()
            free.reverse()
        first = args[0]
        inplace = free[0]
        suffix = "_" if inplace else ""
        done = first if inplace else None
        if op == "square":
            return f"torch._foreach_mul{suffix}({first}, {first})", done
        if binary:
            # (after the swap above the second argument is a list only when both are)
            second = args[1] if lists[0] and lists[1] else self.operand(op, args[1])
            return f"torch._foreach_{names[0]}{suffix}({first}, {second})", done
        if not names:
            return None
        if inplace:  # the table's calls applied in turn, each in place
            return "\n".join(f"torch._foreach_{n}_({first})" for n in names), done
        if target is not None and len(names) > 1:  # the first call makes target's list, the rest write it
            self.owner[target] = FRESH
            return "\n".join([f"{target} = torch._foreach_{names[0]}({first})",
                              *(f"torch._foreach_{n}_({target})" for n in names[1:])]), target
        text = first
        for n in names:
            text = f"torch._foreach_{n}({text})"
        return text, None

    def axpy(self, expr: Call, kind: str, reuse: frozenset[str]) -> tuple[str, str | None] | None:
        """``x + y * c`` / ``x - y * c`` (lists x, y; a number c) as one ``_foreach_add(x, y, alpha=...)``:
        one pass and no temporary (see :func:`_fold_axpy`, which builds such sums)."""
        x, (y, c) = expr.args[0], expr.args[1].args
        if not (self.is_list(x) and self.is_list(y)) or isinstance(c, Call):
            return None
        if any(expr_kind(a, self.kinds, self.fail) != kind for a in (x, y)) or self.is_list(c):
            return None
        alpha = self.atom(c) if expr.op == "add" else (number(-c.value) if isinstance(c, Const) else f"-{c.name}")
        into = x.name in reuse
        return f"torch._foreach_add{'_' if into else ''}({x.name}, {y.name}, alpha={alpha})", x.name if into else None

    def addcdiv(self, expr: Call, kind: str, reuse: frozenset[str]) -> tuple[str, str | None] | None:
        """``z + x / y``, ``z + (x c) / y`` and ``z - ...`` (lists z, x, y; a number c) as one
        ``_foreach_addcdiv(z, x, y, value=+-c)``, which computes z + (value x) / y, the reference's
        rounding (see :func:`_fold_addcdiv`, which builds such sums). In place when z is free and is
        neither x nor y."""
        z, (x, y) = expr.args[0], expr.args[1].args
        c: Expr = Const(1.0)
        if isinstance(x, Call):
            x, c = x.args if not self.is_list(x.args[1]) else x.args[::-1]
        if not all(self.is_list(e) and expr_kind(e, self.kinds, self.fail) == kind for e in (z, x, y)):
            return None
        if isinstance(c, Call) or self.is_list(c):
            return None
        if expr.op == "add":
            value = self.atom(c)
        else:
            value = number(-c.value) if isinstance(c, Const) else f"-{c.name}"
        into = z.name in reuse and z.name not in (x.name, y.name)
        return (f"torch._foreach_addcdiv{'_' if into else ''}({z.name}, {x.name}, {y.name}, value={value})",
                z.name if into else None)

    def sign(self, target: str, x: str, reuse: frozenset[str]) -> list[str]:
        """``target = sign(x)`` in three multi-tensor passes, none per tensor: ``max(sign(x), min(x,
        -1))``, the formula of the runtime's ``_sign`` (which says why it is the language's sign).
        Into x's list when it is free (the target's name then holds the clamp for a moment)."""
        if x in reuse and x != target:
            self.owner[target] = self.owner[x]
            return [f"{target} = torch._foreach_clamp_max({x}, -1.0)", f"torch._foreach_sign_({x})",
                    f"torch._foreach_maximum_({x}, {target})", f"{target} = {x}"]
        self.owner[target] = FRESH
        floor = fresh_name("t", self.used)
        return [f"{floor} = torch._foreach_clamp_max({x}, -1.0)", f"{target} = torch._foreach_sign({x})",
                f"torch._foreach_maximum_({target}, {floor})"]

    def addcmul(self, expr: Call, kind: str, reuse: frozenset[str]) -> tuple[str, str | None] | None:
        """``interp(x * y, s, a)`` (lists x, y, s; a number a) = ``a s + (1 - a) x y`` as
        ``_foreach_mul_(s, a)`` and ``_foreach_addcmul_(s, x, y, value=1 - a)``, the reference's
        own formula: no temporary list for x y (see :func:`_fold_addcmul`, which builds it). In place
        when s is free and is neither x nor y, else on a new list."""
        (product, s, a), lists = expr.args, expr.args[0].args
        if product.op != "mul" or not all(self.is_list(e) for e in (*lists, s)) or self.is_list(a):
            return None
        if isinstance(a, Call) or any(expr_kind(e, self.kinds, self.fail) != kind for e in (*lists, s)):
            return None
        x, y, s = (e.name for e in (*lists, s))
        weight = number(1 - a.value) if isinstance(a, Const) else f"1 - {a.name}"
        if s in reuse and s not in (x, y):
            return (f"torch._foreach_mul_({s}, {self.operand('mul', self.atom(a))})\n"
                    f"torch._foreach_addcmul_({s}, {x}, {y}, value={weight})"), s
        scaled = f"torch._foreach_mul({s}, {self.operand('mul', self.atom(a))})"
        return f"torch._foreach_addcmul({scaled}, {x}, {y}, value={weight})", None

    def assign(self, target: str, expr: Expr, reuse: frozenset[str]) -> list[str]:
        """Lines computing ``target = expr`` for the group (in place into a free list if one fits),
        keeping ``owner`` up to date; a per-tensor number from such numbers alone on their stack
        (:meth:`stackable`)."""
        if isinstance(expr, Var) and expr.name in self.stacked:  # another name for a stack: no list made
            self.stacked.add(target)
            self.unlisted.add(target)
            self.owner[target] = FRESH
            return [f"{self.stack(target)} = {self.stack(expr.name)}"]
        if self.stackable(expr):
            numbers = sorted(v for v in free_vars(expr) if self.kinds.get(v) == "scalar")
            lines = self.stacked_lines(target, expr, numbers)
            if max(map(len, lines)) + 4 <= LINE:  # (too wide for a line: per tensor, below)
                self.stacked.update([*numbers, target])
                self.unlisted.add(target)
                self.owner[target] = FRESH
                return lines
        lines = self.unstack(free_vars(expr))
        self.stacked.discard(target)
        self.unlisted.discard(target)
        return lines + self.assign_lists(target, expr, reuse)

    def dots(self, term: Expr, finish: Expr | None = None) -> str | None:
        """A sum over each tensor of ``term``, a product of two full lists, as one ``torch.dot`` per
        tensor (one pass, no temporary for the product), put through ``finish`` (of the total a0 and
        the element count n) when given: the per-tensor sums of norm, rms and dot. None for another
        term."""
        if not (isinstance(term, Call) and term.op == "mul"):
            return None
        if not all(isinstance(x, Var) and self.kinds.get(x.name) == "full" for x in term.args):
            return None
        lists = list(dict.fromkeys(x.name for x in term.args))
        x, y = (self.loop_var(x.name) for x in term.args)
        text = dot = f"torch.dot({x}.reshape(-1), {y}.reshape(-1))"
        if finish is not None:  # (a0 and n are the finish's only names: the table's Reduction)
            text = TorchPrinter({"a0": "full", "n": "uniform"}, self.fail, ref="a0").doprint(finish)
            text = re.sub(r"\ba0\b", dot, re.sub(r"\bn\b", f"{x}.numel()", text))
        source = lists[0] if len(lists) == 1 else f"zip({', '.join(lists)})"
        return f"[{text} for {', '.join(self.loop_var(n) for n in lists)} in {source}]"

    def stackable(self, expr: Expr) -> bool:
        """Is ``expr`` one number per tensor computed from such numbers (a per-tensor reduction's
        value: LAMB's trust ratio, Tiger's nan test) and Python numbers alone, by elementwise ops?
        Then it runs once on the 1-d tensor of all the tensors' numbers (``<name>_st``), not as a
        torch op on each tensor's 0-d tensor (~5 us each, most of a small model's LAMB step)."""
        if not isinstance(expr, Call) or self.group_kind(expr) != "scalar":
            return False
        if any(isinstance(n, Call) and OPS[n.op].shape != ELEMENTWISE for n in walk(expr)):
            return False
        lists = [v for v in free_vars(expr) if self.kinds.get(v) in LIST_KINDS]
        return bool(lists) and all(self.kinds[v] == "scalar" for v in lists)

    def stacked_lines(self, target: str, expr: Call, numbers: list[str]) -> list[str]:
        """``<target>_st = expr`` on the stacks of its per-tensor numbers ``numbers`` (stacked first
        where only their lists exist); the list form ``target`` is made where something reads it
        (:meth:`unstack`)."""
        lines = [f"{self.stack(v)} = torch.stack({v})" for v in numbers if v not in self.stacked]
        local = substitute(expr, {v: Var(self.stack(v)) for v in numbers})
        kinds = {**self.kinds, **{self.stack(v): "full" for v in numbers}}
        # (a stack of truth values is float32, torch.where's 1.0 and 0.0: numbers take the step's dtype)
        text = TorchPrinter(kinds, self.fail, ref=self.stack(numbers[0]), scalars=GROUP_SCALARS,
                            dtype="_dtype").doprint(local)
        return lines + [f"{self.stack(target)} = {text}"]

    def stack(self, name: str) -> str:
        """The name of ``name``'s stack (a fresh one, as for loop variables)."""
        if name not in self.stacks:
            self.stacks[name] = fresh_name(f"{name}_st", self.used)
        return self.stacks[name]

    def unstack(self, names) -> list[str]:
        """The list forms (0-d views of the stack) of the stacked-only values among ``names``, for the
        multi-tensor ops and per-tensor code that read them."""
        todo = sorted(set(names) & self.unlisted)
        self.unlisted.difference_update(todo)
        return [f"{n} = list({self.stack(n)}.unbind())" for n in todo]

    def assign_lists(self, target: str, expr: Expr, reuse: frozenset[str]) -> list[str]:
        kind = self.group_kind(expr)
        if (isinstance(expr, Call) and expr.op == "sign" and self.is_list(expr.args[0]) and kind != "static"
                and expr_kind(expr.args[0], self.kinds, self.fail) == kind):
            return self.sign(target, expr.args[0].name, reuse)
        if kind in LIST_KINDS and isinstance(expr, Call):
            found = self.foreach(expr, kind, reuse, target)
            if found is not None and found[1] is not None:
                text, into = found
                self.owner[target] = self.owner[into]
                return text.split("\n") + ([] if into == target else [f"{target} = {into}"])
        if isinstance(expr, Var) and kind in LIST_KINDS:
            self.owner[target] = self.owner[expr.name] = self.read_only(expr.name)  # two names, one list
            return [f"{target} = {expr.name}"]
        red = OPS[expr.op].reduction if isinstance(expr, Call) and OPS[expr.op].shape == REDUCE else None
        if red is not None and red.combine == "sum" and len(red.terms) == 1:
            env = {"x": expr.args[0], "y": expr.args[-1]}
            dots = self.dots(substitute(red.terms[0], env), red.finish)
            if dots is not None and max(map(len, _wrap_comprehension(f"{target} = {dots}").split("\n"))) + 4 <= LINE:
                self.owner[target] = FRESH
                return [f"{target} = {dots}"]
        line = f"{target} = {self.statement(expr)}"
        # (shape arithmetic stays whole, however wide: computed in float64, rounded to w's dtype once)
        if (isinstance(expr, Call) and max(map(len, _wrap_comprehension(line).split("\n"))) + 4 > LINE
                and expr_kind(expr, self.kinds, self.fail) != "static"):
            lines = []  # too wide even laid out: its arguments become temporaries first
            args = []
            for a in expr.args:
                if isinstance(a, Call) and OPS[a.op].shape != STATIC:
                    name = fresh_name("t", self.used)
                    lines += self.assign(name, a, frozenset())
                    kind = self.group_kind(a)
                    self.kinds[name] = "scalar" if kind == "static" else kind  # one number per tensor
                    a = Var(name)
                args.append(a)
            line = f"{target} = {self.statement(Call(expr.op, tuple(args)))}"
            self.owner[target] = FRESH
            return [*lines, line]
        self.owner[target] = FRESH
        if "_pick(" in line:  # the result may be an argument's tensors: none of them is written again
            for name in free_vars(expr) & set(self.owner):
                self.owner[name] = self.read_only(name)
            self.owner[target] = SHARED
        return [line]

    def where_block(self, body: list[Assign], j: int, block: tuple, emit, emit_range, live: set[str],
                    state: bool) -> list[str]:
        """``x = where(c, p, q)`` (``body[j]``) and the statements only one of its sides reads
        (``block``: see :func:`_where_blocks`; ``emit(i)`` prints statement i, ``emit_range(lo, hi)``
        statements lo..hi-1 with the blocks among them), under a Python test of c: for a per-step c,
        ``if c != 0:`` p's statements and ``x = p``, else q's; for one number per tensor, each side's
        statements only when some tensor takes it (runtime ``_which``: on an accelerator, always),
        and x the side every tensor takes, else picked per tensor (``_pick``). Printed flat, every
        statement run, where a nested line would be too wide. ``live``: the names read after it;
        ``state``: x is a new state's value (see :meth:`shortcut`)."""
        start, p, q = block
        a = body[j]
        c, sides = a.expr.args[0], a.expr.args[1:]
        stacked, unlisted = set(self.stacked), set(self.unlisted)
        uniform = self.kinds[c.name] == "uniform"
        cond = self.stack(c.name) if c.name in stacked else c.name
        p_lines = emit_range(start, start + len(p))
        q_lines = emit_range(start + len(p), j)
        kind = self.group_kind(a.expr)
        made = set(self.unlisted)
        shortcuts, owners = [], [] if uniform else [SHARED_FRESH]  # (a pick may hand back either side's tensors)
        for side in sides:  # each from the same state: only one of them runs
            self.unlisted = set(made)
            lines, owner = self.shortcut(a.target, side, kind, live, uniform and state)
            shortcuts.append(lines)
            owners.append(owner)
        self.unlisted = set(made)
        j_lines = emit(j)  # the state of a step that runs everything, as a flat print
        if uniform:
            text = [f"if {c.name} != 0:", *_nested(p_lines + shortcuts[0]), "else:", *_nested(q_lines + shortcuts[1])]
        else:
            taken = fresh_name("_taken", self.used)
            text = [f"{taken} = _which({cond})"]
            text += [f"if {taken} != 0:", *_nested(p_lines)] if p_lines else []
            text += [f"if {taken} != 1:", *_nested(q_lines)] if q_lines else []
            text += [f"if {taken} == 0:", *_nested(shortcuts[1]), f"elif {taken} == 1:", *_nested(shortcuts[0]),
                     "else:", *_nested(j_lines)]
        if max(len(ln) for t in text for ln in t.split("\n")) + 4 > LINE:
            return p_lines + q_lines + j_lines
        # after the block, only what every path made is made; x may be either side's own tensors
        targets = {body[i].target for i in p + q} | {a.target}
        self.stacked, self.unlisted = stacked - targets, unlisted - targets
        for v in free_vars(a.expr) & set(self.owner):
            self.owner[v] = self.read_only(v)
        self.owner[a.target] = max(owners, key=[FRESH, SHARED_FRESH, SHARED].index)  # the least free
        return text

    def shortcut(self, target: str, side: Expr, kind: str, live: set[str], copy: bool) -> tuple[list[str], str]:
        """``(lines, owner)``: ``target = side`` for a where of ``kind`` whose tensors all take that side:
        the side's own list when it is of that kind, else its values broadcast to that shape (new
        tensors for a number), and who then owns the target's list: FRESH (new tensors, or a
        temporary nothing reads after), SHARED_FRESH (a temporary read after), else SHARED. With
        ``copy`` (the target is a new state's value: a shared list would cost a clone at the end of
        every step) a shared list is cloned here instead, in the branch that takes it."""
        lines = self.unstack(free_vars(side))
        if not self.is_list(side):  # a number: new tensors
            return [*lines, f"{target} = {self.comprehension(side, self.group_kind(side), slot=kind)}"], FRESH
        name, who = side.name, self.owner.get(side.name, SHARED)
        alias = self.kinds[name] == kind  # the side's own list, else a broadcast view of it
        temporary = who in (FRESH, SHARED_FRESH)
        clone = copy and not temporary
        if not alias:
            wrap = "{}.clone()" if clone else "{}"
            lines.append(f"{target} = {self.comprehension(side, self.group_kind(side), slot=kind, wrap=wrap)}")
        elif clone:
            lines.append(f"{target} = [_x.clone() for _x in {name}]")
        else:
            lines.append("pass" if name == target else f"{target} = {name}")
        free = clone or (alias and who == FRESH and (name == target or name not in live))
        return lines, FRESH if free else SHARED_FRESH if temporary else SHARED

    def read_only(self, name: str) -> str:
        """The owner of list ``name`` once nothing may write it: ``<shared s>`` for state s's own
        tensors (the step then needs no copy of them into s), ``SHARED_FRESH`` for a temporary (which
        a state may take without a clone), else SHARED."""
        who = self.owner.get(name, SHARED)
        states = {n for n, o in self.owner.items() if o == n}
        return who if who.startswith("<shared ") else f"<shared {who}>" if who in states | {FRESH} else SHARED

    def reusable(self, target: str, live_after: set[str]) -> frozenset[str]:
        """Lists a statement assigning ``target`` may overwrite: a fresh temporary no later statement
        reads (``x = f(x)`` frees x's old list), or a state's own list (under any name) when its
        value is no longer read or the statement gives that state its new value (``m = interp(g, m,
        beta1)`` updates m in place; Tiger's ``t = decay * m; m = t + c g`` writes t, then m, into
        m's tensors, which then need no copy)."""
        return frozenset(n for n, who in self.owner.items()
                         if who in (FRESH, n, target) and (n not in live_after or n == target))
# --- the module ------------------------------------------------------------------------------------
MAX_CALLS = 8  # calls per printed statement; a larger expression is cut into temporaries


class _Segment:
    """A segment's statements printed in order (see :meth:`_Module.eager_functions`): a lazy where
    with its sides as one block (:meth:`GroupPrinter.where_block`), a per-tensor reduction cut out
    as each row's partial totals (``parts``), the update ``c x`` left to the step's one subtraction
    (``scaled``)."""

    def __init__(self, module: _Module, prog: Program, printer: GroupPrinter, body: list[Assign], cut: set[str],
                 last: bool, blocks: dict[int, tuple], live_after: list[set[str]],
                 handed: tuple[_Test, str] | None = None):
        self.module, self.prog, self.printer, self.body, self.handed = module, prog, printer, body, handed
        self.cut, self.last, self.blocks, self.live_after = cut, last, blocks, live_after
        self.read_later = _live_after(body, prog.new_states)  # by a statement or a new state (not as the update)
        self.state_values = {e.name for e in prog.new_states if isinstance(e, Var)}
        self.parts: list[str] = []
        self.scaled: tuple[str, str] | None = None

    def statement(self, i: int) -> list[str]:
        """Statement i's lines (none for the update c x, subtracted at the end)."""
        a, live, printer = self.body[i], self.live_after[i], self.printer
        if self.last and self.scaled is None:
            self.scaled = self.module.scaled_update(self.prog, printer, self.body[i:], self.read_later[i])
            if self.scaled:
                printer.kinds[a.target] = "full"
                return []  # w - c x: one _foreach_sub_(w, x, alpha=c), not x *= c first
        live = live | {self.scaled[0]} if self.scaled else live  # x is read at the end: nothing may reuse it
        if a.target in self.cut:
            out = printer.unstack(free_vars(a.expr))
            self.parts.append(_tuple(self.module.partials(printer, a, len(self.parts), out)))
            return out
        out = printer.assign(a.target, a.expr, printer.reusable(a.target, live))
        printer.kinds[a.target] = printer.group_kind(a.expr)
        if self.handed is not None and self.handed[0].per_tensor and a.target == self.handed[0].name:
            value = printer.stack(a.target) if a.target in printer.stacked else a.target
            out += self.handed[0].hand(value, self.handed[1])
        return out

    def lines(self, lo: int, hi: int) -> list[str]:
        """Statements lo..hi-1, a lazy where's block (the outermost) where one starts."""
        out, i = [], lo
        while i < hi:
            inner = [j for j, (start, _, _) in self.blocks.items() if start == i and j < hi]
            if not inner:
                out.extend(self.statement(i))
                i += 1
                continue
            j = max(inner)
            target = self.body[j].target
            state = self.last and target in self.state_values and all(b.target != target for b in self.body[j + 1:])
            live = self.live_after[j] | ({self.scaled[0]} if self.scaled else set())  # (see statement)
            out.extend(self.printer.where_block(self.body, j, self.blocks[j], self.statement, self.lines, live, state))
            i = j + 1
        return out


class _Module:
    """The program-specific part of a generated module (the runtime is copied in verbatim)."""

    def __init__(self, program: Program, extra_backends: dict[str, str]):
        self.program = program
        self.extra = extra_backends
        self.name = check_identifier(program.name, "program name")
        self.cls = class_name(self.name)
        for s in program.states:
            check_identifier(s.name, "state")
        for h in program.hypers:
            check_identifier(h.name, "hyperparameter")
            number(h.default)
        for e in [a.expr for a in program.body] + list(program.outputs()):
            for node in walk(e):
                if isinstance(node, Const):
                    number(node.value)
                elif isinstance(node, Var):
                    check_identifier(node.name)
        for a in program.body:
            check_identifier(a.target)
        for b in extra_backends:
            if not (b.isascii() and b.isidentifier() and not b.startswith("_")):  # used as `_{b}_...`:
                raise DslError(f"backend name {b!r} is not a plain identifier")  # a reserved word is fine
            if b in ("eager", "compiled", "cpp"):
                raise DslError(f"backend {b!r} is built in")
        self.checkpoints = torch_checkpoints(program)
        self.tree, self.tests, self.paths = paths(program)
        why_not = [row_separable([path]) for path in self.paths]
        self.not_separable = next(filter(None, why_not), None)  # (the first path's reason, as row_separable)
        self.sparse_paths = tuple(k for k, (path, why) in enumerate(zip(self.paths, why_not))
                                  if why is None and still_at_zero_gradient(path.program))
        first = self.paths[0].program
        self.globals = [first.body[i] for i in global_statements(first)]
        for g in self.globals:
            red = OPS[g.expr.op].reduction
            if red is None or len(red.terms) != 1 or "n" in free_vars(red.finish):
                raise DslError(f"the torch target cannot combine {g.expr.op}() yet")
        self.hypers = {h.name: h.default for h in program.hypers}
        base = set(self.hypers) | {"lr", "step"}
        self.hoisted, self.group_programs = [], []  # per path: (prelude, compiled program); eager program
        for path in self.paths:
            prelude, prog = hoist_uniform(path.program, base)
            # the prelude's values are inputs of the program that reads them, one number per step, as
            # hyperparameters are: declared so, they are names_in's, and the names its passes make
            # (flatten's u_1 for state u's new value) are not theirs (a hoisted 1 - beta ** step, u_1)
            declared = tuple(Hyper(a.target, 0.0) for a in prelude)
            self.group_programs.append(prog.with_body(prog.body, hypers=(*prog.hypers, *declared)))
            prelude, prog = split_lerp(prelude, prog, base)
            used = names_in(prog) | {a.target for a in prelude} | base
            self.hoisted.append((_bounded_assigns(prelude, used), _bounded(prog, used)))
        # per path: which new states its per-tensor step returns as copies (see _clones)
        self.clones = [_clones(prog) for _, prog in self.hoisted]
        self.float_uniforms = [self.uniform_float_function(k, prelude) for k, (prelude, _) in enumerate(self.hoisted)]
        self.eager = [self.eager_program(k) for k in range(len(self.paths))]
        # per-tensor reductions are cut out where that lets the step run on slices (_chunks), global
        # ones always: the runtime combines every group's partial totals between stages
        self.splits = [_split(prog, scalars) if self.globals or _sliceable_path(path, {REDUCE, GLOBAL})
                       else None for path, (prog, scalars) in zip(self.paths, self.eager)]
        if self.globals:  # per-tensor reductions that cannot be cut (Adafactor's mean(r)) stay in place
            self.splits = [split or _split(prog, scalars, frozenset({GLOBAL}))
                           for split, (prog, scalars) in zip(self.splits, self.eager)]
        names = {a.target for a in self.globals}
        if self.globals and not all(split and names <= split.reduced(prog)
                                    for split, (prog, _) in zip(self.splits, self.eager)):
            self.eager, self.splits = [], []  # a global not cut out of every path: per-tensor segments only
        self.kernels, self.no_kernels = self.kernel_programs()
        if self.kernels is not None:
            self.extra["cpp"] = self.cpp_backend()
        self.variants = [_variants(prog, split, scalars) for (prog, scalars), split in zip(self.eager, self.splits)]
        self._eager_functions: dict[int, list[str]] = {}

    def one_op(self) -> bool:
        """Is every path's eager step one multi-tensor op per tensor (``w -= lr * g``)? Then no
        kernel call beats it on a small model (the runtime's ``_backend_for``)."""
        return not self.globals and bool(self.eager) and all(
            _step_cost(p, _whole(p), scalars, last=0) <= 2 for p, scalars in self.eager)

    def globals_alone(self) -> bool:
        """Does every global reduction reduce an input as the step begins (the eager stage computes
        them first: :func:`_globals_first`), with nothing computed before them that the rest of a
        tensor's step reads? Then that rest, the last segment, is the whole step given their values
        (the compiled backend's, :meth:`_Program.global_totals`)."""
        first = all(map(_globals_first, self.splits, (p for p, _ in self.eager)))
        return bool(self.globals and self.eager) and first and all(
            not any(segments(prog)[:-1]) for _, prog in self.hoisted)

    def kernel_programs(self) -> tuple[list[Program] | None, str | None]:
        """The paths the ``cpp`` kernels run (the hoisted ones the compiled backend runs), and None;
        or None and why not, where :func:`codegen.cpp_target.supports` refuses one. A program's
        global reductions only where each reduces an input (w, g or a state) before anything else,
        the first stage of every path's eager step holding nothing but them: the runtime takes
        their values over all groups with that stage (``_Program.global_totals``) and the kernels
        read them as per-step numbers, the global statements left out."""
        progs = [p for _, p in self.hoisted]
        if self.globals:
            if not self.eager or not all(map(_globals_first, self.splits, (prog for prog, _ in self.eager))):
                return None, "a global reduction not of an input (w, g or a state) taken before the step"
            progs = list(map(_without_globals, progs))
        why = next(filter(None, map(cpp_target.supports, progs)), None)
        return (None, why) if why else (progs, None)

    def cpp_backend(self) -> str:
        """Source of the ``cpp`` backend (extra-backend protocol): the runtime of
        :mod:`codegen.runtime.cpp_kernels`, the program's C++ kernels (:mod:`codegen.cpp_target`,
        from :meth:`kernel_programs`) and the scalars each reads."""
        progs = self.kernels
        scalars = _layout("(", [_literal(cpp_target.scalar_names(p)) for p in progs], ")", used=len("    scalars=,"))
        scalars = scalars.replace("\n", "\n    ")  # an argument of _CppKernels(...): one level in
        return "\n".join([
            runtime_source("cpp_kernels"),
            f"_CPP = _CppKernels(\n    r\"\"\"{cpp_target.kernel_source(progs)}\"\"\",\n    scalars={scalars},\n)",
            "",
            "",
            _function("_cpp_group_step", ["path", "params", "grads", "states", "*", "lr", "step", "**hyper"], [
                '"""One step of a group through its C++ kernel (the eager step where the kernel cannot run)."""',
                "_CPP.group_step(_PROGRAM, path, params, grads, states, lr=lr, step=step, **hyper)",
            ]),
            "",
            "",
            "_cpp_available = _CPP.available",
        ])

    def fail_at(self, loc):
        def fail(msg, hint=None):
            line, col = loc if loc else (None, None)
            raise DslError(msg, self.program.filename, line, col, self.program.source, hint)
        return fail

    def uniform_function(self, k: int, prelude: list[Assign]) -> str:
        """Path k's prelude: the values all tensors of a step share (float64 0-d tensors in, see
        ``_Program.scalars``), computed once per step."""
        kinds = {**{n: "uniform" for n in self.hypers}, "lr": "uniform", "step": "uniform"}
        body = _Body(kinds, names_in(self.program) | set(kinds) | {a.target for a in prelude}, ref="lr")
        for a in prelude:
            body.assign(a.target, a.expr, self.fail_at(a.loc))
        needed = body.needed
        if body.lines and "lr" not in needed:  # even where no line reads an input (mean(0.5))
            needed.append("lr")  # lends dtype and device to numbers made tensors
        values = _layout("{", [f'"{a.target}": {a.target}' for a in prelude], "}", used=11)
        doc = f'"""Path {k}: the values every tensor shares in a step (from lr, step and hyperparameters)."""'
        return _function(f"_path{k}_uniforms", [*(["*", *needed] if needed else []), "**_"],
                         [doc, *body.lines, f"return {values}"])

    def uniform_float_function(self, k: int, prelude: list[Assign]) -> str | None:
        """Path k's prelude in Python floats (:mod:`codegen.float_printer`), or None where an op has
        no Python spelling or a line would not fit."""
        printer, lines, defined, needed = FloatPrinter(), [], set(), []
        try:
            for a in prelude:
                lines += printer.statement(a.target, a.expr)
                needed += [v for v in sorted(free_vars(a.expr)) if v not in defined and v not in needed]
                defined.add(a.target)
        except NoFloatSpelling:
            return None
        values = _layout("{", [f'"{a.target}": {a.target}' for a in prelude], "}", used=11)
        if any(4 + len(line) > LINE for line in lines):
            return None
        doc = (f'"""Path {k}: :func:`_path{k}_uniforms` in Python floats (raises where that gives inf or nan, '
               'as 1 / 0)."""')
        return _function(f"_path{k}_uniform_floats", [*(["*", *needed] if needed else []), "**_"],
                         [doc, *lines, f"return {values}"])

    def segment_functions(self, k: int) -> list[str]:
        prog = self.hoisted[k][1]
        kinds = input_kinds(prog)
        kinds.update({a.target: "uniform" for a in self.hoisted[k][0]})
        for name in [a.target for a in self.globals]:
            kinds[name] = "uniform"
        used = names_in(prog) | set(kinds)
        cuts = [prog.body[i] for i in global_statements(prog)]
        out = []
        for j, seg in enumerate(segments(prog)):
            body = _Body(kinds, used, needed=["w"])
            for a in seg:
                body.assign(check_identifier(a.target), a.expr, self.fail_at(a.loc))
            fail = self.fail_at(prog.return_loc)
            if j < len(cuts):
                arg = body.atom(cuts[j].expr.args[0], fail)
                body.read(arg)
                printer = TorchPrinter(kinds, fail)
                red = OPS[cuts[j].expr.op].reduction  # this tensor's total of the reduction's term
                term = printer.doprint(substitute(red.terms[0], {"x": arg}))
                if printer.kind(arg) in NUMBER_KINDS:
                    term = printer.tensor(term)
                partial = f"torch.{'sum' if red.combine == 'sum' else 'amax'}({term})"
                values = _layout("{", [f'"{n}": {n}' for n in sorted(body.defined)], "}", used=14)
                lines = [*body.lines, f"_values = {values}", f"return _values, {partial}"]
                doc = (f'"""Path {k}, segment {j}: values for later segments and this tensor\'s part of '
                       f'{cuts[j].target} = {cuts[j].expr.op}(...)."""')
            else:
                outs = prog.outputs()
                for e in outs:
                    body.read(e)
                printer = TorchPrinter(kinds, fail)
                update = _fit(printer.doprint(outs[0]), printer.kind(outs[0]), "full")
                new = [_fit(printer.doprint(e), printer.kind(e), s.kind) for s, e in zip(prog.states, outs[1:])]
                new = [Code(f"{parenthesize(x, ATOM)}.clone()", ATOM) if copy else x
                       for x, copy in zip(new, self.clones[k])]
                ret = f"return {printer.fill('w - {0}', [update])}, {_tuple(new)}"
                if 4 + len(ret) > LINE:  # several values: one name each
                    update, new = body.bind(update), [body.bind(x) for x in new]
                    ret = f"return w - {update}, {_tuple(new)}"
                lines = [*body.lines, ret]
                doc = f'"""Path {k}, last segment: (w - update, new values of {_names(prog.states)})."""'
            out.append(_function(f"_path{k}_segment{j}", ["*", *body.needed, "**_"], [doc, *lines]))
        return out

    def eager_program(self, k: int) -> tuple[Program, dict[str, str]]:
        """Path k as the multi-tensor printer takes it (flattened, shape facts inlined, repeated
        computations made once, axpy, addcmul and nan tests folded, the sides of lazy wheres next to
        them) and the kinds of its per-step values (the prelude's names)."""
        scalars = {a.target: "uniform" for a in self.hoisted[k][0]}
        prog = eliminate_common(_inline_static(flatten(self.group_programs[k]), scalars))
        prog = _fold_axpy(_fold_addcdiv(prog, scalars), scalars)
        return _defer_branches(_fold_nan_test(_fold_addcmul(prog, scalars), scalars), scalars), scalars

    def group_head(self, prog: Program, given: set[str], reads: set[str], stacks: dict[str, str]) -> list[str]:
        """A group function's first lines: the compute dtype, params and grads in it, the values it
        reads from ``_hyper`` (per-step numbers and ``given``: what earlier segments computed; a
        per-tensor reduction's value comes as the 1-d tensor ``stacks[name]``) and its state lists;
        each only when ``reads`` holds it."""
        lines = ["_dtype = _compute_dtype(_params[0].dtype)"]
        # (.to of a tensor already of _dtype is the tensor itself, at ~1.5 us a call: skipped)
        lines += ["w = _params if _params[0].dtype == _dtype else [_p.to(_dtype) for _p in _params]"] if (
            "w" in reads - given) else []
        lines += ["g = _grads if _grads[0].dtype == _dtype else [_x.to(_dtype) for _x in _grads]"] if (
            "g" in reads - given) else []
        for name in sorted(reads & (set(self.hypers) | {"lr", "step"} | given)):
            lines.append(f'{stacks.get(name, name)} = _hyper["{name}"]')
        return lines + [f'{s.name} = _states["{s.name}"]' for s in prog.states if s.name in reads - given]

    def group_function(self, k: int, variant: int = 0) -> str:
        """Path k over a group of tensors: params and states updated in place (``_path<k>_group``; with
        ``variant`` n, ``_path<k>_group_<n>``, see :meth:`eager_functions`)."""
        steps = len(self.variants[k]) + 1
        return self.eager_functions(k)[variant - steps]

    def eager_functions(self, k: int) -> list[str]:
        """Path k's multi-tensor functions: one per segment of its :func:`_split` (none when its
        reductions are not cut out), each ``_path<k>_stage<d>(...) -> (values for later segments,
        each row's partial totals of the stage's reductions)``, then ``_path<k>_group``, the step:
        params and states updated in place, then the steps it hands a group to where a test decides
        (``_path<k>_group_<n>``, see :func:`_variants`; each called by the one before)."""
        if k not in self._eager_functions:
            prog, scalars = self.eager[k]
            chain = [(prog, self.splits[k], None), *self.variants[k]]
            out: list[str] = []
            for n, (variant, split, _) in enumerate(chain):
                name = f"_path{k}_group" + (f"_{n}" if n else "")
                handed = None if n + 1 == len(chain) else (chain[n + 1][2], f"_path{k}_group_{n + 1}")
                tests = tuple(test for _, _, test in chain[1:n + 1])
                functions = self.segment_functions_of(k, variant, split, scalars, (name, tests), handed)
                out = functions if n == 0 else [*out, functions[-1]]  # (a variant runs its group's stages)
            self._eager_functions[k] = out
        return self._eager_functions[k]

    def segment_functions_of(self, k: int, prog: Program, split: _Split | None, scalars: dict[str, str],
                             step: tuple[str, tuple[_Test, ...]], handed: tuple[_Test, str] | None) -> list[str]:
        """The stage functions of ``split`` and the step (``step``: its name and the tests under which
        it runs; see :meth:`eager_functions`); ``handed``: the test under which the step hands the
        group to another step, and that one's name."""
        split = split or _whole(prog)
        used = names_in(prog) | set(scalars) | set(self.hypers) | {"lr", "step"}
        owners: dict[str, str] = {}  # who owns each list a segment hands on (see GroupPrinter.owner)
        out = []
        for d, taken in enumerate(split.taken):
            last = d == len(split.taken) - 1
            body = [a for a, seg in zip(prog.body, split.seg) if seg == d]
            cut = split.reduced(prog)  # reductions cut out
            outputs = list(prog.outputs()) if last else []
            printer = GroupPrinter(prog, self.fail_at(prog.return_loc), used, {**input_kinds(prog), **scalars, **taken})
            printer.owner.update({name: owners.get(name, SHARED) for name in taken})
            reads = set().union(*[free_vars(a.expr) for a in body], *[free_vars(e) for e in outputs])
            after = set().union(*map(free_vars, outputs), split.live_out[d])
            blocks = _where_blocks(body, printer.kinds, printer.fail, after)
            if last:
                reads |= {"w", "g", *prog.state_names, *([handed[0].name] if handed else [])}
            reduced = sorted(reads & cut & set(taken))  # handed in as stacks (see _Program.group_step)
            printer.stacked.update(reduced)
            printer.unlisted.update(reduced)
            segment = _Segment(self, prog, printer, body, cut, last, blocks,
                               _live_after(body, [*outputs, *map(Var, sorted(split.live_out[d]))]),
                               handed if last else None)
            lines = segment.lines(0, len(body))
            if last and handed is not None and not handed[0].per_tensor:  # a per-step number: tested first
                lines = handed[0].hand(handed[0].name, handed[1]) + lines
            if re.search(r"\bw\b", "\n".join(lines)):  # w lends a dtype, device or shape (as_tensor, broadcasts)
                reads.add("w")
            head = self.group_head(prog, set(scalars) | set(taken), reads, {n: printer.stack(n) for n in reduced})
            lines = head + ["_n = _numbers(_params, _dtype)"] * printer.numbers + lines
            parts, scaled = segment.parts, segment.scaled
            if last:
                out.append(self.step_function(k, prog, printer, lines, scaled, *step))
                break
            lines.extend(printer.unstack(split.carried[d]))
            owners.update({name: printer.owner.get(name, SHARED) for name in split.carried[d]})
            values = _layout("{", [f'"{n}": {n}' for n in sorted(split.carried[d])], "}", used=11)
            lines.append(f"return {values}, {_tuple(parts)}")
            reduced = ", ".join(prog.body[i].target for i in split.stages[d])
            doc = (f'"""Path {k}, segment {d}: values for later segments and each row\'s part of '
                   f'{reduced}."""')
            out.append(_function(f"_path{k}_stage{d}", ["_params", "_grads", "_states", "_hyper"],
                                 [doc, *(_wrap_comprehension(ln) for ln in lines)]))
        return out

    def partials(self, printer: GroupPrinter, a: Assign, r: int, lines: list[str]) -> list[str]:
        """``a.target = reduction(args)`` in a segment: per term, each row's total (``torch.sum`` or
        ``torch.amax`` of the term over the row) as ``_part<r>_<term>``, appended to ``lines``."""
        red = OPS[a.expr.op].reduction
        env = {"x": a.expr.args[0], "y": a.expr.args[-1]}
        wrap = f"torch.{'sum' if red.combine == 'sum' else 'amax'}({{}})"
        names = []
        for term in red.terms:
            names.append(f"_part{r}_{len(names)}")
            term = substitute(term, env)
            text = printer.dots(term) if red.combine == "sum" else None
            if text is None:
                text = printer.comprehension(term, "full", wrap=wrap)
            lines.append(f"{names[-1]} = {text}")
        return names

    @staticmethod
    def scaled_update(prog: Program, printer: GroupPrinter, rest: list[Assign], later: set[str]
                      ) -> tuple[str, str] | None:
        """``(x, c)`` where ``rest[0]`` is the update ``c * x`` (x a full list no statement writes, c a
        number) that no later statement or new state reads: the step subtracts it as
        ``_foreach_sub_(w, x, alpha=c)``, one pass where ``x *= c`` and ``w -= x`` are two."""
        a, e = rest[0], rest[0].expr
        if not (isinstance(prog.update, Var) and a.target == prog.update.name and a.target not in later):
            return None
        if not (isinstance(e, Call) and e.op == "mul" and all(isinstance(x, (Var, Const)) for x in e.args)):
            return None
        states = {st.name for st in prog.states}
        for x, c in (e.args, e.args[::-1]):
            # a temporary, the caller's grads or params (never written), or a state's own list read
            # under the state's name (``lr * b``), which no later statement sets: the step reads it at
            # the end, so no statement may write it in place under any name (Segment.statement)
            if not (printer.is_list(x) and printer.kinds[x.name] == "full"):
                continue
            owner = printer.owner.get(x.name)
            if owner not in (FRESH, SHARED_FRESH, SHARED) and not (owner == x.name and x.name in states):
                continue
            if any(b.target == x.name for b in rest[1:]) or printer.is_list(c):
                continue
            if isinstance(c, Const) or printer.kinds.get(c.name) in GROUP_SCALARS:
                return x.name, printer.atom(c)
        return None

    def step_function(self, k: int, prog: Program, printer: GroupPrinter, lines: list[str],
                      scaled: tuple[str, str] | None = None, name: str | None = None, tests: tuple[_Test, ...] = ()
                      ) -> str:
        """``_path<k>_group`` (or ``name``, the step for where ``tests`` hold): ``lines`` (the last
        segment) and the update of params and states (``scaled``: the update is ``c * x``,
        subtracted in one pass; see :meth:`scaled_update`)."""
        kinds = printer.kinds
        lines.extend(printer.unstack(set().union(*map(free_vars, prog.outputs()))))
        update_kind = expr_kind(prog.update, kinds, printer.fail)
        alpha = ""
        if scaled is not None:
            lines.append(f"_update = {scaled[0]}")
            alpha = f", alpha={scaled[1]}"
        elif update_kind == "full" and isinstance(prog.update, Var):
            lines.append(f"_update = {prog.update.name}")
        else:
            lines.append(f"_update = {printer.comprehension(prog.update, update_kind, 'full')}")
        copies = []  # (state, list): new values not already in the state's own tensors
        views = []  # ... that are views of lists a copy may write (copied first, see below)
        for s, e in zip(prog.states, prog.new_states):
            k_e = expr_kind(e, kinds, printer.fail)
            own = isinstance(e, Var) and printer.owner.get(e.name) in (s.name, f"<shared {s.name}>")
            if own and k_e == s.kind:
                continue  # updated in place
            if isinstance(e, Var) and k_e == s.kind and printer.owner.get(e.name) in (FRESH, SHARED_FRESH):
                copies.append((s.name, e.name))
            elif isinstance(e, Var) and k_e == s.kind:  # shared with params, grads or another state
                lines.append(f"_new_{s.name} = [_x.clone() for _x in {e.name}]")
                copies.append((s.name, f"_new_{s.name}"))
            else:
                lines.append(f"_new_{s.name} = {printer.comprehension(e, k_e, s.kind)}")
                # a narrower list is broadcast as a view of its tensors (_fit): a state's (b <- a, a
                # scalar state, or a temporary aliasing one) would be read at the copy, after a's copy
                # if that came first, where the reference reads a's old value. A view is wider than
                # its source, and a copy writes a state of its own width: copying views first, widest
                # first, each view is read before any copy may write it (no clone)
                view = isinstance(e, Var) and printer.owner.get(e.name) not in (FRESH, SHARED_FRESH)
                (views if view else copies).append((s.name, f"_new_{s.name}"))
        # (a row or col state is narrower than a full one and wider than a scalar: a full a <- r viewing
        # row state r is copied before r <- s, which views scalar s)
        width = {s.name: {"full": 0, "row": 1, "col": 1, "scalar": 2}[s.kind] for s in prog.states}
        copies = sorted(views, key=lambda c: width[c[0]]) + copies
        lines += ["if _params[0].dtype == _dtype:", f"    torch._foreach_sub_(_params, _update{alpha})", "else:",
                  f"    torch._foreach_copy_(_params, torch._foreach_sub(w, _update{alpha}))"]
        lines += [f'torch._foreach_copy_(_states["{s}"], {value})' for s, value in copies]
        doc = f'"""Path {k} on a group of tensors (multi-tensor ops): params and {_names(prog.states)} updated in place'
        doc += f',\nwhere {" and ".join(map(str, tests))}."""' if tests else '."""'
        return _function(name or f"_path{k}_group", ["_params", "_grads", "_states", "_hyper"],
                         [doc, *(_wrap_comprehension(ln) for ln in lines)])

    def stage_table(self) -> str:
        """``stages=``: per path, per stage ``(segment function, ((name, how, finish), ...))``."""
        rows = []
        for k, split in enumerate(self.splits):
            prog = self.eager[k][0]
            row = []
            for d, stage in enumerate(split.stages if split else []):
                outs = []
                for i in stage:
                    a = prog.body[i]
                    red = OPS[a.expr.op].reduction
                    names = [f"a{t}" for t in range(len(red.terms))]
                    printer = TorchPrinter(dict.fromkeys([*names, "n"], "uniform"), self.fail_at(a.loc), ref="a0")
                    finish = f"lambda {', '.join(names)}, n: {printer.doprint(red.finish)}"
                    outs.append(_layout("(", [f'"{a.target}"', f'"{red.combine}"', finish], ")", used=20 + 1))
                # one reduction per line whatever its width: the trailing comma keeps black's layout
                outs_text = _layout("(", outs, ")", one=True, used=16 + 1)
                row.append(_layout("(", [f"_path{k}_stage{d}", outs_text], ")", used=12 + 1))
            rows.append(_layout("(", row, ")", used=8 + 1))
        # (each level is laid out for the column black puts it at once the level above is split:
        # stages=( in the _Program call at 4, its rows at 8, their stages at 12, ...; +1: the comma)
        return _layout("(", rows, ")", one=True)

    def module_docstring(self) -> str:
        p = self.program
        latex = to_latex(p)
        head, _, rest = (p.doc or f"The {p.name} optimizer.").partition("\n\n")
        lines = [textwrap.fill(f"{self.cls}: {' '.join(head.split())}", 100), *([""] if rest else []),
                 *rest.splitlines()]
        parts = [*lines, "",
                 COMPILED_BY.format(target="torch"),
                 "Imports only torch.", "", "Program (optdsl DSL):", "", _indent(to_source(p, doc=False))]
        if latex:
            parts += ["Update rule (LaTeX):", "", _indent(latex), ""]
        hyper = ", ".join(f"{h.name}={number(h.default)}" for h in p.hypers if h.name != "lr")
        backends = "".join(f"|{b!r}" for b in self.extra)
        parts += [
            "Functional step (pure: no in-place ops, no .item(), no data-dependent Python control flow,",
            "so it runs under torch.func.vmap and torch.compile)::",
            "",
            f"    new_params, new_states = {self.name}_step(params, grads, states, *, lr, step, **hyper)",
            "",
            "    params, grads  lists of tensors (any float dtype; math runs in float32, float64 for",
            "                   float64 params; new_params keep each param's dtype)",
            f"    states         dict: state name ({', '.join(p.state_names) or 'none'}) -> list with one",
            "                   tensor per param (None where that param's path has no such state);",
            "                   init_states(params) gives the first one",
            "    lr, step       numbers or 0-d tensors (step is 1-based); may be batched under vmap",
            f"    hyper          {hyper or 'none'} (defaults used for any left out)",
            "",
            f"Optimizer: {self.cls}(params, lr, ..., maximize=False, foreach=None, fused=None,",
            f"    backend=None|'eager'|'compiled'{backends}); {self.cls}.functional is {self.name}_step.",
            "The code between the runtime markers is optdsl's codegen/runtime/torch_optimizer.py, verbatim.",
        ]
        return _docstring_literal("\n".join(parts))

    def program_table(self) -> str:
        """``_PROGRAM = _Program(...)``: the runtime's view of this program."""
        p = self.program
        n = len(self.paths)
        rows = []
        for k, path in enumerate(self.paths):
            sliceable = _sliceable_path(path, self.splits[k].cut if self.splits and self.splits[k] else set())
            states = tuple((s.name, s.kind, s.init) for s in path.program.states)
            args = [f"states={_literal(states, used=len('        states=,'))}",  # (in PATHS, in _Path)
                    f"needs_2d={path.needs_2d}", f"flat={_flat_path(path)}", f"sliceable={_literal(sliceable)}"]
            inner = ", ".join(args)  # black: the call on one line, else its arguments on one line
            fits = 4 + len(f"_Path({inner}),") > LINE and 8 + len(inner) <= LINE and "\n" not in inner
            rows.append(f"_Path(\n    {inner}\n)" if fits else _call("_Path", args, used=5))
        segs = [_tuple([f"_path{k}_segment{j}" for j in range(len(self.globals) + 1)]) for k in range(n)]
        combine = []
        for g in self.globals:  # how the tensors' totals combine, and the value made from the total
            red = OPS[g.expr.op].reduction
            finish = TorchPrinter({"a0": "uniform"}, self.fail_at(None), ref="a0").doprint(red.finish)
            combine.append(f'("{red.combine}", lambda a0: {finish})')
        backends = [f'"{b}": (_{b}_group_step, _{b}_available)' for b in self.extra]
        fields = [
            ("name", f'"{self.name}"'),
            ("hyper_defaults", "HYPER_DEFAULTS"),
            ("state_names", "STATE_NAMES"),
            ("paths", "PATHS"),
            ("tree", _tree(self.tree)),
            ("uniforms", _tuple([f"_path{k}_uniforms" for k in range(n)])),
            ("uniform_floats", _tuple([f"_path{k}_uniform_floats" if f else "None"
                                       for k, f in enumerate(self.float_uniforms)])),
            ("segments", _layout("(", segs, ")", one=True)),
            ("groups", _tuple([f"_path{k}_group" for k in range(n)] if self.eager else [])),
            *([("stages", self.stage_table())] if any(self.splits) else []),
            ("global_names", _literal(tuple(g.target for g in self.globals))),
            ("combine", _tuple(combine)),
            ("not_separable", _literal(self.not_separable)),
            ("sparse_paths", _literal(self.sparse_paths)),
            ("backends", _layout("{", backends, "}")),
            ("one_op", str(self.one_op())),
            ("torch_checkpoints", _literal(self.checkpoints, used=len("    torch_checkpoints=,"), indent=4)),
        ]
        # the paths whose last segment clones an input it writes (see _clones), where there are any
        copied_out = tuple(k for k, clones in enumerate(self.clones) if any(clones))
        fields += [("copied_out", _literal(copied_out))] if copied_out else []
        # the fused backends that take a step's global values as numbers (the eager stage's, over all
        # groups): compiled where nothing is computed before the globals, cpp where it has kernels
        fused = ["compiled"] * self.globals_alone() + ["cpp"] * bool(self.globals and "cpp" in self.extra)
        fields += [("global_backends", _literal(tuple(fused)))] if fused else []
        fields += [("unavailable", _literal({"cpp": self.no_kernels}))] if self.no_kernels else []
        domains = domain_entries(p)
        fields += [("hyper_domains", _layout("{", domains, "}"))] if domains else []
        defaults = [f'"{name}": {number(v)}' for name, v in self.hypers.items()]
        return "\n".join([
            _assign("HYPER_DEFAULTS", _layout("{", defaults, "}", used=17)),
            _assign("STATE_NAMES", _literal(tuple(s.name for s in p.states))),
            _assign("PATHS", _layout("(", rows, ")", one=True, used=8)),
            "",
            _assign("_PROGRAM", _layout("_Program(", [f"{k}={v}" for k, v in fields], ")", one=True)),
            "GLOBALS = _PROGRAM.global_names",
            "SPARSE_PATHS = _PROGRAM.sparse_paths  # paths whose sparse-row grads step only their rows",
            "init_states = _PROGRAM.init_states",
            "_path_of = _PROGRAM.path_of",
            "_eager_group_step = _PROGRAM.eager_group_step",
            "",
            "",
            _function(f"{self.name}_step", ["params", "grads", "states", "*", "lr", "step", "**hyper"], [
                '"""One step of the optimizer as a pure function (see the module docstring).',
                "",
                'Returns (new_params, new_states) with the layout of (params, states).',
                '"""',
                "return _PROGRAM.step(params, grads, states, lr=lr, step=step, **hyper)",
            ]),
        ])

    def class_source(self) -> str:
        p = self.program
        lr = f"lr={number(self.hypers['lr'])}" if "lr" in self.hypers else "lr"
        args = [lr] + [f"{n}={number(v)}" for n, v in self.hypers.items() if n != "lr"]
        betas = "beta1" in self.hypers and "beta2" in self.hypers
        flags = (["betas=None"] if betas else []) + [
            "maximize=False", "foreach=None", "fused=None", "capturable=False", "differentiable=False",
            "backend=None"]
        names = ["lr"] + [n for n in self.hypers if n != "lr"]
        defaults = _layout("{", [f'"{n}": {n}' for n in names], "}", used=19)
        passed = [f"{f.split('=')[0]}={f.split('=')[0]}" for f in flags]
        # torch.optim's settings (amsgrad=False) and tuples (eps=(None, 1e-3)) the program declares
        if any(decl["requires"] or decl["hypers"] for decl in self.checkpoints.values()):
            flags.append("**torch_settings")
            passed.append("**torch_settings")
        first = textwrap.fill(summary(p.doc) or f"The {p.name} optimizer.", 100)
        doc = _doc(
            f"{first}\n\nA torch.optim.Optimizer generated from the optdsl program `{p.name}` (see the module "
            "docstring).\nbackend: 'eager' (multi-tensor torch ops), 'compiled' (torch.compile of one fused loop:\n"
            "a kernel for the first parameter size, one for all others), an extra backend, or None for the\n"
            "fastest available.", 4)
        init = _function("__init__", ["self", "params", *args, "*", *flags], [
            f"defaults = {defaults}",
            _call("super().__init__", ["params", "defaults", *passed], used=8),
        ], indent=4)
        return "\n".join([
            f"class {self.cls}(_Optimizer):",
            f"    {doc}",
            "",
            "    _program = _PROGRAM",
            f"    functional = staticmethod({self.name}_step)",
            "",
            init,
        ])

    def called_functions(self, printed: str) -> set[str]:
        """The names of :mod:`codegen.runtime.torch_math`'s helpers (``_sign``, ``_dim``,
        ``_tensor``...) that the torch spellings of this program's ops call, in its paths and in the
        shape tests that pick one, or that the ``printed`` program code calls."""
        exprs = [e for path in self.paths for e in [a.expr for a in path.program.body] + list(path.program.outputs())]
        ops = {node.op for e in [*exprs, *self.tests] for node in walk(e) if isinstance(node, Call)}
        spelled = "\n".join([*(OPS[op].torch or "" for op in ops), printed])  # (apart: "{0}.ndim" + "_dim(")
        return set(re.findall(r"\b(_[a-z]\w*)\(", spelled))

    def float_functions(self) -> set[str]:
        """The helpers of :mod:`codegen.runtime.float_math` the printed ``_uniform_floats`` call."""
        return float_called([a.expr for (prelude, _), f in zip(self.hoisted, self.float_uniforms) if f
                             for a in prelude])

    def source(self) -> str:
        program = ["", "# --- the program " + "-" * (LINE - 17 - 2)]
        for k in range(len(self.paths)):
            program += [x for f in self.segment_functions(k) for x in ("", "", f)]
            program += ["", "", self.uniform_function(k, self.hoisted[k][0])]
            program += ["", "", self.float_uniforms[k]] if self.float_uniforms[k] else []
            if self.eager:
                program += [x for f in self.eager_functions(k) for x in ("", "", f)]
        out = [self.module_docstring(), "", runtime_source("torch_optimizer")]
        table = self.program_table()
        called = self.called_functions("\n".join([*program, table]))  # (its shape tests may call _tensor)
        for module, names in (("torch_math", called), ("float_math", self.float_functions())):
            text = runtime_functions(module, names)
            if text:
                out += ["", "", f"# --- functions of codegen/runtime/{module}.py (verbatim) that the ops call", text + "\n"]
        out += program
        for b, src in self.extra.items():
            out += ["", "", f"# --- backend {b!r} (extra source) ---", src.strip("\n")]
        out += ["", "", table, "", "", self.class_source()]
        text = "\n".join(out) + "\n"
        return re.sub(r"\n{3,}(?=\S)", "\n\n\n", text)  # two blank lines between top-level blocks


class _Body:
    """The statements of one generated per-tensor function, printed one by one: records the names
    it reads before setting them (``needed``, its parameters) and those it sets (``defined``), and
    cuts a statement whose line would be too wide into temporaries for its arguments."""

    def __init__(self, kinds: dict[str, str], used: set[str], ref: str = "w", needed: list[str] | None = None):
        self.kinds, self.used, self.ref = kinds, used, ref
        self.needed: list[str] = list(needed or [])
        self.defined: set[str] = set()
        self.lines: list[str] = []
        self._bound = 0

    def read(self, expr: Expr) -> None:
        for v in sorted(free_vars(expr)):
            if v not in self.defined and v not in self.needed:
                self.needed.append(v)

    def assign(self, target: str, expr: Expr, fail) -> None:
        printer = TorchPrinter(self.kinds, fail, ref=self.ref)
        text = f"{target} = {printer.doprint(expr)}"
        if 4 + len(text) > LINE and isinstance(expr, Call):
            expr = Call(expr.op, tuple(self.atom(a, fail) for a in expr.args))
            text = f"{target} = {printer.doprint(expr)}"
        self.read(expr)
        self.kinds[target] = printer.kind(expr)
        self.defined.add(target)
        self.lines.append(text)

    def atom(self, expr: Expr, fail) -> Expr:
        """``expr``, or a fresh temporary assigned it when it is a call (shape arithmetic stays as it
        is: computed whole in float64, see TorchPrinter, not rounded to w's dtype on its way)."""
        if not isinstance(expr, Call) or expr_kind(expr, self.kinds, fail) == "static":
            return expr
        name = fresh_name("t", self.used)
        self.assign(name, expr, fail)
        return Var(name)

    def bind(self, text: str) -> str:
        """Printed ``text`` under a fresh internal name (for a return too wide for one line)."""
        if text.isidentifier():
            return text
        self._bound += 1
        self.lines.append(f"_r{self._bound} = {text}")
        return f"_r{self._bound}"


def _nested(lines: list[str]) -> list[str]:
    """A function body's ``lines`` one level in (under an ``if``), laid out for that width."""
    return ["    " + _wrap_comprehension(ln, 8).replace("\n", "\n    ") for ln in lines]


def _doc(text: str, indent: int) -> str:
    """A docstring literal whose continuation lines sit at ``indent`` (black's docstring layout)."""
    pad = " " * indent
    return "\n".join(pad + ln if i and ln else ln for i, ln in enumerate(docstring(text).split("\n")))


def _tuple(items: list[str]) -> str:
    return _layout("(", items, ")")


def _assign(name: str, value: str) -> str:
    return f"{name} = {value}"


def _clones(prog: Program) -> list[bool]:
    """Per new state of ``prog``: must the segment that returns it return a copy? The callers copy
    the step's values into the parameter first, then into the states in order (the in-place compiled
    step's ``p.copy_(new_w)``, ``s.copy_(v)``, :meth:`_Optimizer._step_segments`; a path with a
    clone is listed in the table's ``copied_out``, whose compiled step returns its values, since
    inductor drops a clone of an input the graph writes); a value that is an input's
    own tensors (``prev <- w``, ``m_prev <- m``; a narrower state's, broadcast as a view: ``b <- a``)
    would be read there after that input was overwritten, where the reference reads every input as
    the step found it. So a value that may be the tensors of ``w`` or of a state copied before it
    (and changed: ``m <- m`` leaves m as it is) is cloned; every other value is a new tensor (each op
    of the table makes one), copied as it is (AdamW's, Lion's: no clone).

    Example:
        >>> from optdsl import parse
        >>> _clones(parse("def f(w, g, m, m_prev, prev, lr):\\n    return lr * g, g, m, w\\n"))
        [False, True, True]
        >>> _clones(parse("def f(w, g, a, b, lr):\\n    return lr * g, b, a + 1\\n"))
        [False, False]
    """
    may_be = {n: {n} for n in ("w", *prog.state_names)}  # name -> the inputs whose tensors it may hold
    for a in prog.body:
        may_be[a.target] = set(may_be.get(a.expr.name, ())) if isinstance(a.expr, Var) else set()
    values = [may_be.get(e.name, set()) if isinstance(e, Var) else set() for e in prog.new_states]
    written = {"w"}  # copied into before the state at hand
    out = []
    for s, aliases in zip(prog.states, values):
        out.append(bool(aliases & written))
        if aliases != {s.name}:
            written.add(s.name)
    return out


def hoist_uniform(prog: Program, base: set[str]) -> tuple[list[Assign], Program]:
    """``(prelude, program)``: every value that depends only on ``base`` (lr, step, hyperparameters)
    moves to a prelude computed once per step; the program reads it as an input. Without this,
    inductor would recompute ``beta1 ** step`` for every element of every tensor.

    Example: ``update = lr * g / (1 - beta1 ** step)`` -> prelude ``u = 1 - beta1 ** step``,
    program ``update = lr * g / u``."""
    used = names_in(prog) | set(base) | {"params", "grads", "states", "hyper"}
    known = set(base)  # names whose current value is uniform and computed before the program
    prelude: list[Assign] = []
    rename: dict[str, Expr] = {}

    def pre(e: Expr) -> bool:
        return isinstance(e, (Call, Var)) and free_vars(e) <= known and not any(
            isinstance(n, Call) and OPS[n.op].shape in (STATIC, GLOBAL) for n in walk(e))

    def lift(e: Expr) -> Expr:
        if isinstance(e, Call) and e.op == "div" and pre(e.args[1]) and not pre(e.args[0]):
            # x / u -> x * (1 / u): one division per step instead of one per element (a vector
            # division costs several multiplies; the result may differ from x / u in the last bit)
            name = fresh_name("u", used)
            prelude.append(Assign(name, Call("div", (Const(1.0), e.args[1]))))
            known.add(name)
            return Call("mul", (lift(e.args[0]), Var(name)))
        if isinstance(e, Call) and pre(e):
            name = fresh_name("u", used)
            prelude.append(Assign(name, e))
            known.add(name)
            return Var(name)
        if isinstance(e, Call):
            return Call(e.op, tuple(lift(a) for a in e.args))
        return e

    body = []
    for a in prog.body:
        e = substitute(a.expr, rename)
        if pre(e):
            name = fresh_name(a.target, used)
            prelude.append(Assign(name, e, a.loc))
            known.add(name)
            rename[a.target] = Var(name)
            continue
        body.append(Assign(a.target, lift(e), a.loc))
        rename.pop(a.target, None)
        known.discard(a.target)
    outs = [lift(substitute(e, rename)) for e in prog.outputs()]
    return prelude, prog.with_body(body, update=outs[0], new_states=outs[1:])


def split_lerp(prelude: list[Assign], prog: Program, base: set[str]) -> tuple[list[Assign], Program]:
    """``interp(x, y, a) = (1 - a) x + a y`` with a per-step ``a`` -> ``x * c + a * y``, with
    ``c = 1 - a`` added to the prelude (whose other names stay as they are): two multiplies and an
    add per element in the compiled loop, where torch.lerp's two-branch formula costs more. A
    number ``a`` gives the number ``1 - a``. Either way ``1 - a`` is float64 arithmetic, as in the
    interpreter: in float32, ``1 - 0.999`` keeps 4 digits (the step of ``interp(g * g, v, 0.999)``
    was 1.8e-4 off in the cpp kernels). The multi-tensor backend keeps ``interp`` (one
    ``_foreach_lerp_``).

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, m, lr, beta=0.9):\\n    m = interp(g, m, beta)\\n    return lr * m, m\\n")
        >>> prelude, q = split_lerp([], p, {"lr", "step", "beta"})
        >>> print(to_source(q))
        def f(w, g, m, lr, beta=0.9):
            m = g * c + beta * m
            return lr * m, m
        <BLANKLINE>
        >>> prelude
        [Assign(target='c', expr=Call(op='sub', args=(Const(value=1.0), Var(name='beta'))))]
    """
    known = set(base) | {a.target for a in prelude}
    used = names_in(prog) | known
    extra: list[Assign] = []
    made: dict[str, str] = {}

    def visit(e: Expr) -> Expr:
        if not isinstance(e, Call):
            return e
        args = tuple(visit(a) for a in e.args)
        if e.op == "interp" and isinstance(args[2], Const):
            complement = Const(1 - args[2].value)
            return Call("add", (Call("mul", (args[0], complement)), Call("mul", (args[2], args[1]))))
        if e.op == "interp" and isinstance(args[2], Var) and args[2].name in known:
            a = args[2].name
            if a not in made:
                made[a] = fresh_name("c", used)
                extra.append(Assign(made[a], Call("sub", (Const(1.0), args[2]))))
            return Call("add", (Call("mul", (args[0], Var(made[a]))), Call("mul", (args[2], args[1]))))
        return Call(e.op, args)

    body = []
    for a in prog.body:
        body.append(Assign(a.target, visit(a.expr), a.loc))
        known.discard(a.target)  # a reassigned input is no longer the per-step value
        made.pop(a.target, None)
    outs = [visit(e) for e in prog.outputs()]
    return prelude + extra, prog.with_body(body, update=outs[0], new_states=outs[1:])


def _names(states) -> str:
    return ", ".join(s.name for s in states) or "no states"


def _tree(tree: Tree) -> str:
    """A decision tree of shape tests as the runtime reads it: a path index, or
    ``(lambda w: test, tree if it holds, tree if not)``."""
    if isinstance(tree, int):
        return str(tree)
    test, yes, no = tree
    return _tuple([f"lambda w: {_shape_test(test)}", _tree(yes), _tree(no)])


def _shape_test(expr: Expr) -> str:
    """A shape test as Python over ``w.ndim``/``w.shape`` (it picks the path): plain Python where
    that is exact (:mod:`codegen.shape_python`), else computed as the interpreter computes it, in
    float64 (0-d tensors on the CPU, where ``1 / 0`` is inf and ``2 ** 2000`` does not raise)."""
    float64 = lambda e: f"bool({float64_printer({'w': 'full'}, _refuse).doprint(e)})"
    return shape_test(expr, "torch", float64)


def _refuse(msg, hint=None):
    raise DslError(msg, hint=hint)


def _docstring_literal(text: str) -> str:
    """A raw docstring (LaTeX reads as written) when nothing in ``text`` can end or bend it;
    otherwise the escaped form of :func:`optdsl.printer.docstring`."""
    if any(ord(c) < 32 and c not in "\n\t" for c in text) or "\x7f" in text:
        raise DslError("a docstring holds control characters", hint="remove them from the program's doc")
    if '"""' in text or '\\"' in text or text.endswith(("\\", '"')) or "\r" in text:
        return docstring(text)
    return f'r"""{text}\n"""'


def _indent(text: str) -> str:
    return "\n".join(("    " + line) if line else "" for line in text.splitlines()) + "\n"


def _repeats(op: str) -> set[int]:
    """Argument positions the torch spelling of ``op`` prints more than once (``cbrt(x)`` prints x
    twice): such an argument must be a name, or nesting would make the output exponential."""
    template = OPS[op].torch or ""
    return {i for i in range(OPS[op].arity) if template.count(f"{{{i}}}") > 1} | ({2} if op == "interp" else set())


def _cut(expr: Expr, used: set[str], body: list[Assign], loc) -> tuple[Expr, int]:
    """``(expr, calls)`` with subexpressions bound to fresh temporaries (appended to ``body``): a call
    in a repeated argument position, and any argument of MAX_CALLS // 2 calls or more. Output then
    grows linearly with the program (a 300-term sum is 300 short lines, not one 300-deep one)."""
    if not isinstance(expr, Call) or OPS[expr.op].shape == STATIC:
        return expr, 0
    repeated, args, total = _repeats(expr.op), [], 1
    for i, a in enumerate(expr.args):
        a, calls = _cut(a, used, body, loc)
        if isinstance(a, Call) and OPS[a.op].shape != STATIC and (i in repeated or calls >= MAX_CALLS // 2):
            name = fresh_name("t", used)
            body.append(Assign(name, a, loc))
            a, calls = Var(name), 0
        args.append(a)
        total += calls
    return Call(expr.op, tuple(args)), total


def _bounded_assigns(assigns: list[Assign], used: set[str]) -> list[Assign]:
    """Statements cut by :func:`_cut`."""
    body: list[Assign] = []
    for a in assigns:
        expr, _ = _cut(a.expr, used, body, a.loc)
        body.append(Assign(a.target, expr, a.loc))
    return body


def _bounded(prog: Program, used: set[str]) -> Program:
    """``prog`` with its statements and outputs cut by :func:`_cut`."""
    body = _bounded_assigns(list(prog.body), used)
    outs = [_cut(e, used, body, prog.return_loc)[0] for e in prog.outputs()]
    return prog.with_body(body, update=outs[0], new_states=outs[1:])


def emit(program: Program, extra_backends: dict[str, str] | None = None) -> str:
    """The torch module for ``program``: deterministic source text, laid out for 110 columns.

    ``extra_backends`` maps a backend name to source defining ``_<name>_group_step`` and
    ``_<name>_available`` (see the module docstring of :mod:`codegen.torch_target`).

    Example:
        >>> import optdsl
        >>> "def adamw_step(" in emit(optdsl.load("adamw"))
        True
    """
    return _Module(program, dict(extra_backends or {})).source()


def _flat_path(path: Path) -> bool:
    """A path runs on 1-d views when it uses no row/col values and asks no shape facts."""
    if path.needs_2d:
        return False
    exprs = [a.expr for a in path.program.body] + list(path.program.outputs())
    return not any(isinstance(n, Call) and OPS[n.op].shape in (STATIC, ROW, COL) for e in exprs for n in walk(e))


def _without_globals(prog: Program) -> Program:
    """``prog`` without its global reductions' statements (their values then read as inputs)."""
    cut = set(global_statements(prog))
    return prog.with_body([a for i, a in enumerate(prog.body) if i not in cut])


def _globals_first(split: _Split | None, prog: Program) -> bool:
    """Does ``split``'s first segment (of the eager program ``prog``) hold every global reduction
    and nothing but reductions, so that each reduces an input as the step begins? (A per-tensor
    one beside them, LAMB's ``norm(w)`` under a clip, is then taken twice: by the stage that
    computes the globals and by the kernel.)"""
    if split is None:
        return False
    first = [i for i, seg in enumerate(split.seg) if seg == 0]
    return sorted(split.stages[0]) == first and all(
        OPS[prog.body[i].expr.op].shape != GLOBAL for stage in split.stages[1:] for i in stage)


def _sliceable_path(path: Path, cut: set[str] | frozenset[str] = frozenset()) -> bool | str:
    """May the path's eager step run on slices of large tensors (the runtime's ``_chunks``), the
    step on each slice being that slice of the whole step? True (1-d slices): elementwise values
    and full states only, no shape facts; ``"rows"`` (blocks of whole rows): row values (rowmean)
    and row states too; False otherwise. Per-tensor and global reductions only where ``cut`` holds
    their shape (cut out by :func:`_split`: the slices' totals combined before the step)."""
    exprs = [a.expr for a in path.program.body] + list(path.program.outputs())
    shapes = {OPS[n.op].shape for e in exprs for n in walk(e) if isinstance(n, Call)}
    states = {s.kind for s in path.program.states}
    allowed = {ELEMENTWISE, *cut}
    if states <= {"full"} and shapes <= allowed:
        return True
    return "rows" if path.needs_2d and states <= {"full", "row"} and shapes <= allowed | {ROW} else False


def entry_point(module, program: Program):
    """The optimizer class of a loaded generated module: its attribute :func:`class_name` names.

    Example:
        >>> import optdsl
        >>> from codegen.generated import load_module
        >>> program = optdsl.load("sgd")
        >>> entry_point(load_module(emit(program), "sgd_torch_doctest"), program).__name__
        'SGD'
    """
    return getattr(module, class_name(program.name))


__all__ = ["GroupPrinter", "TorchPrinter", "class_name", "emit", "entry_point", "paths", "row_separable",
           ]
