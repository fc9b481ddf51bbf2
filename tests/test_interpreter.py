"""The reference interpreter against hand-written numpy, for the features every backend must copy."""

import numpy as np
import pytest

from optdsl import DslError, Interpreter, parse

RNG = np.random.default_rng(0)


def test_factored_state_broadcasts_as_outer_product():
    p = parse("def f(w, g, r: row, c: col, lr=1.0):\n"
              "    r = interp(rowmean(g * g), r, 0.5)\n    c = interp(colmean(g * g), c, 0.5)\n"
              "    return lr * g / sqrt(r * c / mean(r)), r, c\n")
    w, g = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 3, 4))
    opt = Interpreter(p)
    ups, state = opt.updates({"w": w}, {"w": g}, opt.init({"w": w}), 1)
    r, c = 0.5 * (g * g).mean(-1), 0.5 * (g * g).mean(-2)
    vhat = r[..., :, None] * c[..., None, :] / r.mean()
    np.testing.assert_allclose(ups["w"], g / np.sqrt(vhat))
    assert state["w"]["r"].shape == (2, 3) and state["w"]["c"].shape == (2, 4)


def test_global_norm_spans_all_tensors_and_branches():
    p = parse("def f(w, g, lr=1.0):\n    if ndim(w) >= 2:\n        u = g / global_norm(g)\n"
              "    else:\n        u = g\n    return lr * u\n")
    params = {"a": RNG.normal(size=(5,)), "b": RNG.normal(size=(2, 3))}
    grads = {k: RNG.normal(size=v.shape) for k, v in params.items()}
    opt = Interpreter(p)
    ups, _ = opt.updates(params, grads, opt.init(params), 1)
    total = np.sqrt(sum((x ** 2).sum() for x in grads.values()))  # includes the 1-d tensor
    np.testing.assert_allclose(ups["b"], grads["b"] / total)
    np.testing.assert_allclose(ups["a"], grads["a"])


def test_state_inits_keep_and_float32():
    p = parse("def f(w, g, slow: full(init=w), u: full(init=1), ema: full(init=w, keep=True), s: scalar, "
              "lr=0.5):\n    ema = interp(w, ema, 0.9)\n    s = s + norm(g)\n"
              "    return lr * g * u + 0 * slow * s, slow, u, ema, s\n")
    w = RNG.normal(size=(4,)).astype(np.float32)
    opt = Interpreter(p, dtype=np.float32)
    state = opt.init({"w": w})
    assert set(state["w"]) == {"slow", "u", "ema", "s"}
    np.testing.assert_array_equal(state["w"]["slow"], w)
    np.testing.assert_array_equal(state["w"]["u"], np.ones(4))
    new_w, state = opt.step({"w": w}, {"w": np.ones(4)}, state, 1)
    assert new_w["w"].dtype == np.float32 and state["w"]["s"].shape == ()
    np.testing.assert_allclose(new_w["w"], w - 0.5, rtol=1e-6)
    np.testing.assert_allclose(state["w"]["ema"], w, rtol=1e-6)
    assert state["w"]["s"] == pytest.approx(2.0)


def test_step_selects_and_hyperparameter_overrides():
    p = parse("def f(w, g, acc, step, lr=1.0, k=3):\n    acc = acc + g\n"
              "    fire = step % k == 0\n    u = where(fire, acc / k, 0 * g)\n"
              "    acc = where(fire, 0 * acc, acc)\n    return lr * u, acc\n")
    opt = Interpreter(p, k=2)
    w = {"w": np.zeros(2)}
    state = opt.init(w)
    seen = []
    for t in range(1, 5):
        w, state = opt.step(w, {"w": np.full(2, float(t))}, state, t)
        seen.append(w["w"][0])
    assert seen == [0.0, -1.5, -1.5, -5.0]
    with pytest.raises(DslError, match="no hyperparameter"):
        Interpreter(p, beta=1.0)


def test_row_ops_on_vectors_are_a_clear_error():
    p = parse("def f(w, g, lr=1.0):\n    return lr * g / rowmean(g)\n")
    opt = Interpreter(p)
    with pytest.raises(DslError, match=r"needs a parameter with 2 or more axes.*ndim\(w\) >= 2"):
        opt.init({"w": np.ones(3)})
