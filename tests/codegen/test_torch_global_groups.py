"""Programs with global reductions on the eager backend's multi-tensor group steps: every group's
stages run in lockstep, a global's partial totals combined over all groups (param groups, dtypes,
paths, the slices of a large tensor), against the reference interpreter and the per-tensor
functional step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trajectories import run_interpreter, run_torch

import codegen
import optdsl
from codegen.generated import load_module
from codegen.torch_target import emit, entry_point
from optdsl.extend import clip_by_global_norm

# the global of the 1-d path reads g, the 2-d path's a per-tensor norm first: its stage comes later
PATHS_APART = """def f(w, g, v, lr=0.01):
    u = g
    if ndim(w) >= 2:
        u = g / (norm(g) + 0.001)
    s = global_norm(u)
    v = interp(g * g, v, 0.99)
    ok = global_allfinite(v)
    return lr * ok * u / (s + 1e-06) + lr * mean(v), v
"""
CLIP_TWICE = """def f(w, g, m, lr=0.1, limit=0.5):
    n = global_norm(g)
    g = g * min(1, limit / n)
    m = interp(g, m, 0.9)
    return lr * m / (global_norm(m) + 1e-3), m
"""
PROGRAMS = {"clip_adamw": clip_by_global_norm(optdsl.load("adamw")), "paths_apart": optdsl.parse(PATHS_APART),
            "clip_twice": optdsl.parse(CLIP_TWICE),
            # Adafactor's mean(r) of a row value cannot be cut into slices: it stays in its segment
            "clip_adafactor": clip_by_global_norm(optdsl.load("adafactor"))}
# 400 x 400 is sliced into rows of the chunks (the runtime's _CHUNK = 2**17 elements)
SHAPES = [(400, 400), (7,), (3, 5), (), (0,), (2, 3, 4)]


def _module(program):
    return load_module(emit(program), f"global_groups_{program.name}")


def _data(shapes, steps, seed=0):
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.standard_normal(s) for i, s in enumerate(shapes)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(steps)]
    return params, grads


def _assert_eager_matches_interpreter(program, shapes, steps):
    """The program's optimizer on ``eager`` against the interpreter, both in float64."""
    params, grads = _data(shapes, steps)
    lr = program.hyper_defaults["lr"]
    got = run_torch(program, params, grads, lr)
    for k, v in run_interpreter(program, params, grads, lr, dtype=np.float64).items():
        np.testing.assert_allclose(got[k], v, rtol=1e-11, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("name", PROGRAMS)
def test_the_eager_step_runs_group_steps_and_matches_the_interpreter(name):
    """float64, 4 steps, a tensor sliced across chunks beside a 0-d and an empty one."""
    program = PROGRAMS[name]
    module = _module(program)
    assert module._PROGRAM.groups, "the eager backend should step groups, not single tensors"
    _assert_eager_matches_interpreter(program, SHAPES, 4)


@pytest.mark.parametrize("name", PROGRAMS)
def test_groups_of_other_dtypes_and_settings_share_one_global(name):
    """Two param groups (their own lr) and float32 beside float64 params: four plan entries whose
    globals are each one total over all of them, as the functional per-tensor step takes it."""
    program = PROGRAMS[name]
    cls = entry_point(_module(program), program)
    torch.manual_seed(0)
    shapes = [(300, 500), (5,), (4, 3), (6,)]
    dtypes = [torch.float32, torch.float64, torch.float64, torch.float32]
    lrs = [0.01, 0.01, 0.003, 0.003]
    ps = [torch.randn(s, dtype=d) for s, d in zip(shapes, dtypes)]
    grads = [[torch.randn(s, dtype=d) for s, d in zip(shapes, dtypes)] for _ in range(3)]
    eager = [p.clone() for p in ps]
    opt = cls([{"params": eager[:2], "lr": lrs[0]}, {"params": eager[2:], "lr": lrs[2]}], backend="eager")
    program = opt._program
    reference, states = [p.clone() for p in ps], program.init_states(ps)
    for step, gs in enumerate(grads, start=1):
        for p, g in zip(eager, gs):
            p.grad = g.clone()
        opt.step()
        # the functional step takes one lr: run it with each group's on all tensors, keep the group's
        (a, sa), (b, sb) = (program.step(reference, gs, states, lr=lr, step=step) for lr in (lrs[0], lrs[2]))
        reference, states = a[:2] + b[2:], {n: sa[n][:2] + sb[n][2:] for n in states}
    # (a float32 tensor's part of a global is summed in float32, its rows in another order than the
    # functional step's: the float64 params see that rounding too; a global over some groups only
    # would be off by far more)
    for p, q in zip(eager, reference):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_a_global_that_cannot_be_cut_out_runs_per_tensor_and_matches():
    """``global_norm(0.5)`` (a number per tensor, no full list to reduce in slices) leaves the
    program on the per-tensor segments, still the interpreter's values."""
    program = optdsl.parse("def f(w, g, lr=0.1):\n    return lr * g / global_norm(0.5)\n")
    module = _module(program)
    assert module._PROGRAM.groups == ()
    _assert_eager_matches_interpreter(program, [(3, 4), (5,)], 2)


def test_clip_by_global_norm_of_adamw_matches_torch_clip_grad_norm_and_adamw():
    """The generated ``clip_by_global_norm(adamw)`` on eager against torch's ``clip_grad_norm_`` then
    ``torch.optim.AdamW`` (float64, clipping on at some steps and off at others; torch divides by the
    norm plus 1e-6, optax and optdsl by the norm: ~1e-8 apart where it clips)."""
    cls = codegen.build(clip_by_global_norm(optdsl.load("adamw"), 5.0), "torch")
    torch.manual_seed(1)
    ps = [torch.randn(s, dtype=torch.float64) for s in [(200, 700), (10,), (3, 4)]]
    ours, theirs = [p.clone().requires_grad_() for p in ps], [p.clone().requires_grad_() for p in ps]
    a = cls(ours, lr=0.01, weight_decay=0.1, backend="eager")
    b = torch.optim.AdamW(theirs, lr=0.01, weight_decay=0.1)
    for step in range(6):
        scale = 0.001 if step % 2 else 1.0  # a global norm of ~0.4 (kept) or ~400 (clipped)
        gs = [scale * torch.randn(p.shape, dtype=torch.float64) for p in ps]
        for x, y, g in zip(ours, theirs, gs):
            x.grad, y.grad = g.clone(), g.clone()
        a.step()
        torch.nn.utils.clip_grad_norm_(theirs, 5.0)
        b.step()
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-8)


