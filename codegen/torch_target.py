"""PyTorch target: a validated Program -> a standalone module holding a functional step and a
``torch.optim.Optimizer`` subclass.

The generated module (``optdsl compile SRC --target torch``) imports only torch and holds, for a
program ``lion``:

  - ``lion_step(params, grads, states, *, lr, step, **hyper) -> (new_params, new_states)``: a pure
    function over lists of tensors (``states`` maps each state name to a list, ``None`` where a
    tensor's path has no such state). No in-place ops, no ``.item()``, no data-dependent Python
    control flow: it runs under ``torch.func.vmap`` and ``torch.compile``.
  - ``class Lion(torch.optim.Optimizer)`` with ``backend="eager" | "compiled" | <extra>``; the class
    attribute ``Lion.functional`` is ``lion_step``.

Paths (static specialisation). Every ``where`` whose condition is a static shape fact
(``ndim(w) >= 2``) is resolved at generation time: each assignment of truth values to those
conditions gives one *path*, a straight-line program with its own states (dead ones dropped, as
:func:`optdsl.passes.specialize` does for one shape). At run time ``_path_of(w)`` evaluates the
conditions with Python-level shape tests and picks the path. Each path is cut at the global
reductions into segments (:func:`optdsl.passes.segments`); ``_run`` executes segment k for every
tensor, combines the global reduction across all tensors, and continues (the interpreter's lockstep).

Backends of the optimizer class:
  - ``eager``: per path, ``_path<k>_group(params, grads, states, hyper)`` runs the flattened path over a
    group of tensors (same path, device, dtype, param group and step) with ``torch._foreach_*`` ops
    where one exists and no row/col broadcast is needed (list comprehensions of the per-tensor code
    otherwise); a temporary list that nothing reads later is overwritten in place (``_foreach_mul_``)
    rather than reallocated, and new state lists replace the old ones without a copy. Programs with
    global reductions run ``_SEGMENTS`` per tensor in lockstep instead.
  - ``compiled``: per path, ``torch.compile(dynamic=True)`` of an in-place per-tensor step (inductor
    fuses it into one loop that reads w, g, states once and writes them once). Paths without row/col
    values or shape facts see every tensor as a 1-d alias of its memory, so one graph serves every
    parameter shape; lr, step and hyperparameters are 0-d tensors, so schedules never recompile.
  - extra backends, through the hook below.
Parameters may be bf16/fp16: math and states are float32 (float64 for float64 parameters).

Sparse-row gradients (``nn.Embedding(sparse=True)``): when every path is row-separable (elementwise
ops and ``rowmean`` only, full/row states only; see :func:`row_separable`), the module sets
``SPARSE_ROWS = True`` and a sparse COO grad updates only its rows: the grad is coalesced, the rows
of w and of its full and row states are gathered, the functional step runs on them and
``index_copy_`` writes them back (other rows and their states stay bit-identical). For a lazy
program (:func:`optdsl.extend.lazy_updates`) this equals the dense step on the densified grad.
Otherwise (``SPARSE_ROWS = False``) a sparse grad raises a TypeError saying why.

AMP: the class sets ``_step_supports_amp_scaling = True`` and ``step`` takes ``grad_scale`` and
``found_inf`` (keywords, or the attributes torch.amp.GradScaler sets), as torch's fused optimizers do:
a non-zero ``found_inf`` (one ``.item()``) skips the step; otherwise the grads are unscaled in place
before any backend runs, so every backend, the sparse-row step and the extra-backend hook see
ordinary grads.

Per-step host work is independent of per-parameter bookkeeping where possible: the optimizer keeps a
*plan* (``_Plan``: tensors grouped by param group, path, device, dtype and step count, with their state
lists and, for ``compiled``, 1-d views) and rebuilds it only when the params with grads, their storage,
dtype or shape change, or a state dict is loaded. The params of one plan entry share one step-count
tensor (``state[p]["step"]`` per parameter, as torch keeps it; state_dict round-trips), so a step
increments one counter per entry. Values shared by all tensors of a step (lr, step, hyperparameters,
bias corrections) are computed once per step, and ``x / u`` with such a ``u`` becomes ``x * (1 / u)``.

Hook for extra backends (the Triton target uses it)::

    emit(program, extra_backends={"triton": SOURCE})

``SOURCE`` is Python text appended to the generated module (after everything the torch target
emits, so it may use ``torch``, ``PATHS``, ``STATE_NAMES``, ``HYPER_DEFAULTS``). It must define,
for a backend called ``NAME``:

  - ``_NAME_group_step(path, params, grads, states, *, lr, step, **hyper) -> None``: one optimizer
    step for a group of tensors that share ``path`` (an index into ``PATHS``), device and dtype.
    ``params``/``grads`` are lists of tensors (params may be bf16/fp16/fp32/fp64); ``states`` maps
    each state name of ``PATHS[path].states`` to a list of tensors in the compute dtype (float32,
    float64 for float64 params), shaped as their kind says (full: like w; row: ``w.shape[:-1]``;
    col: ``w.shape[:-2] + w.shape[-1:]``; scalar: ``()``). ``lr``, ``step`` (1-based) and every
    hyperparameter are Python floats. Update ``params`` and the state tensors in place.
  - ``_NAME_available(device: torch.device) -> bool``: may this backend run on ``device``?

The eager backend's ``_eager_group_step`` has exactly this signature. The optimizer calls group
steps only for programs without global reductions (``GLOBALS == ()``); for other programs an extra
backend is refused with a ValueError (so a target may simply emit no extra backend for them). The
default backend is the first available of: each extra backend in ``extra_backends`` order (only on
non-CPU devices), ``"compiled"`` (when a C++ compiler is found), ``"eager"``.

Example:
    >>> import optdsl
    >>> src = emit(optdsl.load("lion"))
    >>> "class Lion(torch.optim.Optimizer)" in src and "def lion_step(" in src
    True
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

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
    names_in,
    substitute,
    walk,
)
from optdsl.ops import COL, ELEMENTWISE, GLOBAL, OPS, REDUCE, ROW, STATIC
from optdsl.passes import (
    eliminate_dead_code,
    flatten,
    fold,
    global_statements,
    hoist_globals,
    liveness,
    segments,
)
from optdsl.printer import Printer, docstring, to_source
from optdsl.typecheck import expr_kind, input_kinds, join

from .generated import black_format, check_identifier, number

MAX_STATIC_CONDITIONS = 6  # 2**6 paths at most
NUMBER_KINDS = ("const", "static")
# Ops whose torch spelling accepts a Python number in any argument, next to a tensor.
SCALAR_OK = frozenset({"add", "sub", "mul", "div", "neg", "power", "mod", "floordiv", "cube", "where",
                       "lt", "le", "gt", "ge", "eq", "ne", "and", "or"})
BOOLEAN = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
# How a global reduction combines the per-tensor partials (the op table's torch template gives them).
GLOBAL_COMBINE = {
    "global_norm": "torch.sqrt(sum(parts))",
    "global_allfinite": "torch.where(torch.stack([p.to(parts[0].device) for p in parts]).all(), 1.0, 0.0)",
}
CLASS_NAMES = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "lamb": "LAMB", "lars": "LARS",
               "adax": "AdaX", "adafactor": "Adafactor", "adagrad": "Adagrad", "rmsprop": "RMSprop"}


def class_name(program_name: str) -> str:
    """The optimizer class for a program: ``lion -> Lion``, ``adafactor_optax -> AdafactorOptax``."""
    return "".join(CLASS_NAMES.get(part, part[:1].upper() + part[1:]) for part in program_name.split("_"))


# --- paths: one straight-line program per assignment of the static conditions ------------------
def _is_static(expr: Expr) -> bool:
    """Does ``expr`` depend on the parameter's shape only (numbers and shape facts)?"""
    if isinstance(expr, Const):
        return True
    if isinstance(expr, Var):
        return False
    if OPS[expr.op].shape == STATIC:
        return True
    return all(_is_static(a) for a in expr.args)


