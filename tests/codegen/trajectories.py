"""Run one program on each target over the same float32 trajectory, for the differential tests.

Every runner takes ``(program, params, grads, lr)`` (numpy dicts; ``grads`` one dict per step)
and returns the final parameters as numpy arrays. Triton must be interpreted from its first
import, so :func:`in_triton_interpreter` calls a test module's function in a subprocess with
``TRITON_INTERPRET=1`` and hands back what it returned (JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

import codegen
from optdsl import Interpreter

HERE = os.path.dirname(os.path.abspath(__file__))


def run_interpreter(program, params, grads, lr, dtype=np.float32):
    opt = Interpreter(program, dtype=dtype, lr=lr)
    state = opt.init(params)
    for t, g in enumerate(grads, start=1):
        params, state = opt.step(params, g, state, t)
    return params


def run_torch(program, params, grads, lr, backend="eager", target="torch"):
    import torch

    ts = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = codegen.build(program, target)(list(ts.values()), lr=lr, backend=backend)
    for g in grads:
        for k, t in ts.items():
            t.grad = torch.tensor(g[k])
        opt.step()
    return {k: t.detach().numpy() for k, t in ts.items()}


def run_triton(program, params, grads, lr):
    return run_torch(program, params, grads, lr, backend="triton", target="triton")


def run_jax(program, params, grads, lr):
    import jax.numpy as jnp
    import optax

    tx = codegen.build(program, "jax")(learning_rate=lr)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(p)
    for g in grads:
        updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, p)
        p = optax.apply_updates(p, updates)
    return {k: np.asarray(v) for k, v in p.items()}


def in_triton_interpreter(module: str, function: str):
    """``module.function()`` (a test module here) run under TRITON_INTERPRET=1; its JSON result."""
    script = (f"import json, sys; sys.path[:0] = [{os.path.dirname(os.path.dirname(HERE))!r}, {HERE!r}]; "
              f"from {module} import {function}; print(json.dumps({function}()))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
