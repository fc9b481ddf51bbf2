"""The eager backend's economy: its step runs in cache-sized chunks (large elementwise tensors
sliced) and its printed group functions make few passes and temporaries. Everything is checked
against the reference interpreter, never timed."""

from __future__ import annotations

import copy
import re
import sys

import numpy as np
import pytest
import torch
from test_random_programs import LR, SEEDS, close, programs
from trajectories import run_interpreter

import codegen
import optdsl
from codegen.runtime.torch_optimizer import _chunks, _interp_lists, _numbers, _pick, _which
from codegen.torch_target import _Module
from optdsl import DslError, Interpreter, parse


def _rows(n_elements, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.zeros(int(n)) for n in torch.randint(1, n_elements, (5,), generator=g)]


@pytest.mark.parametrize("sliceable", [True, False, "rows"])
@pytest.mark.parametrize("seed", range(4))
def test_chunks_cover_every_element_once_through_views(sliceable, seed):
    params = _rows(40, seed)
    params.append(torch.zeros(6, 5).t())  # not contiguous: never sliced
    params.append(torch.zeros(9, 7))  # "rows": blocks of 2 whole rows
    states = [torch.zeros_like(p) for p in params]
    chunks = _chunks([params, states], 16, sliceable)
    assert [i for _, index in chunks for i in index] == sorted(i for _, index in chunks for i in index)
    for (ps, ss), index in chunks:
        assert len(ps) == len(ss) == len(index) and [p.shape for p in ps] == [s.shape for s in ss]
        sizes = [p.numel() for p in ps]
        assert sum(sizes[:-1]) < 16 or len(ps) == 1  # a chunk closes as soon as it holds 16
        for p, s, i in zip(ps, ss, index):
            assert p.untyped_storage().data_ptr() == params[i].untyped_storage().data_ptr()  # its parameter's
            p.add_(1.0)
            s.sub_(1.0)
            if not sliceable:
                assert any(p is q for q in params)  # whole tensors only
            if sliceable == "rows" and i == len(params) - 1:
                assert p.shape == (2 if p.numel() > 7 else 1, 7)
    for p, s in zip(params, states):
        assert torch.equal(p, torch.ones_like(p)) and torch.equal(s, -torch.ones_like(s))


def test_a_model_within_one_chunk_is_one_chunk_of_its_own_tensors():
    params = [torch.zeros(5), torch.zeros(2, 3), torch.zeros(0)]
    states = [torch.zeros_like(p) for p in params]
    [(columns, index)] = _chunks([params, states], 11, True)
    assert index == [0, 1, 2] and all(a is b for a, b in zip(columns[0] + columns[1], params + states))