def _on_w(expr: Expr) -> Expr:
    """Shape facts asked of g or a full state are facts about w (same shape)."""
    return map_calls(expr, lambda c: Call(c.op, (Var("w"), *c.args[1:])) if OPS[c.op].shape == STATIC else c)


@dataclass(frozen=True)
class Path:
    """One straight-line specialisation: ``conditions`` -> ``program`` (hoisted, dead code removed)."""

    program: Program
    needs_2d: bool


def paths(program: Program) -> tuple[tuple[Expr, ...], dict[tuple[bool, ...], int], list[Path]]:
    """``(static conditions, truth values -> path index, paths)`` for ``program``.

    Example:
        >>> import optdsl
        >>> conds, table, ps = paths(optdsl.load("adafactor"))
        >>> len(conds), len(ps)
        (2, 3)
    """
    hoisted = hoist_globals(program)
    live, _ = liveness(hoisted)
    forced = frozenset(i for i in global_statements(hoisted) if i in live)
    static_env: dict[str, Expr] = {}
    body = []
    for a in hoisted.body:  # names bound to shape facts are substituted into their uses
        e = substitute(a.expr, static_env)
        body.append(type(a)(a.target, e, a.loc))
        if _is_static(e):
            static_env[a.target] = _on_w(e)
        else:
            static_env.pop(a.target, None)
    outs = [substitute(e, static_env) for e in hoisted.outputs()]
    prog = hoisted.with_body(body, update=outs[0], new_states=outs[1:])
    conditions: list[Expr] = []
    for e in [a.expr for a in prog.body] + list(prog.outputs()):
        for node in walk(e):
            if isinstance(node, Call) and node.op == "where" and _is_static(node.args[0]):
                cond = _on_w(node.args[0])
                if not isinstance(cond, Const) and cond not in conditions:
                    conditions.append(cond)
    if len(conditions) > MAX_STATIC_CONDITIONS:
        raise DslError(f"{program.name}: {len(conditions)} shape conditions; at most "
                       f"{MAX_STATIC_CONDITIONS} are supported", program.filename)
    table: dict[tuple[bool, ...], int] = {}
    found: list[Path] = []
    for truth in itertools.product((True, False), repeat=len(conditions)):
        choice = dict(zip(conditions, truth))

        body = [type(a)(a.target, _resolve(a.expr, choice), a.loc) for a in prog.body]
        outs = [_resolve(e, choice) for e in prog.outputs()]
        spec = eliminate_dead_code(fold(prog.with_body(body, update=outs[0], new_states=outs[1:])),
                                   force=forced)
        needs_2d = any(s.kind in ("row", "col") for s in spec.states) or any(
            isinstance(n, Call) and OPS[n.op].shape in (ROW, COL)
            for e in [a.expr for a in spec.body] + list(spec.outputs()) for n in walk(e))
        candidate = Path(spec, needs_2d)
        if candidate not in found:
            found.append(candidate)
        table[truth] = found.index(candidate)
    return tuple(conditions), table, found


def _resolve(e: Expr, choice: dict[Expr, bool]) -> Expr:
    """``e`` with each static ``where`` replaced by the branch ``choice`` takes (top-down, so a
    whole condition is matched before its parts)."""
    if not isinstance(e, Call):
        return e
    if e.op == "where" and _is_static(e.args[0]) and _on_w(e.args[0]) in choice:
        return _resolve(e.args[1] if choice[_on_w(e.args[0])] else e.args[2], choice)
    return Call(e.op, tuple(_resolve(a, choice) for a in e.args))


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
class TorchPrinter(Printer):
    """One tensor's expressions as torch code. ``kinds`` maps names to shapes (see typecheck);
    row/col values are unsqueezed where they meet full ones (the interpreter's ``expand``), and
    Python numbers are made tensors where a torch function needs one. Truth values are 1.0/0.0."""

    target = "torch"

    def __init__(self, kinds: dict[str, str], fail, ref: str = "w"):
        self.kinds, self.fail, self.ref = kinds, fail, ref

    def kind(self, expr: Expr) -> str:
        return expr_kind(expr, self.kinds, self.fail)

    def _print_Const(self, expr: Const) -> str:
        return number(expr.value)

    def _print_Var(self, expr: Var) -> str:
        return check_identifier(expr.name)

    def tensor(self, text: str) -> str:
        return f"torch.as_tensor({text}, dtype={self.ref}.dtype, device={self.ref}.device)"

    def _print_Call(self, expr: Call) -> str:
        op = OPS.get(expr.op)
        if op is None:
            self.fail(f"unknown function {expr.op!r}")
        if self.kind(expr) in NUMBER_KINDS:  # shape arithmetic stays plain Python
            try:
                return _py_static(expr)
            except DslError:
                pass
        kinds = [self.kind(a) for a in expr.args]
        args = [self._print(a) for a in expr.args]
        if op.shape == STATIC:
            return op.torch.format(*args)
        numbers = [k in NUMBER_KINDS for k in kinds]
        if op.shape == ELEMENTWISE:
            out = join(*kinds)
            args = [_expand(a, k, out) for a, k in zip(args, kinds)]
        if all(numbers) and op.name in SCALAR_OK:  # IEEE results (1/0 = inf), not ZeroDivisionError
            args[0] = self.tensor(args[0])
            numbers = [False] * len(numbers)
        elif all(numbers) or op.name not in SCALAR_OK | {"max", "min", "interp"}:
            args = [self.tensor(a) if n else a for a, n in zip(args, numbers)]
            numbers = [False] * len(numbers)
        name = op.name
        if name in BOOLEAN:
            return f"torch.where({args[0]} {BOOLEAN[name]} {args[1]}, 1.0, 0.0)"
        if name in ("and", "or"):
            sym = "&" if name == "and" else "|"
            return f"torch.where(({args[0]} != 0) {sym} ({args[1]} != 0), 1.0, 0.0)"
        if name == "not":
            return f"torch.where({args[0]} == 0, 1.0, 0.0)"
        if name == "isfinite":
            return f"torch.where(torch.isfinite({args[0]}), 1.0, 0.0)"
        if name == "allfinite":
            return f"torch.where(torch.isfinite({args[0]}).all(), 1.0, 0.0)"
        if name in ("max", "min"):
            if numbers[0] or numbers[1]:
                t, n = (args[1], args[0]) if numbers[0] else (args[0], args[1])
                return f"torch.clamp_{'min' if name == 'max' else 'max'}({t}, {n})"
            return f"torch.{name}imum({args[0]}, {args[1]})"
        if name == "interp":
            if numbers[0] or numbers[1]:
                x, y, a = args
                return f"((1 - {a}) * {x} + {a} * {y})"
            return f"torch.lerp({args[0]}, {args[1]}, {args[2]})"
        if op.shape == GLOBAL:
            self.fail(f"{name}() should have been hoisted")
        return _paren(op.torch.format(*args))


