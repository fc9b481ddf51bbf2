"""The cpp kernels' lifting (codegen.cpp_target, "Lifting"): the factors of a full-shaped product,
quotient or root that are one number per tensor, row or column are combined once per chunk, row or
column, column values once per chunk, and a power that cancels a square root takes it, so that
Adafactor's and LAMB's element loops only multiply where they divided; the results are what the
reference interpreter computes, in float32 and float64, with signed, zero and non-finite factors."""

import re
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from test_cpp_kernels import assert_same, data, interpret, on_cpp

import optdsl
from codegen import cpp_target
from codegen.cpp_target import CHUNK
from codegen.torch_target import paths


def lifted() -> optdsl.Program:
    """Row and column states, roots of row x column products (of |x|: -2 r c < 0), divisions by
    per-tensor, row and column values, square roots cancelled by squares (rms(u), square(u)), and a
    state that divides by a per-tensor zero (+-inf, and nan where g is 0)."""
    program = optdsl.parse(
        "def lifted(w, g, r: row, c: col, v, z, lr):\n"
        "    r = interp(r, rowmean(g * g), 0.9)\n"
        "    c = interp(c, colmean(g * g) + 1, 0.9)\n"
        "    v = interp(v, g * w, 0.5)\n"
        "    u = g * rsqrt(r * c / max(mean(r), 0.001))\n"
        "    d = v * sqrt(-2 * r * c) / (mean(w) + 3)\n"
        "    z = g / (mean(w) * 0)\n"
        "    return lr * (u / max(1, rms(u)) + d / norm(d) + square(u) * 0.001 - c / r * 0.0001 * w), r, c, v, z\n"
    )
    return replace(program, states=tuple(replace(s, keep=True) for s in program.states))


# a stack of matrices, rows longer than a chunk, rows that do not divide a chunk, short rows
MATRICES = [(2, 3, 5), (2, CHUNK + 5), (5, 7001), (40, 260), (3, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lifted_factors_compute_what_the_interpreter_computes(dtype):
    params, grads = data(MATRICES, steps=3)
    grads[-1]["p3"][2, 5] = 0.0  # 0 / 0 in z
    program = lifted()
    ref = interpret(program, params, grads, dtype)
    assert np.isnan(ref[1]["p3"]["z"]).any() and np.isinf(ref[1]["p3"]["z"]).any()
    assert_same(on_cpp(program, params, grads, dtype), ref, dtype)


def element_loops(source: str) -> list[str]:
    """The bodies of a kernel's element loops (``for_lines``), in pass order."""
    return re.findall(r"for_lines<T>\(arrays, bytes, ahead, i0, i1, \[&\]\(int64_t i, int64_t lane\) \{\n(.*?)\n\s*\}\);", source,
                      re.DOTALL)


def divisions(text: str) -> int:
    return text.count(" / ")  # rsqrt is spelled T(1) / std::sqrt(...)


def test_adafactors_element_loops_divide_once_and_take_one_root():
    """Adafactor's matrices: the rms(u) pass divides once and takes no root (g^2 / |v|); the update
    divides once and takes one root (1 / sqrt(max(r c / mean(r), eps))), where it took 3 divisions
    and a root; the column state and the column means are read once per chunk (the column loop),
    not per element."""
    matrices = paths(optdsl.load("adafactor"))[2][1].program  # ndim > 2, ndim 2, ndim < 2
    source = cpp_target.kernel_source(matrices)
    loops = element_loops(source)
    assert len(loops) == 3  # rowmean, colmean and rms(w); rms(u); the update (mean(r) reads no element)
    rms_u, update = loops[1], loops[2]
    assert (divisions(rms_u), rms_u.count("std::sqrt")) == (1, 0)
    assert (divisions(update), update.count("std::sqrt")) == (1, 1)
    for loop in (rms_u, update):
        assert "p3" not in loop and "colv" not in loop and "colbuf.data()" not in loop
    assert source.count("for (int64_t col = 0; col < C; ++col)") == 2
    assert "if (head) newcols[" in source


def test_lambs_and_adamws_element_loops_divide_once():
    """The paths as the programs state them (the torch target hoists their per-step scalars before the
    kernel, which leaves the same loops): 1 - beta^t, the trust ratio and lr are per-tensor factors,
    so each element loop divides by sqrt(v / (1 - beta2^t)) + eps only (3 divisions without lifting)."""
    for name in ("lamb", "adamw"):
        source = cpp_target.kernel_source([p.program for p in paths(optdsl.load(name))[2]])
        loops = element_loops(source)
        assert loops and all((divisions(x), x.count("std::sqrt")) == (1, 1) for x in loops), name


def test_the_monomials_are_read_from_the_op_table():
    """Products, quotients and roots (of |x|), and nothing that is not one (a sum, max, a power with
    a variable exponent, cbrt's sign)."""
    table = cpp_target._MONOMIAL
    one, half = Fraction(1), Fraction(1, 2)
    assert table["mul"] == (1, ((0, one, False), (1, one, False)))
    assert table["div"] == (1, ((0, one, False), (1, -one, False)))
    assert table["rsqrt"] == (1, ((0, -half, True),))
    assert table["sqrt"] == (1, ((0, half, True),))
    assert table["neg"][0] == -1
    assert not {"add", "max", "power", "cbrt", "interp", "exp", "where"} & set(table)


def test_a_product_that_lifts_no_division_or_root_keeps_the_programs_order():
    """Fuzz seed 1142 (2026-12-05): ``u * (lr * u)`` was regrouped as ``(u * u) * lr``, which overflows
    float32 where the interpreter's order does not; only a division or root is worth moving."""
    program = optdsl.parse("def f(w, g, lr):\n    return g * (lr * g)\n")
    params = {"p": np.zeros(4)}
    grads = [{"p": np.array([2e19, -2e19, 1.0, 0.0])}]  # g * g = 4e38 > float32's largest, 3.4e38
    ref = interpret(program, params, grads, np.float32)
    assert np.isfinite(ref[0]["p"]).all()
    assert_same(on_cpp(program, params, grads, np.float32), ref, np.float32)
