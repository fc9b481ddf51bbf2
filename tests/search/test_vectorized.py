import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import scaled_examples

from optdsl import Interpreter, load, parse
from optdsl.errors import DslError
from search.mutate import mutate, random_program
from search.vectorized import VectorizedStep
from search.warm_start import adamw_program

SHAPES = [(3, 4), (5,), (2, 3)]


def _compare(program, steps=3, lrs=(0.5, 2.0), seed=0):
    """Run the numpy interpreter per copy and the vectorized step on all copies; compare."""
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.normal(size=s) for i, s in enumerate(SHAPES)}
    grads = [{n: rng.normal(size=p.shape) for n, p in params.items()} for _ in range(steps)]
    flat = lambda d: np.concatenate([d[n].reshape(-1) for n in params])
    vec = VectorizedStep(program, SHAPES)
    w = torch.tensor(np.stack([flat(params)] * len(lrs)), dtype=torch.float32)
    states = vec.init(w)
    lr = torch.tensor(lrs, dtype=torch.float32).reshape(-1, 1)
    for k, lr_k in enumerate(lrs):
        interp = Interpreter(program, dtype=np.float32, lr=lr_k)
        p, st_ = dict(params), interp.init(params)
        for t in range(steps):
            p, st_ = interp.step(p, grads[t], st_, t + 1)
        expected = flat(p)
        wk = w.clone()
        s_k = [s.clone() for s in states]
        for t in range(steps):
            g = torch.tensor(np.stack([flat(grads[t])] * len(lrs)), dtype=torch.float32)
            u, s_k = vec(wk, g, s_k, lr, t + 1)
            wk = wk - u
        got = wk[k].numpy()
        ok = np.isfinite(expected)
        assert np.array_equal(ok, np.isfinite(got))
        np.testing.assert_allclose(got[ok], expected[ok], rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("name", ["sgd", "adamw", "lion"])
def test_matches_interpreter_on_zoo(name):
    _compare(load(name))


def test_amax_matches_the_interpreter_and_warns_nothing(recwarn):
    """A nan guard (Tiger's: amax) printed torch's 'index_reduce() is in beta' on a search's stderr."""
    _compare(parse("def f(w, g, lr):\n    return lr * where(amax(g != g), 0, g * amax(w))\n"))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_matches_interpreter_on_reductions_and_globals():
    _compare(parse("""
def f(w, g, m, s: scalar, lr):
    m = interp(g, m, 0.9)
    s = norm(g) + rms(m) + mean(w) + dot(g, w) + cosine_sim(g, m)
    u = m / global_norm(m) + s * w + ndim(w) + size(w) * 0.01 + dim(w, -1)
    return lr * u, m, s
"""))


@settings(deadline=None, max_examples=scaled_examples(25))
@given(seed=st.integers(0, 2**32 - 1))
def test_matches_interpreter_on_random_programs(seed):
    rng = np.random.default_rng(seed)
    p = random_program(rng, n_statements=int(rng.integers(1, 8)))
    for _ in range(int(rng.integers(0, 5))):
        p, _ = mutate(p, rng)
    with np.errstate(all="ignore"):
        _compare(p, steps=2, seed=seed % 1000)


def test_warm_start_matches_interpreter():
    _compare(adamw_program(), steps=4)


def test_factored_programs_are_refused():
    with pytest.raises(DslError, match="row"):
        VectorizedStep(parse("def f(w, g, r: row, lr):\n    r = rowmean(g)\n    return lr * g, r\n"), SHAPES)


def test_float64_steps_take_their_numbers_in_float64():
    # the guards run in float64: constants, hyperparameters and step are made in w's dtype
    # (a float32 constant as interp's end point made torch.lerp raise)
    program = parse("def train(w, g, m, lr, step, beta=0.1):\n    m = interp(1, m, 0.3) + step * beta\n"
                    "    return lr * g * m, m\n")
    vec = VectorizedStep(program, SHAPES)
    w = torch.ones(1, 23, dtype=torch.float64)
    update, (m,) = vec(w, w, vec.init(w), torch.full((1, 1), 1.0, dtype=torch.float64), 1)
    expected = 0.7 + 0.1  # interp(1, 0, 0.3) + 1 * 0.1, in float64
    assert update.dtype == m.dtype == torch.float64
    assert torch.equal(m, torch.full_like(m, expected))


@pytest.mark.parametrize("weight", ["g > 0", "0.1 * ndim(w)", "0.1 * allfinite(g)", "0.1 * global_allfinite(g)"])
def test_float64_steps_make_truth_values_and_shape_facts_in_float64(weight):
    # the same failure for values the evaluator makes itself: a float32 comparison, shape fact or
    # finiteness test as interp's weight made torch.lerp raise in the guards' float64 runs, so the
    # guard scored such a program an error
    program = parse(f"def train(w, g, m, lr):\n    m = interp(g, m, {weight})\n    return lr * m, m\n")
    vec = VectorizedStep(program, SHAPES)
    w = torch.ones(1, 23, dtype=torch.float64)
    update, (m,) = vec(w, w, vec.init(w), torch.full((1, 1), 1.0, dtype=torch.float64), 1)
    assert update.dtype == m.dtype == torch.float64
    _compare(program)


def test_only_truth_valued_ops_make_bools_so_only_they_are_cast():
    """A step casts an elementwise op's result back to the weights' dtype only where the op table
    marks the op ``truth``: every other op's torch spelling keeps floats floats."""
    from optdsl.ops import ELEMENTWISE, OPS
    from search.vectorized import _elementwise

    x = torch.rand(3, 5) + 0.1
    for name, op in OPS.items():
        if op.shape == ELEMENTWISE:
            assert (_elementwise(name)(*[x] * op.arity).dtype == torch.bool) == op.truth, name
