"""The cpp backend's loop (codegen.cpp_target): every element of every tensor of a group is stepped
exactly once, whatever its size against the cache line the loop takes at a time (16 floats, 8
doubles, the rest in a tail loop) and the chunks the threads share (CHUNK elements); programs with
reductions (passes over each tensor) compute what the reference interpreter computes, in float32
and float64, and the same bits at any thread count."""

import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import codegen
import optdsl
from codegen import cpp_target, torch_target
from codegen.cpp_target import CHUNK
from optdsl.cost import sweep_reads
from optdsl.ops import COL, OPS, REDUCE, ROW
from optdsl.passes import specialize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from strategies import programs, scaled_examples, test_shapes  # isort: skip


def counter(k: int) -> optdsl.Program:
    """States s1..sk, state j growing by j g: with g = 1 after t steps s_j = j t and w = -lr (1 + .. + k)
    (1 + .. + t), exact in float32 and float64. Seven arrays (k = 5) make the loop prefetch less
    far ahead in each (codegen.cpp_target.IN_FLIGHT)."""
    names = [f"s{j}" for j in range(1, k + 1)]
    body = "".join(f"    {n} = {n} + {j} * g\n" for j, n in enumerate(names, 1))
    states = ", ".join(names)
    return optdsl.parse(
        f"def count{k}(w, g, {states}, lr=1.0):\n{body}    return lr * ({' + '.join(names)}), {states}\n"
    )


SIZES = [1, 7, 8, 15, 16, 17, 33, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 9]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 5])
def test_every_element_is_stepped_once(dtype, threads, k):
    """Prefetching and not: the runtime tries both on a group's first steps (``_Prefetch``)."""
    Count = codegen.build(counter(k), "torch")
    params = [torch.zeros(n, dtype=dtype) for n in SIZES]
    opt = Count(params, backend="cpp")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(3):
            for p in params:
                p.grad = torch.ones_like(p)
            opt.step()
    finally:
        torch.set_num_threads(before)
    for p in params:
        for j in range(1, k + 1):
            assert torch.equal(opt.state[p][f"s{j}"], torch.full_like(p, 3.0 * j))
        assert torch.equal(p, torch.full_like(p, -6.0 * k * (k + 1) / 2))


def test_prefetching_or_not_gives_the_same_bits_and_the_timed_choice_stays(monkeypatch):
    """A group's first ``TRIALS`` steps alternate the prefetch distances, timed; one then stays.
    The distance changes the speed only: forced to each, AdamW ends on the same bits."""
    AdamW = codegen.build(optdsl.load("adamw"), "torch")
    runtime = vars(sys.modules[AdamW.__module__])
    Prefetch = runtime["_Prefetch"]
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 40_000, generator=gen), torch.randn(777, generator=gen)]
    grads = [[torch.randn(p.shape, generator=gen) for p in start] for _ in range(Prefetch.TRIALS + 2)]
    ends = []
    for choices in (Prefetch.CHOICES, *((c,) for c in Prefetch.CHOICES)):
        monkeypatch.setattr(Prefetch, "CHOICES", choices)
        runtime["_CPP"]._layouts.clear()
        params = [p.clone() for p in start]
        opt = AdamW(params, backend="cpp")
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g
            opt.step()
        (layout,) = runtime["_CPP"]._layouts.values()
        assert layout[3].chosen in choices
        ends.append(params)
    for other in ends[1:]:
        assert all(torch.equal(a, b) for a, b in zip(ends[0], other))


# --- reductions: passes over each tensor (codegen.cpp_target, "Reductions") -------------------
LR = 0.01


def interpret(program, params, grads, dtype, **hyper):
    """Final parameters and states from the reference interpreter (numpy, ``dtype``)."""
    opt = optdsl.Interpreter(program, dtype=dtype, lr=LR, **hyper)
    params = {k: v.astype(dtype) for k, v in params.items()}
    state = opt.init(params)
    for t, g in enumerate(grads, start=1):
        params, state = opt.step(params, {k: v.astype(dtype) for k, v in g.items()}, state, t)
    return params, state


