"""The generated torch.optim.Optimizer behaves as torch users expect, and matches torch.optim."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings

import numpy as np
import pytest
import torch

import codegen
import optdsl
from codegen.runtime.torch_optimizer import _compiled_per_kind

STEPS = 20


def _interpreter_run(program, shapes, steps, seed=0):
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
             for _ in range(steps)]
    history = optdsl.Interpreter(program, dtype=np.float32).run(params, lambda ps, t: grads[t - 1], steps)
    return params, grads, history


def _run_class(opt_cls, params, grads, steps, backend):
    ts = [torch.tensor(v) for v in params.values()]
    opt = opt_cls(ts, backend=backend)
    for t in range(steps):
        for x, g in zip(ts, grads[t].values()):
            x.grad = torch.tensor(g)
        opt.step()
    return ts, opt


def test_state_dict_round_trip_and_param_groups():
    Lion = codegen.build(optdsl.load("lion"), "torch")
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(4))
    opt = Lion([{"params": [a]}, {"params": [b], "lr": 0.5, "beta1": 0.5}], lr=0.1, backend="eager")
    for _ in range(3):
        (a.sum() + (b * b).sum()).backward()
        opt.step()
        opt.zero_grad()
    assert a.grad is None
    clone_a, clone_b = torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone())
    opt2 = Lion([{"params": [clone_a]}, {"params": [clone_b]}], backend="eager")
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[1]["beta1"] == 0.5
    for o, (x, y) in ((opt, (a, b)), (opt2, (clone_a, clone_b))):
        (x.sum() + (y * y).sum()).backward()
        o.step()
    torch.testing.assert_close(a, clone_a)
    torch.testing.assert_close(b, clone_b)


def test_closure_and_scheduler_and_bf16():
    AdamW = codegen.build(optdsl.load("adamw"), "torch")
    w = torch.nn.Parameter(torch.randn(8, dtype=torch.bfloat16))
    opt = AdamW([w], lr=0.1, backend="eager")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def closure():
        opt.zero_grad()
        loss = (w.float() ** 2).sum()
        loss.backward()
        return loss

    losses = []
    for _ in range(5):
        losses.append(float(opt.step(closure).detach()))
        sched.step()
    assert losses[-1] < losses[0]
    assert w.dtype == torch.bfloat16 and opt.state[w]["m"].dtype == torch.float32
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**5)
    reloaded = AdamW([torch.nn.Parameter(w.detach().clone())], backend="eager")
    reloaded.load_state_dict(opt.state_dict())
    assert next(iter(reloaded.state.values()))["v"].dtype == torch.float32


def _digits_mlp(seed=0):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:512] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[:512])
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    return model, x, y


def _train(model, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name, reference, kwargs", [
    ("adamw", torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.01}),
    ("adafactor", torch.optim.Adafactor, {"lr": 1e-2}),
])
def test_generated_matches_torch_optim_on_digits(name, reference, kwargs):
    Generated = codegen.build(optdsl.load(name), "torch")
    m1, x, y = _digits_mlp()
    m2, _, _ = _digits_mlp()
    ours = _train(m1, Generated(m1.parameters(), backend="eager", **kwargs), x, y, 50)
    theirs = _train(m2, reference(m2.parameters(), **kwargs), x, y, 50)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), [("lion", "compiled"), ("adafactor", "compiled"), ("lion", "cpp"),
                                               ("adamw", "cpp")])
def test_fused_backends_match_interpreter_and_hand_state_to_eager(name, backend):
    """compiled (torch.compile) and cpp (C++ kernels, one call per group) follow the reference
    interpreter, and their state continues on the eager backend."""
    p = optdsl.load(name)
    shapes = [(7,), (3, 5), (2, 3, 4), (40_000,)]  # the last spans two chunks of the C++ loop
    params, grads, hist = _interpreter_run(p, shapes, STEPS)
    cls = codegen.build(p, "torch")
    torch._dynamo.utils.counters.clear()
    half = STEPS // 2
    ts, opt = _run_class(cls, params, grads, half, backend)
    if (name, backend) == ("lion", "compiled"):  # 1-d views: a static-size graph for the first size, then one for all
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    for x, h in zip(ts, hist[half - 1].values()):
        np.testing.assert_allclose(x.numpy(), h, rtol=2e-4, atol=1e-5)
    clones = [t.detach().clone() for t in ts]
    eager = cls(clones, backend="eager")
    eager.load_state_dict(opt.state_dict())
    for t in range(half, STEPS):
        for x, g in zip(clones, grads[t].values()):
            x.grad = torch.tensor(g)
        eager.step()
    for x, h in zip(clones, hist[-1].values()):
        np.testing.assert_allclose(x.numpy(), h, rtol=2e-4, atol=1e-5)


@contextlib.contextmanager
def _no_recompile_limit():
    """Fail if dynamo logs that it hit its recompile limit (past it, a function runs uncompiled)."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logging.getLogger("torch._dynamo").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("torch._dynamo").removeHandler(handler)
    assert not [r for r in records if "recompile_limit" in r]


