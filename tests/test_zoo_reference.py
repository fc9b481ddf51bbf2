"""Differential tests: every zoo program, run by the reference interpreter, against an independent
implementation of the definition its docstring names (torch.optim, optax, pytorch_optimizer, or
the authors' release where no library has it). Float64 on both sides, 50 steps, random
gradients, several shapes (1-d, 2-d, 3-d, size 1, and one large matrix)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_optimizer
import torch
from differential import (
    assert_match,
    make_grads,
    make_params,
    needs_optax,
    optax,
    run_optax,
    run_program,
    run_torch,
)

from optdsl import Interpreter, load

STEPS = 50
SHAPES = [(), (7,), (1,), (1, 1), (5, 6), (2, 3, 4), (256, 384)]
TOL = 1e-10


def run_dsl(name, params, grads, dtype=np.float64, **hyper):
    return run_program(load(name), params, grads, dtype, **hyper)[0]


@pytest.fixture(scope="module")
def setup():
    params = make_params(SHAPES)
    return params, make_grads(params)


# --- torch.optim -----------------------------------------------------------------------------

def test_sgd_matches_torch(setup):
    params, grads = setup
    ref = run_torch(lambda ps: torch.optim.SGD(ps, lr=0.05), params, grads)
    assert_match(run_dsl("sgd", params, grads, lr=0.05), ref, params)


# torch.optim.SGD rejects Nesterov with dampening.
@pytest.mark.parametrize("name, dampening, weight_decay", [("momentum", 0.0, 0.0), ("momentum", 0.3, 0.01),
                                                           ("nesterov", 0.0, 0.0), ("nesterov", 0.0, 0.01)])
def test_momentum_matches_torch(setup, name, dampening, weight_decay):
    params, grads = setup
    ref = run_torch(lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.8, dampening=dampening,
                                               weight_decay=weight_decay, nesterov=name == "nesterov"),
                    params, grads)
    ours = run_dsl(name, params, grads, lr=0.02, momentum=0.8, dampening=dampening,
                   weight_decay=weight_decay)
    assert_match(ours, ref, params)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_torch(setup, weight_decay):
    params, grads = setup
    ref = run_torch(lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-8,
                                                weight_decay=weight_decay), params, grads)
    ours = run_dsl("adam", params, grads, lr=0.01, beta1=0.8, beta2=0.99, weight_decay=weight_decay)
    assert_match(ours, ref, params)


def test_adamw_matches_torch(setup):
    params, grads = setup
    ref = run_torch(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1), params, grads)
    assert_match(run_dsl("adamw", params, grads, lr=0.01, weight_decay=0.1), ref, params)


def test_adamw_float32_matches_torch_float32(setup):
    params, grads = setup
    ref = run_torch(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1), params, grads,
                    dtype=torch.float32)
    ours = run_dsl("adamw", params, grads, dtype=np.float32, lr=0.01, weight_decay=0.1)
    assert_match(ours, ref, params, tol=1e-5)


@pytest.mark.parametrize("lr, weight_decay", [(0.01, 0.0), (0.3, 0.05)])
def test_adafactor_matches_torch(setup, lr, weight_decay):
    params, grads = setup
    eps1 = float(np.finfo(np.float64).eps)  # torch's eps1=None on a float64 parameter
    ref = run_torch(lambda ps: torch.optim.Adafactor(ps, lr=lr, eps=(None, 1e-3), weight_decay=weight_decay),
                    params, grads)
    ours = run_dsl("adafactor", params, grads, lr=lr, eps1=eps1, weight_decay=weight_decay)
    assert_match(ours, ref, params)


def test_adafactor_state_is_factored():
    opt = Interpreter(load("adafactor"))
    state = opt.init({"m": np.zeros((2, 3, 4)), "b": np.zeros(5)})
    assert {k: v.shape for k, v in state["m"].items()} == {"r": (2, 3), "c": (2, 4)}
    assert {k: v.shape for k, v in state["b"].items()} == {"v": (5,)}


# --- optax -----------------------------------------------------------------------------------

@needs_optax
def test_lion_matches_optax(setup):
    params, grads = setup
    weight_decay = 0.1
    ref = run_optax(optax.lion(0.003, b1=0.9, b2=0.99, weight_decay=weight_decay), params, grads)
    ours = run_dsl("lion", params, grads, lr=0.003, beta1=0.9, beta2=0.99, weight_decay=weight_decay)
    assert_match(ours, ref, params)


@needs_optax
def test_lamb_matches_optax(setup):
    params, grads = setup
    weight_decay = 0.01
    params = {**params, "zero": np.zeros((3, 4))}  # ||w|| = 0 at step 1: trust ratio 1
    grads = [{**g, **e} for g, e in zip(grads, make_grads({"zero": params["zero"]}, seed=9))]
    ref = run_optax(optax.lamb(0.01, weight_decay=weight_decay, eps_root=1e-12), params, grads)
    ours = run_dsl("lamb", params, grads, lr=0.01, weight_decay=weight_decay, eps_root=1e-12)
    assert_match(ours, ref, params)


@needs_optax
@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_optax(setup, nesterov):
    params, grads = setup
    ref = run_optax(optax.lars(0.5, weight_decay=0.01, trust_coefficient=0.02, eps=1e-9, momentum=0.9,
                               nesterov=nesterov), params, grads)
    ours = run_dsl("lars", params, grads, lr=0.5, weight_decay=0.01, trust_coefficient=0.02, eps=1e-9,
                   momentum=0.9, nesterov=float(nesterov))
    assert_match(ours, ref, params)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_pytorch_optimizer_where_the_definitions_agree(setup, nesterov):
    """pytorch_optimizer.LARS takes the trust ratio on g (not g + wd w), skips tensors of ndim <= 1
    and keeps lr outside the momentum: with weight_decay = eps = 0, on tensors of 2+ axes and a
    constant lr, it is optax.lars, the definition the program follows."""
    params, grads = setup
    params = {n: p for n, p in params.items() if p.ndim >= 2}
    ref = run_torch(lambda ps: pytorch_optimizer.LARS(ps, lr=0.5, trust_coefficient=0.02, momentum=0.9,
                                                      nesterov=nesterov, foreach=False), params, grads)
    ours = run_dsl("lars", params, grads, lr=0.5, trust_coefficient=0.02, momentum=0.9, nesterov=float(nesterov))
    assert_match(ours, ref, params)


# Shapes on which optax (two largest axes) and the program (last two axes) agree; both sides
# of the 128 threshold, both orders of the last two axes, one factored 3-d tensor.
OPTAX_FACTOR_SHAPES = [(7,), (1,), (1, 1), (5, 6), (2, 3, 4), (256, 384), (384, 256), (128, 128),
                       (127, 300), (2, 128, 130), (3, 140, 129)]


@needs_optax
def test_adafactor_optax_matches_optax():
    params = make_params(OPTAX_FACTOR_SHAPES, seed=3)
    grads = make_grads(params, seed=4)
    ref = run_optax(optax.adafactor(0.05, weight_decay_rate=0.01), params, grads)
    ours = run_dsl("adafactor_optax", params, grads, lr=0.05, weight_decay_rate=0.01)
    # optax computes the decay rate 1 - t^-0.8 in float32 even under x64: ~1e-7 relative.
    assert_match(ours, ref, params, tol=1e-6)
    factored = Interpreter(load("adafactor_optax")).init(params)
    assert {n for n, s in factored.items() if "r" in s} == {"p5", "p6", "p7", "p9", "p10"}


# --- pytorch_optimizer and the authors' releases ------------------------------------------------

@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_amos_matches_pytorch_optimizer(setup, momentum):
    params, grads = setup
    params = {**params, "conv": np.random.default_rng(5).normal(size=(3, 4, 2, 2))}
    grads = [{**g, **e} for g, e in zip(grads, make_grads({"conv": params["conv"]}, seed=9))]
    ref = run_torch(lambda ps: pytorch_optimizer.Amos(ps, lr=0.01, momentum=momentum, extra_l2=1e-3,
                                                      foreach=False), params, grads)
    ours = run_dsl("amos", params, grads, lr=0.01, momentum=momentum, extra_l2=1e-3)
    assert_match(ours, ref, params)


def adax_release(params, grads, lr, beta1, beta2, eps, weight_decay):
    """The step of AdaX's released ``AdaX.step`` (github.com/switchablenorms/AdaX), in numpy."""
    params = {n: p.copy() for n, p in params.items()}
    m = {n: np.zeros_like(p) for n, p in params.items()}
    v = {n: np.zeros_like(p) for n, p in params.items()}
    for t, gs in enumerate(grads, start=1):
        for n, p in params.items():
            g = gs[n] + weight_decay * p
            m[n] = beta1 * m[n] + (1 - beta1) * g
            v[n] = (1 + beta2) * v[n] + beta2 * g * g
            step_size = lr * math.sqrt((1 + beta2) ** t - 1)
            p -= step_size * m[n] / (np.sqrt(v[n]) + eps)
    return params


