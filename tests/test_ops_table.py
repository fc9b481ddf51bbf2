"""The op table is the single source of truth: every op's properties are fields of its entry, and
every printer (torch, jax, triton) spells every op from them."""

from __future__ import annotations

import numpy as np
import pytest

from codegen.jax_target import JaxPrinter
from codegen.triton_target import TritonPrinter
from optdsl.ir import Call, Var
from optdsl.ops import COL, ELEMENTWISE, GLOBAL, OPS, REDUCE, ROW, STATIC

RNG = np.random.default_rng(0)
X, Y = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
REDUCTIONS = [o for o in OPS.values() if o.shape in (REDUCE, ROW, COL, GLOBAL)]


def _args(op):
    """Arguments inside every op's domain that matters: c of clip, a of interp in [0, 1]."""
    return [X, Y, np.full((3, 4), 0.25)][:op.arity]


@pytest.mark.parametrize("name", [o.name for o in REDUCTIONS])
def test_every_reduction_is_defined_in_pieces_that_agree_with_its_meaning(name):
    op = OPS[name]
    r = op.reduction
    assert r is not None and r.combine in ("sum", "max")
    args = _args(op)
    whole = r.numpy([r.totals(*args)], X.size)
    halves = r.numpy([r.totals(*[a[:1] for a in args]), r.totals(*[a[1:] for a in args])], X.size)
    if op.shape in (ROW, COL):  # one value per row (column): the pieces over that row's elements
        line = X[0] if op.shape == ROW else X[:, 0]
        np.testing.assert_allclose(r.numpy([r.totals(line)], line.size), op.numpy(X)[0])
        return
    np.testing.assert_allclose(halves, whole)
    np.testing.assert_allclose(whole, float(op.numpy(*args)))


def test_truth_values_are_marked():
    truth = {o.name for o in OPS.values() if o.truth}
    assert truth == {"lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not", "isfinite", "allfinite",
                     "global_allfinite"}
    for name in truth - {"and", "or", "not"}:
        values = OPS[name].numpy(*_args(OPS[name]))
        assert set(np.unique(values)) <= {0.0, 1.0}


def test_jax_prints_every_op_as_numpy_computes_it():
    import jax.numpy as jnp

    kinds = {"x": "full", "y": "full", "z": "full"}
    from codegen.runtime import jax_math

    # a template may call the runtime's helpers (norm's _root), which every module copies in
    env = {**vars(jax_math), "jnp": jnp, "jax": __import__("jax"), "x": X, "y": Y, "z": np.full((3, 4), 0.25)}
    for op in OPS.values():
        call = Call(op.name, tuple(Var(n) for n in "xyz"[:op.arity]))
        if op.shape == STATIC:
            assert op.jax is not None
            continue
        if op.shape == GLOBAL:  # printed as its reduction's pieces, combined across leaves
            for t in [*op.reduction.terms, op.reduction.finish]:
                JaxPrinter({"x": "full", "y": "full", "a0": "uniform", "a1": "uniform", "n": "uniform"}).doprint(t)
            continue
        printer = JaxPrinter(dict(kinds))
        text = printer.doprint(call)
        got = eval(text, env)
        np.testing.assert_allclose(np.asarray(got), op.numpy(*_args(op)), rtol=1e-5, err_msg=op.name)
        assert not printer.temps, "a bare call binds nothing"


def test_torch_prints_every_op_as_numpy_computes_it():
    """In float64, to 1e-12; ``clip``'s bound is negative in half of ``Y`` (its torch spelling once
    clamped into [-c, c], empty for c < 0, and only a fuzz seed noticed)."""
    import torch

    from codegen.runtime import torch_math
    from codegen.torch_target import TorchPrinter

    def fail(msg, hint=None):
        raise AssertionError(msg)

    tensors = {n: torch.tensor(a) for n, a in zip("xyz", _args(OPS["interp"]))}
    env = {**vars(torch_math), "torch": torch, **tensors}
    env["w"] = env["x"]  # a number made a tensor takes the parameter's dtype
    for op in OPS.values():
        if op.shape in (STATIC, GLOBAL):  # plain Python, or hoisted (test_torch_global_groups)
            continue
        call = Call(op.name, tuple(Var(n) for n in "xyz"[:op.arity]))
        got = eval(TorchPrinter(dict.fromkeys("xyz", "full"), fail).doprint(call), env)
        np.testing.assert_allclose(np.asarray(got), op.numpy(*_args(op)), rtol=1e-12, err_msg=op.name)


