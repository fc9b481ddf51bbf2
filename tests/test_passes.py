"""Core passes: dead code (also across steps), folding, flattening, common computations, specialisation."""

import numpy as np
import pytest

from optdsl import DslError, Interpreter, load, parse, to_source, zoo_names
from optdsl.ir import Const
from optdsl.ops import OPS
from optdsl.passes import (
    constant_states,
    eliminate_common,
    eliminate_constant_states,
    eliminate_dead_code,
    flatten,
    fold,
    segments,
    specialize,
    static_key,
)
from optdsl.typecheck import validate

DEAD = """
def f(w, g, m, v, loop, lr=0.1):
    unused = exp(g) * 3
    loop = loop * 0.5 + g
    m = interp(g, m, 0.9)
    v = interp(g * g, v, 0.999)
    u = m / sqrt(v + 1e-8)
    u = u * 1
    return lr * u, m, v, loop
"""


def test_dead_statements_and_dead_states_go():
    p = eliminate_dead_code(parse(DEAD))
    assert p.state_names == ("m", "v")  # `loop` only feeds itself: dead across steps
    assert [a.target for a in p.body] == ["m", "v", "u", "u"]


def test_a_state_read_only_by_a_dead_state_is_dead_too():
    p = parse("def f(w, g, a, b, lr=0.1):\n    b = b + a\n    a = a + g\n    return lr * g, a, b\n")
    assert eliminate_dead_code(p).state_names == ()


def test_kept_state_survives():
    p = parse("def f(w, g, ema: full(init=w, keep=True), lr=0.1):\n"
              "    ema = interp(w, ema, 0.99)\n    return lr * g, ema\n")
    assert eliminate_dead_code(p).state_names == ("ema",)


M = "    m = interp(g, m, 0.9)\n"


@pytest.mark.parametrize(("body", "values", "constant"), [
    (M + "    v = sign(v)\n", None, {"v": 0.0}),  # the seed 2 winner of a 10-minute search had it
    (M + "    v = v * v\n", None, {"v": 0.0}),
    ("    m = 2 * v\n    v = m\n", None, {"m": 0.0, "v": 0.0}),  # each kept by the other
    ("    v = v + m\n", None, {"m": 0.0, "v": 0.0}),  # m handed back as it came
    (M + "    v = b * v\n", None, {}),  # b * 0 is nan for b = inf: unknown until b is bound
    (M + "    v = b * v\n", {"b": 0.9}, {"v": 0.0}),
    (M + "    v = -v\n", None, {}),  # -0.0 from step 2: 1 / v tells them apart
    (M + "    v = v + g\n", None, {}),
    ("    v = sign(m)\n" + M, None, {}),
])
def test_states_kept_at_their_start_value_are_found(body, values, constant):
    p = parse(f"def f(w, g, m, v, lr, b=0.9):\n{body}    return lr * (g + 1 / v + m), m, v\n")
    assert constant_states(p, values) == constant
    q = eliminate_constant_states(p, values)
    assert set(q.state_names) == {"m", "v"} - set(constant)
    if constant:  # the same bits at every step
        params, ip, iq = {"w": np.linspace(-1, 1, 5)}, Interpreter(p, lr=0.1), Interpreter(q, lr=0.1)
        sp, sq = ip.init(params), iq.init(params)
        for t in range(1, 6):
            grads = {"w": np.linspace(-2, 3, 5) * t}
            (up, sp), (uq, sq) = ip.updates(params, grads, sp, t), iq.updates(params, grads, sq, t)
            np.testing.assert_array_equal(uq["w"], up["w"])


