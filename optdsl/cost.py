"""Cost model: memory, traffic and arithmetic of one step for one parameter tensor.

Computed on the program :func:`~optdsl.passes.specialize`-d for ``shape`` (a 1-d parameter of a
factored optimizer keeps its full state, a 2-d one its row and column states):

- state memory: each state's elements (full: all of them, row/col: one axis, scalar: 1) times
  its bytes, per tensor and per parameter element;
- passes: 1 + the longest chain of reductions of full tensors feeding one another, i.e. how many
  sweeps over the tensor a fused kernel needs (LAMB 2: the norms, then the update);
- traffic, the memory-bound model the code generators are benchmarked against: what a fused kernel
  making those sweeps must move. Each sweep reads the full tensors (``w``, ``g``, full states) its
  values need (:func:`sweep_reads`; AdamW reads w, g, m, v once, LAMB w, g, m, v then w, m, v);
  row/col/scalar states are read once, at their own smaller size; ``w`` and every state that
  changes are written once; ``bytes = reads + writes`` (AdamW 28 per fp32 parameter, LAMB 40);
- flops per parameter element: the op table's ``flops`` of every op, weighted by the size of
  the values it works on (an op on per-tensor scalars costs ~0 per element), and the reductions
  (per-tensor, row/col and global).

Parameters and gradients are stored in ``dtype``; states and arithmetic in float32, or float64
when the parameters are float64 (the project's dtype policy).

Example:
    >>> from optdsl import load
    >>> c = cost(load("adamw"), shape=(1024, 1024))
    >>> c.states_per_param, c.bytes_per_param
    (2.0, 28.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from .interpreter import state_shape
from .ir import Call, Expr, Program, Var, substitute
from .ops import COL, GLOBAL, OPS, REDUCE, ROW, STATIC
from .passes import specialize
from .typecheck import expr_kind, input_kinds, join

ITEMSIZE = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Cost:
    """One step's cost for one tensor of ``shape``; ``*_per_param`` values are per element of w."""

    program: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    state_elements: int
    state_bytes: int
    states_per_param: float
    state_bytes_per_param: float
    bytes_read: int
    bytes_written: int
    bytes_per_param: float
    flops: int
    flops_per_param: float
    reductions: int
    passes: int

    @property
    def bytes_per_step(self) -> int:
        """Bytes read plus bytes written in one step."""
        return self.bytes_read + self.bytes_written

    def as_dict(self) -> dict:
        """The fields, and ``bytes_per_step``, as JSON-ready values (the shape a list)."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["bytes_per_step"] = self.bytes_per_step
        return out

    def table(self):
        """The figures as a rich Table (what ``optdsl cost`` prints)."""
        from rich.table import Table

        shape = "x".join(map(str, self.shape)) if self.shape else "() (0-d)"
        t = Table(title=f"{self.program}: one step, {self.dtype} parameter of shape {shape}")
        t.add_column("quantity")
        t.add_column("per tensor", justify="right", no_wrap=True)
        t.add_column("per parameter", justify="right", no_wrap=True)
        # an empty tensor has no per-parameter figure (0 / 0)
        per = lambda total: f"{total / self.numel:.4g}" if self.numel else "-"
        t.add_row("state memory (bytes)", f"{self.state_bytes:,}", per(self.state_bytes))
        t.add_row("state elements", f"{self.state_elements:,}", per(self.state_elements))
        t.add_row("bytes read", f"{self.bytes_read:,}", per(self.bytes_read))
        t.add_row("bytes written", f"{self.bytes_written:,}", per(self.bytes_written))
        t.add_row("bytes moved", f"{self.bytes_per_step:,}", per(self.bytes_per_step))
        t.add_row("flops", f"{self.flops:,}", per(self.flops))
        t.add_row("reductions", str(self.reductions), "")
        t.add_row("passes over the tensor", str(self.passes), "")
        return t


def _fail(msg, hint=None):  # the program was validated: a shape error here is a bug
    raise AssertionError(msg)


def _elements(kind: str, shape: tuple[int, ...]) -> int:
    if kind in ("full", "row", "col"):
        return math.prod(state_shape(kind, shape))
    return 1


def cost(program: Program, shape: tuple[int, ...] = (4096, 4096), dtype: str = "float32") -> Cost:
    """The cost of one step of ``program`` on one tensor (see the module docstring).

    Example: AdamW on float32 reads w, g, m, v and writes w, m, v: 28 bytes per parameter. An
    empty tensor (a size 0) moves and computes nothing (every target leaves it alone), though a row,
    column or scalar state of it holds numbers, and its per-parameter figures are nan (0 / 0).
    """
    shape = tuple(int(s) for s in shape)
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(ITEMSIZE)}")
    param_bytes = ITEMSIZE[dtype]
    state_bytes_each = 8 if dtype == "float64" else 4
    spec = specialize(program, shape)
    numel = math.prod(shape)

    state_elems = {s.name: _elements(s.kind, shape) for s in spec.states}
    sweeps = sweep_reads(spec)
    reads = numel * sum(param_bytes if n in ("w", "g") else state_bytes_each for read in sweeps for n in read)
    reads += sum(state_elems[s.name] * state_bytes_each for s in spec.states  # rows, columns, numbers: once
                 if s.kind != "full" and spec.uses(s.name))
    assigned = {a.target for a in spec.body}
    changed = [s for s, e in zip(spec.states, spec.new_states) if e != Var(s.name) or s.name in assigned]
    writes = numel * param_bytes + sum(state_elems[s.name] * state_bytes_each for s in changed)

    env = input_kinds(spec)
    flops = reductions = 0  # whole numbers: exact for any tensor size

    def visit(expr: Expr) -> None:
        """Accumulate the flops and reductions of ``expr``."""
        nonlocal flops, reductions
        if not isinstance(expr, Call) or OPS[expr.op].shape == STATIC:
            return
        for a in expr.args:
            visit(a)
        op = OPS[expr.op]
        flops += op.flops * _elements(join(*(expr_kind(a, env, _fail) for a in expr.args)), shape)
        reductions += op.shape in (REDUCE, ROW, COL, GLOBAL)

    for a in spec.body:
        visit(a.expr)
        env[a.target] = expr_kind(a.expr, env, _fail)
    for e in spec.outputs():
        visit(e)

    if not numel:  # left alone: its states kept as they are
        reads = writes = flops = reductions = 0
        sweeps = []
    total_state = sum(state_elems.values())
    per = lambda total: total / numel if numel else math.nan  # an empty tensor has no per-parameter cost
    return Cost(
        program=program.name, shape=shape, dtype=dtype, numel=numel,
        state_elements=total_state, state_bytes=total_state * state_bytes_each,
        states_per_param=per(total_state), state_bytes_per_param=per(total_state * state_bytes_each),
        bytes_read=reads, bytes_written=writes, bytes_per_param=per(reads + writes),
        flops=flops, flops_per_param=per(flops), reductions=reductions, passes=len(sweeps),
    )


def sweep_reads(program: Program) -> list[tuple[str, ...]]:
    """The full-shaped arrays (w, g, full states) each sweep of a fused kernel over the tensor reads.

    A value is known from sweep ``level`` on: 0 for the inputs, and a reduction of a full-shaped value
    (per tensor, row, column or global) one sweep after the values it reduces. Sweep p reads what the
    reductions it computes and the values it writes need, through names and elementwise ops but not
    into a reduction an earlier sweep took; the last sweep writes w and the states. A full state is
    written by the first sweep that knows its new value where no later sweep needs the old one, and
    later sweeps read it back instead of what it is made from (LAMB's update sweep reads m and v, not
    g). So ``bytes read = numel * sum over sweeps of the bytes per element of what each reads``.

    Example:
        >>> from optdsl import load
        >>> sweep_reads(load("adamw")), sweep_reads(load("lamb"))
        ([('g', 'm', 'v', 'w')], [('g', 'm', 'v', 'w'), ('m', 'v', 'w')])
    """
    env = input_kinds(program)
    full = {n for n, k in env.items() if k == "full"}
    defs: dict[str, Expr] = {}
    current: dict[str, Expr] = {}

    for k, a in enumerate(program.body):  # one name per value: a reassigned name is a new one
        defs[f"%{k}"] = substitute(a.expr, current)
        env[f"%{k}"] = expr_kind(defs[f"%{k}"], env, _fail)
        current[a.target] = Var(f"%{k}")
    outs = [substitute(e, current) for e in program.outputs()]
    level: dict[Expr, int] = {}

    def sweeping(e: Expr) -> bool:  # a reduction that takes a sweep of its own
        return (isinstance(e, Call) and OPS[e.op].shape in (REDUCE, ROW, COL, GLOBAL)
                and join(*(expr_kind(a, env, _fail) for a in e.args)) == "full")

    def known(e: Expr) -> int:
        if e not in level:
            if isinstance(e, Var):
                level[e] = known(defs[e.name]) if e.name in defs else 0
            elif isinstance(e, Call) and OPS[e.op].shape != STATIC:
                level[e] = max((known(a) for a in e.args), default=0) + sweeping(e)
            else:
                level[e] = 0
        return level[e]

    for name in defs:  # in program order: a long chain of names never recurses deeply
        known(Var(name))
    last = max(map(known, outs))

    def reached(roots: list[Expr], before: int, stop=lambda e: False) -> Iterator[Expr]:
        """Every node the roots need, not into a reduction a sweep before ``before`` took."""
        pending, seen = list(roots), set()
        while pending:
            e = pending.pop()
            if e in seen or stop(e):
                continue
            seen.add(e)
            yield e
            if isinstance(e, Var) and e.name in defs:
                pending.append(defs[e.name])
            elif isinstance(e, Call) and OPS[e.op].shape != STATIC and not (
                    sweeping(e) and known(e) <= before):
                pending.extend(e.args)

    reductions = [e for e in reached(outs, -1) if sweeping(e)]
    taken = lambda p: [a for r in reductions if known(r) - 1 == p for a in r.args]  # what sweep p reduces
    early: dict[Expr, tuple[str, int]] = {}  # a full state's new value -> (state, the sweep writing it)
    for s, new in zip(program.states, outs[1:]):
        p = known(new)
        if s.kind == "full" and new != Var(s.name) and p < last:
            later = [*outs, *(a for q in range(p + 1, last + 1) for a in taken(q))]
            if Var(s.name) not in set(reached(later, p + 1, stop=lambda e, new=new: e == new)):
                early[new] = (s.name, p)
    sweeps = []
    for p in range(last + 1):
        roots = [*taken(p), *(new for new, (_, q) in early.items() if q == p)]
        roots += [Var("w"), *(o for o in outs if o not in early)] if p == last else []
        loaded = {new: s for new, (s, q) in early.items() if q < p}
        reads: set[str] = set()

        def load(e: Expr, loaded=loaded, reads=reads) -> bool:  # a new state an earlier sweep wrote
            if e in loaded:
                reads.add(loaded[e])
            return e in loaded

        reads |= {e.name for e in reached(roots, p, load) if isinstance(e, Var) and e.name in full}
        sweeps.append(tuple(sorted(reads)))
    return sweeps


def memory_per_param(program: Program, shape: tuple[int, ...] = (4096, 4096)) -> float:
    """State elements per parameter element (AdamW 2.0, Lion 1.0, factored states ~0): the
    search's memory objective, ``sum of state elements / numel(w)``.

    Example:
        >>> from optdsl import load
        >>> memory_per_param(load("adamw")), memory_per_param(load("lion")), memory_per_param(load("sgd"))
        (2.0, 1.0, 0.0)
        >>> memory_per_param(load("adafactor"), shape=(1024, 1024))  # row + column: 2048 / 1024**2
        0.001953125
    """
    return cost(program, shape).states_per_param


__all__ = ["ITEMSIZE", "Cost", "cost", "memory_per_param"]