def test_sign_keeps_nan_and_makes_both_zeros_plus_zero_in_every_spelling():
    """numpy's sign(-0.0) is 0.0 and sign(nan) nan: the Python, torch, jax and triton spellings agree
    bit for bit (the C++ one: test_cpp_spells_every_elementwise_op_as_numpy_computes_it)."""
    import jax.numpy as jnp
    import torch

    from codegen.runtime.float_math import _fsign
    from codegen.runtime.torch_math import _sign

    x = np.array([-0.0, 0.0, np.nan, -2.5, 3.0, -np.inf, 1e-30])
    want = np.sign(x)
    call = Call("sign", (Var("x"),))
    got = {"python": np.array([_fsign(float(v)) for v in x]), "torch": _sign(torch.tensor(x)).numpy(),
           "jax": np.asarray(eval(JaxPrinter({"x": "full"}).doprint(call),
                                  {"jnp": jnp, "x": jnp.asarray(x, dtype=jnp.float32)}), dtype=np.float64),
           "triton": eval(TritonPrinter().doprint(call), {"tl": type("tl", (), {"where": staticmethod(np.where)}), "x": x})}
    for name, values in got.items():
        np.testing.assert_array_equal(values, want, err_msg=name)
        assert np.array_equal(np.signbit(values[:2]), [False, False]), name


def test_triton_spells_every_op():
    for op in OPS.values():
        if op.shape == STATIC:
            continue  # a per-tensor number in the kernel's table (codegen.triton_target.lower)
        if op.shape == ELEMENTWISE:
            assert op.triton is not None, op.name
            TritonPrinter().doprint(Call(op.name, tuple(Var(n) for n in "xyz"[:op.arity])))
        else:
            for t in [*op.reduction.terms, op.reduction.finish]:
                TritonPrinter().doprint(t)


def test_torch_spellings_exist_for_every_op():
    torch = pytest.importorskip("torch")
    for op in OPS.values():
        assert op.torch is not None, op.name
        for f in op.foreach:
            assert hasattr(torch, f"_foreach_{f}"), (op.name, f)
        if op.foreach:
            assert op.shape == ELEMENTWISE


def test_python_raises_marks_exactly_the_operators_python_refuses_numbers_for():
    raising = set()
    for op in OPS.values():
        spelled = {"reciprocal": "1 / a"}.get(op.name, f"a {op.infix} b" if op.arity == 2 and op.infix else None)
        if op.shape != ELEMENTWISE or spelled is None or op.truth:
            continue
        for a, b in [(1.0, 0.0), (10.0, 400.0), (0.0, -1.0)]:
            try:
                eval(spelled, {"a": a, "b": b})
            except (ZeroDivisionError, OverflowError):
                raising.add(op.name)
    assert raising == {o.name for o in OPS.values() if o.python_raises}


