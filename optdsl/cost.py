"""Cost model: memory, traffic and arithmetic of one step for one parameter tensor.

Computed on the program :func:`~optdsl.passes.specialize`-d for ``shape`` (a 1-d parameter of a
factored optimizer keeps its full state, a 2-d one its row and column states):

- state memory: each state's elements (full: all of them, row/col: one axis, scalar: 1) times
  its bytes, per tensor and per parameter element;
- traffic, the memory-bound model the code generators are benchmarked against: ``w`` and ``g``
  read once, each state read once, ``w`` and every state that changes written once;
  ``bytes = (reads + writes)`` (row/col/scalar states count their own, smaller size);
- flops per parameter element: the op table's ``flops`` of every op, weighted by the size of
  the values it works on (an op on per-tensor scalars costs ~0 per element);
- reductions (per-tensor, row/col and global) and passes: 1 + the longest chain of reductions
  of full tensors feeding one another, i.e. how many sweeps over the tensor a fused kernel needs.

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
from dataclasses import asdict, dataclass

from .interpreter import state_shape
from .ir import Const, Expr, Program, Var
from .ops import OPS
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


def _elements(kind: str, shape: tuple[int, ...]) -> int:
    if kind in ("full", "row", "col"):
        return math.prod(state_shape(kind, shape))
    return 1


def cost(program: Program, shape: tuple[int, ...] = (4096, 4096), dtype: str = "float32") -> Cost:
    """The cost of one step of ``program`` on one tensor (see the module docstring).

    Example: AdamW on float32 reads w, g, m, v and writes w, m, v: 28 bytes per parameter. An
    empty tensor (a size 0) costs nothing, and its per-parameter figures are nan (0 / 0).
    """
    shape = tuple(int(s) for s in shape)
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(ITEMSIZE)}")
    param_bytes = ITEMSIZE[dtype]
    state_bytes_each = 8 if dtype == "float64" else 4
    spec = specialize(program, shape)
    numel = math.prod(shape)

    state_elems = {s.name: _elements(s.kind, shape) for s in spec.states}
    reads = numel * param_bytes * (1 + spec.uses("g"))  # w is read to be updated
    reads += sum(state_elems[s.name] * state_bytes_each for s in spec.states if spec.uses(s.name))
    assigned = {a.target for a in spec.body}
    changed = [s for s, e in zip(spec.states, spec.new_states) if e != Var(s.name) or s.name in assigned]
    writes = numel * param_bytes + sum(state_elems[s.name] * state_bytes_each for s in changed)

    env = input_kinds(spec)
    depth = {name: 0 for name in env}
    flops = reductions = 0  # whole numbers: exact for any tensor size
    max_depth = 0

    def fail(msg, hint=None):
        raise AssertionError(msg)

    def visit(expr: Expr) -> int:
        """Flops and reductions of ``expr`` (accumulated); returns its reduction depth."""
        nonlocal flops, reductions, max_depth
        if isinstance(expr, Const):
            return 0
        if isinstance(expr, Var):
            return depth.get(expr.name, 0)
        d = max((visit(a) for a in expr.args), default=0)
        op = OPS[expr.op]
        if op.shape == "static":
            return 0
        work = join(*(expr_kind(a, env, fail) for a in expr.args))
        flops += op.flops * _elements(work, shape)
        if op.shape in ("reduce", "row", "col", "global"):
            reductions += 1
            d += work == "full"  # only a reduction of a full tensor needs a sweep of its own
        max_depth = max(max_depth, d)
        return d

    for a in spec.body:
        depth[a.target] = visit(a.expr)
        env[a.target] = expr_kind(a.expr, env, fail)
    for e in spec.outputs():
        visit(e)

    total_state = sum(state_elems.values())
    per = lambda total: total / numel if numel else math.nan  # an empty tensor has no per-parameter cost
    return Cost(
        program=program.name, shape=shape, dtype=dtype, numel=numel,
        state_elements=total_state, state_bytes=total_state * state_bytes_each,
        states_per_param=per(total_state), state_bytes_per_param=per(total_state * state_bytes_each),
        bytes_read=reads, bytes_written=writes, bytes_per_param=per(reads + writes),
        flops=flops, flops_per_param=per(flops), reductions=reductions, passes=1 + max_depth,
    )


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
