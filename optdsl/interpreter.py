"""The reference semantics: a numpy interpreter. Every backend is tested against it.

One step, for each parameter tensor ``w`` with gradient ``g``::

    update, *states = program(w, g, *states, lr, step, **hyperparameters)
    w = w - update

Each tensor runs its :func:`~optdsl.passes.specialize`-d program; global reductions are taken
across all tensors between :func:`~optdsl.passes.segments`. Arithmetic is float64 by default,
or float32 (``dtype=np.float32``) to mirror the generated code. Values that do not depend on
any tensor (``1 - beta1 ** step``, ``(1 + beta2) ** step - 1``) are computed in float64 in
either case and rounded once where they meet a tensor, as torch.optim computes them in Python
floats: in float32 a bias correction would lose its digits to cancellation.

Example:
    >>> import numpy as np
    >>> from optdsl import load
    >>> opt = Interpreter(load("sgd"), lr=0.1)
    >>> params = {"w": np.ones(3)}
    >>> state = opt.init(params)
    >>> params, state = opt.step(params, {"w": np.ones(3)}, state)
    >>> params["w"]
    array([0.9, 0.9, 0.9])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .domains import check_domains
from .errors import DslError
from .ir import Const, Expr, Program, Var, expect_program
from .ops import COL, OPS, ROW
from .passes import global_statements, segments, specialize
from .typecheck import join

UNIFORM_KINDS = ("const", "uniform")  # one value for every tensor: numbers, lr, step, hyperparameters


def state_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of a state of ``kind`` for a parameter of ``shape``: full ``shape``, row
    ``shape[:-1]``, col ``shape[:-2] + shape[-1:]``, scalar ``()``.

    Example:
        >>> state_shape("row", (3, 4, 5)), state_shape("col", (3, 4, 5)), state_shape("scalar", (3, 4, 5))
        ((3, 4), (3, 5), ())
    """
    return {"full": shape, "row": shape[:-1], "col": shape[:-2] + shape[-1:], "scalar": ()}[kind]


def expand(value, kind: str, to: str):
    """Make a row/col-shaped value broadcast against a full one (row -> [..., None]).

    Example (a row value, one number per row, against a full 2x3 tensor):
        >>> expand(np.array([1.0, 2.0]), "row", "full") * np.ones((2, 3))
        array([[1., 1., 1.],
               [2., 2., 2.]])
    """
    if to != "full" or kind not in ("row", "col"):
        return value
    return value[..., :, None] if kind == "row" else value[..., None, :]


class _Tensor:
    """One parameter's evaluation context: its program, kinds and values."""

    def __init__(self, program: Program, env: dict, kinds: dict, dtype):
        self.program, self.env, self.kinds, self.dtype = program, env, kinds, dtype

    def eval(self, expr: Expr):
        if isinstance(expr, Const):
            return expr.value, "const"
        if isinstance(expr, Var):
            return self.env[expr.name], self.kinds[expr.name]
        op = OPS[expr.op]
        vals = [self.eval(a) for a in expr.args]
        if op.shape == "elementwise":
            kind = join(*(k for _, k in vals))
            if kind in UNIFORM_KINDS:  # no tensor involved: float64, as a Python float would be
                return op.numpy(*[np.float64(v) for v, _ in vals]), kind
            # a Python float is a weak scalar to numpy: it meets the tensor in the tensor's dtype
            args = [expand(float(v) if k in UNIFORM_KINDS else v, k, kind) for v, k in vals]
            return self.cast(op.numpy(*args)), kind
        if op.shape in (ROW, COL):
            return self.cast(op.numpy(vals[0][0])), op.shape
        if op.shape == "reduce":  # two-argument reductions (dot) broadcast like elementwise ops
            kind = join(*(k for _, k in vals))
            return self.cast(op.numpy(*[expand(v, k, kind) for v, k in vals])), "scalar"
        raise AssertionError(f"{expr.op} should have been specialised or hoisted")

    def cast(self, x):
        return np.asarray(x, dtype=self.dtype) if isinstance(x, np.ndarray) or np.ndim(x) == 0 else x

    def run(self, statements):
        for a in statements:
            self.env[a.target], self.kinds[a.target] = self.eval(a.expr)


