"""The torch target against the interpreter where its printed step once read a value too late or
could not run: a new state that is another input's old value (``m_prev <- m``, heavy ball's
``prev <- w``, a narrower state broadcast into a wider one), ``//`` and ``%`` with a Python number
on either side, generated names beside a program's own (a state ``u``), and a literal beyond
float32's range given to a state. Eager for each case, compiled for a few (each compile takes
seconds)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import codegen
import optdsl
from codegen import torch_target


def _data(shapes, steps, dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)}
    grads = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()} for _ in range(steps)]
    return params, grads


def _assert_matches_interpreter(src, shapes, backend, dtype=np.float64, steps=3, tol=1e-12):
    """The torch optimizer's params and states after ``steps`` steps on ``backend`` equal the
    interpreter's (nan and inf where it has them)."""
    program = optdsl.parse(src)
    params, grads = _data(shapes, steps, dtype)
    interp = optdsl.Interpreter(program, dtype=dtype)
    want, state = dict(params), interp.init(params)
    for t, g in enumerate(grads, start=1):
        want, state = interp.step(want, g, state, t)
    ts = [torch.tensor(v) for v in params.values()]
    opt = codegen.build(program, "torch")(ts, backend=backend)
    for g in grads:
        for x, k in zip(ts, params):
            x.grad = torch.tensor(g[k])
        opt.step()
    for x, k in zip(ts, params):
        np.testing.assert_allclose(x.detach().numpy(), want[k], rtol=tol, atol=tol, err_msg=k)
        for name in state[k]:
            got = opt.state[x][name].numpy()
            np.testing.assert_allclose(got, state[k][name], rtol=tol, atol=tol, err_msg=f"{k}.{name}")
    return opt


# --- a new state reads the inputs as the step found them ----------------------------------------
ORDER = {
    "m_prev <- m": (
        "def f(w, g, m, m_prev, lr=0.1, beta=0.9):\n    return lr * (m - m_prev + g), interp(g, m, beta), m\n"
    ),
    "heavy ball, prev <- w": (
        "def f(w, g, prev: full(init=w), lr=0.1, beta=0.9):\n    return lr * g - beta * (w - prev), w\n"
    ),
    "full b <- scalar a": "def f(w, g, a: scalar, b, lr=0.1):\n    return lr * (b + g), mean(g * g), a\n",
    "full m <- row r": "def f(w, g, r: row, m, lr=1.0):\n    return lr * (m + g), r + rowmean(g), r\n",
    "full m <- col c": "def f(w, g, c: col, m, lr=1.0):\n    return lr * (m + g), c + colmean(g), c\n",
    "col c <- scalar a": "def f(w, g, a: scalar, c: col, lr=1.0):\n    return lr * (c + g), a + mean(g), a\n",
    # a chain of views: full a <- row r <- scalar s (the copies ranked row as wide as full: r was
    # written before a read it)
    "full a <- row r <- scalar s": (
        "def f(w, g, r: row, a, s: scalar, lr=0.01):\n    return lr * g + a, s, r, mean(g)\n"
    ),
    "a and b swap": "def f(w, g, a: full(init=w), b, lr=0.1):\n    return lr * (a - b + g), b, a\n",
    "prev <- w beside a global norm": (
        "def f(w, g, prev: full(init=w), lr=0.1, beta=0.9):\n    g = g * min(1, 1 / global_norm(g))\n"
        "    return lr * g - beta * (w - prev), w\n"
    ),
}
SHAPES = [(2, 4), (3, 2)]


@pytest.mark.parametrize("case", ORDER)
def test_a_new_state_reads_the_old_value_on_the_eager_backend(case):
    """Each was off from the second step: the new values were copied in after the parameter (or
    another state) had been written, a value that was an input or a view of one reading the new
    tensor (the group step's broadcast of a narrower state; the per-tensor step of a program with a
    global reduction, which the eager backend runs)."""
    _assert_matches_interpreter(ORDER[case], SHAPES, "eager")


COMBINED = (
    "def f(w, g, m, m_prev, prev: full(init=w), a: scalar, b, r: row, n, lr=0.1, beta=0.9):\n"
    "    return lr * (m - m_prev + b + n + g) - beta * (w - prev), interp(g, m, beta), m, w, mean(g * g), a,"
    " rowmean(g), r\n"
)


@pytest.mark.parametrize("src", [COMBINED, ORDER["prev <- w beside a global norm"]], ids=["states", "global"])
def test_a_new_state_reads_the_old_value_on_the_compiled_backend(src):
    """The compiled step copied ``w`` into prev after writing w (momentum vanished), m into m_prev
    after updating m, a's broadcast into b after writing a; torch 2.13's inductor also drops a
    clone of an input the graph then writes, so such a path's step returns its values."""
    _assert_matches_interpreter(src, SHAPES, "compiled")


def test_a_clone_only_where_a_value_is_read_after_its_tensors_are_written():
    """Decided when the module is printed: m_prev <- m needs a copy of m when m is copied in first,
    none when m_prev is; AdamW's and Lion's steps hold no clone and step in place when compiled."""
    first = torch_target.emit(optdsl.parse(ORDER["m_prev <- m"]))
    assert _segments(first).count(".clone()") == 1 and "copied_out=(0,)" in _table(first)
    later = torch_target.emit(optdsl.parse("def f(w, g, m_prev, m, lr=0.1, beta=0.9):\n"
                                           "    return lr * (m - m_prev + g), m, interp(g, m, beta)\n"))
    assert ".clone()" not in _segments(later) and "copied_out" not in _table(later)
    for name in ("adamw", "lion"):
        text = torch_target.emit(optdsl.load(name))
        assert ".clone()" not in _segments(text) and "copied_out" not in _table(text)


