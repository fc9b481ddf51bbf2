"""Generated optimizers on a CUDA device (Triton kernels and torch.compile) against the interpreter.

Skipped without CUDA, and under TRITON_INTERPRET=1 (the kernels must be compiled for the GPU).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from closeness import assert_steps_close

import optdsl
from codegen import build

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="Triton runs interpreted here"),
]

SHAPES = [(37,), (5, 9), (2, 3, 4), (1,), (300, 257)]  # the last spans several chunks
STEPS = 20


def _data(shapes, steps, seed):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(steps)]
    return init, grads


def _reference(program, init, grads, dtype=None, **hyper):
    """The interpreter in float32; with ``dtype``, params and grads rounded to it as the kernel does."""
    def rnd(x):
        return x if dtype is None else torch.tensor(x).to(dtype).float().numpy()

    interp = optdsl.Interpreter(program, dtype=np.float32, **hyper)
    ps = {str(i): rnd(p) for i, p in enumerate(init)}
    state = interp.init(ps)
    for t, gs in enumerate(grads, start=1):
        ps, state = interp.step(ps, {str(i): rnd(g) for i, g in enumerate(gs)}, state, t)
        ps = {k: rnd(v) for k, v in ps.items()}
    return [ps[str(i)] for i in range(len(init))]


def _run(cls, init, grads, backend, dtype=torch.float32, lr=0.01):
    params = [torch.nn.Parameter(torch.tensor(p).to(device="cuda", dtype=dtype)) for p in init]
    opt = cls(params, lr=lr, backend=backend)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g).to(device="cuda", dtype=dtype)
        opt.step()
    return [p.detach().float().cpu().numpy() for p in params]


@pytest.mark.parametrize("name", optdsl.zoo_names())
def test_triton_matches_interpreter(name):
    """Every zoo program through ``backend="triton"`` on CUDA, 20 steps, 1-d to 3-d and size 1."""
    program = optdsl.load(name)
    cls = build(program, "triton")
    init, grads = _data(SHAPES, STEPS, seed=0)
    got = _run(cls, init, grads, "triton")
    assert_steps_close(got, _reference(program, init, grads, lr=0.01), program, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name", ["adamw", "lion"])
def test_compiled_matches_interpreter(name):
    program = optdsl.load(name)
    cls = build(program, "torch")
    init, grads = _data(SHAPES, STEPS, seed=1)
    got = _run(cls, init, grads, "compiled")
    assert_steps_close(got, _reference(program, init, grads, lr=0.01), program, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name", ["adamw", "lion"])
def test_bf16_params(name):
    """bf16 params and grads: float32 math and states, w rounded once per step (to nearest)."""
    program = optdsl.load(name)
    cls = build(program, "triton")
    init, grads = _data(SHAPES, 5, seed=2)
    got = _run(cls, init, grads, "triton", dtype=torch.bfloat16, lr=0.01)
    for g, e in zip(got, _reference(program, init, grads, dtype=torch.bfloat16, lr=0.01)):
        np.testing.assert_allclose(g, e, rtol=1e-2, atol=1e-2)
        assert np.mean(g == e) > 0.95  # nearly all bit-identical: the same rounding of the same math


GLOBAL = """
def clipped(w, g, m, step, lr=0.01, beta=0.9):
    g = g / max(global_norm(g), 1.0)
    m = interp(g, m, beta)
    return lr * m / (norm(m) + 1e-3) * amax(abs(w)), m
"""


def test_global_reductions_across_tensors():
    """A global norm over every tensor between two passes (through the module's _TRITON.runner())."""
    program = optdsl.parse(GLOBAL)
    cls = build(program, "triton")
    module = __import__("sys").modules[cls.__module__]
    init, grads = _data(SHAPES, STEPS, seed=3)
    params = [torch.tensor(p, device="cuda") for p in init]
    states = module.init_states(params)
    runner = module._TRITON.runner()
    for t, gs in enumerate(grads, start=1):
        runner.step([0] * len(params), params, [torch.tensor(g, device="cuda") for g in gs], states, 0.01, t,
                    {"beta": 0.9})
    for g, e in zip(params, _reference(program, init, grads)):
        np.testing.assert_allclose(g.cpu().numpy(), e, rtol=2e-4, atol=2e-5)


def test_lr_schedule_does_not_recompile():
    """lr and step are float arguments: changing them every step reuses the one compiled kernel."""
    cls = build(optdsl.load("adamw"), "triton")
    module = __import__("sys").modules[cls.__module__]
    params = [torch.nn.Parameter(torch.randn(1000, device="cuda"))]
    opt = cls(params, lr=1e-3, backend="triton")
    for k in range(5):
        params[0].grad = torch.randn(1000, device="cuda")
        opt.param_groups[0]["lr"] = 1e-3 / (k + 1)
        opt.step()
    kernel = module._TRITON.families[0].passes[-1]
    caches = getattr(kernel, "device_caches", None)
    if caches is None:
        pytest.skip("this triton keeps no device_caches")
    compiled = caches[torch.cuda.current_device()][0]
    assert len(compiled) == 1


# --- torch conventions on the device (issue 10; tests/codegen/test_torch_runtime.py runs them on a CPU)
def _cuda_params(seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, device="cuda", generator=g)) for s in [(3, 70), (5,), ()]]