class Interpreter:
    """Runs ``program`` on a dict of named numpy parameters; hyperparameters bound at creation.

    ``lr`` and any hyperparameter default may be overridden: ``Interpreter(p, lr=0.1, beta1=0.95)``.
    """

    def __init__(self, program: Program, dtype=np.float64, **hyper: float):
        defaults = expect_program(program).hyper_defaults
        unknown = set(hyper) - set(defaults) - {"lr"}
        if unknown:
            raise DslError(f"{program.name} has no hyperparameter {', '.join(sorted(unknown))}",
                           hint=f"it has: {', '.join(defaults) or 'none'}")
        self.hyper = {**defaults, **hyper}
        if "lr" not in self.hyper:
            raise DslError(f"{program.name} has no default lr; pass lr=...")
        for name, value in hyper.items():
            numeric = isinstance(value, bool) or np.issubdtype(np.asarray(value).dtype, np.number)
            if np.ndim(value) != 0 or not numeric:
                raise DslError(f"hyperparameter {name}={value!r} is not a number")
        check_domains(program, hyper)
        self.program, self.dtype = program, np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise DslError(f"dtype {self.dtype} is not a floating type", hint="use np.float64 or np.float32")
        self._specs: dict[tuple[int, ...], Program] = {}

    def spec(self, shape) -> Program:
        """The program specialised to a parameter of this shape (computed once per shape: every
        step of every parameter asks, and specialising is the slow part of a small step)."""
        shape = tuple(shape)
        if shape not in self._specs:
            self._specs[shape] = specialize(self.program, shape)
        return self._specs[shape]

    def init(self, params: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Initial state per parameter, holding only the states its specialisation uses."""
        out = {}
        for name, w in params.items():
            w = np.asarray(w, dtype=self.dtype)
            out[name] = {}
            for s in self.spec(w.shape).states:
                shp = state_shape(s.kind, w.shape)
                out[name][s.name] = {"zeros": np.zeros(shp, self.dtype), "ones": np.ones(shp, self.dtype),
                                     "w": w.copy()}[s.init]
        return out

    def updates(self, params, grads, state, step: int):
        """``(update per parameter, new state)`` for one step (``step`` is 1-based). An empty
        parameter is left alone, as every target leaves it: its update is empty and its states
        (a row, column or scalar state may hold numbers) keep their values; a mean over its no
        elements would make them nan."""
        tensors, left_alone = {}, {}
        for name, w in params.items():
            w = np.asarray(w, dtype=self.dtype)
            g = np.asarray(grads[name], dtype=self.dtype) if name in grads else None
            if g is None or g.shape != w.shape:
                raise DslError(f"parameter {name!r} of shape {w.shape} has " +
                               ("no gradient" if g is None else f"a gradient of shape {g.shape}"))
            spec = self.spec(w.shape)
            env = {"w": w, "g": g, "lr": self.hyper["lr"],
                   "step": float(step), **{k: v for k, v in self.hyper.items()}}
            kinds = {"w": "full", "g": "full", "lr": "uniform", "step": "uniform",
                     **{k: "uniform" for k in self.hyper}}
            for s in spec.states:
                if s.name not in state.get(name, {}):
                    raise DslError(f"no state {s.name!r} for parameter {name!r}",
                                   hint="start from init(params)")
                env[s.name], kinds[s.name] = state[name][s.name], s.kind
            if w.size:
                tensors[name] = _Tensor(spec, env, kinds, self.dtype)
            else:
                left_alone[name] = {s.name: np.array(env[s.name], self.dtype) for s in spec.states}
        updates = {name: np.zeros(np.shape(params[name]), self.dtype) for name in left_alone}
        if not tensors:
            return updates, left_alone
        # each tensor's own global statements: a shape test inside one's argument differs by shape
        cuts = [[t.program.body[i] for i in global_statements(t.program)] for t in tensors.values()]
        for k, seg in enumerate(zip(*(segments(t.program) for t in tensors.values()))):
            for t, stmts in zip(tensors.values(), seg):
                t.run(stmts)
            if k < len(cuts[0]):
                self._global([c[k] for c in cuts], tensors.values())
        new_state = dict(left_alone)
        for name, t in tensors.items():
            shape = t.env["w"].shape
            u, k = t.eval(t.program.update)
            updates[name] = np.broadcast_to(expand(u, k, "full"), shape).astype(self.dtype)
            new_state[name] = {}
            for s, e in zip(t.program.states, t.program.new_states):
                v, k = t.eval(e)
                new_state[name][s.name] = np.broadcast_to(
                    expand(v, k, s.kind), state_shape(s.kind, shape)).astype(self.dtype)
        return {n: updates[n] for n in params}, {n: new_state[n] for n in params}

    def _global(self, stmts, tensors):
        """``target = global_op(x)`` (``stmts``: each tensor's own, the same op and target): each
        tensor's totals (op.reduction), combined across tensors. An empty parameter takes no part (it is
        not among ``tensors``), even where ``x`` is one number per tensor (``global_norm(0.5)``): adding
        an empty tensor to a model must not change the others' steps."""
        reduction = OPS[stmts[0].expr.op].reduction
        values = [np.asarray(t.eval(s.expr.args[0])[0]) for s, t in zip(stmts, tensors)]
        value = reduction.numpy([reduction.totals(v) for v in values], sum(v.size for v in values))
        # a value of the tensors, if the same for each: its arithmetic is in their dtype, as a per-tensor
        # reduction's is and the targets' is, not float64 as that of numbers alone
        for t in tensors:
            t.env[stmts[0].target], t.kinds[stmts[0].target] = self.dtype.type(value), "scalar"

    def step(self, params, grads, state, step: int = 1):
        """``(w - update for each parameter, new state)``."""
        ups, new_state = self.updates(params, grads, state, step)
        return {n: np.asarray(params[n], dtype=self.dtype) - ups[n] for n in params}, new_state

    def run(self, params, grad_fn: Callable[[dict, int], dict], steps: int) -> list[dict]:
        """Parameters after each of ``steps`` steps; ``grad_fn(params, t)`` gives the gradients."""
        params = {n: np.asarray(p, dtype=self.dtype) for n, p in params.items()}
        state = self.init(params)
        history = []
        for t in range(1, steps + 1):
            params, state = self.step(params, grad_fn(params, t), state, t)
            history.append(params)
        return history


def run(program: Program, params, grad_fn, steps: int, dtype=np.float64, **hyper) -> list[dict]:
    """Shorthand for ``Interpreter(program, dtype, **hyper).run(params, grad_fn, steps)``: the
    parameters after each step ``w_t = w_{t-1} - update_t``, ``g_t = grad_fn(params, t)``.

    Example (SGD on the loss ``|w|^2 / 2``, whose gradient is ``w``: ``w_t = (1 - lr) w_{t-1}``):
        >>> from optdsl import load
        >>> history = run(load("sgd"), {"w": np.ones(2)}, lambda params, t: params, steps=3, lr=0.5)
        >>> len(history), history[-1]["w"]
        (3, array([0.125, 0.125]))
    """
    return Interpreter(program, dtype, **hyper).run(params, grad_fn, steps)


__all__ = ["Interpreter", "expand", "run", "state_shape"]