@pytest.mark.parametrize(("read", "kept"), [
    ("where(ndim(v) >= 2, 1, 0.5) + k", ("m", "v")),  # a number has no ndim
    ("colmean(r + 0 * c) + v + k", ("m", "c")),  # r + 0 * c is full only while c is a column
])
def test_a_constant_state_whose_shape_is_read_stays(read, kept):
    """A mutant of Adafactor whose column state c stays 0 (its statement deleted) came out invalid,
    `colmean(r + 0 * c)` as `colmean(r + 0)`, of a row: `equiv` and the readable form refused it."""
    p = parse("def f(w, g, m, v, r: row, c: col, k: scalar, lr):\n    m = interp(g, m, 0.9)\n"
              "    v = sign(v)\n    k = sign(k)\n    r = rowmean(g * g)\n"
              f"    return lr * m * ({read}), m, v, r, c, k\n")
    q = eliminate_constant_states(eliminate_dead_code(p))
    assert q.state_names == kept
    assert validate(q) is q


def test_a_kept_state_or_one_starting_at_w_is_never_constant():
    p = parse("def f(w, g, m: full(init=w), n: scalar(keep=True), lr):\n"
              "    m = sign(m)\n    n = n * n\n    return lr * g * m * n, m, n\n")
    assert constant_states(p) == {}


def test_fold_resolves_shape_facts_and_constants():
    p = parse("def f(w, g, lr=0.1):\n    a = 2 * 3\n    u = where(dim(w, -1) > 4, g * a, g)\n    return lr * u\n")
    assert "u = g * 6" in to_source(fold(p, shape=(2, 8)))
    assert "u = g\n" in to_source(fold(p, shape=(8, 2)))


# Constant arithmetic follows IEEE float64, as the interpreter computes it; it never raises.
IEEE = [("1 / 0", np.inf), ("-1 / 0", -np.inf), ("0 / 0", np.nan), ("1 % 0", np.nan),
        ("10 ** 1000", np.inf), ("e ** 710", np.inf), ("(-1) ** 0.5", np.nan), ("reciprocal(0.0)", np.inf),
        ("1e308 * 10", np.inf), ("log(0)", -np.inf), ("inf - inf", np.nan), ("-inf", -np.inf)]
# A number is a 0-d value, so a whole-tensor reduction of it folds too (a winner once stepped by
# `interp(g, m, norm(-0.374))`).
REDUCED = [("norm(-0.374)", 0.374), ("sum(3)", 3.0), ("rms(-2)", 2.0), ("mean(-0.5)", -0.5), ("amax(-2)", -2.0),
           ("dot(2, -1.5)", -3.0), ("allfinite(inf)", 0.0)]


@pytest.mark.parametrize("text, value", IEEE + REDUCED)
def test_constants_fold_to_ieee_values(text, value):
    p = parse(f"def f(w, g, lr):\n    c = {text}\n    return lr * g * c\n")
    folded = fold(p)
    assert folded.body[0].expr == Const(value) or (np.isnan(value) and np.isnan(folded.body[0].expr.value))
    assert parse(to_source(folded)) == folded  # printed as the language's `inf`, `-inf`, `nan`
    opt = Interpreter(p, lr=1.0)
    update, _ = opt.updates({"w": np.ones(2)}, {"w": np.ones(2)}, opt.init({"w": np.ones(2)}), 1)
    np.testing.assert_array_equal(update["w"], [value, value])


def test_folding_keeps_the_sign_of_zero():
    # -0.0 + 0 is 0.0: folding `x + 0` to `x` turned reciprocal(+0.0) = inf into -inf.
    p = parse("def f(w, g, lr):\n    return lr * reciprocal(g * 0 + 0)\n")
    assert to_source(fold(p)).endswith("return lr * reciprocal(g * 0 + 0)\n")
    opt = Interpreter(p, lr=1.0)
    update, _ = opt.updates({"w": np.ones(1)}, {"w": -np.ones(1)}, opt.init({"w": np.ones(1)}), 1)
    assert update["w"][0] == np.inf