def _paren(text: str) -> str:
    """``text`` in parentheses unless it already is one call or one parenthesised group."""
    if text.isidentifier():
        return text
    head = re.match(r"[A-Za-z_][A-Za-z0-9_.]*", text)
    start = head.end() if head else 0
    if start < len(text) and text[start] == "(" and _closes_at_end(text, start):
        return text
    return f"({text})"


def _closes_at_end(text: str, start: int) -> bool:
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] == "("
        depth -= text[i] == ")"
        if depth == 0:
            return i == len(text) - 1
    return False


def _expand(text: str, kind: str, to: str) -> str:
    if to != "full" or kind not in ("row", "col"):
        return text
    return f"{text}.unsqueeze({-1 if kind == 'row' else -2})"


def _strip(text: str) -> str:
    """``(a + b)`` -> ``a + b`` when the outer parentheses enclose the whole text."""
    return text[1:-1] if text.startswith("(") and _closes_at_end(text, 0) else text


STATE_SHAPE = {"full": "w.shape", "row": "w.shape[:-1]", "col": "w.shape[:-2] + w.shape[-1:]", "scalar": "()"}


def _fit(text: str, kind: str, slot: str, ref: str = "w") -> str:
    """A value of ``kind`` as a tensor of the state's (or parameter's) ``slot`` shape."""
    if kind == slot:
        return text
    shape = STATE_SHAPE[slot].replace("w.", f"{ref}.")
    if kind in NUMBER_KINDS:
        return f"torch.full({shape}, {text}, dtype={ref}.dtype, device={ref}.device)"
    if slot == "scalar":  # one uniform tensor must not become every parameter's state
        return f"{text}.clone()" if kind == "uniform" and text.isidentifier() else text
    return f"torch.broadcast_to({_expand(text, kind, slot)}, {shape})"


# --- the multi-tensor printer (eager backend) --------------------------------------------------------
FOREACH_UNARY = {"neg": "neg", "abs": "abs", "exp": "exp", "expm1": "expm1", "sin": "sin",
                 "cos": "cos", "tan": "tan", "arcsin": "asin", "arccos": "acos", "arctan": "atan",
                 "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "reciprocal": "reciprocal", "floor": "floor"}
# No sign: torch.sign(nan) is 0 where the reference keeps nan; the op table's spelling keeps it.
FOREACH_OF_ABS = {"sqrt": "sqrt", "rsqrt": "rsqrt", "log": "log", "log2": "log2", "log10": "log10",
                  "log1p": "log1p"}  # these act on |x|
FOREACH_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "max": "maximum", "min": "minimum",
                  "power": "pow"}
LIST_KINDS = ("full", "row", "col", "scalar", "static")


class GroupPrinter:
    """One flattened path over a *group* of tensors: values of a per-tensor kind are lists, uniform
    values single 0-d tensors. An op becomes one ``torch._foreach_*`` call when the table has one
    and no row/col broadcast is needed; otherwise a list comprehension of the per-tensor code."""

    def __init__(self, program: Program, fail, used: set[str]):
        self.kinds = input_kinds(program)
        self.fail, self.used = fail, used
        self.loop: dict[str, str] = {}

    def is_list(self, e: Expr) -> bool:
        return isinstance(e, Var) and self.kinds[e.name] in LIST_KINDS

    def atom(self, e: Expr) -> str:
        return number(e.value) if isinstance(e, Const) else check_identifier(e.name)

    def loop_var(self, name: str) -> str:
        if name not in self.loop:
            self.loop[name] = fresh_name(f"{name}_i", self.used)
        return self.loop[name]

    def comprehension(self, expr: Expr, kind: str, slot: str | None = None) -> str:
        """``[<per-tensor code> for w_i, x_i in zip(w, x)]``."""
        names = ["w"] + sorted(n for n in free_vars(expr) if n != "w" and self.kinds[n] in LIST_KINDS)
        loops = {n: self.loop_var(n) for n in names}
        kinds = {**self.kinds, **{loops[n]: self.kinds[n] for n in names}}
        local = substitute(expr, {n: Var(v) for n, v in loops.items()})
        printer = TorchPrinter(kinds, self.fail, ref=loops["w"])
        text = _strip(printer.doprint(local))
        if slot is not None:
            text = _fit(text, kind, slot, ref=loops["w"])
        if len(names) > 1 and "w" not in free_vars(expr) and not re.search(rf"\b{loops['w']}\b", text):
            names.remove("w")  # w only lends its dtype, device or shape: drop it when unused
        targets = ", ".join(loops[n] for n in names)
        source = names[0] if len(names) == 1 else f"zip({', '.join(names)})"
        return f"[{text} for {targets} in {source}]"

    def group_kind(self, expr: Expr) -> str:
        """expr_kind, except that a value reading a shape fact differs per tensor (a scalar)."""
        kind = expr_kind(expr, self.kinds, self.fail)
        if kind not in LIST_KINDS and any(isinstance(n, Call) and OPS[n.op].shape == STATIC for n in walk(expr)):
            return "scalar"
        return kind

    def statement(self, expr: Expr) -> str:
        kind = self.group_kind(expr)
        if kind not in LIST_KINDS:  # one value for the whole group
            return _strip(TorchPrinter(self.kinds, self.fail, ref='hyper["lr"]').doprint(expr))
        if isinstance(expr, Var):
            return expr.name
        foreach = self.foreach(expr, kind)
        return foreach if foreach is not None else self.comprehension(expr, kind)

    def foreach(self, expr: Expr, kind: str, reuse: frozenset[str] = frozenset()) -> str | None:
        """One ``torch._foreach_*`` call for ``expr``, or None. When its first list argument is in
        ``reuse`` (a temporary list no later statement reads), the in-place variant overwrites it."""
        if not isinstance(expr, Call) or not all(isinstance(a, (Var, Const)) for a in expr.args):
            return None
        kinds = [expr_kind(a, self.kinds, self.fail) for a in expr.args]
        if any(k == "static" or (k in LIST_KINDS and k not in (kind, "scalar")) for k in kinds):
            return None
        args = [self.atom(a) for a in expr.args]
        lists = [self.is_list(a) for a in expr.args]
        op = expr.op
        swap = len(args) == 2 and lists[1] and args[1] in reuse and kinds[1] == kind and not (args[0] in reuse and kinds[0] == kind)
        if op in FOREACH_BINARY and (not lists[0] or swap):
            if not OPS[op].commutative:
                return None if not lists[0] else self.foreach_plain(args, op)
            args.reverse()
            kinds.reverse()
        first = args[0]
        inplace = first in reuse and kinds[0] == kind
        suffix = "_" if inplace else ""
        if op in FOREACH_UNARY:
            return f"torch._foreach_{FOREACH_UNARY[op]}{suffix}({first})"
        if op in FOREACH_OF_ABS:
            if inplace:
                return f"torch._foreach_abs_({first})\ntorch._foreach_{FOREACH_OF_ABS[op]}_({first})"
            return f"torch._foreach_{FOREACH_OF_ABS[op]}(torch._foreach_abs({first}))"
        if op == "square":
            return f"torch._foreach_mul{suffix}({first}, {first})"
        if op in FOREACH_BINARY:
            return f"torch._foreach_{FOREACH_BINARY[op]}{suffix}({first}, {args[1]})"
        if op == "interp" and lists[0] and lists[1]:
            weight = args[2] if lists[2] or isinstance(expr.args[2], Const) else f"[{args[2]}] * len({first})"
            return f"torch._foreach_lerp{suffix}({first}, {args[1]}, {weight})"
        return None

    def foreach_plain(self, args: list[str], op: str) -> str:
        return f"torch._foreach_{FOREACH_BINARY[op]}({args[0]}, {args[1]})"

    def assign(self, target: str, expr: Expr, reuse: frozenset[str]) -> list[str]:
        """Lines computing ``target = expr`` for the group (in place into a dead temporary if one fits)."""
        kind = self.group_kind(expr)
        if kind in LIST_KINDS and isinstance(expr, Call):
            text = self.foreach(expr, kind, reuse)
            if text is not None and text.startswith("torch._foreach_") and "_(" in text.split("\n")[-1]:
                lines = text.split("\n")
                first = lines[-1][lines[-1].index("(") + 1:].split(",")[0].rstrip(")")
                return lines + ([] if first == target else [f"{target} = {first}"])
        return [f"{target} = {self.statement(expr)}"]


