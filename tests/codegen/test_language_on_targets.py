"""The language's promises hold on every target: a program that passes `check` compiles into
modules that compute what the reference interpreter computes, for the paper's listings (inputs
reassigned), for names the printers also use for their own purposes, and for constants whose value
is inf or nan."""

import ast
import functools
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from trajectories import in_triton_interpreter, run_interpreter, run_jax, run_torch, run_triton

import codegen
from codegen import cpp_target, torch_target
from optdsl import DslError, Interpreter, load, parse
from optdsl.ir import INPUTS
from optdsl.names import check_name
from optdsl.parser import MAX_DEPTH

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Constant expressions and their IEEE float64 values; `1 / 0` once raised ZeroDivisionError at
# step() and `(-1) ** 0.5` was a complex number on torch.
IEEE = [("1 / 0", np.inf), ("-1 / 0", -np.inf), ("0 / 0", np.nan), ("1 % 0", np.nan),
        ("10 ** 1000", np.inf), ("e ** 710", np.inf), ("(-1) ** 0.5", np.nan), ("reciprocal(0.0)", np.inf),
        ("1e308 * 10", np.inf), ("log(0)", -np.inf), ("inf - inf", np.nan), ("-inf", -np.inf)]


def printer_names() -> list[str]:
    """Every name the printers write into modules for zoo programs, on every target, that a
    program may use too (the identifier policy does not reserve it): ``update``, ``i``, ``plan``..."""
    names = set()
    for target in ("torch", "jax", "triton"):
        for zoo in ("adafactor", "lion", "lamb"):
            for node in ast.walk(ast.parse(codegen.emit(load(zoo), target))):
                names.add(getattr(node, "id", None) or getattr(node, "arg", None) or getattr(node, "name", None))
    return sorted(n for n in names if isinstance(n, str) and check_name(n) is None and n not in INPUTS)


def program_using(names: list[str]):
    """One program whose states, hyperparameters and temporaries carry ``names``, each one read."""
    states, hypers, temps = names[:4], names[4:8], names[8:]
    lines = [f"def prog(w, g, {', '.join(states)}, lr, "
             + ", ".join(f"{h}=0.{k + 1}" for k, h in enumerate(hypers)) + "):"]
    prev = "g"
    for k, t in enumerate(temps):
        lines.append(f"    {t} = {prev} * 0.5 + {[states, hypers][k % 2][k % 4]} * 0.25")
        prev = t
    lines += [f"    {s} = interp(g, {s}, 0.9) + {prev} * 0.01" for s in states]
    lines.append(f"    return lr * {prev}, {', '.join(states)}")
    return parse("\n".join(lines) + "\n")