@pytest.mark.slow
def test_compiled_steps_of_many_dtypes_stay_compiled():
    """dynamo stops compiling a code object past 8 graphs and runs it uncompiled, with a warning:
    params of four dtypes, two sizes and 0-d each (12 graphs) once shared one code object. Each
    compiled step now has its own, and every tensor follows the eager backend."""
    lion = codegen.build(optdsl.load("lion"), "torch")
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
    torch.manual_seed(0)
    made = [torch.randn(shape).to(dtype) for dtype in dtypes for shape in [(3,), (5,), ()]]
    grads = [[torch.randn(w.shape).to(w.dtype) for w in made] for _ in range(2)]
    runs = {}
    with _no_recompile_limit():
        for backend in ("compiled", "eager"):
            params = [w.clone() for w in made]
            opt = lion(params, lr=0.1, backend=backend)
            for step in grads:
                for w, g in zip(params, step):
                    w.grad = g.clone()
                opt.step()
            runs[backend] = params
    for a, b in zip(runs["compiled"], runs["eager"]):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_compiled_segments_of_many_ranks_and_dtypes_stay_compiled():
    """The segments of a program with global reductions, compiled with dynamic sizes, took one graph
    per rank and dtype of w in one code object: ranks 0-4 in two dtypes went past dynamo's limit."""

    def segment(w, g):
        return w * 2 + g

    with _no_recompile_limit():
        call = _compiled_per_kind(segment)
        for dtype in (torch.float32, torch.float64):
            for shape in [(), (3,), (2, 3), (2, 1, 3), (1, 2, 1, 3)]:
                w, g = torch.ones(shape, dtype=dtype), torch.full(shape, 0.5, dtype=dtype)
                torch.testing.assert_close(call(w=w, g=g), segment(w, g))


def test_grad_scaler_unscales_and_skips_non_finite_steps():
    Lion = codegen.build(optdsl.load("lion"), "torch")
    w = torch.nn.Parameter(torch.ones(4))
    opt = Lion([w], lr=0.1, backend="eager")
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale((w * torch.tensor([1.0, -1.0, 2.0, 0.0])).sum()).backward()
    scaler.step(opt)
    scaler.update()
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, 1.1, 0.9, 1.0]))
    opt.zero_grad()
    scaler.scale((w * float("inf")).sum()).backward()
    scaler.step(opt)  # found inf: the step is skipped
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, 1.1, 0.9, 1.0]))


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_step_counts_follow_params_with_grads_and_the_plan_is_cached(backend):
    AdamW = codegen.build(optdsl.load("adamw"), "torch")
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))
    b_alone = torch.nn.Parameter(b.detach().clone())
    opt, opt_b = AdamW([a, b], lr=0.1, backend=backend), AdamW([b_alone], lr=0.1, backend=backend)
    plans = []
    for t, b_has_grad in enumerate([True, True, False, False, True, True]):
        a.grad = torch.full_like(a, 0.1 * (t + 1))
        b.grad = torch.cos(torch.arange(5.0) * (t + 1)) if b_has_grad else None
        opt.step()
        plans.append(opt._cached_plan)
        if b_has_grad:
            b_alone.grad = b.grad.clone()
            opt_b.step()
    assert plans[0] is plans[1] and plans[2] is plans[3] and plans[4] is plans[5] and plans[1] is not plans[2]
    assert float(opt.state[a]["step"]) == 6 and float(opt.state[b]["step"]) == 4
    torch.testing.assert_close(b, b_alone)  # b's bias corrections counted only its own steps
    saved = opt.state_dict()["state"]
    assert [float(saved[i]["step"]) for i in (0, 1)] == [6.0, 4.0]