# --- the module ------------------------------------------------------------------------------------
class _Module:
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
            if b in ("eager", "compiled"):
                raise DslError(f"backend {b!r} is built in")
        self.conditions, self.table, self.paths = paths(program)
        self.not_separable = row_separable(self.paths)
        first = self.paths[0].program
        self.globals = [first.body[i] for i in global_statements(first)]
        for g in self.globals:
            if g.expr.op not in GLOBAL_COMBINE:
                raise DslError(f"the torch target cannot combine {g.expr.op}() yet")
        self.hypers = {h.name: h.default for h in program.hypers}
        base = set(self.hypers) | {"lr", "step"}
        self.hoisted = [hoist_uniform(path.program, base) for path in self.paths]

    def fail_at(self, loc):
        def fail(msg, hint=None):
            line, col = loc if loc else (None, None)
            raise DslError(msg, self.program.filename, line, col, self.program.source, hint)
        return fail

    # one segment function per (path, segment)
    def uniform_function(self, k: int, prelude: list[Assign]) -> str:
        """Path k's prelude: the values all tensors of a step share, computed once."""
        kinds = {**{n: "uniform" for n in self.hypers}, "lr": "uniform", "step": "uniform"}
        needed: list[str] = ["lr"]
        defined: set[str] = set()
        read = _reader(needed, defined)
        lines = []
        for a in prelude:
            read(a.expr)
            defined.add(a.target)
            printer = TorchPrinter(kinds, self.fail_at(a.loc), ref="lr")
            lines.append(f"{a.target} = {_strip(printer.doprint(a.expr))}")
            kinds[a.target] = "uniform"
        values = ", ".join(f'"{a.target}": {a.target}' for a in prelude)
        lines.append(f"return {{{values}}}")
        doc = docstring(f"Path {k}: the values every tensor shares in a step (lr, step and hyperparameters only).")
        body = "\n".join("    " + ln for ln in lines)
        return f"def _path{k}_uniforms(*, {', '.join(needed)}, **_):\n    {doc}\n{body}\n"

    def segment_functions(self, k: int, path: Path) -> list[str]:
        prog = self.hoisted[k][1]
        kinds = input_kinds(prog)
        kinds.update({a.target: "uniform" for a in self.hoisted[k][0]})
        for name in [a.target for a in self.globals]:
            kinds[name] = "uniform"
        cuts = [prog.body[i] for i in global_statements(prog)]
        out = []
        for j, seg in enumerate(segments(prog)):
            lines, needed, defined = [], ["w"], set()
            read = _reader(needed, defined)
            for a in seg:
                check_identifier(a.target)
                read(a.expr)
                printer = TorchPrinter(kinds, self.fail_at(a.loc))
                text = _strip(printer.doprint(a.expr))
                kinds[a.target] = printer.kind(a.expr)
                lines.append(f"{a.target} = {text}")
                defined.add(a.target)
            fail = self.fail_at(prog.return_loc)
            printer = TorchPrinter(kinds, fail)
            if j < len(cuts):
                arg = cuts[j].expr.args[0]
                read(arg)
                template = OPS[cuts[j].expr.op].torch
                partial = template.format(printer.doprint(arg))
                if printer.kind(arg) in NUMBER_KINDS:
                    partial = template.format(printer.tensor(printer.doprint(arg)))
                names = sorted(defined)
                values = ", ".join(f'"{n}": {n}' for n in names)
                lines.append(f"return {{{values}}}, {partial}")
                doc = f"Path {k}, segment {j}: values for later segments and this tensor's part of " \
                      f"{cuts[j].target} = {cuts[j].expr.op}(...)."
            else:
                for e in prog.outputs():
                    read(e)
                update = _strip(_fit(printer.doprint(prog.update), printer.kind(prog.update), "full"))
                new = [_fit(printer.doprint(e), printer.kind(e), s.kind)
                       for s, e in zip(prog.states, prog.new_states)]
                states = "".join(f"{_strip(t)}, " for t in new)
                lines.append(f"return w - {_paren(update)}, ({states})")
                doc = f"Path {k}, last segment: (w - update, new values of {_names(prog.states)})."
            params = ", ".join(needed)
            body = "\n".join("    " + ln for ln in lines)
            out.append(f"def _path{k}_segment{j}(*, {params}, **_):\n    {docstring(doc)}\n{body}\n")
        return out

    def group_function(self, k: int, path: Path) -> str:
        """Path k over a group of tensors; updates params in place, returns the new state lists."""
        prog = _inline_static(flatten(path.program))
        used = names_in(prog) | {"params", "grads", "states", "hyper", "torch"}
        printer = GroupPrinter(prog, self.fail_at(prog.return_loc), used)
        lines = ['w = [p.to(hyper["lr"].dtype) for p in params]', 'g = [x.to(hyper["lr"].dtype) for x in grads]']
        reads = set().union(*[free_vars(a.expr) for a in prog.body], *[free_vars(e) for e in prog.outputs()])
        for name in sorted(reads & (set(self.hypers) | {"lr", "step"})):
            lines.append(f'{name} = hyper["{name}"]')
        for s in prog.states:
            lines.append(f'{s.name} = states["{s.name}"]')
        # fresh[x]: x holds a list of tensors made here that no other name shares (may be reused)
        fresh: dict[str, bool] = {s.name: False for s in prog.states} | {"w": False, "g": False}
        live_after = _live_after(prog)
        for i, a in enumerate(prog.body):
            # a fresh list is free once no later statement reads it, and `x = f(x)` frees x's old list
            reuse = frozenset(n for n, ok in fresh.items() if ok and (n not in live_after[i] or n == a.target))
            lines.extend(printer.assign(a.target, a.expr, reuse))
            printer.kinds[a.target] = printer.group_kind(a.expr)
            if isinstance(a.expr, Var):
                fresh[a.target] = fresh[a.expr.name] = False  # two names, one list
            else:
                fresh[a.target] = True
        kinds = printer.kinds
        update_kind = expr_kind(prog.update, kinds, printer.fail)
        outputs, seen = [], set()
        for s, e in zip(prog.states, prog.new_states):
            k_e = expr_kind(e, kinds, printer.fail)
            if isinstance(e, Var) and k_e == s.kind and fresh.get(e.name) and e.name not in seen:
                outputs.append(e.name)  # a new list of new tensors: keep it as the state
                seen.add(e.name)
            elif isinstance(e, Var) and k_e == s.kind:
                outputs.append(f"[x.clone() for x in {e.name}]")
            else:
                outputs.append(printer.comprehension(e, k_e, s.kind))
        if update_kind == "full" and isinstance(prog.update, Var):
            update = prog.update.name
        else:
            update = printer.comprehension(prog.update, update_kind, "full")
        lines.append(f"update = {update}" if update != "update" else "pass")
        lines.append("if params[0].dtype == w[0].dtype:")
        lines.append("    torch._foreach_sub_(params, update)")
        lines.append("else:")
        lines.append("    torch._foreach_copy_(params, torch._foreach_sub(w, update))")
        lines.append("return (" + "".join(f"{o}, " for o in outputs) + ")")
        lines = [ln for ln in lines if ln != "pass"]
        doc = docstring(f"Path {k} on a group of tensors (multi-tensor ops): updates params in place and "
                        f"returns the new lists of {_names(prog.states)}.")
        body = "\n".join("    " + ln for ln in lines)
        return f"def _path{k}_group(params, grads, states, hyper):\n    {doc}\n{body}\n"

    def condition_source(self) -> str:
        conds = [f"lambda w: {_strip(_py_static(c))}" for c in self.conditions]
        return "(" + "".join(f"{c}, " for c in conds) + ")"

    def module_docstring(self) -> str:
        p = self.program
        try:
            from optdsl.latex import to_latex
        except ModuleNotFoundError as e:  # a teammate's module that may not exist yet
            if e.name not in ("optdsl.latex",):
                raise
            latex = None
        else:
            latex = to_latex(p)
        lines = p.doc.splitlines() or [f"The {p.name} optimizer."]
        parts = [f"{self.cls}: {lines[0]}", *lines[1:], "",
                 "Generated by optdsl (`optdsl compile --target torch`) from the program below; do not edit.",
                 "Imports only torch.", "", "Program (optdsl DSL):", "", _indent(to_source(p, doc=False))]
        if latex:
            parts += ["Update rule (LaTeX):", "", _indent(latex), ""]
        hyper = ", ".join(f"{h.name}={number(h.default)}" for h in p.hypers if h.name != "lr")
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
            f"Optimizer: {self.cls}(params, lr, ..., backend=None|'eager'|'compiled'"
            + "".join(f"|{b!r}" for b in self.extra) + f"); {self.cls}.functional is {self.name}_step.",
        ]
        return _docstring_literal("\n".join(parts))

    def source(self) -> str:
        p = self.program
        out = [self.module_docstring(), "", "import itertools", "import shutil", "import warnings", "", "import torch", ""]
        defaults = ", ".join(f'"{n}": {number(v)}' for n, v in self.hypers.items())
        out.append(f"HYPER_DEFAULTS = {{{defaults}}}")
        out.append(f"STATE_NAMES = {tuple(s.name for s in p.states)!r}")
        out.append(f"GLOBALS = {tuple(g.target for g in self.globals)!r}")
        out.append(f"SPARSE_ROWS = {self.not_separable is None}  # sparse-row grads update only their rows")
        out.append(f"_NOT_SEPARABLE = {(self.not_separable or '')!r}")
        out.append("")
        out.append(_PATH_CLASS)
        rows = []
        for k, path in enumerate(self.paths):
            states = tuple((s.name, s.kind, s.init) for s in path.program.states)
            rows.append(f"    _Path(states={states!r}, needs_2d={path.needs_2d}),")
        out.append("PATHS = (\n" + "\n".join(rows) + "\n)")
        table = ", ".join(f"{key!r}: {v}" for key, v in self.table.items())
        out.append(f"_PATH_TABLE = {{{table}}}")
        out.append(_PATH_OF.replace("@CONDITIONS@", self.condition_source()))
        for k, path in enumerate(self.paths):
            out.extend(self.segment_functions(k, path))
        seg_rows = ", ".join(
            "(" + "".join(f"_path{k}_segment{j}, " for j in range(len(self.globals) + 1)) + ")"
            for k in range(len(self.paths)))
        out.append(f"_SEGMENTS = ({seg_rows},)")
        for k, (prelude, _) in enumerate(self.hoisted):
            out.append(self.uniform_function(k, prelude))
        out.append(f"_UNIFORMS = ({''.join(f'_path{k}_uniforms, ' for k in range(len(self.paths)))})")
        if not self.globals:
            for k, path in enumerate(self.paths):
                out.append(self.group_function(k, path))
            out.append(f"_GROUPS = ({''.join(f'_path{k}_group, ' for k in range(len(self.paths)))})")
        else:
            out.append("_GROUPS = ()  # global reductions: the eager backend runs _SEGMENTS in lockstep")
        combine = ", ".join(f"lambda parts: {GLOBAL_COMBINE[g.expr.op]}" for g in self.globals)
        out.append(f"_COMBINE = ({combine}{',' if self.globals else ''})")
        out.append(_RUNTIME.replace("@NAME@", self.name))
        for b, src in self.extra.items():
            out.append(f"# --- backend {b!r} (extra source) ---\n{src}\n")
        extra = ", ".join(f'"{b}"' for b in self.extra)
        out.append(f"_EXTRA_BACKENDS = ({extra}{',' if self.extra else ''})")
        out.append(self.class_source())
        return "\n".join(out) + "\n"

    def class_source(self) -> str:
        p = self.program
        lr = f"lr={number(self.hypers['lr'])}" if "lr" in self.hypers else "lr"
        args = ", ".join([lr] + [f"{n}={number(v)}" for n, v in self.hypers.items() if n != "lr"])
        names = [n for n in self.hypers if n != "lr"]
        group = ", ".join(["lr=lr"] + [f"{n}={n}" for n in names])
        first = (p.doc.splitlines() or [f"The {p.name} optimizer."])[0]
        text = _CLASS
        doc = docstring(
            f"{first}\n\nA torch.optim.Optimizer generated from the optdsl program `{p.name}` (see the module "
            "docstring).\nbackend: 'eager' (multi-tensor torch ops), 'compiled' (torch.compile, dynamic shapes,\n"
            "one compile for every parameter shape), an extra backend, or None for the fastest available.")
        for key, value in (("@CLASS@", self.cls), ("@ARGS@", args), ("@GROUP@", group), ("@DOC@", doc),
                           ("@NAME@", self.name)):
            text = text.replace(key, value)
        return text