@functools.cache
def cases():
    """``name -> (program, params, grads per step)`` (built once: collecting the names emits modules)."""
    rng = np.random.default_rng(0)
    params = {"a": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()} for _ in range(3)]
    out = {f"paper_program{n}": (load(str(EXAMPLES / f"paper_program{n}.py")), params, grads) for n in (3, 4)}
    out["printer_names"] = (program_using(printer_names()), params, grads)
    pick = "0"  # element i of the update is constant i: g = 0, 1, 2, ... selects it
    for i, (text, _) in enumerate(IEEE):
        pick = f"where(g == {i}, {text}, {pick})"
    n = len(IEEE)
    out["ieee_constants"] = (parse(f"def f(w, g, lr):\n    return lr * {pick}\n"),
                             {"w": np.zeros(n, np.float32)}, [{"w": np.arange(n, dtype=np.float32)}])
    shaped = {"a": (5,), "b": (3, 4), "c": (2, 3, 2), "d": (1,)}
    out["shape_arithmetic"] = (parse(SHAPE_ARITHMETIC), {k: rng.normal(size=s).astype(np.float32)
                                                          for k, s in shaped.items()},
                               [{k: rng.normal(size=s).astype(np.float32) for k, s in shaped.items()}
                                for _ in range(2)])
    # a 0-d and an empty parameter beside others: global reductions of a full value and of one
    # number per tensor (an empty tensor takes no part), a full state of a 0-d parameter
    odd = {"a": (), "b": (0,), "c": (2, 3), "d": (1,)}
    draws = [{k: rng.normal(size=s).astype(np.float32) for k, s in odd.items()} for _ in range(4)]
    out["empty_and_0d"] = (parse(EMPTY_AND_0D), draws[0], draws[1:])
    out["mixed_reductions"] = (parse(MIXED_REDUCTIONS), params, grads)
    # a shape test inside a global reduction's argument: the interpreter took the first tensor's
    # argument (its branch) for every tensor; the targets took each tensor's own
    out["shape_test_in_global"] = (parse(SHAPE_TEST_IN_GLOBAL), out["shape_arithmetic"][1],
                                   out["shape_arithmetic"][2])
    # and/or of a tensor's truth and a number's: Triton's interpreter could not take `|` and `&`
    # of a block and a 0-d value (bitwise_or of numpy types); spelled as where(), they run anywhere
    out["mixed_logic"] = (parse("def f(w, g, lr):\n    t = where(g > 0 or lr == 0, 1, g)\n"
                                "    return lr * t + (g > 0 and lr > 0)\n"), params, grads)
    # where(c, row, number) is a row, the number in each of its entries, whatever c is: the eager
    # step's variant for embedding == 0 took rms(w) alone, and norm() of it counted one entry
    out["where_side_counted"] = (parse("def f(w, g, lr, embedding=0):\n    u = g\n    if ndim(w) >= 2:\n"
                                       "        s = where(embedding, sqrt(rowmean(w * w)), rms(w))\n"
                                       "        u = g * norm(s)\n    return lr * u\n"), params, grads)
    # log1p(inf) and expm1(inf) are inf (Triton's interpreter's stand-ins for libdevice gave inf / inf)
    out["inf_through_log1p"] = (parse("def f(w, g, lr):\n    big = 1 / (g * (g > 0))\n"
                                      "    return lr * (log1p(big) + expm1(big))\n"), params, grads)
    # a per-step power of a base far from 1: exp(t log1p(b - 1)) took b - 1 = -1 in float32 (JAX and
    # Triton print it so): 1e-8 ** step was 0; log1p only near 1 now, log(b) further out
    out["small_base_power"] = (parse("def f(w, g, step, lr, b=1e-08, h=0.5):\n    return lr * g * "
                                     "(b ** step / b ** (step - 1) + 1e-05 ** h * 316.2)\n"), params, grads)
    for case, expr in NAN_CASES.items():
        out[case] = (parse(f"def f(w, g, lr):\n    hole = 0 / (g * (g > 0))\n    return lr * ({expr})\n"),
                     params, grads)
    return out


# nan reaches the update wherever numpy's ops give it (``hole`` is nan where g <= 0, 0 elsewhere):
# Triton's maximum and minimum returned the other operand and its max-reduction skipped a nan;
# torch.compile (2.13) turned ``x * 0``, the int 0 of the printed program, into zeros
NAN_CASES = {"nan_max": "max(g, hole)", "nan_min": "min(hole, 1)",
             "nan_clip": "clip(lr, hole) + clip(hole, lr)",
             "nan_clamp": "clamp(hole, -1, 1) + clamp(g, hole, 1)", "nan_amax": "amax(hole) + g",
             "nan_times_zero": "1 / (g * (g > 0)) * 0 + g"}


# Two-argument reductions of values of different shapes: each term is summed over its own values
# (cosine_sim(g, lr) adds lr * lr once; a row value's square once per row), the product x * y
# broadcasts as elsewhere. The torch target raised for a row or column value beside a full one
# (no axis added) and the Triton kernels summed lr * lr and a row's square once per element.
MIXED_REDUCTIONS = """
def mixed(w, g, r: row, c: col, s: scalar, lr):
    s = interp(mean(g * g), s, 0.9)
    u = cosine_sim(g, lr) * g + dot(g, 0.5) * 0.01 + cosine_sim(s, g) + cosine_sim(w, s + g)
    if ndim(w) >= 2:
        r = rowmean(g * g)
        c = colmean(g)
        u = u + cosine_sim(g, r) * g + dot(w, c) + cosine_sim(c, g * c) + cosine_sim(r, r + 1)
    return lr * u, r, c, s
"""