def on_cpp(program, params, grads, dtype, threads=1, **hyper):
    """The same on the cpp backend (``threads`` OpenMP threads): parameters and states as numpy."""
    ts = {k: torch.tensor(v.astype(dtype)) for k, v in params.items()}
    opt = codegen.build(program, "torch")(list(ts.values()), lr=LR, backend="cpp", **hyper)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for g in grads:
            for k, t in ts.items():
                t.grad = torch.tensor(g[k].astype(dtype))
            opt.step()
    finally:
        torch.set_num_threads(before)
    states = {k: {n: v.numpy() for n, v in opt.state[t].items() if n != "step"} for k, t in ts.items()}
    return {k: t.numpy() for k, t in ts.items()}, states


def assert_same(ours, ref, dtype):
    # float32: the differential tests' tolerance (tests/codegen/test_language_on_targets.py)
    rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-14)
    for k in ref[0]:
        np.testing.assert_allclose(ours[0][k], ref[0][k], rtol=rtol, atol=atol, equal_nan=True, err_msg=k)
        for n in ref[1][k]:
            np.testing.assert_allclose(ours[1][k][n], ref[1][k][n], rtol=rtol, atol=atol, equal_nan=True,
                                       err_msg=f"{k}: {n}")


def every_reduction() -> optdsl.Program:
    """One state per reduction of the op table over elements (per tensor, row, column), of x = g w + g
    (and y = w where it takes two)."""
    ops = [o for o in OPS.values() if o.shape in (REDUCE, ROW, COL)]
    body = "".join(f"    s_{o.name} = {o.name}({', '.join(['x', 'w'][:o.arity])})\n" for o in ops)
    states = ", ".join(f"s_{o.name}" for o in ops)
    source = f"def reductions(w, g, {states}, lr):\n    x = g * w + g\n{body}    return lr * g, {states}\n"
    program = optdsl.parse(source)  # states the update does not read: kept, as a user's would be
    return replace(program, states=tuple(replace(s, keep=True) for s in program.states))


def data(shapes, steps=2, seed=0):
    rng = np.random.default_rng(seed)
    params = {f"p{j}": rng.normal(size=s) for j, s in enumerate(shapes)}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(steps)]
    return params, grads