def _table(text):
    """A generated module's ``_PROGRAM = _Program(...)`` and what follows it."""
    return text[text.index("_PROGRAM = _Program("):]


def _segments(text):
    """The text of a generated module's per-tensor step functions (``_path<k>_segment<j>``)."""
    return "".join(re.findall(r"\ndef _path\d+_segment\d+\(.*?(?=\n\n\n)", text, re.DOTALL))


# --- // and % with a Python number ---------------------------------------------------------------
DIVISIONS = ["g // 3", "g % 3", "2 // g", "1 % g", "g // h", "g % h", "h // g", "g // 0", "0 * (g % 0)"]


@pytest.mark.parametrize("expr", DIVISIONS)
def test_floor_division_and_mod_take_a_number_on_either_side(expr):
    """``g // 3`` raised TypeError (torch.where of a Python bool) in the step."""
    src = f"def f(w, g, lr=0.1, h=3.0):\n    return lr * ({expr})\n"
    for dtype in (np.float64, np.float32):
        _assert_matches_interpreter(src, [(5,), (2, 3)], "eager", dtype=dtype, tol=1e-6)


def test_floor_division_and_mod_by_numbers_compiled():
    src = "def f(w, g, lr=0.1, h=3.0):\n    return lr * (g // 3 + g % 3 + 2 // g + 1 % g + g // h + h // g)\n"
    _assert_matches_interpreter(src, [(5,), (2, 3)], "compiled")


# --- generated names never take a program's ----------------------------------------------------
NAMES = {
    "a state u beside 1 - beta ** step": (
        "def f(w, g, u, step, lr=0.1, beta=0.9):\n"
        "    return lr * u / (1 - beta ** step), interp(g, u, beta)\n"
    ),
    "a state u beside exp2(lr)": (
        "def f(w, g, s: scalar, u, lr=0.1):\n    return lr * u + s, exp2(lr), g * g\n"
    ),
    "a temporary u_1": (
        "def f(w, g, u, step, lr=0.1, beta=0.9):\n    u_1 = interp(g, u, beta)\n"
        "    return lr * u_1 / (1 - beta ** step), u_1\n"
    ),
    "a hyperparameter u_1": (
        "def f(w, g, u, step, lr=0.1, beta=0.9, u_1=2.0):\n"
        "    return lr * u * u_1 / (1 - beta ** step), interp(g, u, beta)\n"
    ),
    "a state t beside a temporary t_1": (
        "def f(w, g, t, step, lr=0.1, beta=0.9):\n    t_1 = 1 - beta ** step\n"
        "    return lr * (t + g * g * w) / t_1, interp(g, t, beta)\n"
    ),
}


@pytest.mark.parametrize("case", NAMES)
def test_generated_names_never_take_the_programs(case):
    """A state ``u`` got its new value under ``u_1``, the name of the hoisted per-step value the
    update read: the eager step raised (``alpha`` given a list) or read the wrong value."""
    _assert_matches_interpreter(NAMES[case], [(4,), (2, 3)], "eager")


def test_generated_names_never_take_the_programs_compiled():
    _assert_matches_interpreter(NAMES["a state u beside 1 - beta ** step"], [(4,), (2, 3)], "compiled")


# --- a state given a number beyond float32's range -------------------------------------------------
BIG = ["return lr * min(k, 1), 1e39", "return lr * k, -1e300", "return lr * min(k, 1), size(w) * 1e38"]


@pytest.mark.parametrize("body", BIG)
def test_a_number_beyond_float32_is_inf_in_a_float32_state(body):
    """torch.full raised "value cannot be converted to type float without overflow" at the step;
    the float32 interpreter's cast gives inf (float64 keeps the number)."""
    src = f"def f(w, g, k, lr=0.1):\n    {body}\n"
    opt = _assert_matches_interpreter(src, [(4,), (2, 3)], "eager", dtype=np.float32, tol=1e-6)
    assert all(torch.isinf(state["k"]).all() for state in opt.state.values())
    opt = _assert_matches_interpreter(src, [(4,), (2, 3)], "eager", dtype=np.float64)
    assert all(torch.isfinite(state["k"]).all() for state in opt.state.values())


def test_a_hyperparameter_beyond_float32_leaves_the_others_as_they_are():
    """One inf hyperparameter (``max_norm=inf``: no clipping) made the eager step round every one to
    float32 first, so that its ``1 - beta2`` was float32(1) - float32(0.999), 1.3e-5 off (an audit)."""
    program = optdsl.parse("def f(w, g, v, lr=0.1, beta2=0.999, big=inf):\n    v = interp(g * g, v, beta2)\n"
                           "    return lr * clip(g, big) / (sqrt(v) + 1e-8), v\n")
    params, grads = _data([(4,), (2, 3)], 1, np.float32)
    interp = optdsl.Interpreter(program, dtype=np.float32)
    _, want = interp.updates(params, grads[0], interp.init(params), 1)
    ts = [torch.tensor(v) for v in params.values()]
    opt = codegen.build(program, "torch")(ts, backend="eager")
    for x, k in zip(ts, params):
        x.grad = torch.tensor(grads[0][k])
    opt.step()
    for x, k in zip(ts, params):
        np.testing.assert_allclose(opt.state[x]["v"].numpy(), want[k]["v"], rtol=2.4e-7, atol=0)


def test_a_number_beyond_float32_compiled():
    _assert_matches_interpreter("def f(w, g, k, lr=0.1):\n    return lr * min(k, 1), 1e39\n", [(4,), (2, 3)],
                                "compiled", dtype=np.float32, tol=1e-6)