def test_clip_of_a_value_by_itself_is_the_value_at_every_ieee_value():
    """A search's winner printed ``clip(g, g)`` (raw ``t_13 = clip(m, m)``) where it is ``g``: x lies in
    [-|x|, |x|], -0.0, inf and nan included, in the interpreter as in the fold."""
    p = parse("def f(w, g, lr):\n    return lr * clip(g * 2, g * 2)\n")
    assert to_source(fold(p)).endswith("return lr * (g * 2)\n")
    g = np.array([-0.0, 0.0, np.inf, -np.inf, np.nan, -3.0, 1e-300])
    for q in (p, fold(p)):
        opt = Interpreter(q, lr=1.0)
        update, _ = opt.updates({"w": np.ones(7)}, {"w": g}, opt.init({"w": np.ones(7)}), 1)
        np.testing.assert_array_equal(update["w"], g * 2)
        assert list(np.signbit(update["w"][:2])) == [True, False]


UNSIGNED = [("sqrt(v / -1.778)", "sqrt(v / 1.778)"), ("sqrt(-2 * v)", "sqrt(2 * v)"), ("abs(-v)", "abs(v)"),
            ("square(v * -0.5)", "square(v * 0.5)"), ("sqrt(v - 2)", "sqrt(v - 2)"),
            ("exp(v / -2)", "exp(v / -2)")]


@pytest.mark.parametrize(("text", "folded"), UNSIGNED)
def test_where_an_op_ignores_its_arguments_sign_a_negative_factor_loses_it(text, folded):
    # a search's winner read sqrt(v / -1.778); the op table's `even` says where the sign goes
    p = parse(f"def f(w, g, v, lr):\n    v = interp(g * g, v, 0.9) - 0.5\n    return lr * {text}, v\n")
    assert to_source(fold(p)).endswith(f"return lr * {folded}, v\n")


@pytest.mark.parametrize("name", [o.name for o in OPS.values() if o.even])
def test_a_sign_flipped_product_gives_an_even_op_the_same_bits(name):
    # what makes the rewrite above exact: x * -c and x / -c differ from x * c, x / c only in sign
    op = OPS[name]
    x = np.concatenate([np.linspace(-3, 3, 13), [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300]])
    for c in (1.778, 0.5, 3.0):
        nonzero = np.where(x == 0, 1, x)
        for flipped, plain in ((x * -c, x * c), (x / -c, x / c), (-c / nonzero, c / nonzero)):
            args = [np.full_like(x, 0.25)] * op.arity
            args_f, args_p = list(args), list(args)
            for i in op.even:
                args_f[i], args_p[i] = flipped, plain
            assert np.array_equal(op.numpy(*args_f), op.numpy(*args_p), equal_nan=True)


LOGIC = [("(g > 0) and 1", "g > 0"), ("g and 1", "g != 0"), ("g and 0", "0"), ("0 or g", "g != 0"),
         ("2 or g", "1"), ("nan and (g < 1)", "g < 1"), ("(g > 0) or 0", "g > 0")]


@pytest.mark.parametrize("text, folded", LOGIC)
def test_and_or_with_a_constant_fold_to_the_other_sides_truth(text, folded):
    p = parse(f"def f(w, g, lr):\n    c = {text}\n    return lr * c\n")
    assert to_source(fold(p)).splitlines()[1].strip() == f"c = {folded}"
    x = {"w": np.zeros(5)}
    g = {"w": np.array([-1.0, 0.0, 0.5, np.nan, np.inf])}
    before, after = Interpreter(p, lr=1.0), Interpreter(fold(p), lr=1.0)
    np.testing.assert_array_equal(before.updates(x, g, before.init(x), 1)[0]["w"],
                                  after.updates(x, g, after.init(x), 1)[0]["w"])


def test_literals_that_do_not_fit_a_float64_are_located_errors():
    for text in ["1" + "0" * 400, "1e400", "-1e999"]:
        with pytest.raises(DslError, match="does not fit in a float64") as info:
            parse(f"def f(w, g, lr):\n    c = {text}\n    return lr * g * c\n", "p.py")
        assert (info.value.line, info.value.col) == (2, 8 if text[0] != "-" else 9)
    with pytest.raises(DslError, match="does not fit in a float64"):
        parse("def f(w, g, lr, b=1" + "0" * 400 + "):\n    return lr * g\n")