@pytest.mark.slow
def test_cpp_spells_every_elementwise_op_as_numpy_computes_it():
    """One program with a state per elementwise op, ``s_op = op(g, w, 0.25)``, stepped once on the
    ``cpp`` backend (one C++ build): each state then holds the op's float32 value."""
    import torch

    import codegen
    from optdsl.ir import Assign, Const, Hyper, Program, State

    ops = [o for o in OPS.values() if o.shape == ELEMENTWISE]
    assert all(o.cpp is not None for o in ops)
    args = (Var("g"), Var("w"), Const(0.25))
    states = tuple(State(f"s_{o.name}", keep=True) for o in ops)
    body = tuple(Assign(s.name, Call(o.name, args[:o.arity])) for s, o in zip(states, ops))
    program = Program("every_op", states, (Hyper("lr", 0.0),), body, Call("mul", (Var("lr"), Var("g"))),
                      tuple(Var(s.name) for s in states))
    cls = codegen.build(program, "torch")
    assert "cpp" in cls._program.backends
    w = torch.tensor(X.ravel(), dtype=torch.float32)
    y = np.float32(Y.ravel())
    y[0] = -0.0  # sign(-0.0) is 0.0
    w.grad = torch.tensor(y)
    opt = cls([w], backend="cpp")
    opt.step()
    x = np.float32(X.ravel())
    assert not np.signbit(opt.state[w]["s_sign"][0].item())
    for s, o in zip(states, ops):
        want = np.asarray(o.numpy(*[y, x, np.float32(0.25)][:o.arity]), dtype=np.float32)
        np.testing.assert_allclose(opt.state[w][s.name].numpy(), np.broadcast_to(want, y.shape), rtol=2e-6,
                                   atol=1e-7, equal_nan=True, err_msg=o.name)


SPECIAL = np.array([0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 1e-310, -1e-310, 3e38, -3e38, np.inf, -np.inf, np.nan, 0.25])


@pytest.mark.parametrize("name", [o.name for o in OPS.values() if o.arity <= 3 and o.shape != STATIC])
def test_an_op_is_even_in_exactly_the_arguments_it_marks(name):
    """``even`` lists the arguments whose sign the value ignores, bit for bit (nan for nan), on
    ordinary and special values in float32 and float64: the fold may drop an abs() there. An op
    that reads a sign there (sign, cube, arctan...) must not claim it."""
    op = OPS[name]
    for dtype in (np.float32, np.float64):
        values = np.concatenate([SPECIAL, RNG.normal(size=12) * 3]).astype(dtype).reshape(2, -1)
        for i in range(op.arity):
            args = [v.astype(dtype) for v in (values, values[::-1].copy(), np.full(values.shape, 0.25, dtype))]
            args = args[:op.arity]
            plain = np.asarray(op.numpy(*args), dtype=np.float64)
            args[i] = np.abs(args[i])
            folded = np.asarray(op.numpy(*args), dtype=np.float64)
            same = bool(np.all((plain == folded) | (np.isnan(plain) & np.isnan(folded))))
            if i in op.even:
                assert same, (name, i)
                assert np.array_equal(np.signbit(plain[plain == 0]), np.signbit(folded[plain == 0])), (name, i)
            elif op.shape == ELEMENTWISE and not op.truth and name not in ("where", "clamp", "interp"):
                assert not same, (name, i)


@pytest.mark.parametrize("name", [o.name for o in OPS.values() if o.same_value is not None])
@pytest.mark.parametrize("values", [(-0.93, 0.5), (2.0, -3.0), (0.25, 0.25)])
def test_a_reduction_of_numbers_is_its_same_value(name, values):
    # what sympy is told a reduction of numbers (0-d values: lr, step, constants) is
    from optdsl.symbolic import number

    op = OPS[name]
    args = values[:op.arity]
    expected = op.numpy(*[np.float64(a) for a in args])
    assert float(op.same_value(*map(number, args))) == pytest.approx(float(expected), rel=1e-12)


def test_the_languages_named_constants_are_their_values():
    import math

    from optdsl import Interpreter, parse
    from optdsl.ops import CONSTANTS

    assert CONSTANTS["pi"] == math.pi and CONSTANTS["e"] == math.e
    assert CONSTANTS["inf"] == math.inf and math.isnan(CONSTANTS["nan"])
    opt = Interpreter(parse("def f(w, g, lr):\n    return lr * (e * g + pi)\n"), lr=1.0)
    w = {"w": np.zeros(1)}
    assert opt.updates(w, {"w": np.ones(1)}, opt.init(w), 1)[0]["w"][0] == math.e + math.pi
