"""One program stepping every parameter of K model copies at once, in torch.

The search evaluates a candidate with a learning-rate sweep: K copies of a model, copy k
trained with ``lr[k]``. All parameters of all copies live in one ``(K, P)`` tensor (the
parameters flattened and concatenated), so each statement of the program is a single torch op
over ``K * P`` numbers, whatever the number of tensors. This is what makes evaluation cheap:
the per-tensor loop of a generated optimizer would cost one op per statement per tensor.

Semantics are those of :mod:`optdsl.interpreter`, value by value:
  - an elementwise op is the op table's ``torch`` spelling applied to ``(K, P)`` values;
  - a per-tensor reduction (``norm``, ``rms``, ``mean``, ``dot``...) is taken over each
    tensor's segment of the row and broadcast back over that segment;
  - a global reduction (``global_norm``) is taken over the whole row: one value per copy;
  - ``ndim(w)``, ``size(w)``, ``dim(w, i)`` are per-segment constants.
Row- and column-shaped (factored) values are not supported here: the search's vocabulary
never draws them, and :func:`check_supported` says so for a hand-written start program.

Example:
    >>> import torch
    >>> from optdsl import load
    >>> step = VectorizedStep(load("sgd"), [(3,), (2, 2)])
    >>> w = torch.ones(2, 7)
    >>> lr = torch.tensor([[0.1], [1.0]])
    >>> update, states = step(w, torch.ones(2, 7), step.init(w), lr, 1)
    >>> update[:, 0].tolist()
    [0.10000000149011612, 1.0]
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from functools import cache

import torch

from codegen.runtime import torch_math
from optdsl.errors import DslError
from optdsl.ir import Call, Const, Expr, Program, Var, walk
from optdsl.ops import COL, ELEMENTWISE, GLOBAL, OPS, ROW, STATIC
from optdsl.passes import eliminate_dead_code

_TORCH_MATH = {k: v for k, v in vars(torch_math).items() if inspect.isfunction(v)}


@cache
def _elementwise(name: str):
    """The op's torch spelling from the op table, as a function of its arguments."""
    op = OPS[name]
    params = [f"a{i}" for i in range(op.arity)]
    # The template is project code from the op table, never user text; it may call torch_math's functions.
    fn = eval(f"lambda {', '.join(params)}: {op.torch.format(*params)}", {"torch": torch, "abs": abs, **_TORCH_MATH})
    return fn


def _applied(fn, args: list, dtype: torch.dtype | None = None):
    """``env -> fn(*(a(env) for a in args))``, spelled out for one to three arguments (the
    closures run once per statement per step); a truth value comes back in ``dtype``."""
    if len(args) == 1:
        (a,) = args
        call = lambda env: fn(a(env))
    elif len(args) == 2:
        a, b = args
        call = lambda env: fn(a(env), b(env))
    elif len(args) == 3:
        a, b, c = args
        call = lambda env: fn(a(env), b(env), c(env))
    else:
        call = lambda env: fn(*[a(env) for a in args])
    if dtype is None:
        return call

    def typed(env):
        out = call(env)
        return out.to(dtype) if out.dtype == torch.bool else out

    return typed