def _live_after(prog: Program) -> list[set[str]]:
    """For each statement, the names read after it (by later statements or the outputs)."""
    live = set().union(*[free_vars(e) for e in prog.outputs()])
    out: list[set[str]] = []
    for a in reversed(prog.body):
        out.append(set(live))
        live.discard(a.target)
        live |= free_vars(a.expr)
    return out[::-1]


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
        if isinstance(e, Call) and e.op == "interp" and pre(e.args[2]):
            # interp(x, y, a) = (1 - a) * x + a * y as written, with 1 - a once per step: two
            # multiplies and an add per element (torch.lerp's two-branch formula costs more)
            name = fresh_name("u", used)
            prelude.append(Assign(name, Call("sub", (Const(1.0), e.args[2]))))
            known.add(name)
            x, y, a = (lift(x) for x in e.args)
            return Call("add", (Call("mul", (x, Var(name))), Call("mul", (a, y))))
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


def _reader(needed: list[str], defined: set[str]):
    """A function recording, in first-use order, the names an expression reads before they are set."""
    def read(expr: Expr) -> None:
        for v in sorted(free_vars(expr)):
            if v not in defined and v not in needed:
                needed.append(v)
    return read


def _inline_static(prog: Program) -> Program:
    """Substitute names bound to shape facts into their uses (they differ per tensor of a group)."""
    kinds = input_kinds(prog)
    static: dict[str, Expr] = {}
    body = []

    def fail(msg, hint=None):
        raise DslError(msg, prog.filename, hint=hint)

    for a in prog.body:
        e = substitute(a.expr, static)
        kinds[a.target] = expr_kind(e, kinds, fail)
        if kinds[a.target] == "static":
            static[a.target] = e
        else:
            static.pop(a.target, None)
            body.append(type(a)(a.target, e, a.loc))
    outs = [substitute(e, static) for e in prog.outputs()]
    return prog.with_body(body, update=outs[0], new_states=outs[1:])