def _steps(cls, params, groups, backend, steps=4):
    """Train copies of ``params`` split into param groups (``groups``: (start, stop, lr)) on ``backend``."""
    xs = [p.clone() for p in params]
    opt = cls([{"params": xs[a:b], "lr": lr} for a, b, lr in groups], backend=backend)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for x in xs:  # global norms of ~100 (clipped) and ~0.1 (kept) in turn
            x.grad = torch.randn(x.shape, dtype=x.dtype, generator=gen) * (0.001 if step % 2 else 1.0)
        opt.step()
    return xs, opt


@pytest.mark.parametrize("inner", ["adamw", "lamb", "adafactor"])
def test_fused_backends_take_a_global_of_an_input_as_a_per_step_number(inner, monkeypatch):
    """``clip_by_global_norm`` of AdamW and of LAMB (whose kernel then takes its per-tensor norms
    in a pass of its own) on the ``cpp`` and ``compiled`` backends: ``global_norm(g)`` over every
    group first, each group's kernel or compiled step then reading it, as eager to float64 rounding.
    (The compiled backend ran every tensor's segments one at a time: 7.3x fused AdamW with
    clip_grad_norm_ on BERT-base, 2x its own eager step.) The groups: two param groups, float32
    beside float64, and a non-contiguous parameter, whose group the kernels hand to the eager step
    with the global's value."""
    program = clip_by_global_norm(optdsl.load(inner), 5.0)
    cls = entry_point(_module(program), program)
    assert cls._program.global_backends == {"compiled", "cpp"}
    torch.manual_seed(0)
    f64 = torch.float64
    params = [torch.randn(300, 500, dtype=f64), torch.randn(10), torch.randn(3, 4, dtype=f64),
              torch.randn(5, 4, dtype=f64).t()]
    groups = [(0, 2, 0.01), (2, 4, 0.003)]
    eager, _ = _steps(cls, params, groups, "eager")
    # the globals as numbers: no tensor's segments run one at a time
    monkeypatch.setattr(cls._program, "compiled_segments", lambda: pytest.fail("segment by segment"))
    for backend in ("cpp", "compiled"):
        fused, opt = _steps(cls, params, groups, backend)
        assert backend == "compiled" or opt._backend_for(torch.device("cpu"), 1 << 21) == "cpp"
        for x, y in zip(fused, eager):
            tol = 1e-5 if x.dtype == torch.float32 else 1e-11
            torch.testing.assert_close(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["paths_apart", "clip_twice"])
def test_no_kernels_where_a_global_reads_a_value_the_step_computes(name):
    """``global_norm(m)`` of the new m, or of a value made after a per-tensor norm, would need the
    kernels' passes between the groups: no ``cpp`` backend, and asking for it says so."""
    program = PROGRAMS[name]
    cls = entry_point(_module(program), program)
    assert "cpp" not in cls._program.backends and not cls._program.global_backends
    with pytest.raises(ValueError, match=r"backend 'cpp' cannot run program 'f' \(a global reduction not of"):
        cls([torch.zeros(3)], backend="cpp")