# rows longer than a chunk (one row a chunk), rows that do not divide a chunk, short rows, no elements
ROWS = [(2, CHUNK + 5), (5, 7001), (4, 3), (3, 1), (0, 3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_reduction_computes_what_the_interpreter_computes(dtype):
    params, grads = data(ROWS)
    grads[1]["p2"][1, 2], grads[1]["p3"][0, 0] = np.nan, np.inf  # nan and inf in the second step
    program = every_reduction()
    assert cpp_target.passes(program) == 2
    assert len(interpret(program, params, grads, dtype)[1]["p0"]) == len(program.states)
    assert_same(on_cpp(program, params, grads, dtype), interpret(program, params, grads, dtype), dtype)


def test_reductions_of_reductions_take_a_pass_each():
    program = optdsl.parse(
        "def chain(w, g, m, lr):\n"
        "    u = g / rms(g)\n"  # pass 0
        "    c = u - mean(u) + dot(u, w) * 1e-6\n"  # pass 1
        "    m = interp(c, m, 0.9)\n"
        "    return lr * m / max(norm(m), 1e-3) + norm(norm(w)) * 1e-3, m\n"  # pass 2 (norm(w) in pass 0)
    )
    params, grads = data([(CHUNK + 3,), (7,), (0,)], steps=3)
    for path in torch_target.paths(program)[2]:
        assert cpp_target.passes(path.program) == 4
    for dtype in (np.float32, np.float64):
        assert_same(on_cpp(program, params, grads, dtype), interpret(program, params, grads, dtype), dtype)


def test_a_state_is_written_early_only_where_no_later_pass_reads_its_old_value():
    """m's new value is known in pass 0 (before norm(m)): pass 0 writes it and the update reads it
    back; the update also reads v's old value, so v waits for the last pass."""
    program = optdsl.parse(
        "def early(w, g, m, v, lr):\n"
        "    m = interp(g, m, 0.9)\n"
        "    old = v\n"
        "    v = interp(g * g, v, 0.99)\n"
        "    return lr * (m / norm(m) + old * 1e-3), m, v\n"
    )
    assert cpp_target._Plan(program).early == {2: 0}
    params, grads = data([(CHUNK + 3,), (7,)], steps=3)
    for dtype in (np.float32, np.float64):
        assert_same(on_cpp(program, params, grads, dtype), interpret(program, params, grads, dtype), dtype)


@pytest.mark.parametrize(("name", "hyper"), [("tiger", {}), ("tiger", {"embedding": 1.0}), ("lamb", {}),
                                           ("adafactor", {}), ("adafactor_optax", {})])
def test_zoo_programs_with_reductions_compute_what_the_interpreter_computes(name, hyper):
    """Tiger (its nan guard: one gradient holds a nan at step 2; lr RMS(w), or RMS of each row of an
    embedding), LAMB (trust ratio of two norms), Adafactor (row and column states, row and column
    means, a stack of matrices; optax's factors matrices of 128 x 128 or more) on 1-d, 2-d and 3-d
    tensors: parameters and states."""
    params, grads = data([(2 * CHUNK + 9,), (3, 7001), (130, 260), (2, 3, 5), (5,)], steps=3)
    grads[1]["p1"][2, 5] = np.nan
    program = optdsl.load(name)
    assert "cpp" in codegen.build(program, "torch")._program.backends
    assert_same(on_cpp(program, params, grads, np.float32, **hyper),
                interpret(program, params, grads, np.float32, **hyper), np.float32)


@pytest.mark.parametrize("name", ["tiger", "lamb", "adafactor"])
def test_a_group_larger_than_a_batch_takes_its_passes_a_batch_at_a_time_with_the_same_bits(monkeypatch, name):
    """A kernel of several passes runs them all on a batch of tensors before the next batch
    (``cpp_target.BATCH`` elements, at least one tensor): the same bits as one batch of all,
    and what the interpreter computes. Batches here: p0; p1; p2; p3 and p4 together."""
    params, grads = data([(5, 7001), (CHUNK + 3,), (300, 130), (4,), (2, 3, 5)], steps=3)
    grads[1]["p1"][7] = np.nan  # Tiger's nan guard, in a batch of its own
    program = optdsl.load(name)
    monkeypatch.setattr(cpp_target, "BATCH", 40_000)
    assert "by_batches(n, " in codegen.emit(program, "torch") and "40000," in codegen.emit(program, "torch")
    batched = on_cpp(program, params, grads, np.float32, threads=2)
    monkeypatch.setattr(cpp_target, "BATCH", 1 << 40)
    whole = on_cpp(program, params, grads, np.float32, threads=2)
    for k in whole[0]:
        assert np.array_equal(batched[0][k], whole[0][k], equal_nan=True), k
        for n in whole[1][k]:
            assert np.array_equal(batched[1][k][n], whole[1][k][n], equal_nan=True), (k, n)
    assert_same(batched, interpret(program, params, grads, np.float32), np.float32)


def test_reductions_give_the_same_bits_at_any_thread_count():
    """Each chunk's totals have their own slot and each tensor's are added in chunk order."""
    params, grads = data([(3, CHUNK + 7), (1000, 100)], steps=2)  # 3 + 4 chunks of whole rows
    program = every_reduction()
    one, two = (on_cpp(program, params, grads, np.float32, threads=t) for t in (1, 2))
    for k in one[0]:
        assert np.array_equal(one[0][k], two[0][k], equal_nan=True)
        for n in one[1][k]:
            assert np.array_equal(one[1][k][n], two[1][k][n], equal_nan=True), n


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["adamw", "tiger", "adafactor"])
def test_half_precision_params_step_in_the_kernels_as_the_eager_step_does(name, dtype):
    """bf16 and fp16 params and grads: the kernels widen them to float32 (float32 states, as the eager
    step keeps them), and round the new params to nearest even. Against the eager step over three
    steps: the same params but where float32 math an ulp off eager's lands across a rounding boundary
    (one half-precision ulp, 2 of 32,773 fp16 Adafactor elements here), states within float32
    rounding; and the kernels ran (their library loaded)."""
    cls = codegen.build(optdsl.load(name), "torch")
    shapes = [(37, 19), (19,), (5, 3, 4), (CHUNK + 5,)]
    gen = torch.Generator().manual_seed(7)
    start = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    params = {b: [torch.nn.Parameter(x.clone()) for x in start] for b in ("cpp", "eager")}
    opts = {b: cls(ps, lr=0.01, backend=b) for b, ps in params.items()}
    for _ in range(3):
        grads = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
        for b, ps in params.items():
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opts[b].step()
    kernels = sys.modules[cls.__module__]._CPP
    assert dtype in kernels._libs  # not the eager fallback
    for p, q in zip(params["cpp"], params["eager"]):
        assert p.dtype == dtype
        torch.testing.assert_close(p, q)  # (torch's tolerance for the dtype: about one ulp)
        assert (p != q).float().mean() < 1e-3
        for k, v in opts["eager"].state[q].items():
            assert opts["cpp"].state[p][k].dtype == v.dtype
            torch.testing.assert_close(opts["cpp"].state[p][k], v, rtol=1e-5, atol=1e-6)


def test_groups_of_other_shapes_through_one_programs_kernels_keep_their_own_layout():
    """The kernels keep each group's sizes and (rows, columns) per shapes (``_CppKernels.layout``):
    two optimizers of one class whose matrices have the same elements, transposed, step as the eager
    step does, alternately, for a program with row and column states (Adafactor)."""
    cls = codegen.build(optdsl.load("adafactor"), "torch")
    gen = torch.Generator().manual_seed(3)
    runs = []
    for shapes in ([(6, 10), (10,)], [(10, 6), (10,)]):
        start = [torch.randn(s, generator=gen) for s in shapes]
        ps = {b: [torch.nn.Parameter(x.clone()) for x in start] for b in ("cpp", "eager")}
        runs.append((shapes, ps, {b: cls(v, lr=0.01, backend=b) for b, v in ps.items()}))
    for _ in range(3):
        for shapes, ps, opts in runs:
            grads = [torch.randn(s, generator=gen) for s in shapes]
            for b, v in ps.items():
                for p, g in zip(v, grads):
                    p.grad = g.clone()
                opts[b].step()
    for _, ps, _ in runs:
        for p, q in zip(ps["cpp"], ps["eager"]):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_supports_says_why_a_path_has_no_kernel():
    scalar_state = optdsl.parse("def f(w, g, s: scalar, lr):\n    s = s + 1\n    return lr * g * s, s\n")
    assert cpp_target.supports(scalar_state) == "state s is scalar-shaped"
    global_norm = optdsl.parse("def f(w, g, lr):\n    return lr * g / global_norm(g)\n")
    assert cpp_target.supports(global_norm) == "global_norm() is a global op"


@pytest.mark.parametrize("source", ["cosine_sim(-0.25, w)", "cosine_sim(rms(g), w)"])
def test_a_sum_of_a_term_one_number_per_tensor_has_no_kernel(source):
    """Found by random searched programs: cosine_sim(s, w) of one number s sums s * s once in the
    reference (s's own), but a kernel's element loop summed it once per element (off by sqrt(n)).
    Such a path gets no kernel, and the generated optimizer's default steps as the interpreter."""
    program = optdsl.parse(f"def p(w, g, lr=0.01):\n    return lr * {source} * g\n")
    assert cpp_target.supports(program) == "cosine_sim() sums a term that does not vary over the elements it reduces"
    cls = codegen.build(program, "torch")
    assert "cpp" not in cls._program.backends
    params, grads = data([(7,), (3, 5)])
    interp = optdsl.Interpreter(program, dtype=np.float64)
    expected = interp.step(params, grads[0], interp.init(params), 1)[0]
    ps = [torch.tensor(v, requires_grad=True) for v in params.values()]
    opt = cls(ps)
    for p, g in zip(ps, grads[0].values()):
        p.grad = torch.tensor(g)
    opt.step()
    for p, name in zip(ps, params):
        np.testing.assert_allclose(p.detach().numpy(), expected[name], rtol=1e-12)


def _kernel_sweeps(program: optdsl.Program) -> list[tuple[str, ...]]:
    """The full-shaped arrays each pass of the kernel reads, from its ``// pass p: ...; reads ...``
    comments (passes that read only rows or columns left out)."""
    full = {"w", "g", *(s.name for s in program.states if s.kind == "full")}
    found = re.finditer(r"// pass \d+: .*?; reads (.*)", cpp_target.kernel_source(program))
    return [tuple(sorted(set(m.group(1).split(", ")) & full)) for m in found]


def _full_sweeps(sweeps):
    return [s for s in sweeps if s]


@pytest.mark.parametrize("name", optdsl.zoo_names())
@pytest.mark.parametrize("shape", [(64, 32), (7,), (3, 4, 5)])
def test_the_cost_model_moves_what_the_kernels_move(name, shape):
    """optdsl.cost's traffic (the bench's bytes per step) is what the generated kernel reads, sweep by
    sweep: the model counted each array once, LAMB 28 bytes a parameter where its kernel moves 40."""
    program = specialize(optdsl.load(name), shape)
    if cpp_target.supports(program):
        pytest.skip(cpp_target.supports(program))
    assert _full_sweeps(_kernel_sweeps(program)) == _full_sweeps(sweep_reads(program))


@settings(max_examples=scaled_examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_the_cost_model_moves_what_the_kernels_move_for_any_program(program):
    for shape in test_shapes(program):
        path = specialize(program, shape)
        if cpp_target.supports(path) is None:
            assert _full_sweeps(_kernel_sweeps(path)) == _full_sweeps(sweep_reads(path)), shape


def test_a_state_the_step_leaves_as_it_is_is_not_stored():
    """``return s0 + mean(g), s0``: the kernel stored s0 back (its own value, four bytes a parameter
    read and written for nothing), in the norm's pass where the update had one."""
    program = optdsl.parse("def f(w, g, s0: full(init=1), lr=0.1):\n    return lr * (s0 + mean(g)), s0\n")
    source = cpp_target.kernel_source(program)
    assert "p2[i] =" not in source and _kernel_sweeps(program) == [("g",), ("s0", "w")]
    params, grads, s0 = [torch.randn(5), torch.randn(3, 4)], [torch.randn(5), torch.randn(3, 4)], []
    opt = codegen.build(program, "torch")(params, backend="cpp")
    for p, g in zip(params, grads):
        p.grad = g
    before = [p.detach().clone() for p in params]
    opt.step()
    for p, b, g in zip(params, before, grads):
        s0.append(opt.state[p]["s0"])
        torch.testing.assert_close(p, b - 0.1 * (1 + g.mean()))
    assert all(bool((s == 1).all()) for s in s0)


def test_a_transposed_parameter_steps_as_on_eager():
    """The kernels index memory as contiguous: a transposed view (a tied weight's W.t()) takes the
    eager step (without the contiguity check its elements met other elements' gradients)."""
    AdamW = codegen.build(optdsl.load("adamw"), "torch")
    gen = torch.Generator().manual_seed(0)
    base, grad = torch.randn(4, 3, generator=gen), torch.randn(3, 4, generator=gen)
    stepped = {}
    for backend in ("eager", "cpp"):
        p = torch.nn.Parameter(base.clone().t())
        assert not p.is_contiguous()
        opt = AdamW([p], lr=0.1, backend=backend)
        p.grad = grad.clone()
        opt.step()
        stepped[backend] = p.detach()
    torch.testing.assert_close(stepped["cpp"], stepped["eager"], rtol=1e-6, atol=1e-6)