EMPTY_AND_0D = """def f(w, g, m, lr):
    m = interp(g, m, 0.9)
    u = m / max(0.001, global_norm(m)) + global_norm(0.5) * 0.01
    return lr * u, m
"""


SHAPE_TEST_IN_GLOBAL = """def f(w, g, lr):
    return lr * g * global_norm(where(ndim(w) > 2, 2 * g, where(ndim(w) == 2, 3 * g, 0.5)))
"""


# Shape facts in arithmetic, whose parentheses the torch target once dropped (`g * (ndim(w) - 1)`
# printed as `g * w.ndim - 1`) and whose per-tensor values its eager step once kept as Python ints
# and bools that torch's multi-tensor ops refuse.
SHAPE_ARITHMETIC = """def f(w, g, m, lr):
    a = ndim(w) + 1
    b = g * (ndim(w) - 1) + g / (size(w) + 1) + g / (1 + dim(w, -1))
    c = g * (dim(w, -1) - dim(w, 0)) + (ndim(w) + size(w)) * 0.01
    d = g * (ndim(w) >= 2) + g * (2 - (size(w) > 4)) + (ndim(w) + size(w) + dim(w, -1) + dim(w, 0)) * 0.001
    m = interp(g * a, m, 0.5)
    return lr * (b + c + d + m), m
"""


def check(results: dict, case: str) -> None:
    program, params, grads = cases()[case]
    ref = run_interpreter(program, params, grads, 0.1)
    for k in ref:
        np.testing.assert_allclose(np.asarray(results[k], np.float32), ref[k], rtol=1e-5, atol=1e-6,
                                   err_msg=f"{case}: {k}")


def test_the_ieee_case_really_holds_inf_and_nan():
    program, params, grads = cases()["ieee_constants"]
    update = -run_interpreter(program, params, grads, 1.0)["w"]
    np.testing.assert_array_equal(update, np.float32([v for _, v in IEEE]))


@pytest.mark.parametrize("case", ["paper_program3", "paper_program4", "printer_names", "ieee_constants",
                                  "shape_arithmetic", "empty_and_0d", "mixed_reductions", "mixed_logic",
                                  "shape_test_in_global",
                                  "inf_through_log1p", "where_side_counted", "small_base_power", *NAN_CASES])
@pytest.mark.parametrize("target", ["torch", "jax"])
def test_targets_compute_what_the_interpreter_computes(target, case):
    program, params, grads = cases()[case]
    check({"torch": run_torch, "jax": run_jax}[target](program, params, grads, 0.1), case)


def test_the_nan_cases_really_hold_nan():
    for case in NAN_CASES:
        program, params, grads = cases()[case]
        update = run_interpreter(program, params, grads, 0.1)["b"]
        assert np.isnan(update).any(), case


@pytest.mark.parametrize("case", list(NAN_CASES))
@pytest.mark.parametrize("backend", ["compiled", "cpp"])
def test_nan_reaches_the_update_on_the_fused_backends(backend, case):
    program, params, grads = cases()[case]
    if backend not in codegen.build(program, "torch")._program.backends and backend != "compiled":
        pytest.skip("no C++ kernel: the program reduces")
    check(run_torch(program, params, grads, 0.1, backend=backend), case)


@pytest.mark.parametrize("case", ["shape_arithmetic", "empty_and_0d", "mixed_reductions",
                                  "shape_test_in_global"])
def test_shape_cases_on_the_compiled_backend(case):
    """The compiled step once crashed on a 0-d parameter with a full state (the state kept 0-d, its
    new value flat); the interpreter and JAX counted an empty tensor in ``global_norm(0.5)``, the
    torch steps (which skip it) did not."""
    program, params, grads = cases()[case]
    check(run_torch(program, params, grads, 0.1, backend="compiled"), case)