def _segment_sum(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of each segment of each row: ``(K, P) -> (K, n)``."""
    out = torch.zeros(x.shape[0], n, dtype=x.dtype)
    return out.index_add(1, seg, x)


class VectorizedStep:
    """``program`` as a function ``(w, g, states, lr, step) -> (update, new_states)`` on
    ``(K, P)`` tensors, for parameters of the given ``shapes`` laid end to end in each row.

    Values carry a kind, as in the interpreter: ``u`` (the same for every tensor: a number,
    ``lr`` as ``(K, 1)``, a global reduction), ``s`` (one number per tensor: ``(K, n)`` for n
    tensors) or ``f`` (full: ``(K, P)``). A scalar state is stored as ``(K, n)``.
    """

    def __init__(self, program: Program, shapes: Sequence[tuple[int, ...]]):
        check_supported(program)
        self.program = eliminate_dead_code(program)
        self.shapes = [tuple(s) for s in shapes]
        sizes = [math.prod(s) for s in self.shapes]
        self.n = len(sizes)
        self.seg = torch.repeat_interleave(torch.arange(self.n), torch.tensor(sizes))
        self.counts = torch.tensor(sizes, dtype=torch.float32)
        self.hyper = {k: v for k, v in self.program.hyper_defaults.items() if k != "lr"}
        self.kinds = ["s" if s.kind == "scalar" else "f" for s in self.program.states]
        self.constants: dict[tuple[float, torch.dtype], torch.Tensor] = {}
        self.tapes: dict[torch.dtype, tuple] = {}
        self.hyper_values: dict[torch.dtype, dict[str, torch.Tensor]] = {}
        self.uses_step = self.program.uses("step")

    def init(self, w: torch.Tensor) -> list[torch.Tensor]:
        """The states' first values (zeros, ones, or a copy of ``w``)."""
        out = []
        for s, kind in zip(self.program.states, self.kinds):
            shape = w.shape if kind == "f" else (w.shape[0], self.n)
            out.append(w.clone() if s.init == "w" else torch.full(shape, float(s.init == "ones"), dtype=w.dtype))
        return out

    def __call__(self, w, g, states, lr, step: int):
        body, update, new = self._compiled(w.dtype)
        env = {"w": w, "g": g, "lr": lr, **self.hyper_values[w.dtype], **dict(zip(self.program.state_names, states))}
        if self.uses_step:
            env["step"] = self._number(float(step), w.dtype)  # made once per step count, not per call
        for target, fn in body:
            env[target] = fn(env)
        return self.expand(update, "f", w.shape, env), [self.expand(v, k, w.shape, env) for v, k in zip(new, self.kinds)]

    def _compiled(self, dtype: torch.dtype):
        """The program as closures over an environment, kinds resolved once per dtype: the
        statements ``[(target, fn)]``, then the update's and each new state's ``(fn, kind)``.
        Walking the expression trees at every step cost a third of a step call on a small task."""
        if dtype not in self.tapes:
            # numbers in w's dtype: torch.lerp and torch.where take no float32 value beside float64 tensors
            self.hyper_values[dtype] = {k: self._number(v, dtype) for k, v in self.hyper.items()}
            kinds = {"w": "f", "g": "f", "lr": "u", "step": "u", **dict.fromkeys(self.hyper, "u"),
                     **dict(zip(self.program.state_names, self.kinds))}
            body = []
            for a in self.program.body:
                fn, kinds[a.target] = self._lower(a.expr, kinds, dtype)
                body.append((a.target, fn))
            outputs = [self._lower(e, kinds, dtype) for e in (self.program.update, *self.program.new_states)]
            self.tapes[dtype] = body, outputs[0], outputs[1:]
        return self.tapes[dtype]

    def expand(self, value: tuple, to: str, shape, env: dict) -> torch.Tensor:
        """The compiled ``value`` ``(fn, kind)`` evaluated in ``env`` as a tensor of kind ``to``
        (``s -> f`` repeats each tensor's number)."""
        fn, kind = value
        x = fn(env)
        if to == "f":
            x = self.spread(x) if kind == "s" else x
            return torch.broadcast_to(x, shape)
        if to == "s":
            return torch.broadcast_to(x, (shape[0], self.n))
        return x

    def spread(self, x: torch.Tensor) -> torch.Tensor:
        """A per-tensor value ``(K, n)`` repeated over each tensor's elements: ``(K, P)``
        (``index_select`` takes a fifth of the time of ``x[:, seg]`` on a CPU)."""
        return torch.index_select(x, 1, self.seg)

    def _number(self, value: float, dtype: torch.dtype) -> torch.Tensor:
        """A 0-d tensor of ``value`` in ``dtype``, made once (every step uses the same constants)."""
        if (value, dtype) not in self.constants:
            self.constants[value, dtype] = torch.tensor(value, dtype=dtype)
        return self.constants[value, dtype]

    def _lower(self, expr: Expr, kinds: dict[str, str], dtype: torch.dtype) -> tuple:
        """``expr`` as ``(fn, kind)``: ``fn(env)`` computes its value, of kind ``kind``, from the
        values named in ``env`` (whose kinds ``kinds`` gives)."""
        if isinstance(expr, Const):
            c = self._number(expr.value, dtype)
            return (lambda env: c), "u"
        if isinstance(expr, Var):
            name = expr.name
            return (lambda env: env[name]), kinds[name]
        op = OPS[expr.op]
        if op.shape == STATIC:
            c = self._static(expr, dtype)
            return (lambda env: c), "s"
        parts = [self._lower(a, kinds, dtype) for a in expr.args]
        kind = "f" if any(k == "f" for _, k in parts) else "s" if any(k == "s" for _, k in parts) else "u"
        args = [self._spreading(f) if k == "s" and kind == "f" else f for f, k in parts]
        if op.shape == ELEMENTWISE:  # only a truth-valued op's result needs a cast
            return _applied(_elementwise(op.name), args, dtype if op.truth else None), kind
        if op.shape == GLOBAL:
            return _applied(lambda *xs: self._global(op.name, xs[0], kind), args), "u"
        if op.name == "cosine_sim":  # each norm runs over its own argument, unbroadcast
            (x, kx), (y, ky) = parts
            norm = lambda v, k: self._reduce("norm", [v], k)
            cos = lambda env: self._reduce("dot", [a(env) for a in args], kind) / (norm(x(env), kx) * norm(y(env), ky))
            return cos, ("s" if kind == "f" else kind)
        return _applied(lambda *xs: self._reduce(op.name, list(xs), kind), args), ("s" if kind == "f" else kind)

    def _spreading(self, fn):
        """``fn``'s per-tensor value repeated over each tensor's elements (:meth:`spread`)."""
        return lambda env: self.spread(fn(env))

    def _reduce(self, name: str, xs: list[torch.Tensor], kind: str) -> torch.Tensor:
        """A per-tensor reduction of a full value (one number per tensor); on a per-tensor or
        uniform value it reduces a single number, as numpy does on a 0-d array."""
        if kind == "f":
            k = max(x.shape[0] if x.ndim == 2 else 1 for x in xs)
            xs = [torch.broadcast_to(x, (k, self.seg.shape[0])) for x in xs]
            ssum, count = (lambda v: _segment_sum(v, self.seg, self.n)), self.counts
        else:
            ssum, count = (lambda v: v), 1.0
        x = xs[0]
        if name == "norm":
            return torch.sqrt(ssum(x * x))
        if name == "rms":
            return torch.sqrt(ssum(x * x) / count)
        if name == "mean":
            return ssum(x) / count
        if name == "sum":
            return ssum(x)
        if name == "dot":
            return ssum(x * xs[1])
        if name == "amax":
            if kind != "f":
                return x
            # scatter_reduce, not index_reduce: the same values, no beta-API warning on the user's stderr
            out = torch.full((x.shape[0], self.n), -math.inf, dtype=x.dtype)
            return out.scatter_reduce(1, self.seg.expand(x.shape[0], -1), x, "amax")
        if name == "allfinite":
            return (ssum((~torch.isfinite(x)).to(x.dtype)) == 0).to(x.dtype)
        raise DslError(f"{name}() is not supported by the search's evaluator")  # pragma: no cover

    def _global(self, name: str, x: torch.Tensor, kind: str) -> torch.Tensor:
        """Every tensor contributes its partial (a uniform value once per tensor), combined."""
        if kind == "f":
            parts = _segment_sum(x * x, self.seg, self.n) if name == "global_norm" else None
        elif name == "global_norm":
            parts = torch.broadcast_to(x * x, (x.shape[0] if x.ndim == 2 else 1, self.n))
        if name == "global_norm":
            return torch.sqrt(parts.sum(1, keepdim=True))
        if name == "global_allfinite":
            x = x.reshape(x.shape[0], -1) if x.ndim == 2 else x.reshape(1, -1)
            return torch.isfinite(x).all(1, keepdim=True).to(x.dtype)
        raise DslError(f"{name}() is not supported by the search's evaluator")  # pragma: no cover

    def _static(self, expr: Call, dtype: torch.dtype) -> torch.Tensor:
        if expr.op == "ndim":
            per = [float(len(s)) for s in self.shapes]
        elif expr.op == "size":
            per = [float(math.prod(s)) for s in self.shapes]
        else:
            i = int(expr.args[1].value)
            if any(not -len(s) <= i < len(s) for s in self.shapes):
                raise DslError(f"dim(w, {i}) asks for an axis some parameter does not have")
            per = [float(s[i]) for s in self.shapes]
        return torch.tensor(per, dtype=dtype).reshape(1, -1)


def check_supported(program: Program) -> Program:
    """Raise a DslError if ``program`` uses row/column-shaped states or values; else return it.

    Example (Adafactor's factored second moment is out of the search's reach):
        >>> from optdsl import load
        >>> check_supported(load("adamw")).name
        'adamw'
        >>> try:
        ...     check_supported(load("adafactor"))
        ... except DslError as e:
        ...     print(e.message)
        state 'r' is row-shaped; the search evaluates full and scalar states only
    """
    for s in program.states:
        if s.kind in ("row", "col"):
            raise DslError(f"state {s.name!r} is {s.kind}-shaped; the search evaluates full and "
                           "scalar states only", program.filename)
    for e in [a.expr for a in program.body] + list(program.outputs()):
        for node in walk(e):
            if isinstance(node, Call) and OPS[node.op].shape in (ROW, COL):
                raise DslError(f"{node.op}() is factored; the search evaluates full and scalar values "
                               "only", program.filename)
    return program