def _names(states) -> str:
    return ", ".join(s.name for s in states) or "no states"


_PY_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "floordiv": "//", "power": "**",
             **BOOLEAN}


def _py_static(expr: Expr) -> str:
    """A shape condition as plain Python over ``w.ndim``/``w.shape`` (no tensors: it picks the path)."""
    if isinstance(expr, Const):
        return number(expr.value)
    op = OPS[expr.op]
    args = [_py_static(a) if not isinstance(a, Var) else check_identifier(a.name) for a in expr.args]
    if op.shape == STATIC:
        return op.torch.format(*args)
    if expr.op in _PY_INFIX:
        return f"({args[0]} {_PY_INFIX[expr.op]} {args[1]})"
    simple = {"and": "({0} and {1})", "or": "({0} or {1})", "not": "(not {0})", "neg": "(-{0})",
              "max": "max({0}, {1})", "min": "min({0}, {1})", "abs": "abs({0})",
              "where": "({1} if {0} else {2})"}
    if expr.op not in simple:
        raise DslError(f"{expr.op}() is not supported in a shape condition",
                       hint="compare shape facts with numbers: ndim(w) >= 2, dim(w, -1) >= 128")
    return simple[expr.op].format(*args)


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


_PATH_CLASS = '''
class _Path:
    """One static specialisation: its states as (name, kind, init) and whether it needs ndim >= 2."""

    def __init__(self, states, needs_2d):
        self.states, self.needs_2d = states, needs_2d

    def __repr__(self):
        return f"_Path(states={self.states!r}, needs_2d={self.needs_2d})"
'''

_PATH_OF = '''
_CONDITIONS = @CONDITIONS@


def _holds(condition, w):
    """A shape condition's truth; one asking about an axis w lacks counts as false (it only
    guards code that such a tensor never runs)."""
    try:
        return bool(condition(w))
    except IndexError:
        return False


def _path_of(w):
    """Index into PATHS of the path a tensor shaped like ``w`` runs (Python-level shape tests)."""
    k = _PATH_TABLE[tuple(_holds(c, w) for c in _CONDITIONS)]
    if PATHS[k].needs_2d and w.ndim < 2:
        raise ValueError(f"this program needs parameters with 2 or more axes here, got shape {tuple(w.shape)}")
    return k
'''

_RUNTIME = '''

def _compute_dtype(dtype):
    """Math and state dtype: float64 for float64 params, float32 otherwise (bf16/fp16 params too)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _state_shape(kind, shape):
    return {"full": shape, "row": shape[:-1], "col": shape[:-2] + shape[-1:], "scalar": ()}[kind]


def _init_state(kind, init, w):
    shape = _state_shape(kind, tuple(w.shape))
    dtype = _compute_dtype(w.dtype)
    if init == "w":
        return w.detach().to(dtype).clone()
    fill = 1.0 if init == "ones" else 0.0
    return torch.full(shape, fill, dtype=dtype, device=w.device)


def init_states(params):
    """The first ``states`` for @NAME@_step: each path's states zeros/ones/copy of w, None elsewhere."""
    states = {name: [None] * len(params) for name in STATE_NAMES}
    for i, p in enumerate(params):
        for name, kind, init in PATHS[_path_of(p)].states:
            states[name][i] = _init_state(kind, init, p)
    return states


def _uniforms(w, values):
    """lr, step and hyperparameters as 0-d tensors in w's dtype and device (no recompiles)."""
    out = {k: torch.as_tensor(v, dtype=w.dtype, device=w.device) for k, v in values.items()}
    # never hand out the caller's own tensor (the step counter is incremented in place)
    return {k: t.clone() if t is values[k] else t for k, t in out.items()}


def _run(envs, paths, segments=None):
    """Run each tensor's path (envs[i] holds its named inputs) segment by segment; between
    segments combine each global reduction across all tensors. Returns [(w - update, states)]."""
    segments = _SEGMENTS if segments is None else segments
    envs = [{**env, **_UNIFORMS[k](**env)} for env, k in zip(envs, paths)]
    for j, combine in enumerate(_COMBINE):
        parts = []
        for i, k in enumerate(paths):
            values, part = segments[k][j](**envs[i])
            envs[i] = {**envs[i], **values}
            parts.append(part)
        total = combine(parts)
        envs = [{**env, GLOBALS[j]: total.to(env["w"].dtype)} for env in envs]
    return [segments[k][-1](**env) for env, k in zip(envs, paths)]


def @NAME@_step(params, grads, states, *, lr, step, **hyper):
    """One step of the optimizer as a pure function (see the module docstring).

    Returns (new_params, new_states) with the layout of (params, states)."""
    unknown = set(hyper) - set(HYPER_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(HYPER_DEFAULTS)}")
    values = {**HYPER_DEFAULTS, **hyper, "lr": lr, "step": step}
    envs, paths = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        k = _path_of(p)
        w = p.to(_compute_dtype(p.dtype))
        env = {"w": w, "g": g.to(w.dtype), **_uniforms(w, values)}
        env.update({name: states[name][i] for name, _, _ in PATHS[k].states})
        envs.append(env)
        paths.append(k)
    results = _run(envs, paths)
    new_params = [new_w.to(p.dtype) for (new_w, _), p in zip(results, params)]
    new_states = {name: [None] * len(params) for name in STATE_NAMES}
    for i, ((_, values), k) in enumerate(zip(results, paths)):
        for (name, _, _), v in zip(PATHS[k].states, values):
            new_states[name][i] = v
    return new_params, new_states


def _eager_group_step(path, params, grads, states, *, lr, step, **hyper):
    """In-place step for tensors sharing a path, device and dtype (the extra-backend signature)."""
    if not params:
        return
    like = torch.empty(0, dtype=_compute_dtype(params[0].dtype), device=params[0].device)
    values = _uniforms(like, {**HYPER_DEFAULTS, **hyper, "lr": lr, "step": step})
    names = [name for name, _, _ in PATHS[path].states]
    new = _GROUPS[path](params, grads, {n: states[n] for n in names}, values)
    for n, tensors in zip(names, new):
        torch._foreach_copy_(states[n], tensors)


def _eager_available(device):
    return True


def _compiled_available(device):
    if device.type != "cpu":
        return True
    return any(shutil.which(cc) for cc in ("c++", "g++", "clang++", "cc"))


_COMPILED = {}


def _compiled_apply(path, flat):
    """torch.compile of one in-place tensor step (dynamic shapes: one compile for all sizes)."""
    key = (path, flat)
    if key not in _COMPILED:
        segment = _SEGMENTS[path][-1]
        names = [name for name, _, _ in PATHS[path].states]

        def apply(p, g, states, uniforms):
            w = p.to(_compute_dtype(p.dtype))
            new_w, new_states = segment(w=w, g=g.to(w.dtype), **dict(zip(names, states)), **uniforms)
            p.copy_(new_w)
            for s, v in zip(states, new_states):
                s.copy_(v)

        _COMPILED[key] = torch.compile(apply, dynamic=True)
    return _COMPILED[key]


def _compiled_segments():
    """Every segment function under torch.compile (for programs with global reductions)."""
    if "segments" not in _COMPILED:
        _COMPILED["segments"] = tuple(
            tuple(torch.compile(f, dynamic=True) for f in row) for row in _SEGMENTS
        )
    return _COMPILED["segments"]


def _flat(t):
    """A 1-d tensor on t's memory that is not a view (a view's base would make torch.compile
    guard on, and recompile for, each rank): one graph then serves every parameter shape."""
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    return out.set_(t.untyped_storage(), t.storage_offset(), (t.numel(),), (1,))


def _flat_ok(path, tensors):
    """May this path run on 1-d views (elementwise and whole-tensor reductions only)?"""
    return _FLAT[path] and all(t.is_contiguous() for t in tensors)


def _unscale(grads, grad_scale):
    """g /= grad_scale in place for every grad (a sparse grad's values), one _foreach_div_ per device,
    as torch's fused optimizers leave their grads unscaled after an AMP step."""
    by_device = {}
    for g in itertools.chain(*grads):
        if g is not None:
            by_device.setdefault(g.device, []).append(g._values() if g.is_sparse else g)
    for device, tensors in by_device.items():
        torch._foreach_div_(tensors, grad_scale.to(device))
'''