# Shape arithmetic where Python's own, on the shape facts' ints, is not IEEE float64 as the
# interpreter computes it: the torch target raised OverflowError (2 ** 2000), ZeroDivisionError
# (% and // by 0, a shape test dividing by 0), returned a complex number ((-n) ** 0.5) or hung in
# a big-int power (dim ** dim ** 50); both targets lost the sign of -(n - n) and so the sign of
# g / -0.0; JAX refused sqrt() in a shape test and forgot the temporaries of cube(cube(...)).
# Where plain Python would not do, both computed the rest in float32 (torch in the parameter's
# dtype, JAX unless jax_enable_x64 is on): 1e30 * size(w) * 1e10 / 1e39 was inf / inf, and JAX's
# 2 ** size(w) > 1e300 was false for 2000 elements.
SHAPE_IEEE = [
    "return lr * g * 2 ** size(w)",
    "return lr * g * (size(w) % (size(w) - 6))",
    "return lr * g * (size(w) // (ndim(w) - 1))",
    "return lr * g * (-size(w)) ** 0.5",
    "return lr * g * (1 / (size(w) - 6))",
    "return lr * g * 0.0 ** (dim(w, 0) ** dim(w, -1) ** 50)",
    "return lr * g / -(size(w) - size(w))",
    "return lr * g * cube(cube(cube(cube(cube(size(w))))))",
    "return lr * where(size(w) % (size(w) - 6) > 3, g, -g)",
    "if 1 / (size(w) - 6) > 0:\n        g = -g\n    return lr * g",
    "if sqrt(size(w)) > 3 and 2 ** size(w) > 1e300:\n        g = -g\n    return lr * g",
    "return lr * g * (1e30 * size(w) * 1e10 / 1e39)",
    "if ndim(w) >= 2 and not 1 / (size(w) - 6) > 0 or ndim(w) == 0:\n        g = -g\n    return lr * g",
    "return lr * g * sign(size(w) - 6) * (1 / dim(w, 0))",
    # a name bound to a shape test's truth, then divided by: JAX's 1 / 0.0 raised ZeroDivisionError
    # (a searched Adafactor's `v = reciprocal(factored)`)
    "big = min(dim(w, -1), size(w)) >= 128\n    return lr * g * reciprocal(big)",
    # `and`/`or` compared: a truth, 1 or 0, where Python's `a and b` is b (both targets took 2 > 1)
    "return lr * where((ndim(w) and ndim(w)) > (ndim(w) >= -1), 1.5, g)",
    "return lr * where((size(w) or ndim(w)) == 1, 1.5, g) + where(not ndim(w) < (ndim(w) or size(w)), g, 2)",
    # a test too long for one line, laid out one part a line: JAX's lost the parentheses of its first
    # part, `(a if c else b) and d` read as `a if c else (b and d)`
    "return lr * where(where(size(w), ndim(w) - 2, ndim(w)) and (ndim(w) - 2) - (ndim(w) - 2), -g, g)",
    # an update that is a shape fact, one number per tensor as a constant is one for all: `check`
    # refused it, though folding made it of valid programs (`... + where(0.5, 0.5, g)` folds to 0.5)
    "return where(ndim(w) >= 2, 0.5, 0.9) + 1 / (size(w) + 1)",
    # shape arithmetic too wide for one line of the eager group step was cut into pieces, each rounded
    # to w's dtype: exp(200) / exp(199) was inf / inf in float32 (found by an audit of the Triton target)
    "return lr * g * (exp(size(w) / 10) / exp(size(w) / 10 - 1))",
]
SHAPES = {"a": (6,), "b": (2, 3), "c": (2000,), "d": (2, 0)}


@functools.cache
def shape_ieee_draws():
    rng = np.random.default_rng(1)
    return ({k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()},
            [{k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}])


