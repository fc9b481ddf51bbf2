"""codegen/runtime/torch_math.py: the spellings of sign, arcsinh and cbrt are within an ulp of the exact
value, on every kind of float32 and float64 value, and those of expm1, arctanh and arccosh within a few
under torch.compile; generated modules carry exactly the functions they call."""

import mpmath
import numpy as np
import pytest
import torch

import codegen
import optdsl
from codegen.runtime import torch_math
from codegen.torch_target import emit


def _values(dtype) -> np.ndarray:
    info = np.finfo(dtype)
    rng = np.random.default_rng(0)
    magnitude = 10.0 ** rng.uniform(np.log10(float(info.smallest_subnormal)), np.log10(float(info.max)), 20_000)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, info.max, -info.max, info.tiny, info.smallest_subnormal,
               2.0**100, 2.0**100 * (1 + info.eps), 2.0**-100, 1e-20, 1e20, 0.5, 3.0]
    with np.errstate(over="ignore"):
        parts = [rng.standard_normal(5_000), magnitude * rng.choice([-1.0, 1.0], magnitude.size), special]
        return np.concatenate(parts).astype(dtype)


def _exact_arcsinh(x: np.ndarray) -> np.ndarray:
    """arcsinh of float64 values, correctly rounded: numpy's own float64 arcsinh is itself an ulp
    off in places, and where depends on the CPU (x = -0.48721279052286276 on an AVX2-only EPYC)."""
    with mpmath.workprec(128):
        return np.array([float(mpmath.asinh(mpmath.mpf(float(v)))) for v in x])


def _exact_cbrt(x: np.ndarray) -> np.ndarray:
    """The real cube root of float64 values, correctly rounded."""
    with mpmath.workprec(128):
        return np.array([float(mpmath.sign(v) * mpmath.cbrt(abs(mpmath.mpf(float(v))))) if np.isfinite(v) else
                         np.cbrt(v) for v in x])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, exact", [("_sign", np.sign), ("_arcsinh", _exact_arcsinh),
                                         ("_cbrt", _exact_cbrt)])
def test_fast_spelling_is_within_an_ulp_of_the_exact_value(name, exact, dtype):
    x = _values(dtype)
    want = exact(x.astype(np.float64)).astype(dtype)  # float32: float64's value rounded once more
    got = getattr(torch_math, name)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
    finite = np.isfinite(want)
    assert np.isfinite(got[finite]).all()
    ulps = np.abs(got[finite] - want[finite]) / np.spacing(np.abs(want[finite]))
    assert ulps.max() <= 1.0, x[finite][np.argmax(ulps)]
    if name != "_sign":  # odd functions: arcsinh(-0.0) and cbrt(-0.0) are -0.0
        np.testing.assert_array_equal(np.signbit(got[x == 0]), np.signbit(x[x == 0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, numpy_op, domain", [("_expm1", np.expm1, lambda x: x),
                                                    ("_arctanh", np.arctanh, lambda x: np.tanh(x)),
                                                    ("_arccosh", np.arccosh, lambda x: 1 + np.abs(x))])
def test_spellings_for_torch_compile_are_within_a_few_ulp(name, numpy_op, domain, dtype):
    """torch.compile's inductor (2.13, CPU) lowered expm1 as exp(x) - 1 (float32 expm1(-1e-5) 1e-3
    off, expm1(-2e-8) 0), atanh(-2e-8) to 0 and acosh(1e30) to inf. Compiled, the spellings give
    numpy's value to 3 ulp on every kind of value of their domain (eager: torch's own ops)."""
    with np.errstate(all="ignore"):
        x = np.concatenate([domain(_values(dtype)), [1.0, -1.0, 2.0, -2.0, 0.5]]).astype(dtype)
        want = numpy_op(x)
    eager = getattr(torch_math, name)
    compiled = torch.compile(eager, dynamic=False)
    for got in (compiled(torch.from_numpy(x)).numpy(), eager(torch.from_numpy(x)).numpy()):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
        finite = np.isfinite(want)
        ulps = np.abs(got[finite].astype(np.float64) - want[finite]) / np.spacing(np.abs(want[finite]))
        assert ulps.max() <= 3.0, (x[finite][np.argmax(ulps)], got[finite][np.argmax(ulps)])
        np.testing.assert_array_equal(np.signbit(got[want == 0]), np.signbit(want[want == 0]))


def test_generated_modules_carry_the_functions_their_ops_call():
    lion = emit(optdsl.load("lion"))
    assert "def _sign(x):" in lion and "def _arcsinh" not in lion
    assert "torch_math" not in emit(optdsl.load("adamw"))
    program = optdsl.parse("def train(w, g, m, lr):\n    m = interp(g, m, 0.9)\n    return lr * arcsinh(m), m\n")
    cls = codegen.build(program, "torch")
    assert cls.functional.__globals__["_arcsinh"].__doc__ == torch_math._arcsinh.__doc__
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    w.grad = torch.tensor([-3.0, 0.0])
    cls([w], lr=1.0).step()
    np.testing.assert_allclose(w.detach().numpy(), [1.0 - np.arcsinh(-0.3), 2.0], rtol=1e-6)