_NUMBERS = [0.0, -0.0, 1.0, -3, 1e-8, 1 / 3, 0.999, 1e-45, -2.5e-40, 1e30, 1e39, 1e300, float("inf"),
            float("-inf"), float("nan")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_numbers_as_tensors_give_the_bits_of_python_numbers(dtype, op):
    """The group functions hand add/sub/mul/div their numbers through _numbers (0-d tensors on a
    CPU, for speed): the bits equal those of the Python number, in place and not, for zeros of
    either sign, subnormals, numbers beyond float32, infinities and nan."""
    xs = [torch.tensor([1e-38, -3.0, 0.0, -0.0, 7.5, float("inf"), float("nan"), 1e-45], dtype=dtype),
          torch.tensor(2.0, dtype=dtype), torch.zeros(0, dtype=dtype)]
    n = _numbers(xs, dtype)
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    for c in _NUMBERS:
        want = getattr(torch, f"_foreach_{op}")(xs, c)
        got = getattr(torch, f"_foreach_{op}")(xs, n(c))
        into = [x.clone() for x in xs]
        getattr(torch, f"_foreach_{op}_")(into, n(c))
        for w, a, b in zip(want, got, into):
            assert torch.equal(w.view(bits), a.view(bits)) and torch.equal(w.view(bits), b.view(bits)), (op, c)
    assert n(-0.0)[0].signbit() and not n(0.0)[0].signbit()
    assert n(1e39) == 1e39 if dtype == torch.float32 else n(1e39)[0] == 1e39
    assert n("x") == "x" and n(True) is True  # (not numbers: as they are)
    assert _numbers([torch.empty(2, device="meta")], dtype)(0.5) == 0.5  # an accelerator's kernels take numbers


_PICKS = [torch.tensor([1.0, -2.0]), torch.tensor(3.0), torch.tensor([[1.0, 2.0]]),
          torch.tensor([5, 6]), torch.tensor([1.0, 2.0], dtype=torch.float64), 0, 2.5]


@pytest.mark.parametrize("a", range(len(_PICKS)))
@pytest.mark.parametrize("b", range(len(_PICKS)))
@pytest.mark.parametrize("c", [0.0, 1.0, float("nan")])
def test_pick_is_torch_where_on_a_tensors_condition(a, b, c):
    """_pick(c, a, b) has torch.where's value, shape and dtype, whatever broadcasts (a number, a 0-d
    tensor, a row against a matrix, integer and float64 tensors); where it hands back an argument,
    that is the one selected."""
    x, y, cond = _PICKS[a], _PICKS[b], torch.tensor(c)
    expected = torch.where(cond != 0, x, y)
    got = _pick(cond, x, y)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.equal(got, expected)
    if got is x or got is y:
        assert got is (x if c != 0 else y)


@pytest.mark.parametrize("a", [0.0, 1e-4, 0.001, 0.3, 0.5, 0.7, 0.999, 0.9999, 1.0])
@pytest.mark.parametrize("into", [None, "x", "y"])
def test_interp_of_lists_is_float32_rounding_of_the_float64_average(a, into):
    """``_interp_lists`` (the eager ``interp`` with a number weight) keeps each result within an ulp
    or two of (1 - a) x + a y computed in float64, an end at 0 included (a zero gradient): torch's
    lerp with a weight of 0.999 gave 1 - 0.999 = 0.00099998713 (1.3e-5 off; 1.7e-4 at 0.9999)."""
    x = [torch.tensor([0.0, 1.0, -3.0, 2.5e-3]), torch.tensor([0.0, 7.0])]
    y = [torch.tensor([1.0, 0.0, 5.0, -4.0e3]), torch.tensor([3.0, 0.0])]
    want = [(1 - a) * u.double() + a * v.double() for u, v in zip(x, y)]
    xs, ys = [u.clone() for u in x], [v.clone() for v in y]
    out = _interp_lists(xs, ys, a, into={"x": xs, "y": ys, None: None}[into])
    if into:  # written in place, and handed back
        assert out is {"x": xs, "y": ys}[into]
    for got, w in zip(out, want):
        np.testing.assert_allclose(got.double().numpy(), w.numpy(), rtol=2.5e-7, atol=0)
    untouched = {"x": (ys, y), "y": (xs, x), None: None}[into]
    for got, was in zip(*untouched) if untouched else ():
        assert torch.equal(got, was)


def _with_chunk(cls, size):
    """The generated module of ``cls`` with its eager chunk size set to ``size`` (restored by the caller)."""
    module = sys.modules[cls.__module__]
    old, module._CHUNK = module._CHUNK, size
    return module, old


def _run_eager_in_chunks(program, params, grads, size, lr=LR, cls=None, states=False, **hyper):
    """Params after the eager steps on ``grads`` in chunks of ``size`` (``p_t``, if any, strided;
    ``lr=None``: the program's default; ``cls``: the program's class, if built; ``states``: each
    state's value too, as ``"<param>.<state>"``; ``hyper``: other hyperparameters)."""
    cls = cls or codegen.build(program, "torch")
    module, old = _with_chunk(cls, size)
    try:
        ts = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        if "p_t" in params:
            ts["p_t"] = torch.tensor(params["p_t"].T.copy()).t().detach().requires_grad_()  # strided
        opt = cls(list(ts.values()), **({} if lr is None else {"lr": lr}), **hyper, backend="eager")
        for g in grads:
            for k, t in ts.items():
                t.grad = torch.tensor(g[k])
            opt.step()
    finally:
        module._CHUNK = old
    out = {k: t.detach().numpy() for k, t in ts.items()}
    if states:  # (the program's: not torch's per-parameter step count)
        out |= {f"{k}.{n}": opt.state[t][n].numpy() for k, t in ts.items() for n in program.state_names}
    return out


def _interpreter_states(program, params, grads, dtype, **hyper):
    """The interpreter's params and states after its steps on ``grads``, named as
    ``_run_eager_in_chunks(..., states=True)`` names them."""
    interp = Interpreter(program, dtype=dtype, **hyper)
    params, state = dict(params), interp.init(params)
    for t, g in enumerate(grads, start=1):
        params, state = interp.step(params, g, state, t)
    return params | {f"{k}.{n}": v for k, s in state.items() for n, v in s.items()}


def _interpreter_steps(program, params, grads, dtype, **hyper):
    """Params after the interpreter's steps on ``grads`` (the program's default lr)."""
    interp = Interpreter(program, dtype=dtype, **hyper)
    params, state = dict(params), interp.init(params)
    for t, g in enumerate(grads, start=1):
        params, state = interp.step(params, g, state, t)
    return params


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_random_programs_in_tiny_chunks_agree_with_the_interpreter(index):
    """The search's random programs (and mutated AdamWs), stepped twice on the eager backend in
    chunks of 5 elements, so that tensors are sliced and chunks mix several tensors: any value
    overwritten in place while still live, or an element stepped twice, shows up here."""
    program = programs()[index]
    rng = np.random.default_rng(index)
    shapes = {"p0": (23,), "p1": (3, 7), "p2": (1,), "p_t": (4, 6)}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(2)]
    try:
        ref = run_interpreter(program, params, grads, LR)
    except DslError:
        return  # a shape test no tensor here satisfies: expected
    close(_run_eager_in_chunks(program, params, grads, 5), ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eager_sign_is_the_languages_on_special_values(dtype):
    """sign() on lists (max(sign(x), min(x, -1))) keeps nan, gives 0.0 for +-0 (numpy's sign, the
    sign bit included) and +-1 for every other value, the smallest subnormal and inf included."""
    program = parse("def s(w, g, lr=1.0):\n    return lr * sign(g)\n")
    tiny = np.finfo(dtype).smallest_subnormal
    g = np.array([np.nan, 0.0, -0.0, tiny, -tiny, 1.5, -1e30, np.inf, -np.inf], dtype=dtype)
    w0 = np.full_like(g, -0.0)  # -0.0 - sign(-0.0) keeps its sign bit only when that sign is +0.0
    w = torch.tensor(w0, requires_grad=True)
    opt = codegen.build(program, "torch")([w], backend="eager")
    w.grad = torch.tensor(g)
    opt.step()
    interp = Interpreter(program, dtype=dtype)
    ref = interp.step({"w": w0}, {"w": g}, interp.init({"w": w0}), 1)[0]["w"]
    np.testing.assert_array_equal(w.detach().numpy(), ref)
    np.testing.assert_array_equal(np.signbit(w.detach().numpy()[1:]), np.signbit(ref[1:]))


def _economy(name, variant=0):
    """Path 0's printed eager functions (its segments, then the group step, or the step printed for
    a common case, see _variants): (lists they allocate, of which per-tensor comprehensions,
    multi-tensor calls). The float32 casts of params and grads (no copy) are not counted."""
    module = _Module(optdsl.load(name), {})
    functions = [*module.eager_functions(0)[:len(module.splits[0].stages) if module.splits[0] else 0],
                 module.group_function(0, variant)]
    body = [ln.strip() for f in functions for ln in f.split("\n")[2:]]
    fresh = [ln for ln in body if re.match(r"\w+ = (torch\._foreach_\w+[^_]\(|\[)", ln)]
    fresh = [ln for ln in fresh if not re.match(r"[wg] = \[_", ln)]
    return len(fresh), sum(" for " in ln for ln in fresh), sum("torch._foreach_" in ln for ln in body)


# What the printer makes today; one more of any is a regression of the eager backend's economy.
# (AdamW's g * g was a list of its own, Lion's sign a comprehension of four per-tensor ops, each allocating: now four in-place
# multi-tensor passes.)
# (Tiger's momentum was a new list copied into m at the end: now written into m's own tensors.)
# (AdamW's and Lion's lr * x was a pass of its own before w -= it: now w -= lr x, one pass.)
# (Tiger's nan test and LAMB's trust ratio were a torch op per tensor each: now one op on the stack
# of all the tensors' numbers. Adafactor's two g * g are one.)
# (Tiger's 5th list is the zeros of its grads when every one holds a nan: printed, run only then.)
# (AdamW's and LAMB's m_hat / d + wd w were a multiply, a divide and an add: now wd w and one addcdiv.)
# (Lion's and Tiger's sign was four in-place passes: now three, one into a temporary of its own.)
ECONOMY = {"adamw": (2, 0, 11), "lion": (2, 0, 8), "tiger": (6, 2, 11), "lamb": (4, 2, 13),
           "adafactor": (9, 8, 13)}


@pytest.mark.parametrize("name", sorted(ECONOMY))
def test_printed_group_step_makes_no_more_temporaries_or_passes(name):
    made = _economy(name)
    assert all(a <= b for a, b in zip(made, ECONOMY[name])), (made, ECONOMY[name])


@pytest.mark.parametrize("source", ["v = interp(g * g, v, 0.25)", "v = interp(v * g, v, 0.25)",
                                    "t = w * g\n    v = interp(t, v, lr)"])
def test_interp_of_a_product_as_addcmul_matches_the_interpreter(source):
    """``interp(x * y, s, a)`` runs as ``s *= a; s += (1 - a) x y`` (in place unless s is x or y):
    s's old value is read before it is overwritten, in float32 and float64."""
    program = parse(f"def p(w, g, v, lr=0.5):\n    {source}\n    return lr * v, v\n")
    text = _Module(program, {}).group_function(0)
    assert "_foreach_addcmul" in text and "_foreach_lerp" not in text
    rng = np.random.default_rng(0)
    for dtype, torch_dtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        w0, g = rng.normal(size=7).astype(dtype), rng.normal(size=7).astype(dtype)
        w = torch.tensor(w0, dtype=torch_dtype, requires_grad=True)
        opt = codegen.build(program, "torch")([w], backend="eager")
        interp = Interpreter(program, dtype=dtype)
        params, state = {"w": w0}, interp.init({"w": w0})
        for t in (1, 2):
            w.grad = torch.tensor(g)
            opt.step()
            params, state = interp.step(params, {"w": g}, state, t)
        np.testing.assert_allclose(w.detach().numpy(), params["w"], rtol=1e-6)


def _three_steps(program, seed):
    """Three steps of a (3, 5) parameter on the eager backend and in the interpreter, in float32 and
    then float64: per dtype, (the parameter, its optimizer, the interpreter's params and state)."""
    rng = np.random.default_rng(seed)
    for dtype, torch_dtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        w0 = rng.normal(size=(3, 5)).astype(dtype)
        grads = [rng.normal(size=(3, 5)).astype(dtype) for _ in range(3)]
        w = torch.tensor(w0, dtype=torch_dtype, requires_grad=True)
        opt = codegen.build(program, "torch")([w], backend="eager")
        interp = Interpreter(program, dtype=dtype)
        params, state = {"w": w0}, interp.init({"w": w0})
        for t, g in enumerate(grads, start=1):
            w.grad = torch.tensor(g)
            opt.step()
            params, state = interp.step(params, {"w": g}, state, t)
        yield w, opt, params, state


@pytest.mark.parametrize(("body", "call"), [
    ("t = g * 0.75\n    q = t / (abs(w) + 0.5)\n    u = w * 0.01 + q", r"_foreach_addcdiv_\(\w+, g, \w+, value=0.75\)"),
    ("q = g / (abs(w) + 0.5)\n    u = q + w * 0.01", r"_foreach_addcdiv_\(\w+, g, \w+, value=1\)"),
    ("t = 0.75 * g\n    q = t / (abs(w) + 0.5)\n    u = w - q", r"= torch._foreach_addcdiv\(w, g, \w+, value=-0.75\)"),
    ("t = g * 0.75\n    q = t / (abs(w) + 0.5)\n    u = w * 0.01 + q + t", r"_foreach_addcdiv_\(\w+, t, \w+, value=1\)"),  # t read twice
    ("q = g / (abs(w) + 0.5)\n    u = w * q + q", None),  # q read twice: stays a list
    ("q = g / (abs(w) + 0.5)\n    u = q - w", None),  # z - q only
])
def test_a_sum_with_a_quotient_is_one_addcdiv_rounding_as_the_interpreter(body, call):
    """``z + (x c) / y`` and ``z - x / y`` run as one ``_foreach_addcdiv`` (the product c x folded in
    only where nothing else reads it, the quotient only where the sum alone reads it), whose kernel
    computes z + (c x) / y: every case steps bit for bit as the interpreter does, float32 and
    float64."""
    program = parse(f"def p(w, g, lr=0.25):\n    {body}\n    return lr * u\n")
    text = _Module(program, {}).group_function(0)
    assert re.search(call, text) if call else "_foreach_addcdiv" not in text, text
    for w, opt, params, _ in _three_steps(program, seed=2):
        np.testing.assert_array_equal(w.detach().numpy(), params["w"])


@pytest.mark.parametrize(("body", "folded"), [
    ("update = lr * m\n    m = interp(g, m, 0.9)", False),  # m's own tensors: written after update is read
    ("t = g + m\n    update = lr * t\n    m = interp(t, m, 0.9)", True),  # t read by m's update, not written
    ("t = sign(g) + m\n    update = t * lr\n    m = interp(g, m, 0.5)", True),  # a temporary
    ("update = lr * g\n    m = interp(g, m, 0.5)", True),  # the grads (never written)
    ("update = w * lr\n    m = interp(g, m, 0.5)", True),  # the params themselves: w -= lr w
    ("m = interp(g, m, 0.5)\n    update = lr * m", True),  # m's own tensors, set for the last time
    ("t = m\n    update = lr * t\n    m = interp(g, m, 0.9)", False),  # m's tensors under a second name
])
def test_an_update_c_times_x_is_subtracted_in_one_pass_where_x_stays_as_it_is(body, folded):
    """``update = c * x`` runs as ``w -= c x`` (``_foreach_sub_(w, x, alpha=c)``) only where no later
    statement writes x's tensors (a state's own list, updated in place after, must not be); every
    case steps as the interpreter does, in float32 and float64."""
    program = parse(f"def p(w, g, m, lr=0.25):\n    {body}\n    return update, m\n")
    assert ("alpha=lr" in _Module(program, {}).group_function(0)) == folded
    for w, opt, params, state in _three_steps(program, seed=1):
        np.testing.assert_allclose(w.detach().numpy(), params["w"], rtol=1e-6, atol=1e-7)
        if "m" in state["w"]:  # (a state the update never reads is dropped)
            np.testing.assert_allclose(opt.state[w]["m"].numpy(), state["w"]["m"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("body", ["b = mu * b + 0.5 * g", "b = 0.5 * g + b * mu", "b = g * 0.5 + mu * b"])
def test_a_state_decayed_and_added_to_is_stepped_in_its_own_tensors(body):
    """``b = mu b + c g``, ``update = lr b`` (heavy-ball momentum) in three passes, as torch's own SGD
    momentum step: ``b *= mu`` and ``b += c g`` in b's tensors, then ``w -= lr b``: no temporary
    list, no copy into the state. Steps as the interpreter does."""
    program = parse(f"def p(w, g, b, lr=0.25, mu=0.9):\n    {body}\n    return lr * b, b\n")
    text = _Module(program, {}).group_function(0)
    assert "_foreach_mul_(b" in text and "alpha=lr" in text, text
    assert "_foreach_copy_(_states" not in text and not re.search(r"= torch\._foreach_\w+\(", text), text
    for w, opt, params, state in _three_steps(program, seed=4):
        np.testing.assert_allclose(w.detach().numpy(), params["w"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(opt.state[w]["b"].numpy(), state["w"]["b"], rtol=1e-6, atol=1e-7)


TWO_STAGES = """def p(w, g, m, lr=0.1):
    m = interp(g, m, 0.9)
    d = m / (norm(m) + 0.001)
    g = g * rms(d)
    return lr * (g / (amax(abs(g)) + 0.000001) + dot(w, d) * w), m
"""


ROWS = """def p(w, g, r: row, lr=0.1):
    r = interp(rowmean(g * g), r, 0.9)
    u = g / (sqrt(r) + 0.001)
    return lr * u * rms(w) / (rms(u) + 1), r
"""


@pytest.mark.parametrize("size", [5, 1 << 17])
def test_per_tensor_numbers_run_on_their_stack(size):
    """LAMB's trust ratio, ``where(norm(w) == 0 or norm(r) == 0, 1, norm(w) / norm(r))``, is one op
    per statement on the 1-d tensor of the group's norms (no torch op per tensor), in chunks of 5
    (each row a slice of a tensor) or whole: a zero parameter (ratio 1), a zero grad and ordinary
    tensors step as the interpreter's, in float32 and float64."""
    program = optdsl.load("lamb")
    text = _Module(program, {}).group_function(0)
    assert not [ln for ln in text.split("\n") if "torch.where" in ln and " for " in ln]
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        params = {k: rng.normal(size=s).astype(dtype) for k, s in {"p0": (17,), "p1": (4, 3), "p2": (9,)}.items()}
        params["p2"][:] = 0
        grads = [{k: rng.normal(size=v.shape).astype(dtype) for k, v in params.items()} for _ in range(2)]
        grads[0]["p1"][:] = 0
        ref = _interpreter_steps(program, params, grads, dtype, weight_decay=0.1)
        ours = _run_eager_in_chunks(program, params, grads, size, lr=None, weight_decay=0.1)
        for k in ref:
            np.testing.assert_allclose(ours[k], ref[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_per_tensor_numbers_too_wide_for_a_line_on_their_stack_run_per_tensor():
    """A stacked statement wider than a line is printed per tensor instead, and the stacks it would
    have made are not taken for made: the step is the interpreter's (a zero grad: ratio 1)."""
    a, b = "a_very_long_name_for_the_norm_of_the_parameter_w", "another_long_name_for_the_norm_of_the_grad_g"
    program = parse(f"def p(w, g, lr=0.1):\n    {a} = norm(w)\n    {b} = norm(g)\n"
                    f"    t = where({a} == 0 or {b} == 0, 1, {a} / {b} + {a} * {b} - {b} / ({a} + 1))\n"
                    "    u = where(t > 1, t, 1 / t)\n    return lr * u * g\n")
    rng = np.random.default_rng(2)
    params = {"p0": rng.normal(size=7).astype(np.float32), "p1": rng.normal(size=(2, 3)).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()} for _ in range(2)]
    grads[1]["p1"][:] = 0
    ref = _interpreter_steps(program, params, grads, np.float32)
    close(_run_eager_in_chunks(program, params, grads, 1 << 17, lr=None), ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("source", ["tiger", "lamb", "adafactor", TWO_STAGES, ROWS])
def test_per_tensor_reductions_in_tiny_chunks_see_whole_tensors(source, dtype):
    """Programs with per-tensor reductions run on 1-d slices of 5 elements: each reduction is
    summed (or maxed) over a tensor's slices before the step, and a value computed before it is
    handed to the step chunk by chunk. Three steps against the interpreter; in the second, the first
    grad holds a nan in its last slice only (Tiger then leaves that whole tensor's momentum as it is and
    shrinks all of its weights; the others propagate it). TWO_STAGES needs three segments: rms(d)
    reads norm(m), amax reads g made from rms(d). Tiger's 2-d and 3-d parameters and ROWS (a
    row state, rowmean) run on blocks of whole rows (one row of 4 or 5 elements per chunk)."""
    program = optdsl.load(source) if source.isidentifier() else parse(source)
    assert any(_Module(program, {}).splits)
    rng = np.random.default_rng(0)
    shapes = {"p0": (23,), "p1": (11,), "p2": (1,)}
    if source in ("tiger", ROWS):
        shapes = {**({} if source == ROWS else shapes), "p3": (6, 4), "p4": (3, 2, 5), "p5": (1, 3)}
    params = {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()} for _ in range(3)]
    grads[1][next(iter(shapes))].reshape(-1)[-1] = np.nan
    ref = _interpreter_steps(program, params, grads, dtype)
    ours = _run_eager_in_chunks(program, params, grads, 5, lr=None)
    if dtype == np.float32:
        close(ours, ref)
    else:
        for k in ref:
            np.testing.assert_allclose(ours[k], ref[k], rtol=1e-10, atol=1e-12, equal_nan=True, err_msg=k)


@pytest.mark.parametrize("source", ["tiger", "adafactor", ROWS])
def test_one_chunk_holding_several_blocks_of_a_tensor_hands_each_block_its_tensors_value(source):
    """A (7, 9) matrix in chunks of 40 elements is cut into blocks of 4 and 3 rows; after a (1, 3)
    matrix the first block (39 elements in all) leaves the chunk open: one chunk, three rows of two
    tensors. The step handed a per-tensor reduction's values to the rows as if each row were a
    tensor of its own, and raised ("Tensor lists must have the same number of tensors": Tiger on a
    200 x 700 matrix in the default chunks of 2^17, found by a sweep of param groups)."""
    program = optdsl.load(source) if source.isidentifier() else parse(source)
    rng = np.random.default_rng(1)
    shapes = {"p0": (1, 3), "p1": (7, 9)}
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(3)]
    ref = _interpreter_steps(program, params, grads, np.float64)
    ours = _run_eager_in_chunks(program, params, grads, 40, lr=None)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_a_state_read_under_a_second_name_is_not_copied():
    """``vh = v`` after v's in-place update: v's list is read under two names (neither may write
    it), and the step needs no copy of it back into the state (Adafactor's 1-d path)."""
    program = parse("def p(w, g, v, lr=0.1):\n    v = interp(v, g * g, 0.5)\n    vh = v\n"
                    "    return lr * g / (sqrt(vh) + 1), v\n")
    text = _Module(program, {}).group_function(0)
    assert "clone" not in text and "_foreach_copy_(_states" not in text
    rng = np.random.default_rng(0)
    params = {"p0": rng.normal(size=9).astype(np.float32)}
    grads = [{"p0": rng.normal(size=9).astype(np.float32)} for _ in range(2)]
    close(_run_eager_in_chunks(program, params, grads, 4), run_interpreter(program, params, grads, LR))


def test_a_where_on_one_tensors_condition_hands_back_a_tensor_nothing_writes():
    """``where`` on a per-tensor condition picks one branch's own tensors on a CPU (_pick): here old
    m for one parameter and g for the other, kept as v, while m is updated after the pick."""
    program = parse("def p(w, g, m, v, lr=0.1):\n    x = where(norm(g) > 1, m, g)\n"
                    "    m = interp(g, m, 0.5)\n    return lr * (x + m), m, x\n")
    assert "_pick(" in "".join(_Module(program, {}).eager_functions(0))
    rng = np.random.default_rng(0)
    params = {"p0": rng.normal(size=9).astype(np.float32), "p1": rng.normal(size=6).astype(np.float32)}
    grads = [{"p0": rng.normal(size=9).astype(np.float32),
              "p1": 0.01 * rng.normal(size=6).astype(np.float32)} for _ in range(3)]
    close(_run_eager_in_chunks(program, params, grads, 4), run_interpreter(program, params, grads, LR))


def test_a_nan_test_reads_each_tensor_once_and_tells_nan_from_inf():
    """``amax(g != g)`` runs as ``y = amax(g); y != y`` (amax propagates nan): one reduction over g,
    no list of truth values; a tensor with inf or -inf only is not taken for one with a nan."""
    program = parse("def p(w, g, lr=0.1):\n    return lr * amax(g != g) + 0.5 * g\n")
    text = "".join(_Module(program, {}).eager_functions(0))
    assert "!= g_i" not in text and "torch.amax(g_i)" in text
    rng = np.random.default_rng(0)
    params = {f"p{i}": rng.normal(size=7).astype(np.float32) for i in range(4)}
    grads = [{k: rng.normal(size=7).astype(np.float32) for k in params}]
    grads[0]["p0"][6], grads[0]["p1"][2], grads[0]["p2"][[0, 5]] = np.nan, np.inf, [-np.inf, np.inf]
    close(_run_eager_in_chunks(program, params, grads, 3), run_interpreter(program, params, grads, LR))


def test_an_accelerator_step_is_not_chunked():
    # On a CPU the chunks keep temporaries in cache; on an accelerator they would multiply kernel
    # launches. The meta device stands in for one: the group function must see whole lists.
    cls = codegen.build(optdsl.load("adamw"), "torch")
    prog = copy.copy(sys.modules[cls.__module__]._PROGRAM)
    seen, real = [], prog.groups[0]
    prog.groups = (lambda params, *rest: (seen.append(len(params)), real(params, *rest)), *prog.groups[1:])
    for device, calls in (("meta", 1), ("cpu", 6)):  # 2 x 3 chunks of 2**17 elements on the CPU
        params = [torch.zeros(3 << 17, device=device) for _ in range(2)]
        states = {n: [torch.zeros_like(p) for p in params] for n in ("m", "v")}
        seen.clear()
        prog.eager_group_step(0, params, [torch.ones_like(p) for p in params], states, lr=0.1, step=1)
        assert len(seen) == calls


@pytest.mark.parametrize("c", [[0.0, 0.0], [1.0, -2.0], [float("nan"), 1.0], [0.0, 1.0], [float("nan"), 0.0]])
def test_which_side_every_tensor_takes(c):
    """_which(c): 1 when every tensor's number is nonzero (nan too, as torch.where's c != 0), 0 when
    every one is zero, None when they differ; the same for a list of 0-d tensors; None on an
    accelerator (the meta device stands in), whose numbers the host must not wait for."""
    taken = [x != 0 for x in c]
    expected = 1 if all(taken) else 0 if not any(taken) else None
    assert _which(torch.tensor(c)) == expected
    assert _which(list(torch.tensor(c).unbind())) == expected
    assert _which(torch.tensor(c, device="meta")) is None


@pytest.mark.parametrize("embedding", [0, 1])
@pytest.mark.parametrize("nans", ["none", "one", "every"])
def test_a_where_on_one_number_per_tensor_runs_only_the_side_its_tensors_take(nans, embedding):
    """Tiger's nan guard ``where(has_nan, shrink the weights, step)`` and its ``where(embedding, rows'
    rms, rms)``: the group step tests the group's nan flags once (``_which``) and runs the shrink's
    statements only when some grad holds a nan, the step's only when some does not, and the rows' rms
    only under ``if embedding != 0:``. Against the interpreter when no grad, one, or every grad of
    the group holds a nan in the second of three steps, embedding 0 and 1, float32 and float64."""
    program = optdsl.load("tiger")
    text = _Module(program, {}).group_function(1)
    assert "= _which(has_nan_st)" in text and "if embedding != 0:" in text
    rng = np.random.default_rng(5)
    shapes = {"p0": (5, 4), "p1": (3, 6), "p2": (2, 3, 4)}
    for dtype in (np.float32, np.float64):
        params = {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}
        grads = [{k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()} for _ in range(3)]
        for k in {"none": [], "one": ["p1"], "every": list(shapes)}[nans]:
            grads[1][k].reshape(-1)[3] = np.nan
        ref = _interpreter_steps(program, params, grads, dtype, embedding=embedding)
        close(_run_eager_in_chunks(program, params, grads, 1 << 17, lr=None, embedding=embedding), ref)


@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("embedding", [0, 1])
@pytest.mark.parametrize("nans", ["none", "one", "every"])
def test_a_step_printed_for_a_common_case_gives_the_general_steps_bits(nans, embedding, accumulate, monkeypatch):
    """Tiger's group step hands a group in which no grad holds a nan to a step printed for that case
    (the nan test folded to 0: one decay number, no shrink), and that one, with embedding=0, to one
    whose learning rate is a number per tensor rather than a row. They give the general step's bits:
    the general step alone runs where ``_which`` answers None (an accelerator), as here when patched.
    Three steps with a nan in the second, float32 and float64, with and without accumulation."""
    program = optdsl.load("tiger")
    module = _Module(program, {})
    assert "return _path1_group_1(" in module.group_function(1)
    assert "return _path1_group_2(" in module.group_function(1, 1)
    assert "embedding" not in module.group_function(1, 2).split("\n", 3)[3]  # (its docstring says it)
    assert _economy("tiger", 1)[2] < _economy("tiger")[2]  # fewer multi-tensor calls
    cls = codegen.build(program, "torch")
    gen = sys.modules[cls.__module__]
    taken = []
    for name in ("_path1_group_1", "_path1_group_2"):
        step = getattr(gen, name)
        monkeypatch.setattr(gen, name, lambda *a, _step=step, _name=name: taken.append(_name) or _step(*a))
    rng = np.random.default_rng(11)
    shapes = {"p0": (5, 4), "p1": (3, 6), "p2": (2, 3, 4), "b": (7,)}
    for dtype in (np.float32, np.float64):
        params = {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}
        grads = [{k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()} for _ in range(3)]
        for k in {"none": [], "one": ["p1"], "every": list(shapes)}[nans]:
            grads[1][k].reshape(-1)[3] = np.nan
        hyper = {"embedding": embedding, "grad_accum_steps": accumulate}
        taken.clear()
        specialised = _run_eager_in_chunks(program, params, grads, 1 << 17, lr=None, cls=cls, states=True, **hyper)
        assert ("_path1_group_1" in taken) and (("_path1_group_2" in taken) == (embedding == 0))
        with monkeypatch.context() as m:
            m.setattr(gen, "_which", lambda c: None)
            general = _run_eager_in_chunks(program, params, grads, 1 << 17, lr=None, cls=cls, states=True, **hyper)
        assert specialised.keys() == general.keys() and "p0.m" in general
        for k in general:
            np.testing.assert_array_equal(specialised[k], general[k], err_msg=k)
        if dtype == np.float64:  # the reference's float64 to the last bits, m included (see below)
            ref = _interpreter_states(program, params, grads, np.float64, **hyper)
            for k in general:
                np.testing.assert_allclose(general[k], ref[k], rtol=1e-13, atol=1e-15, err_msg=k)


CLIPPED = """def clipped(w, g, m, lr=0.1, beta=0.9):
    n = norm(g)
    big = n > 1
    g = g / n if big else g
    m = interp(g, m, beta)
    update = lr * sign(m) if big else lr * m
    return update, m
"""


@pytest.mark.parametrize("scale", [0.01, 3.0, 100.0])  # norms: none, one of three, all above 1
def test_a_guard_of_ones_own_gets_a_step_for_its_common_case(scale, monkeypatch):
    """Not only Tiger's nan test: a program's own per-tensor guard (a norm above 1) decided 0 for the
    whole group leaves plain momentum; with grads scaled so that none, some or all norms pass 1 the
    steps give the general step's bits and the interpreter's values, states included."""
    program = parse(CLIPPED)
    assert "return _path0_group_1(" in _Module(program, {}).group_function(0)
    cls = codegen.build(program, "torch")
    gen = sys.modules[cls.__module__]
    rng = np.random.default_rng(2)
    shapes = {"a": (40,), "b": (3, 5), "c": (2,)}
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    grads = [{k: scale * rng.normal(size=s) / np.prod(s) for k, s in shapes.items()} for _ in range(3)]
    specialised = _run_eager_in_chunks(program, params, grads, 1 << 17, lr=None, cls=cls, states=True)
    with monkeypatch.context() as m:
        m.setattr(gen, "_which", lambda c: None)
        general = _run_eager_in_chunks(program, params, grads, 1 << 17, lr=None, cls=cls, states=True)
    ref = _interpreter_states(program, params, grads, np.float64)
    for k in general:
        np.testing.assert_array_equal(specialised[k], general[k], err_msg=k)
        np.testing.assert_allclose(general[k], ref[k], rtol=1e-13, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("name, tests", [("tiger", [["has_nan == 0 for every tensor"],
                                                    ["has_nan == 0 for every tensor", "embedding == 0"]]),
                                          ("lamb", [[]]), ("lars", [[]]), ("adamw", [[]])])
def test_a_common_case_gets_a_step_of_its_own_only_where_it_saves_passes(name, tests):
    """Tiger's decided nan test drops the shrink, a decay per tensor and a pick; its embedding test
    a row broadcast. LAMB's and LARS's zero-norm guards would save one where on the stack, less than
    the hand-over costs: no step of their own."""
    module = _Module(optdsl.load(name), {})
    assert [[str(t) for _, _, t in chain] for chain in module.variants] == tests


NESTED = """def p(w, g, m, lr=0.1, c=1):
    s = norm(g)
    a = where(c, sqrt(abs(g)) * m, g)
    m = interp(g, m, 0.5)
    b = where(s > 1, exp(-abs(a)), a + m)
    return lr * b, where(c, m, g)
"""


@pytest.mark.parametrize("c", [0, 1])
def test_lazy_wheres_nest_and_a_new_state_taken_from_a_side_is_its_own_list(c):
    """A where on a per-step number (c) inside a side of one on a per-tensor number (s > 1), and a
    new state that is one side's list (g, read later) or another's (m): the step equals the
    interpreter's over three steps in chunks of 4, with tensors on both sides of s > 1."""
    program = parse(NESTED)
    text = _Module(program, {}).group_function(0)
    assert "_which(" in text and text.count("if c != 0:") == 2
    rng = np.random.default_rng(7)
    params = {"p0": rng.normal(size=9).astype(np.float32), "p1": rng.normal(size=(2, 3)).astype(np.float32)}
    grads = [{"p0": rng.normal(size=9).astype(np.float32),
              "p1": 0.01 * rng.normal(size=(2, 3)).astype(np.float32)} for _ in range(3)]
    ref = _interpreter_steps(program, params, grads, np.float32, c=c)
    close(_run_eager_in_chunks(program, params, grads, 4, lr=None, c=c), ref)


def test_a_side_whose_statements_cannot_move_is_computed_before_its_where():
    """``u = g * 2``, read by one side only, cannot move next to its where: g is set again in between
    (u would read the new g). It stays where it is; the where still takes a side without a pass."""
    program = parse("def p(w, g, lr=0.1):\n    u = g * 2\n    g = g * 3\n"
                    "    x = where(norm(g) > 1, u, g)\n    return lr * (x + g)\n")
    text = _Module(program, {}).group_function(0)
    assert "_which(" in text and text.index("_foreach_mul(g, _n(2))") < text.index("_which(")
    rng = np.random.default_rng(1)
    params = {"p0": rng.normal(size=5).astype(np.float32), "p1": rng.normal(size=4).astype(np.float32)}
    grads = [{"p0": 3 * rng.normal(size=5).astype(np.float32), "p1": 0.01 * rng.normal(size=4).astype(np.float32)}]
    close(_run_eager_in_chunks(program, params, grads, 1 << 17), run_interpreter(program, params, grads, LR))


def test_a_lazy_where_too_wide_to_nest_is_printed_flat():
    """A name so long that a side's line fits the width in the function body but not one level in:
    the where and its side are printed as plain statements (every one run), and still step as the
    interpreter does."""
    long = "the_square_root_of_the_magnitude_of_every_gradient_coordinate_of_this_tensor"
    program = parse(f"def p(w, g, lr=0.1, c=1):\n    {long} = sqrt(abs(g))\n    t = {long} * g + {long}\n"
                    "    x = where(c, t, g)\n    return lr * x\n")
    text = _Module(program, {}).group_function(0)
    assert "if c != 0" not in text and max(map(len, text.split("\n"))) <= 110
    rng = np.random.default_rng(2)
    params = {"p0": rng.normal(size=5).astype(np.float32)}
    grads = [{"p0": rng.normal(size=5).astype(np.float32)}]
    close(_run_eager_in_chunks(program, params, grads, 1 << 17), run_interpreter(program, params, grads, LR))


SUMS = """def p(w, g, c: col, lr=0.1):
    c = interp(colmean(g * g), c, 0.9)
    u = g / (sqrt(c) + 0.001)
    return lr * (u * rms(w) / (norm(u) + 1) + dot(w, g) * w), c
"""


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_tensor_sums_of_products_are_one_dot_each(dtype):
    """rms, norm and dot of whole tensors in a step not cut into segments (a col state: Adafactor's
    factored path) run as one torch.dot per tensor, finished per tensor (no x * x list first), and
    step as the interpreter does."""
    program = parse(SUMS)
    text = _Module(program, {}).group_function(0)
    assert "torch.square(" not in text and "vector_norm" not in text and text.count("torch.dot(") == 3
    assert "torch.square(" not in _Module(optdsl.load("adafactor"), {}).group_function(1)
    rng = np.random.default_rng(4)
    params = {"p0": rng.normal(size=(4, 6)).astype(dtype), "p1": rng.normal(size=(3, 2)).astype(dtype)}
    grads = [{k: rng.normal(size=v.shape).astype(dtype) for k, v in params.items()} for _ in range(2)]
    ref = _interpreter_steps(program, params, grads, dtype)
    ours = _run_eager_in_chunks(program, params, grads, 1 << 17, lr=None)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-5 if dtype == np.float32 else 1e-12, err_msg=k)


@pytest.mark.parametrize("c", [0, 1])
def test_a_where_side_that_the_update_subtracts_at_the_end_is_not_overwritten(c):
    """``update = lr * t`` is subtracted at the end of the step (``w -= lr t``), so t's list stays
    live although no statement reads it after the where that hands it on as y: ``m = y * 3`` must
    make a new list, not write into t's."""
    program = parse("def p(w, g, m, lr=0.1, c=1):\n    t = exp(g) + m\n    update = lr * t\n"
                    "    y = where(c, t, g)\n    m = y * 3\n    return update, m\n")
    text = _Module(program, {}).group_function(0)
    assert "alpha=lr" in text and "_foreach_mul_(y" not in text
    rng = np.random.default_rng(3)
    params = {"p0": rng.normal(size=6).astype(np.float32)}
    grads = [{"p0": rng.normal(size=6).astype(np.float32)} for _ in range(3)]
    ref = _interpreter_steps(program, params, grads, np.float32, c=c)
    close(_run_eager_in_chunks(program, params, grads, 1 << 17, lr=None, c=c), ref)


def test_a_segment_whose_code_borrows_ws_dtype_reads_w():
    """Pinned from a random program: ``mean(clip(g, 0.5))`` is cut into a segment that reads only g,
    but its printed clip makes its bound a tensor of w's dtype and device (``w_i``): the segment
    defines w (it raised NameError), and the step is the interpreter's, in chunks of 5."""
    program = parse("def p(w, g, lr=0.1):\n    return mean(clip(g, 0.5))\n")
    rng = np.random.default_rng(0)
    params = {"p0": rng.normal(size=23).astype(np.float32), "p1": rng.normal(size=(3, 7)).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()} for _ in range(2)]
    close(_run_eager_in_chunks(program, params, grads, 5), run_interpreter(program, params, grads, LR))