@pytest.mark.parametrize("body", SHAPE_IEEE)
@pytest.mark.parametrize("target", ["torch", "jax"])
def test_shape_arithmetic_is_ieee_float64_on_every_target(target, body):
    program = parse(f"def f(w, g, lr):\n    {body}\n")
    params, grads = shape_ieee_draws()
    ref = run_interpreter(program, params, grads, 0.1)
    ours = {"torch": run_torch, "jax": run_jax}[target](program, params, grads, 0.1)
    for k in ref:
        np.testing.assert_allclose(np.asarray(ours[k], np.float32), ref[k], rtol=1e-5, atol=1e-6,
                                   err_msg=body)


def shape_ieee_triton_results() -> list:
    """Every :data:`SHAPE_IEEE` program's steps on the Triton backend (run by
    :func:`in_triton_interpreter`), as lists."""
    params, grads = shape_ieee_draws()
    return [{k: v.tolist() for k, v in run_triton(parse(f"def f(w, g, lr):\n    {body}\n"), params, grads,
                                                  0.1).items()} for body in SHAPE_IEEE]


def test_shape_arithmetic_is_ieee_float64_in_triton():
    """The kernel loaded a shape fact as a number of the math's dtype, so shape arithmetic ran in
    float32: ``1e30 * size(w) * 1e10 / 1e39`` and, for 2000 elements, ``exp(size(w) / 10)`` overflowed
    to inf / inf (found by an audit of the Triton target). Facts are float64 now, as lr is."""
    pytest.importorskip("triton")
    params, grads = shape_ieee_draws()
    for body, ours in zip(SHAPE_IEEE, in_triton_interpreter("test_language_on_targets",
                                                             "shape_ieee_triton_results")):
        ref = run_interpreter(parse(f"def f(w, g, lr):\n    {body}\n"), params, grads, 0.1)
        for k in ref:
            np.testing.assert_allclose(np.asarray(ours[k], np.float32), ref[k], rtol=1e-5, atol=1e-6,
                                       err_msg=body)


@pytest.mark.parametrize(("backend", "source"), [
    # (not g / -(n - n): the compiled step's dynamic sizes are symbolic, and -(n - n) folds to 0 there)
    ("compiled", ("def f(w, g, lr):\n    if 1 / (size(w) - 6) > 0:\n"
                  "        g = g * (size(w) % (size(w) - 6))\n"
                  "    return lr * g * 2 ** size(w) / (size(w) // (ndim(w) - 1))\n")),
    # a name bound to a shape fact is a Python float in the compiled step's code; a test of it printed
    # as float64 tensor arithmetic took `(n >= 2).to(...)` of a bool (a searched Adafactor's)
    ("compiled", ("def f(w, g, lr):\n    n = ndim(w)\n    b = n >= 2\n    c = b * 3 + n\n"
                  "    d = 1 / (size(w) - 6)\n    k = d * b + (n and 2) - (c > 3)\n"
                  "    return lr * (g + b + c * g + k)\n")),
    # v + sqrt(1 / size(w)) (v one number per tensor) reached the printer's `x + y * c` folding, which
    # unpacked sqrt's one argument as two: ValueError while the module was generated (an Amos mutant's)
    ("eager", ("def f(w, g, v: scalar, lr):\n    v = interp(mean(g * g), v, 0.9)\n"
               "    return lr * g / (v + sqrt(1 / size(w))), v\n")),
])
def test_shape_arithmetic_on_one_backend(backend, source):
    program = parse(source)
    params, grads = shape_ieee_draws()
    ref = run_interpreter(program, params, grads, 0.1)
    ours = run_torch(program, params, grads, 0.1, backend=backend)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("target", ["torch", "jax"])
def test_an_axis_a_parameter_lacks_is_named_at_the_step(target):
    program = parse("def f(w, g, lr):\n    return lr * dim(w, 5) * g\n")
    params, grads = {"a": np.ones(3, np.float32)}, [{"a": np.ones(3, np.float32)}]
    with pytest.raises(ValueError, match=r"dim\(w, 5\) asks for an axis a parameter of shape \(3,\) does not have"):
        {"torch": run_torch, "jax": run_jax}[target](program, params, grads, 0.1)