_CLASS = '''

class @CLASS@(torch.optim.Optimizer):
    @DOC@

    functional = staticmethod(@NAME@_step)
    program = "@NAME@"
    _step_supports_amp_scaling = True  # torch.amp.GradScaler hands over grad_scale/found_inf

    def __init__(self, params, @ARGS@, *, backend=None):
        known = ("eager", "compiled") + _EXTRA_BACKENDS
        if backend is not None and backend not in known:
            raise ValueError(f"unknown backend {backend!r}; choose from {known}")
        if backend in _EXTRA_BACKENDS and GLOBALS:
            raise ValueError(f"backend {backend!r} does not run programs with global reductions")
        self.backend = backend
        super().__init__(params, dict(@GROUP@))

    def _backend_for(self, device):
        if self.backend is not None:
            return self.backend
        candidates = () if GLOBALS or device.type == "cpu" else _EXTRA_BACKENDS
        for name in candidates + ("compiled", "eager"):
            if globals()[f"_{name}_available"](device):
                return name
        return "eager"

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._cached_plan = None
        # torch casts float state to the param dtype; state lives in the compute dtype instead
        # (float32 for bf16/fp16 params), so take it again from the saved values.
        saved = state_dict["state"]
        for saved_group, group in zip(state_dict["param_groups"], self.param_groups):
            for pid, p in zip(saved_group["params"], group["params"]):
                for key, value in saved.get(pid, {}).items():
                    if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                        self.state[p][key] = value.to(device=p.device, dtype=_compute_dtype(p.dtype)).clone()

    def _plan(self):
        """This step's groups of tensors (see _Plan), rebuilt only when the params with grads or their
        storage, dtype, device or shape change, or a state dict is loaded."""
        grads = [[p.grad for p in group["params"]] for group in self.param_groups]
        key = tuple(
            (p.data_ptr(), p.dtype, p.shape, None if g is None else g.is_sparse)
            for group, gs in zip(self.param_groups, grads)
            for p, g in zip(group["params"], gs)
        )
        plan = self.__dict__.get("_cached_plan")
        if plan is None or plan.key != key or plan.state is not self.state:
            plan = self._cached_plan = _Plan(self, key)
        return plan, grads

    @torch.no_grad()
    def step(self, closure=None, *, grad_scale=None, found_inf=None):
        """One optimizer step; ``closure`` re-evaluates the model and returns the loss.

        AMP (the fused-optimizer protocol; torch.amp.GradScaler sets ``self.grad_scale`` and
        ``self.found_inf``, which stand in for the arguments): a non-zero ``found_inf`` skips the step
        (params, states and step counts stay as they are); otherwise every grad is divided by
        ``grad_scale`` in place, g <- g / grad_scale, before the update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None) if grad_scale is None else grad_scale
        found_inf = getattr(self, "found_inf", None) if found_inf is None else found_inf
        if found_inf is not None and found_inf.item():
            return loss
        plan, grads = self._plan()
        if grad_scale is not None:
            _unscale(grads, grad_scale)
        if plan.sparse:
            self._step_sparse(plan, grads)
        if not plan.entries:
            return loss
        plan.advance()
        backend = self._backend_for(plan.entries[0].params[0].device)
        if backend == "compiled":
            try:
                self._step_compiled(plan, grads)
            except Exception as e:  # no C++ compiler, unsupported op in inductor...
                if self.backend == "compiled" or not _is_compile_error(e):
                    raise
                warnings.warn(f"@CLASS@: torch.compile failed ({type(e).__name__}: {e}); "
                              "using backend='eager'", stacklevel=2)
                self.backend = "eager"
                self._step_eager(plan, grads)
        elif backend == "eager" or GLOBALS:
            self._step_eager(plan, grads)
        else:
            group_step = globals()[f"_{backend}_group_step"]
            for e in plan.entries:
                group = self.param_groups[e.group]
                hyper = {n: float(group[n]) for n in HYPER_DEFAULTS if n != "lr"}
                group_step(e.path, e.params, e.grads(grads), e.states, lr=float(group["lr"]), step=e.step, **hyper)
        return loss

    def _uniforms(self, group, step, like):
        values = {name: group[name] for name in HYPER_DEFAULTS}
        values["lr"], values["step"] = group["lr"], step
        return _uniforms(like, values)

    def _step_eager(self, plan, grads):
        if GLOBALS:
            self._step_segments(plan, grads, _SEGMENTS)
            return
        for e in plan.entries:
            like = torch.empty(0, dtype=_compute_dtype(e.params[0].dtype), device=e.params[0].device)
            new = _GROUPS[e.path](e.params, e.grads(grads), e.states,
                                  self._uniforms(self.param_groups[e.group], e.step, like))
            for n, tensors in zip(e.states, new):
                e.states[n] = tensors  # new lists replace the old ones, here and in self.state
                for p, t in zip(e.params, tensors):
                    self.state[p][n] = t
            e._views = None

    def _step_sparse(self, plan, grads):
        """Sparse-row grads (SPARSE_ROWS programs only): gather the touched rows of w and of its full
        and row states, run the functional step on them, and copy the results back; other rows,
        and their states, stay as they are. For a lazy program this equals the dense step on the
        densified grad."""
        for gi, pi, p, state in plan.sparse:
            group = self.param_groups[gi]
            g = grads[gi][pi].coalesce()
            if g.sparse_dim() == 1:  # hybrid COO (nn.Embedding): one value row per unique index
                rows, values = g.indices()[0], g.values()
            else:
                rows = g.indices()[0].unique()
                values = g.index_select(0, rows).to_dense()
            state["step"] += 1
            names = [name for name, _, _ in PATHS[_path_of(p)].states]
            hyper = {n: group[n] for n in HYPER_DEFAULTS if n != "lr"}
            new_params, new_states = @NAME@_step(
                [p.index_select(0, rows)], [values], {n: [state[n].index_select(0, rows)] for n in names},
                lr=group["lr"], step=state["step"], **hyper)
            p.index_copy_(0, rows, new_params[0])
            for n in names:
                state[n].index_copy_(0, rows, new_states[n][0])

    def _step_segments(self, plan, grads, segments):
        envs, paths, members = [], [], []
        for e in plan.entries:
            group = self.param_groups[e.group]
            for i, (p, g) in enumerate(zip(e.params, e.grads(grads))):
                w = p.to(_compute_dtype(p.dtype))
                env = {"w": w, "g": g.to(w.dtype), **self._uniforms(group, e.step, w)}
                env.update({name: states[i] for name, states in e.states.items()})
                envs.append(env)
                paths.append(e.path)
                members.append((e, i))
        for (e, i), (new_w, new_states) in zip(members, _run(envs, paths, segments)):
            e.params[i].copy_(new_w)
            for states, v in zip(e.states.values(), new_states):
                states[i].copy_(v)

    def _step_compiled(self, plan, grads):
        if GLOBALS:
            self._step_segments(plan, grads, _compiled_segments())
            return
        for e in plan.entries:
            like = torch.empty(0, dtype=_compute_dtype(e.params[0].dtype), device=e.params[0].device)
            values = self._uniforms(self.param_groups[e.group], e.step, like)
            uniforms = {**values, **_UNIFORMS[e.path](**values)}
            flat, views = e.flat_views()
            apply, whole = _compiled_apply(e.path, flat), _compiled_apply(e.path, False)
            states = list(zip(*e.states.values())) if e.states else [()] * len(e.params)
            for p, g, s, v in zip(e.params, e.grads(grads), states, views):
                if flat and g.is_contiguous():
                    apply(v[0], _flat(g), v[1], uniforms)
                else:
                    whole(p, g, list(s), uniforms)


class _Plan:
    """The tensors of a step grouped by (param group, path, device, dtype, step count), in param order.

    Each entry's params share one step-count tensor (``state[p]["step"]``, as torch optimizers keep it),
    so a step costs one increment per entry rather than per parameter. A rebuild gives every entry a
    fresh counter: a param left out of a later plan keeps its old tensor, which nothing increments."""

    def __init__(self, opt, key):
        self.key, self.state = key, opt.state
        entries, self.sparse = {}, []
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse and not SPARSE_ROWS:
                    raise TypeError(
                        f"{type(opt).__name__} (program {opt.program!r}) cannot take the sparse gradient of a "
                        f"{tuple(p.shape)} parameter: the program is not row-separable ({_NOT_SEPARABLE}). "
                        "A sparse-row step needs elementwise ops and rowmean only, full or row states only "
                        "(no per-tensor or global reduction, no col or scalar state); make such a program lazy "
                        "with optdsl.extend.lazy_updates so that rows without gradient keep weights and state."
                    )
                state, path = opt.state[p], _path_of(p)
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    for name, kind, init in PATHS[path].states:
                        state[name] = _init_state(kind, init, p)
                if p.grad.is_sparse:
                    state["step"] = state["step"].clone()  # its own counter, outside every entry
                    self.sparse.append((gi, pi, p, state))
                    continue
                at = (gi, float(state["step"]), path, p.device, p.dtype)
                entries.setdefault(at, _Entry(gi, at[1], path)).add(pi, p, state)
        self.entries = list(entries.values())
        for e in self.entries:
            e.counter = torch.tensor(e.step, dtype=torch.float32)
            for p in e.params:
                opt.state[p]["step"] = e.counter

    def advance(self):
        """Count one more step for every param in the plan."""
        for e in self.entries:
            e.counter += 1
            e.step += 1


class _Entry:
    """One group of a _Plan: indices into the param group, params, and state lists by name."""

    def __init__(self, group, step, path):
        self.group, self.step, self.path = group, step, path
        self.index, self.params, self._views = [], [], None
        self.states = {name: [] for name, _, _ in PATHS[path].states}

    def add(self, i, p, state):
        self.index.append(i)
        self.params.append(p)
        for name, states in self.states.items():
            states.append(state[name])

    def grads(self, grads):
        gs = grads[self.group]
        return [gs[i] for i in self.index]

    def flat_views(self):
        """(flat?, [(param view, state views)]): 1-d aliases for the compiled step, made once."""
        if self._views is None:  # the eager step, which replaces state tensors, resets it
            states = list(self.states.values())
            flat = _flat_ok(self.path, [*self.params, *itertools.chain(*states)])
            views = [(_flat(p), [_flat(s) if s.dim() else s for s in ss]) if flat else None
                     for p, ss in zip(self.params, zip(*states) if states else [()] * len(self.params))]
            self._views = (flat, views)
        return self._views

def _is_compile_error(e):
    text = f"{type(e).__module__}.{type(e).__name__}"
    return "torch._dynamo" in text or "torch._inductor" in text or "CppCompileError" in text
'''


