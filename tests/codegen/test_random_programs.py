"""Random programs from the search's own generator compile on every target and agree with the
reference interpreter (float32, two steps so that new states are read back), or fail with a
DslError. The Triton part runs in a subprocess under TRITON_INTERPRET=1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import codegen
from optdsl import DslError, Interpreter, to_source
from optdsl.parser import parse
from search.mutate import mutate, random_program
from search.warm_start import adamw_program, prepare

SEEDS = range(12)
SHAPES = [(7,), (3, 5), (1,)]
LR = 0.01


def programs():
    """Per seed: a random program, or the search's warm start (AdamW), then a few mutations of it:
    what the search evaluates."""
    out = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        p = random_program(rng, n_statements=8) if seed % 2 else prepare(adamw_program())
        for _ in range(4):
            p, _ = mutate(p, rng)
        out.append(p)
    return out


def data(seed=0):
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(SHAPES)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()} for _ in range(2)]
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
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-4, atol=1e-5 * (1 + np.nanmax(np.abs(
            np.where(np.isfinite(ref[k]), ref[k], 0)))), equal_nan=True, err_msg=k)


def run_torch(program):
    import torch

    params, grads = data()
    ts = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = codegen.build(program, "torch")(list(ts.values()), lr=LR, backend="eager")
    for g in grads:
        for k, t in ts.items():
            t.grad = torch.tensor(g[k])
        opt.step()
    return {k: t.detach().numpy() for k, t in ts.items()}


def run_jax(program):
    import jax.numpy as jnp
    import optax

    params, grads = data()
    tx = codegen.build(program, "jax")(learning_rate=LR)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(p)
    for g in grads:
        updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, p)
        p = optax.apply_updates(p, updates)
    return {k: np.asarray(v) for k, v in p.items()}


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_torch_and_jax_agree_with_the_interpreter(index):
    program = programs()[index]
    assert parse(to_source(program)) == program
    try:
        ref = reference(program)
    except DslError:
        return  # e.g. a shape test no tensor here satisfies: a clear, expected error
    close(run_torch(program), ref)
    close(run_jax(program), ref)


TRITON_SCRIPT = """
import json, sys
import numpy as np, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import codegen
from test_random_programs import programs, data, LR
out = []
for program in programs():
    params, grads = data()
    ts = [torch.tensor(v, requires_grad=True) for v in params.values()]
    opt = codegen.build(program, "triton")(ts, lr=LR, backend="triton")
    for g in grads:
        for t, k in zip(ts, params):
            t.grad = torch.tensor(g[k])
        opt.step()
    out.append([t.detach().numpy().tolist() for t in ts])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_triton_agrees_with_the_interpreter():
    pytest.importorskip("triton")
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    script = TRITON_SCRIPT.format(root=root, tests=here)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for program, got in zip(programs(), results):
        ref = reference(program)
        close({k: np.asarray(v, dtype=np.float32) for k, v in zip(ref, got)}, ref)