@pytest.mark.parametrize("source", [
    ("def f(w, g, r: row, lr):\n    r = interp(rowmean(g * g), r, 0.9)\n"
    "    return lr * g / (sqrt(mean(r)) + 1e-8), r\n"),
    ("def f(w, g, r: row, lr):\n    if ndim(w) >= 2:\n        r = rowmean(g)\n"
    "    return lr * (g + 0 * r), r\n"),
])
@pytest.mark.parametrize("target", ["torch", "jax"])
def test_a_program_that_needs_2_axes_refuses_a_1d_parameter_on_every_target(target, source):
    """JAX ran the first on a 1-d parameter (its axis -1 mean is a number) and failed inside the
    second with an IndexError; the interpreter and torch refuse both."""
    program = parse(source)
    params, grads = {"a": np.ones(3, np.float32)}, [{"a": np.ones(3, np.float32)}]
    with pytest.raises(DslError):
        run_interpreter(program, params, grads, 0.1)
    with pytest.raises(ValueError, match=r"needs parameters with 2 or more axes here, got shape \(3,\)"):
        {"torch": run_torch, "jax": run_jax}[target](program, params, grads, 0.1)
    matrix = {"a": np.ones((2, 3), np.float32)}
    ours = {"torch": run_torch, "jax": run_jax}[target](program, matrix, [matrix], 0.1)["a"]
    np.testing.assert_allclose(ours, run_interpreter(program, matrix, [matrix], 0.1)["a"], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["paper_program3", "paper_program4", "printer_names", "ieee_constants"])
def test_cpp_kernels_compute_what_the_interpreter_computes(case):
    """The torch target's C++ kernels, where the program has them (elementwise programs only)."""
    program, params, grads = cases()[case]
    if "cpp" not in codegen.build(program, "torch")._program.backends:
        assert any(cpp_target.supports(p.program) for p in torch_target.paths(program)[2])
        pytest.skip("no C++ kernel: the program reduces")
    check(run_torch(program, params, grads, 0.1, backend="cpp"), case)


@pytest.mark.parametrize("target", ["torch", "jax", "triton"])
def test_the_deepest_expressions_the_parser_allows_compile(target):
    # The parser's nesting limit must keep every later stage clear of RecursionError and of
    # Python's own limits (a 300-term sum once gave "too many nested parentheses").
    d = MAX_DEPTH - 1  # `lr * (...)` is one level
    for expr in (" + ".join(["g"] * d), "sign(" * (d - 1) + "g" + ")" * (d - 1)):
        compile(codegen.emit(parse(f"def f(w, g, lr):\n    return lr * ({expr})\n"), target), target, "exec")


# interp(x, y, a) = (1 - a) x + a y: 1 - a in float32 keeps 4 digits of 1 - 0.999 (0.00099998713)
WEIGHT_NEAR_ONE = ("def f(w, g, v, u, lr, beta=0.999):\n    v = interp(g * g, v, 0.999)\n"
                   "    u = interp(g * g, u, beta)\n    return lr * (v + u), v, u\n")


def weight_near_one_results(backend: str) -> list:
    """One step of :data:`WEIGHT_NEAR_ONE` from w = 0 (so w's own rounding hides nothing): the
    step's new w on ``backend``, and the interpreter's."""
    program = parse(WEIGHT_NEAR_ONE)
    params = {"a": np.zeros(64, np.float32)}
    grads = [{"a": np.random.default_rng(0).normal(size=64).astype(np.float32)}]
    run = {"jax": run_jax, "triton": run_triton}.get(backend) or functools.partial(run_torch, backend=backend)
    return [run(program, params, grads, 1.0)["a"].tolist(),
            run_interpreter(program, params, grads, 1.0)["a"].tolist()]


@pytest.mark.parametrize("backend", ["eager", "compiled", "cpp", "jax"])
def test_interp_takes_one_minus_its_weight_in_float64(backend):
    """As the interpreter (and torch.optim, in Python floats) does: the cpp kernels computed
    ``T(1) - T(0.999)`` and stepped 1.8e-4 off."""
    ours, ref = weight_near_one_results(backend)
    np.testing.assert_allclose(ours, ref, rtol=2e-7)