def test_the_step_counts_of_params_stepped_together_are_one_tensor_each_param_its_own_element():
    """One add counts a step for every param of a plan entry: their step tensors are 0-d views of
    one CPU float32 tensor, each param's own element (an in-place edit reaches that param alone); a
    replaced count, a deep copy and a reloaded checkpoint go on counting."""
    AdamW = codegen.build(optdsl.load("adamw"), "torch")
    params = [torch.nn.Parameter(torch.randn(n)) for n in (3, 4, 5)]
    opt = AdamW(params, lr=0.1, backend="eager")

    def step(o, ps):
        for p in ps:
            p.grad = torch.ones_like(p)
        o.step()

    step(opt, params)
    steps = [opt.state[p]["step"] for p in params]
    assert len({id(t) for t in steps}) == 3 and all(t.dim() == 0 for t in steps)
    assert len({t.untyped_storage().data_ptr() for t in steps}) == 1
    steps[1].fill_(10.0)
    assert [float(t) for t in steps] == [1.0, 10.0, 1.0]
    opt.state[params[2]]["step"] = torch.tensor(7.0)
    step(opt, params)
    assert [float(opt.state[p]["step"]) for p in params] == [2.0, 11.0, 8.0]
    twin = copy.deepcopy(opt)
    step(twin, twin.param_groups[0]["params"])
    assert [float(opt.state[p]["step"]) for p in params] == [2.0, 11.0, 8.0]
    assert [float(twin.state[p]["step"]) for p in twin.param_groups[0]["params"]] == [3.0, 12.0, 9.0]
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    again = AdamW(params, lr=0.1, backend="eager")
    again.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    step(again, params)
    assert [float(again.state[p]["step"]) for p in params] == [3.0, 12.0, 9.0]


@pytest.mark.slow
def test_cpp_runs_float64_params_in_double():
    AdamW = codegen.build(optdsl.load("adamw"), "torch")
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 5)), "b": rng.standard_normal(40_000)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(3)]
    ours, _ = _run_class(AdamW, params, grads, 3, "cpp")
    ref, _ = _run_class(AdamW, params, grads, 3, "eager")
    for a, b in zip(ours, ref):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_cpp_without_a_compiler_warns_and_runs_eager(monkeypatch, tmp_path):
    """No C++ compiler (an empty PATH, an empty build cache): backend='cpp' warns once per parameter
    dtype and takes the eager steps."""
    Lion = codegen.build(optdsl.load("lion"), "torch")
    assert not Lion._program.available("cpp", torch.device("meta"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    assert not Lion._program.available("cpp", torch.device("cpu"))
    w, v, b = (torch.nn.Parameter(torch.linspace(-1, 1, 9, dtype=dt)) for dt in [torch.float32] * 2 + [torch.bfloat16])
    opt, ref = Lion([w, b], lr=0.1, backend="cpp"), Lion([v], lr=0.1, backend="eager")
    for t in range(2):
        w.grad, v.grad, b.grad = torch.cos(w.detach() * (t + 1)), torch.cos(v.detach() * (t + 1)), torch.ones_like(b)
        if t == 0:
            with pytest.warns(RuntimeWarning, match="the cpp backend runs eager for torch.float32 parameters: no C\\+\\+ compiler"):
                opt.step()
        else:
            with warnings.catch_warnings():  # warned once, not at every step
                warnings.simplefilter("error")
                opt.step()
        ref.step()
    torch.testing.assert_close(w, v, rtol=0, atol=0)
    assert b.dtype == torch.bfloat16 and torch.all(b < torch.linspace(-1, 1, 9, dtype=torch.bfloat16))