def test_adax_matches_release(setup):
    params, grads = setup
    ref = adax_release(params, grads, lr=0.01, beta1=0.9, beta2=1e-3, eps=1e-12, weight_decay=5e-4)
    ours = run_dsl("adax", params, grads, lr=0.01, beta1=0.9, beta2=1e-3, eps=1e-12, weight_decay=5e-4)
    assert_match(ours, ref, params)


def rms(x, axis=None):
    return np.sqrt(np.mean(np.square(x), axis=axis, keepdims=axis is not None))


def test_tiger_matches_pytorch_optimizer(setup):
    """pytorch_optimizer.Tiger has one lr per group: each step we hand it lr RMS(w) for tensors of
    2+ axes and 0.5 lr without weight decay for the others, the program's per-tensor rule."""
    params, grads = setup
    lr, wd = 0.01, 0.05
    ts = {n: torch.tensor(p, requires_grad=True) for n, p in params.items()}
    groups = [{"params": [t], "weight_decay": wd if t.ndim >= 2 else 0.0} for t in ts.values()]
    opt = pytorch_optimizer.Tiger(groups, lr=lr, beta=0.9, foreach=False)
    for g in grads:
        for group, (n, t) in zip(opt.param_groups, ts.items()):
            t.grad = torch.tensor(g[n])
            group["lr"] = lr * float(rms(t.detach().numpy())) if t.ndim >= 2 else 0.5 * lr
        opt.step()
    ref = {n: t.detach().numpy() for n, t in ts.items()}
    assert_match(run_dsl("tiger", params, grads, lr=lr, beta=0.9, weight_decay=wd), ref, params)


