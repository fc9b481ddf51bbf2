"""Shared pieces of the differential tests: random trajectories, runners for the reference
interpreter, torch.optim and optax (float64), and a comparison that a do-nothing run cannot pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

try:  # the jax extra: the tests that need it are marked needs_optax and skip without it
    import jax
    import jax.numpy as jnp
    import optax
except ImportError:
    jax = jnp = optax = None

needs_optax = pytest.mark.skipif(optax is None, reason="needs the jax extra (pip install -e '.[jax]')")

from optdsl import Interpreter


def make_params(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {f"p{i}": rng.normal(size=s) for i, s in enumerate(shapes)}


def make_grads(params, steps=50, seed=1):
    """Gradients whose scale changes from step to step (adaptive methods see distinct moments)."""
    rng = np.random.default_rng(seed)
    return [{n: rng.normal(size=p.shape) * math.exp(rng.normal()) for n, p in params.items()}
            for _ in range(steps)]


def run_program(program, params, grads, dtype=np.float64, **hyper):
    """Final parameters and state after the reference interpreter runs ``program`` over ``grads``."""
    opt = Interpreter(program, dtype=dtype, **hyper)
    params = {n: np.asarray(p, dtype) for n, p in params.items()}
    state = opt.init(params)
    for t, g in enumerate(grads, start=1):
        params, state = opt.step(params, g, state, t)
    return params, state


def run_torch(make_opt, params, grads, dtype=torch.float64):
    """``make_opt(list of tensors)`` -> a torch optimizer; returns the final parameters."""
    ts = {n: torch.tensor(p, dtype=dtype, requires_grad=True) for n, p in params.items()}
    opt = make_opt(list(ts.values()))
    for g in grads:
        for n, t in ts.items():
            t.grad = torch.tensor(g[n], dtype=dtype)
        opt.step()
    return {n: t.detach().numpy().astype(np.float64) for n, t in ts.items()}


def run_optax(tx, params, grads):
    with jax.enable_x64(True):
        p = {n: jnp.asarray(v) for n, v in params.items()}
        state = tx.init(p)
        update = jax.jit(tx.update)  # eager dispatch of every small op costs far more than compiling
        for g in grads:
            updates, state = update({n: jnp.asarray(v) for n, v in g.items()}, state, p)
            p = optax.apply_updates(p, updates)
        return {n: np.asarray(v) for n, v in p.items()}


def assert_match(ours, ref, start, tol=1e-10):
    """Equal to ``tol`` relative to each tensor's scale, and the run moved every tensor (so an
    optimizer that did nothing could not pass)."""
    for n in ref:
        scale = max(1.0, float(np.max(np.abs(ref[n]))))
        err = float(np.max(np.abs(ours[n] - ref[n])))
        assert err <= tol * scale, f"{n} {ref[n].shape}: max error {err:.3g} (scale {scale:.3g})"
        assert np.max(np.abs(ref[n] - start[n])) > 1e-6, f"{n}: the reference did not move"