def triton_results() -> dict:
    """Every case on the Triton backend (run by :func:`in_triton_interpreter`), as lists; not those
    with global reductions, which the backend does not run."""
    global_cases = ("empty_and_0d", "shape_test_in_global")
    out = {case: {k: v.tolist() for k, v in run_triton(p, params, grads, 0.1).items()}
           for case, (p, params, grads) in cases().items() if case not in global_cases}
    return {**out, "weight_near_one": weight_near_one_results("triton")}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["eager", "compiled", "cpp"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mod_and_floordiv_are_numpys_to_the_bit(backend, dtype):
    """An audit found ``x - y floor(x / y)`` (cpp, and inductor's lowering of torch.remainder) and
    ``floor(x / y)``: float32 ``1e10 % 3`` was 256 and 0, ``1 // 0.1`` 10 (numpy: 1 and 9), ``3 % inf``
    nan; and eager's ``1 % -1`` 0.0 (numpy -0.0). The states hold g % w and g // w, sign bits too."""
    program = parse("def f(w, g, m: full(keep=True), k: full(keep=True), lr=1.0):\n"
                    "    return 0 * g, g % w, g // w\n")
    special = [1.0, 0.3, 1e10, 1e30, 3.0, np.inf, -np.inf, -0.0, 0.0, -1.0, 7.5, -7.5, 2.0, np.nan, 0.1]
    g, w = (np.array(x, dtype) for x in zip(*itertools.product(special, repeat=2)))
    interp = Interpreter(program, dtype)
    _, state = interp.updates({"w": w}, {"w": g}, interp.init({"w": w}), 1)
    param = torch.nn.Parameter(torch.tensor(w))
    param.grad = torch.tensor(g)
    opt = codegen.build(program, "torch")([param], backend=backend)
    opt.step()
    for name in ("m", "k"):
        got, want = opt.state[param][name].numpy(), state["w"][name]
        np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(np.signbit(got[got == 0]), np.signbit(want[want == 0]), err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["%", "//"])
def test_mod_and_floordiv_are_numpys_to_the_bit_in_jax(op, dtype):
    """jnp.mod gave ``-0.0 % 3`` and ``-3 % 3`` as -0.0 and jnp.floor_divide ``-0.0 // 3`` as 0.0
    (numpy 0.0 and -0.0), with jit and without: a zero whose reciprocal is an inf of the wrong sign."""
    jax = pytest.importorskip("jax")
    program = parse(f"def f(w, g, lr=1.0):\n    return lr * (g {op} w)\n")
    special = [1.0, 0.3, 1e10, 1e30, 3.0, np.inf, -np.inf, -0.0, 0.0, -1.0, 7.5, -7.5, 2.0, np.nan, 0.1]
    g, w = (np.array(x, dtype) for x in zip(*itertools.product(special, repeat=2)))
    interp = Interpreter(program, dtype)
    with np.errstate(all="ignore"):
        want = interp.updates({"w": w}, {"w": g}, interp.init({"w": w}), 1)[0]["w"]
    with jax.enable_x64(dtype == np.float64):
        tx = codegen.build(program, "jax")()
        params, grads = {"w": jax.numpy.asarray(w)}, {"w": jax.numpy.asarray(g)}
        for update in (tx.update, jax.jit(tx.update)):
            got = -np.asarray(update(grads, tx.init(params), params)[0]["w"])  # (optax's updates: -step)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.signbit(got[got == 0]), np.signbit(want[want == 0]))


def test_triton_computes_what_the_interpreter_computes():
    pytest.importorskip("triton")
    results = in_triton_interpreter("test_language_on_targets", "triton_results")
    ours, ref = results.pop("weight_near_one")
    # a hyperparameter's 1 - beta is a kernel argument the host computes (beta itself is a float32
    # argument: 0.99900001287, whose complement was 1.3e-5 off), a number's is the literal `1.0 - 0.999`
    np.testing.assert_allclose(ours, ref, rtol=2e-7)
    for case, result in results.items():
        check(result, case)


@pytest.mark.parametrize("name", ["none", "true", "false", "none_", "true_"])
def test_a_program_named_as_a_keyword_once_capitalised_compiles(name):
    """``def none(...)`` passed check and its torch class was ``class None(...)``: a module that
    did not import."""
    program = parse(f"def {name}(w, g, lr=0.1):\n    return lr * g\n")
    for target in ("torch", "jax", "triton"):
        ast.parse(codegen.emit(program, target))
    params, grads = {"w": np.ones(3, np.float32)}, [{"w": np.full(3, 2.0, np.float32)}]
    ours, ref = run_torch(program, params, grads, 0.1), run_interpreter(program, params, grads, 0.1)
    np.testing.assert_allclose(ours["w"], ref["w"])


@pytest.mark.parametrize("name", ["adafactor", "amos", "mixed_reductions"])
def test_an_empty_parameters_states_keep_their_values_on_every_target(name):
    """An empty parameter is left alone: its row, column and scalar states hold numbers, and a mean
    over its no elements would make them nan. The torch runtime skipped it; the interpreter and JAX
    stepped it, so Adafactor's column state of a (0, 5) parameter was nan there and 0 in torch."""
    program = parse(MIXED_REDUCTIONS) if name == "mixed_reductions" else load(name)
    params = {"e": np.zeros((0, 5), np.float32), "f": np.ones((2, 5), np.float32)}
    grads = [{"e": np.zeros((0, 5), np.float32), "f": np.full((2, 5), 0.5, np.float32)}] * 2
    interp = Interpreter(program, np.float32, lr=0.1)
    initial = interp.init(params)["e"]
    state = interp.init(params)
    for t, g in enumerate(grads, start=1):
        _, state = interp.step(params, g, state, t)
    kept = {"interpreter": state["e"]}
    cls = codegen.build(program, "torch")
    for backend in ("eager", "compiled", "cpp"):
        if backend not in cls._program.backends:
            continue
        ts = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
        opt = cls(list(ts.values()), lr=0.1, backend=backend)
        for g in grads:
            for k, t in ts.items():
                t.grad = torch.tensor(g[k])
            opt.step()
        kept[backend] = {s: opt.state[ts["e"]][s].numpy() for s in initial}
    tx = codegen.build(program, "jax")(learning_rate=0.1)
    jstate = tx.init(params)
    for g in grads:
        _, jstate = tx.update(g, jstate, params)
    kept["jax"] = {s: np.asarray(getattr(jstate, s)["e"]) for s in initial}  # (a field per state, its name)
    assert any(v.size for v in initial.values())  # a state that holds numbers
    for where, states in kept.items():
        assert set(states) == set(initial), where
        for s, v in states.items():
            np.testing.assert_array_equal(np.reshape(v, initial[s].shape), initial[s],
                                          err_msg=f"{where}: {s}")


@pytest.mark.parametrize("target", ["interpreter", "eager", "compiled", "jax"])
def test_an_empty_parameter_takes_no_part_in_a_global_reduction(target):
    """global_norm of one number per tensor counts the tensors: an empty one beside them must not
    change the others' steps (adding an empty parameter to a model changes nothing)."""
    program = parse("def f(w, g, lr):\n    return lr * g / global_norm(0.5) + lr * global_norm(mean(g)) * g"
                    "\n")
    rng = np.random.default_rng(3)
    base = {"a": rng.normal(size=3).astype(np.float32), "b": rng.normal(size=(2, 2)).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in base.items()} for _ in range(2)]
    runs = []
    for extra in ({}, {"e": np.zeros((0, 4), np.float32)}):
        params = {**base, **extra}
        steps = [{**g, **{k: np.zeros(v.shape, np.float32) for k, v in extra.items()}} for g in grads]
        if target == "interpreter":
            out = run_interpreter(program, params, steps, 0.1)
        elif target == "jax":
            out = run_jax(program, params, steps, 0.1)
        else:
            out = run_torch(program, params, steps, 0.1, backend=target)
        runs.append({k: np.asarray(out[k]) for k in base})
    for k in base:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)
