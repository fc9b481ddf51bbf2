"""Derived optimizers (optdsl.extend): each output is an ordinary program (validates, prints as
source that parses back to it, runs on 1-3-d tensors), and each trick, applied to a zoo program,
matches the library that implements it (optax, torch.optim) in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from differential import (
    assert_match,
    jax,
    jnp,
    make_grads,
    make_params,
    needs_optax,
    optax,
    run_optax,
    run_program,
)

from optdsl import Interpreter, load, parse, to_source, validate, zoo_names
from optdsl.extend import (
    clip_by_global_norm,
    clip_by_norm,
    clip_by_value,
    ema_of_weights,
    gradient_accumulation,
    layerwise_adaptation,
    lazy_updates,
    lookahead,
    lr_multiplier,
    lr_schedule,
    weight_decay,
)

STEPS = 40
SHAPES = [(7,), (1,), (5, 6), (2, 3, 4), (64, 48)]
TOL = 1e-10
EXTENSIONS = [weight_decay, layerwise_adaptation, gradient_accumulation, lookahead, lazy_updates,
              ema_of_weights, lr_schedule, lr_multiplier, clip_by_value, clip_by_norm, clip_by_global_norm]


@pytest.fixture(scope="module")
def setup():
    params = make_params(SHAPES)
    return params, make_grads(params, STEPS)


# --- every extension makes an ordinary program -------------------------------------------------

@pytest.mark.parametrize("ext", EXTENSIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", zoo_names())
def test_extension_output_is_a_program(name, ext):
    p = validate(ext(load(name)))
    assert parse(to_source(p)) == p
    assert p.doc.endswith(".") and "Derived:" in p.doc
    params = make_params([(3,), (4, 5), (2, 3, 4)])
    grads = make_grads(params, steps=2)
    out, _ = run_program(p, params, grads)
    assert all(np.all(np.isfinite(v)) for v in out.values())


def test_extensions_compose_without_name_clashes():
    p = weight_decay(weight_decay(lookahead(lookahead(load("lion")))))
    validate(p)
    assert [h.name for h in p.hypers][-6:] == ["sync_period", "slow_step_size", "sync_period_1",
                                               "slow_step_size_1", "weight_decay_1", "weight_decay_2"]
    assert p.state_names == ("m", "slow", "slow_1")
    assert parse(to_source(p)) == p


# --- equal to the libraries' versions of each trick ---------------------------------------------

@needs_optax
@pytest.mark.parametrize("inner", ["adamw", "adam+weight_decay"])
def test_lamb_is_layerwise_adapted_adamw(setup, inner):
    """LAMB = layerwise_adaptation(AdamW), and AdamW = weight_decay(Adam without L2)."""
    params, grads = setup
    params = {**params, "zero": np.zeros((3, 4))}  # ||w|| = 0 at step 1
    grads = [{**g, **e} for g, e in zip(grads, make_grads({"zero": params["zero"]}, seed=9))]
    if inner == "adamw":
        program, decay = layerwise_adaptation(load("adamw")), {"weight_decay": 0.05}
    else:  # adam's own (coupled) weight_decay stays 0; the decoupled one is named weight_decay_1
        program, decay = layerwise_adaptation(weight_decay(load("adam"))), {"weight_decay_1": 0.05}
    ours, _ = run_program(program, params, grads, lr=0.01, eps=1e-6, beta1=0.8, **decay)
    lamb, _ = run_program(load("lamb"), params, grads, lr=0.01, eps=1e-6, weight_decay=0.05, beta1=0.8)
    ref = run_optax(optax.lamb(0.01, b1=0.8, eps=1e-6, weight_decay=0.05), params, grads)
    assert_match(ours, ref, params)
    assert_match(lamb, ref, params)


def test_weight_decay_of_adam_is_adamw(setup):
    params, grads = setup
    ours, _ = run_program(weight_decay(load("adam")), params, grads, lr=0.01, weight_decay=0.0, weight_decay_1=0.1)
    ref = {n: t.detach().numpy() for n, t in _torch_run(
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1), params, grads).items()}
    assert_match(ours, ref, params)


@needs_optax
@pytest.mark.parametrize("k", [1, 3])
def test_gradient_accumulation_matches_multisteps(setup, k):
    params, grads = setup
    ours, state = run_program(gradient_accumulation(load("adam"), k), params, grads[:-1], lr=0.01)
    with jax.enable_x64(True):
        tx = optax.MultiSteps(optax.adam(0.01), every_k_schedule=k, accumulator_dtype=jnp.float64)
    ref = run_optax(tx, params, grads[:-1])
    assert_match(ours, ref, params)
    if k > 1:  # 39 steps: 13 updates, nothing pending
        assert all(np.all(s["acc"] == 0) for s in state.values())


@needs_optax
def test_lookahead_matches_optax(setup):
    params, grads = setup
    ours, state = run_program(lookahead(load("adam")), params, grads[:-2], lr=0.02)
    with jax.enable_x64(True):
        tx = optax.lookahead(optax.adam(0.02), sync_period=5, slow_step_size=0.5)
        lp = optax.LookaheadParams.init_synced({n: jnp.asarray(v) for n, v in params.items()})
        opt_state = tx.init(lp)
        for g in grads[:-2]:  # 38 steps: the last sync was 3 steps ago, so fast != slow
            updates, opt_state = tx.update({n: jnp.asarray(v) for n, v in g.items()}, opt_state, lp)
            lp = optax.apply_updates(lp, updates)
        fast = {n: np.asarray(v) for n, v in lp.fast.items()}
        slow = {n: np.asarray(v) for n, v in lp.slow.items()}
    assert_match(ours, fast, params)
    assert_match({n: s["slow"] for n, s in state.items()}, slow, params)


def test_lazy_adam_matches_sparse_adam():
    """torch.optim.SparseAdam updates moments and weights only where the sparse gradient has
    entries: with row-sparse gradients, lazy_updates(adam). SparseAdam adds eps to sqrt(v) before
    the bias correction (Adam after it), so both run with a negligible eps."""
    rng = np.random.default_rng(2)
    params = {"emb": rng.normal(size=(50, 8)), "emb3": rng.normal(size=(3, 20, 4))}
    grads = []
    for _ in range(STEPS):
        g = {}
        for n, p in params.items():
            rows = rng.random(p.shape[:-1]) < 0.3
            g[n] = rng.normal(size=p.shape) * rows[..., None]
        grads.append(g)
    ours, _ = run_program(lazy_updates(load("adam")), params, grads, lr=0.01, eps=1e-30)
    ts = {n: torch.tensor(p, requires_grad=True) for n, p in params.items()}
    opt = torch.optim.SparseAdam(list(ts.values()), lr=0.01, eps=1e-30)
    for g in grads:
        for n, t in ts.items():
            t.grad = torch.tensor(g[n]).to_sparse()
        opt.step()
    ref = {n: t.detach().numpy() for n, t in ts.items()}
    assert_match(ours, ref, params)
    never = np.all(np.stack([g["emb"] for g in grads]) == 0, axis=(0, 2))
    assert np.array_equal(ours["emb"][never], params["emb"][never])


def test_ema_of_weights_tracks_the_trajectory(setup):
    params, grads = setup
    opt = Interpreter(load("adam"), lr=0.01)
    state, w, ema = opt.init(params), dict(params), dict(params)
    for t, g in enumerate(grads, start=1):
        w, state = opt.step(w, g, state, t)
        ema = {n: 0.9 * ema[n] + 0.1 * w[n] for n in w}
    ours, ours_state = run_program(ema_of_weights(load("adam"), 0.9), params, grads, lr=0.01)
    assert_match(ours, w, params)
    assert_match({n: s["ema"] for n, s in ours_state.items()}, ema, params)


@needs_optax
def test_lr_schedule_matches_optax(setup):
    params, grads = setup
    lr = 0.02
    ours, _ = run_program(lr_schedule(load("adam"), [(0, 0.0), (10, 1.0), (30, 0.1)]), params, grads, lr=lr)
    sched = optax.join_schedules([optax.linear_schedule(0.0, lr, 10), optax.linear_schedule(lr, 0.1 * lr, 20)],
                                 [10])
    ref = run_optax(optax.adam(sched), params, grads)
    # optax computes the schedule's fraction in float32 even under x64: ~1e-8 relative.
    assert_match(ours, ref, params, tol=1e-6)


def _torch_run(make_opt, params, grads):
    ts = {n: torch.tensor(p, requires_grad=True) for n, p in params.items()}
    opt = make_opt(list(ts.values()))
    for g in grads:
        for n, t in ts.items():
            t.grad = torch.tensor(g[n])
        opt.step()
    return ts


def test_lr_multiplier_matches_torch_param_groups(setup):
    params, grads = setup
    program = lr_multiplier(load("adam"))
    ours = {}
    for n, mult in zip(params, [1.0, 3.0, 0.5, 2.0, 1.0]):
        out, _ = run_program(program, {n: params[n]}, [{n: g[n]} for g in grads], lr=0.01, lr_mult=mult)
        ours[n] = out[n]
    ts = _torch_run(lambda ps: torch.optim.Adam(
        [{"params": [p], "lr": 0.01 * m} for p, m in zip(ps, [1.0, 3.0, 0.5, 2.0, 1.0])]), params, grads)
    assert_match(ours, {n: t.detach().numpy() for n, t in ts.items()}, params)


@needs_optax
def test_clip_by_value_matches_optax(setup):
    params, grads = setup
    ours, _ = run_program(clip_by_value(load("adam"), 0.5), params, grads, lr=0.01)
    ref = run_optax(optax.chain(optax.clip(0.5), optax.adam(0.01)), params, grads)
    assert_match(ours, ref, params)


@needs_optax
def test_clip_by_global_norm_matches_optax(setup):
    params, grads = setup
    ours, _ = run_program(clip_by_global_norm(load("sgd"), 3.0), params, grads, lr=0.1)
    ref = run_optax(optax.chain(optax.clip_by_global_norm(3.0), optax.sgd(0.1)), params, grads)
    assert_match(ours, ref, params)


@needs_optax
def test_clip_by_norm_is_global_clipping_per_tensor(setup):
    """Per-tensor clipping is optax.clip_by_global_norm run on each tensor alone."""
    params, grads = setup
    ours, _ = run_program(clip_by_norm(load("adam"), 2.0), params, grads, lr=0.01)
    ref = {}
    for n in params:
        ref.update(run_optax(optax.chain(optax.clip_by_global_norm(2.0), optax.adam(0.01)), {n: params[n]},
                             [{n: g[n]} for g in grads]))
    assert_match(ours, ref, params)


@pytest.mark.parametrize("make, message", [
    (lambda p: gradient_accumulation(p, 0), "accum_steps must be a whole number >= 1, not 0"),
    (lambda p: gradient_accumulation(p, float("inf")), "accum_steps must be a whole number >= 1, not inf"),
    (lambda p: lookahead(p, sync_period=2.5), "sync_period must be a whole number >= 1, not 2.5"),
    (lambda p: lookahead(p, slow_step_size=-1), r"slow_step_size must be a number in \[0, 1\], not -1"),
    (lambda p: clip_by_norm(p, -1), "max_norm must be a number > 0, not -1"),
    (lambda p: clip_by_global_norm(p, 0), "max_norm must be a number > 0, not 0"),
    (lambda p: clip_by_value(p, float("nan")), "clip_value must be a number > 0, not nan"),
    (lambda p: ema_of_weights(p, 1.5), r"ema_decay must be a number in \[0, 1\], not 1.5"),
    (lambda p: weight_decay(p, "0.1"), "weight_decay must be a number >= 0, not '0.1'"),
    (lambda p: lr_schedule(p, [(5, 1.0), (5, 0.0)]), "a schedule's steps must differ"),
])
def test_an_extensions_argument_out_of_its_range_is_refused(make, message):
    """gradient_accumulation(sgd, 0) never updated (step % 0 is nan), lookahead(sync_period=0) never
    synced, clip_by_norm(-1) stepped uphill: each was accepted silently."""
    with pytest.raises(ValueError, match=message):
        make(load("sgd"))


def test_lazy_updates_go_inside_gradient_accumulation():
    """lazy_updates(gradient_accumulation(sgd)) froze a row that the boundary's micro-batch missed
    (its sum kept growing, never applied); the other order steps it by the mean of its k gradients."""
    with pytest.raises(ValueError, match=r"gradient_accumulation\(lazy_updates\(p\)\)"):
        lazy_updates(gradient_accumulation(load("sgd"), 2))
    opt = Interpreter(gradient_accumulation(lazy_updates(load("sgd")), 2), lr=1.0)
    w = {"e": np.zeros((2, 2))}
    state = opt.init(w)
    seen = []
    for t, row0 in enumerate([1.0, 0.0, 1.0, 0.0], start=1):
        w, state = opt.step(w, {"e": np.array([[row0, row0], [1.0, 1.0]])}, state, t)
        seen.append(w["e"][0, 0])
    assert seen == [0.0, -0.5, -0.5, -1.0]


@needs_optax
def test_a_schedule_outside_layerwise_adaptation_and_weight_decay_is_optaxs(setup):
    """Order matters (README): a schedule inside the trust ratio cancels, inside weight_decay it
    leaves the decay at the base lr; outside, each is optax's scheduled LAMB / AdamW."""
    params, grads = setup
    points, lr = [(0, 0.0), (10, 1.0)], 0.01
    sched = optax.linear_schedule(0.0, lr, 10)
    lamb = lr_schedule(layerwise_adaptation(load("adamw")), points)
    ours, _ = run_program(lamb, params, grads, lr=lr, eps=1e-6, weight_decay=0.01)
    assert_match(ours, run_optax(optax.lamb(sched, eps=1e-6, weight_decay=0.01), params, grads), params,
                 tol=1e-6)
    adamw = lr_schedule(weight_decay(load("adam"), 0.01), points)
    ours, _ = run_program(adamw, params, grads, lr=lr)
    assert_match(ours, run_optax(optax.adamw(sched, weight_decay=0.01), params, grads), params, tol=1e-6)