def _same_trajectory(p, q, shapes=((5,), (3, 4))):
    rng = np.random.default_rng(1)
    params = {str(i): rng.normal(size=s) for i, s in enumerate(shapes)}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(6)]
    a = Interpreter(p).run(params, lambda _, t: grads[t - 1], 6)
    b = Interpreter(q).run(params, lambda _, t: grads[t - 1], 6)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_allclose(x[k], y[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("body", "kept"), [
    ("a = g * g\n    b = g * g", 1),  # one computation
    ("a = g * g\n    g = g + 1\n    b = g * g", 3),  # g changed in between: another value
    ("a = g * g\n    a = a + 1\n    b = g * g", 3),  # a no longer holds g * g
    ("a = g * g\n    b = g * g\n    b = b + 1", 3),  # b is set twice: its first value stays apart
    ("m = interp(g, m, 0.5)\n    a = interp(g, m, 0.5)\n    b = m * 1", 3),  # a reads the new m
])
def test_common_computations_are_made_once_only_where_they_hold_the_same_value(body, kept):
    p = parse(f"def f(w, g, m, lr=0.1):\n    {body}\n    return lr * (a + b), m\n")
    q = eliminate_common(p)
    assert len(q.body) == kept
    _same_trajectory(p, q, ((5,), (3, 4)))


def test_passes_preserve_semantics_on_the_zoo():
    for name in zoo_names():
        p = load(name)
        shapes = ((5,), (3, 4))
        for q in (eliminate_dead_code(p), flatten(p), fold(p), eliminate_common(flatten(p))):
            _same_trajectory(p, q, shapes)


def test_specialize_keeps_globals_in_lockstep():
    p = parse("def f(w, g, r: row, v, lr=0.1):\n    if ndim(w) >= 2:\n        r = rowmean(g * g)\n"
              "        u = g / sqrt(r)\n    else:\n        v = g * g\n        u = g / sqrt(v)\n"
              "    return lr * u / global_norm(u), r, v\n")
    s1, s2 = specialize(p, (4,)), specialize(p, (2, 4))
    assert s1.state_names == () and s2.state_names == ()  # written, never read: dead across steps
    assert len(segments(s1)) == len(segments(s2)) == 2
    assert static_key(p, (4,)) != static_key(p, (2, 4))


def test_one_global_reduction_of_the_same_value_is_one_pass():
    """clip_by_global_norm reads ``global_norm(g)`` twice: each was hoisted into a segment of its own,
    so every backend reduced all gradients twice and ran two rounds of lockstep for one number."""
    from optdsl.extend import clip_by_global_norm

    assert len(segments(specialize(clip_by_global_norm(load("adamw")), (3, 4)))) == 2
    reassigned = parse("def f(w, g, lr):\n    u = g / global_norm(g)\n    g = g * 2\n"
                       "    return lr * u * global_norm(g)\n")
    assert len(segments(specialize(reassigned, (4,)))) == 3  # g changed: its norm is another number


@pytest.mark.parametrize("cond", ["0.5 - 1", "-2", "nan", "inf"])
def test_a_constant_where_condition_picks_its_first_side_wherever_it_is_not_zero(cond):
    """where(c, a, b) is a where c != 0: folding (which the interpreter and every target share, so no
    differential test would see it) must not read a negative or nan condition as false."""
    p = parse(f"def f(w, g, lr):\n    return lr * where({cond}, g, -g)\n")
    assert fold(p).update == parse("def f(w, g, lr):\n    return lr * g\n").update
    opt = Interpreter(p, lr=1.0)
    w = {"w": np.zeros(2)}
    u, _ = opt.updates(w, {"w": np.array([1.0, 2.0])}, opt.init(w), 1)
    value = {"0.5 - 1": -0.5, "-2": -2.0, "nan": np.nan, "inf": np.inf}[cond]
    np.testing.assert_array_equal(u["w"], np.where(value != 0, [1.0, 2.0], [-1.0, -2.0]))