def tiger_release(params, grads, kinds, lr, beta, weight_decay, k, shrink_ratio):
    """The step of bojone/tiger's ``Tiger._resource_apply`` (TensorFlow), in numpy. ``kinds``
    maps a parameter to the role its variable name gives it there: bias, gamma, embeddings, other."""
    params = {n: p.copy() for n, p in params.items()}
    m = {n: np.zeros_like(p) for n, p in params.items()}
    for t, gs in enumerate(grads):  # t counts from 0, as tf's `iterations`
        b1 = beta if t % k == 0 else 1.0
        b2 = (1 - beta) / k
        lr_t = lr if (t + 1) % k == 0 else 0.0
        for n, var in params.items():
            is_nan = bool(np.isnan(gs[n]).any())
            b1_n = 1.0 if is_nan else b1
            g = np.zeros_like(gs[n]) if is_nan else gs[n]
            c, lr_n, d = 0.0, lr_t, weight_decay
            if kinds[n] in ("bias", "gamma"):
                lr_n, d = lr_n * 0.5, 0.0
                c = 1.0 if kinds[n] == "gamma" else 0.0
            elif kinds[n] == "embeddings":
                lr_n = lr_n * rms(var, axis=-1)
            else:
                lr_n = lr_n * rms(var)
            m[n] = b1_n * m[n] + b2 * g
            u = (np.sign(m[n]) + d * var) * lr_n
            params[n] = (var - c) * shrink_ratio + c if is_nan else var - u
    return params


@pytest.mark.parametrize("k", [1, 4])
def test_tiger_matches_release(k):
    """Per-tensor lr (biases, norm gains, embedding rows, others), the NaN guard, and gradient
    accumulation folded into the momentum, against the authors' TensorFlow step."""
    rng = np.random.default_rng(7)
    groups = {"other": [(5, 6), (2, 3, 4), (256, 384)], "bias": [(7,), (1,)], "gamma": [(6,)],
              "embeddings": [(20, 8)]}
    params, kinds = {}, {}
    for kind, shapes in groups.items():
        for s in shapes:
            name = f"{kind}{len(params)}"
            params[name] = rng.normal(size=s) + (1.0 if kind == "gamma" else 0.0)
            kinds[name] = kind
    grads = make_grads(params, seed=8)
    for t, n in [(6, "other0"), (6, "gamma5"), (21, "embeddings6"), (30, "bias3")]:
        grads[t][n] = grads[t][n].copy()
        grads[t][n].flat[0] = np.nan
    hyper = {"lr": 0.01, "beta": 0.9, "weight_decay": 0.05, "grad_accum_steps": k, "shrink_ratio": 0.9}
    ref = tiger_release(params, grads, kinds, hyper["lr"], hyper["beta"], hyper["weight_decay"], k,
                        hyper["shrink_ratio"])
    extra = {"gamma": {"centre": 1.0}, "embeddings": {"embedding": 1.0}}
    opts = {kind: Interpreter(load("tiger"), **hyper, **extra.get(kind, {})) for kind in groups}
    state = {n: opts[kinds[n]].init({n: p})[n] for n, p in params.items()}
    ours = dict(params)
    for t, g in enumerate(grads, start=1):
        for n in params:
            new, st = opts[kinds[n]].step({n: ours[n]}, {n: g[n]}, {n: state[n]}, t)
            ours[n], state[n] = new[n], st[n]
    assert_match(ours, ref, params)
