"""NaN flows through sign() as the reference says (numpy: sign(nan) is nan) on every CPU target."""

import numpy as np
import pytest
import torch

import codegen
from optdsl import Interpreter, parse

PROGRAM = parse("def s(w, g, m, lr=0.5):\n    m = interp(g, m, 0.5)\n    return lr * sign(m), m\n")
GRAD = np.array([1.0, -2.0, 0.0, np.nan], dtype=np.float32)


def reference():
    opt = Interpreter(PROGRAM, dtype=np.float32)
    w = {"w": np.zeros(4, np.float32)}
    return opt.step(w, {"w": GRAD}, opt.init(w), 1)[0]["w"]


@pytest.mark.parametrize("backend", ["eager", "compiled", "cpp"])  # (cpp: the default past 1,000 steps)
def test_torch_sign_keeps_nan(backend):
    w = torch.zeros(4, requires_grad=True)
    opt = codegen.build(PROGRAM, "torch")([w], backend=backend)
    w.grad = torch.tensor(GRAD)
    opt.step()
    np.testing.assert_array_equal(w.detach().numpy(), reference())  # nan == nan here


def test_jax_sign_keeps_nan():
    import jax.numpy as jnp

    tx = codegen.build(PROGRAM, "jax")()
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.asarray(GRAD)}, tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(params["w"] + updates["w"]), reference())
