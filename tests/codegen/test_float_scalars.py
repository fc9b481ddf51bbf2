"""A generated module's per-step scalars in Python floats (codegen/float_printer.py): each op's Python
spelling means what the interpreter's numpy computes, or raises where that is inf or nan, and then
the step takes the IEEE values from tensors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

import codegen
import optdsl
from codegen.runtime.float_math import _fmax, _fmin, _fsign
from optdsl.ops import OPS

SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 3.0, 0.9, 0.999, 1e4, 1e-300, -1e-300, 5e-324, 1e300, -1e300,
           math.inf, -math.inf, math.nan]
RANDOM = [float(x) for x in np.random.default_rng(0).normal(scale=3.0, size=40)] + [float(x) for x in (
    np.exp(np.random.default_rng(1).uniform(-700, 700, size=40)))]
HELPERS = {"math": math, "_fmax": _fmax, "_fmin": _fmin, "_fsign": _fsign}
SPELLED = sorted(o.name for o in OPS.values() if o.python)


def _same(got, want, ulps):
    """Equal as numpy means it: both nan, or the same infinity or zero (sign included), or within
    ``ulps`` units in the last place (libm's rounding of a transcendental function, not numpy's)."""
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if want == 0 or math.isinf(want):
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    return abs(got - want) <= ulps * math.ulp(want)


def test_the_ops_with_a_python_spelling():
    """Every elementwise op but floor, cbrt and clip (see optdsl/ops.py) has one; reductions have none."""
    assert set(SPELLED) == {o.name for o in OPS.values() if o.shape == "elementwise"} - {"floor", "cbrt", "clip"}


@pytest.mark.parametrize("name", SPELLED)
def test_python_spelling_is_numpys_meaning_or_raises(name):
    op = OPS[name]
    fn = eval(f"lambda x, y, z: {op.python.format('x', 'y', 'z')}", HELPERS)  # the op table's own text
    values = SPECIAL + RANDOM
    grid = [(x, y, z) for x in values for y in (SPECIAL if op.arity > 1 else [0.0]) for z in (0.0, 0.25, 1.0)]
    exact = name in ("add", "sub", "mul", "div", "neg", "abs", "sqrt", "square", "reciprocal", "max", "min", "sign",
                     "where", "clamp", "mod", "floordiv") or op.truth
    checked = 0
    for args in grid:
        with np.errstate(all="ignore"):
            want = float(op.numpy(*[np.float64(a) for a in args[:op.arity]]))
        try:
            got = fn(*args)
        except (ArithmeticError, ValueError):  # the caller computes this step's scalars in tensors
            continue
        if name == "power" and args[1] == 0.5:  # numpy takes a square root there: (-inf) ** 0.5 is nan, C99's inf,
            continue  # and (-0.0) ** 0.5 is -0.0, C99's +0.0 (torch's tensor pow is C99's, as Python's here)
        assert _same(float(got), want, 0 if exact else 2), (name, args, got, want)
        checked += 1
    assert checked >= 10  # (arccos and the like: most of the grid lies outside their domain)


def _program(name):
    return sys.modules[codegen.build(optdsl.load(name), "torch").__module__]._PROGRAM


@pytest.mark.parametrize("name", ["adamw", "tiger", "adafactor", "amos"])
def test_floats_are_the_scalars_to_the_bit(name):
    """Every backend takes the same scalars: the eager and cpp steps :meth:`floats`, the compiled
    step :meth:`scalars` (cast once); with a tensor handed in (a scheduler's lr) the scalars are
    computed in tensors, to within a few float64 roundings."""
    prog = _program(name)
    assert all(f is not None for f in prog.uniform_floats)
    for step in (1, 7, 10_000):
        for k in range(len(prog.paths)):
            values = {**prog.hyper_defaults, "lr": 0.003, "step": step}
            floats = prog.floats(k, values)
            assert floats == {n: t.item() for n, t in prog.scalars(k, values, torch.float64, "cpu").items()}
            tensors = prog.scalars(k, {**values, "lr": torch.tensor(0.003, dtype=torch.float64)}, torch.float64, "cpu")
            for n, t in tensors.items():
                assert _same(t.item(), floats[n], 4), (n, t.item(), floats[n])


def test_where_python_raises_the_step_takes_ieee_values():
    """beta = 1 makes ``1 / (1 - beta ** step)`` divide by zero: Python raises, the scalars come
    from float64 tensors (inf), and the step is the interpreter's (nan: 0 * inf)."""
    program = optdsl.parse("def p(w, g, m, step, lr=0.1, beta=0.5):\n    m = interp(g, m, beta)\n"
                           "    return lr * m / (1 - beta ** step), m\n")
    cls = codegen.build(program, "torch")
    prog = sys.modules[cls.__module__]._PROGRAM
    values = {"lr": 0.1, "beta": 1.0, "step": 3}
    scalars = prog.floats(0, values)
    assert math.inf in map(abs, scalars.values())
    assert scalars == {n: t.item() for n, t in prog.scalars(0, values, torch.float64, "cpu").items()}
    interp = optdsl.Interpreter(program, dtype=np.float64, lr=0.1, beta=1.0)
    params, grads = {"w": np.ones(3)}, {"w": np.full(3, 0.5)}
    expected = interp.step(params, grads, interp.init(params), 1)[0]["w"]
    p = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = cls([p], lr=0.1, beta=1.0, backend="eager")
    p.grad = torch.full((3,), 0.5, dtype=torch.float64)
    opt.step()
    np.testing.assert_array_equal(p.detach().numpy(), expected)


@pytest.mark.parametrize("backend", ["eager", "cpp", "compiled"])
@pytest.mark.parametrize("body", ["return cosh(10 ** step)", "return lr * clip(g, cosh(10 ** step))"])
def test_a_scalar_beyond_float32s_range_is_inf_in_a_float32_step(body, backend):
    """Pinned from a random program: ``cosh(10 ** step)`` is 1.3e43 at step 2, a finite Python float
    but inf in float32; torch refuses such a number beside float32 tensors (torch.full of a
    per-step update, a clamp's bound, lerp's weight, where, alpha), so the eager step raised. Each
    backend now steps as the float32 interpreter does."""
    program = optdsl.parse(f"def p(w, g, step, lr=0.1):\n    {body}\n")
    cls = codegen.build(program, "torch")
    if backend != "eager" and not sys.modules[cls.__module__]._PROGRAM.available(backend, torch.device("cpu")):
        pytest.skip(f"no {backend} backend here")
    interp = optdsl.Interpreter(program, dtype=np.float32)
    w0, g = np.linspace(-1, 1, 6, dtype=np.float32), np.linspace(2, -3, 6, dtype=np.float32)
    params, state = {"w": w0}, interp.init({"w": w0})
    p = torch.tensor(w0, requires_grad=True)
    opt = cls([p], backend=backend)
    with np.errstate(all="ignore"):
        for t in (1, 2):
            params, state = interp.step(params, {"w": g}, state, t)
            p.grad = torch.tensor(g)
            opt.step()
    np.testing.assert_array_equal(p.detach().numpy(), params["w"])


@pytest.mark.parametrize("body", ["t = lr * mean(0.5)\n    return arccos(where(t, 1e-08, 0.5)) * g",
                                  ("t = where(ndim(w) >= 2, lr, -2.5) * mean(0.5)\n"
                                   "    return arccos(where(t, 1e-08, 0.5)) * g"),
                                  "return where(ndim(w) >= 2, 0.99, g) / reciprocal(lr)"])
def test_numbers_made_tensors_keep_a_float64_steps_precision(body):
    """Pinned from random programs: per-step scalars without a Python spelling (a mean) come from
    float64 tensors, where ``torch.where(c, 1e-08, 0.5)`` of two numbers made a float32 tensor
    (1e-08 became 9.99999993922529e-09; relative errors up to 8e-6 in a float64 step); and a group
    step's own per-step number (``0.99 u`` on the matrix path) was made a tensor of the default
    dtype, float32. A float64 step now equals the interpreter's, 1-d and 2-d (the two paths of a
    shape test)."""
    program = optdsl.parse(f"def p(w, g, lr=0.1):\n    {body}\n")
    cls = codegen.build(program, "torch")
    rng = np.random.default_rng(0)
    params = {"a": rng.normal(size=5), "b": rng.normal(size=(2, 3))}
    grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
    interp = optdsl.Interpreter(program, dtype=np.float64)
    expected = interp.step(params, grads, interp.init(params), 1)[0]
    ps = [torch.tensor(v, requires_grad=True) for v in params.values()]
    opt = cls(ps, backend="eager")
    for p, g in zip(ps, grads.values()):
        p.grad = torch.tensor(g)
    opt.step()
    for p, name in zip(ps, params):
        np.testing.assert_allclose(p.detach().numpy(), expected[name], rtol=1e-15, atol=0)