def emit(program: Program, extra_backends: dict[str, str] | None = None) -> str:
    """The torch module for ``program`` (deterministic, black-formatted source text).

    ``extra_backends`` maps a backend name to source defining ``_<name>_group_step`` and
    ``_<name>_available`` (see the module docstring of :mod:`codegen.torch_target`).

    Example:
        >>> import optdsl
        >>> "def adamw_step(" in emit(optdsl.load("adamw"))
        True
    """
    module = _Module(program, dict(extra_backends or {}))
    text = module.source()
    flat = ", ".join(str(_flat_path(p)) for p in module.paths)
    text = text.replace("_EXTRA_BACKENDS = (", f"_FLAT = ({flat},)\n_EXTRA_BACKENDS = (", 1)
    return black_format(text)


def _flat_path(path: Path) -> bool:
    """A path runs on 1-d views when it uses no row/col values and asks no shape facts."""
    if path.needs_2d:
        return False
    exprs = [a.expr for a in path.program.body] + list(path.program.outputs())
    return not any(isinstance(n, Call) and OPS[n.op].shape in (STATIC, ROW, COL) for e in exprs for n in walk(e))


def entry_point(module, program: Program):
    """The optimizer class of a loaded generated module."""
    return getattr(module, class_name(program.name))


__all__ = ["GroupPrinter", "TorchPrinter", "class_name", "emit", "entry_point", "paths", "row_separable"]