def _cuda_steps(opt, params, ts):
    for t in ts:
        g = torch.Generator(device="cuda").manual_seed(100 + t)
        for p in params:
            p.grad = torch.randn(p.shape, device="cuda", generator=g)
        opt.step()


@pytest.fixture(scope="module")
def adamw_triton():
    return build(optdsl.load("adamw"), "triton")


def test_the_default_backend_on_cuda_is_the_triton_kernel(adamw_triton):
    params = _cuda_params()
    opt = adamw_triton(params, lr=0.1)
    assert opt._backend_for(params[0].device, sum(p.numel() for p in params)) == "triton"


@pytest.mark.parametrize("backend", ["triton", "compiled"])
def test_copies_state_edits_in_place_state_and_step_counts_on_cuda(adamw_triton, backend):
    import copy

    params = _cuda_params()
    opt = adamw_triton(params, lr=0.1, backend=backend)
    _cuda_steps(opt, params, range(2))
    twin_params, twin = copy.deepcopy((params, opt))
    held = {(i, k): v for i, p in enumerate(params) for k, v in opt.state[p].items()}
    _cuda_steps(opt, params, range(2, 4))
    _cuda_steps(twin, twin_params, range(2, 4))
    for a, b in zip(params, twin_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for (i, k), v in held.items():
        assert opt.state[params[i]][k] is v  # updated in place
    assert [float(opt.state[p]["step"]) for p in params] == [4.0] * 3
    # a moment reset by the user is honoured: the params then step as a fresh optimizer's would
    for p in params:
        opt.state[p]["m"].zero_()
        opt.state[p]["v"] = torch.zeros_like(p)
    fresh_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fresh = adamw_triton(fresh_params, lr=0.1, backend=backend)
    for p, q in zip(params, fresh_params):
        fresh.state[q] = {"step": torch.tensor(4.0), "m": torch.zeros_like(q), "v": torch.zeros_like(q)}
    _cuda_steps(opt, params, range(4, 6))
    _cuda_steps(fresh, fresh_params, range(4, 6))
    for a, b in zip(params, fresh_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["triton", "compiled"])
def test_maximize_on_cuda(adamw_triton, backend):
    up, down = _cuda_params(), _cuda_params()
    opt_up = adamw_triton(up, lr=0.1, maximize=True, backend=backend)
    opt_down = adamw_triton(down, lr=0.1, backend=backend)
    for t in range(3):
        g = torch.Generator(device="cuda").manual_seed(t)
        for p, q in zip(up, down):
            p.grad = torch.randn(p.shape, device="cuda", generator=g)
            q.grad = -p.grad
        opt_up.step()
        opt_down.step()
    for p, q in zip(up, down):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["triton", "compiled"])
def test_grad_scaler_on_cuda_skips_inf_steps_and_matches_torch_adamw(adamw_triton, backend):
    """torch.amp.GradScaler("cuda") hands grad_scale/found_inf (CUDA tensors) to step; a step with an
    inf grad leaves params and states as they were, and training matches torch's fused AdamW."""
    def train(make):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).cuda()
        opt, scaler = make(model.parameters()), torch.amp.GradScaler("cuda", init_scale=2.0**10)
        gen = torch.Generator(device="cuda").manual_seed(1)
        for t in range(6):
            x, y = (torch.randn(16, n, device="cuda", generator=gen) for n in (6, 3))
            opt.zero_grad()
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            if t == 3:
                model[0].weight.grad[0, 0] = float("inf")
                before = [p.detach().clone() for p in model.parameters()]
            scaler.step(opt)
            scaler.update()
            if t == 3:
                assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        return [p.detach() for p in model.parameters()], scaler.get_scale()

    got, scale = train(lambda ps: adamw_triton(ps, lr=1e-2, weight_decay=0.1, backend=backend))
    want, want_scale = train(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, fused=True))
    assert scale == want_scale
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
