"""Every derived optimizer (optdsl.extend), applied to Adam, runs on the torch and jax targets as
the reference interpreter runs it: 20 float32 steps on 1-d, 2-d, 3-d and size-1 tensors,
step-dependent selects (accumulation, Lookahead, schedules) and global norms included."""

from __future__ import annotations

import numpy as np
import pytest

import codegen
from optdsl import Interpreter, load
from optdsl import extend as ex

SHAPES = [(7,), (3, 5), (2, 3, 4), (1,)]
STEPS = 20
LR = 0.01
EXTENSIONS = {
    "weight_decay": ex.weight_decay, "layerwise_adaptation": ex.layerwise_adaptation,
    "gradient_accumulation": lambda p: ex.gradient_accumulation(p, 3), "lookahead": ex.lookahead,
    "lazy_updates": ex.lazy_updates, "ema_of_weights": ex.ema_of_weights,
    "lr_schedule": lambda p: ex.lr_schedule(p, [(0, 0.0), (5, 1.0), (15, 0.2)]),
    "lr_multiplier": ex.lr_multiplier, "clip_by_value": ex.clip_by_value, "clip_by_norm": ex.clip_by_norm,
    "clip_by_global_norm": ex.clip_by_global_norm,
}


def data():
    rng = np.random.default_rng(0)
    params = {f"p{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(SHAPES)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
             for _ in range(STEPS)]
    for g in grads[::4]:  # rows with zero gradient, so lazy updates have something to skip
        g["p1"][1] = 0.0
    return params, grads


def reference(program):
    params, grads = data()
    opt = Interpreter(program, dtype=np.float32, lr=LR)
    state = opt.init(params)
    for t, g in enumerate(grads, start=1):
        params, state = opt.step(params, g, state, t)
    return params


def close(ours, ref):
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=2e-4, atol=2e-5, err_msg=k)


@pytest.mark.parametrize("name", EXTENSIONS)
def test_torch_eager(name):
    import torch

    program = EXTENSIONS[name](load("adam"))
    params, grads = data()
    ts = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = codegen.build(program, "torch")(list(ts.values()), lr=LR, backend="eager")
    for g in grads:
        for k, t in ts.items():
            t.grad = torch.tensor(g[k])
        opt.step()
    close({k: t.detach().numpy() for k, t in ts.items()}, reference(program))


@pytest.mark.parametrize("name", EXTENSIONS)
def test_jax(name):
    import jax.numpy as jnp
    import optax

    program = EXTENSIONS[name](load("adam"))
    params, grads = data()
    tx = codegen.build(program, "jax")(learning_rate=LR)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(p)
    for g in grads:
        updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, p)
        p = optax.apply_updates(p, updates)
    close({k: np.asarray(v) for k, v in p.items()}, reference(program))


TRITON_SCRIPT = """
import json, sys
import torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import codegen
from optdsl import load
from test_extensions_on_targets import EXTENSIONS, LR, data
out = {{}}
for name, extend in EXTENSIONS.items():
    program = extend(load("adam"))
    params, grads = data()
    ts = [torch.tensor(v, requires_grad=True) for v in params.values()]
    try:
        opt = codegen.build(program, "triton")(ts, lr=LR, backend="triton")
    except ValueError as e:  # a known limit, checked by the test
        out[name] = str(e)
        continue
    for g in grads:
        for t, k in zip(ts, params):
            t.grad = torch.tensor(g[k])
        opt.step()
    out[name] = [t.detach().numpy().tolist() for t in ts]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_triton_under_the_interpreter():
    """The Triton backend, run by Triton's CPU interpreter in a subprocess. The Optimizer does not
    yet route programs with global reductions to the kernels: it refuses them clearly."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    here = os.path.dirname(os.path.abspath(__file__))
    script = TRITON_SCRIPT.format(root=os.path.dirname(os.path.dirname(here)), tests=here)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, extend in EXTENSIONS.items():
        if name == "clip_by_global_norm":
            assert "global reductions" in results[name]
            continue
        ref = reference(extend(load("adam")))
        close({k: np.asarray(v, dtype=np.float32) for k, v in zip(ref, results[name])}, ref)
