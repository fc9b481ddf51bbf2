"""Equivalence: proved symbolically when possible, else tested on random trajectories."""

import re
import warnings

import numpy as np
import pytest

from optdsl import DslError, load, parse, to_source
from optdsl.equiv import _difference, equivalent
from optdsl.passes import eliminate_constant_states
from optdsl.simplify import simplify

RENAMED_REORDERED_DEAD = """
def adamw2(w, g, dead, vv, mm, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    v_hat = interp(g * g, vv, beta2) / (1 - beta2 ** step)
    mm = interp(g, mm, beta1)
    dead = dead * 0.5 + g
    vv = interp(g * g, vv, beta2)
    upd = lr * (mm / (1 - beta1 ** step) / (sqrt(v_hat) + eps) + weight_decay * w)
    return upd, dead, vv, mm
"""

EXPANDED = """
def adamw3(w, g, m, v, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    update = lr * m / (1 - beta1 ** step) / (sqrt(v / (1 - beta2 ** step)) + eps) + lr * weight_decay * w
    return update, m, v
"""

TWIN_STATES = """
def lion2(w, g, a, b, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0):
    update = lr * (sign(interp(g, a, beta1)) + weight_decay * w)
    return update, interp(g, b, beta2), interp(g, b, beta2)
"""


def test_renamed_reordered_with_dead_state_is_exact():
    r = equivalent(load("adamw"), parse(RENAMED_REORDERED_DEAD))
    assert r.equal and r.method == "symbolic" and str(r) == "equal (exact)"


def test_algebraically_rewritten_adamw_is_proved_exact_by_sympy():
    # Both divide by the same values (sqrt(v) + eps, 1 - beta^t): the same singular points.
    r = equivalent(load("adamw"), parse(EXPANDED))
    assert str(r) == "equal (exact)"
    assert "sympy" in r.detail and "same points" in r.detail


def test_lion_with_another_beta2_has_a_counterexample():
    lion = load("lion")
    other = parse(lion.source.replace("beta2=0.99", "beta2=0.98"))
    r = equivalent(lion, other)
    assert not r.equal and r.kind == "different" and str(r) == "different"
    assert r.counterexample.startswith("step 2")  # m starts at 0: step 1 agrees
    assert "a's update" in r.counterexample


def test_values_override_defaults_for_both():
    lion = load("lion")
    other = parse(lion.source.replace("beta2=0.99", "beta2=0.98"))
    assert str(equivalent(lion, other, {"beta2": 0.95})) == "equal (exact)"


def test_a_redundant_state_is_found_equal_by_testing():
    # `a` and `b` always hold the same value (lion's m), but two states cannot map onto one:
    # no symbolic proof, so the trajectories decide.
    r = equivalent(load("lion"), parse(TWIN_STATES))
    assert r.equal and r.kind == "tested" and str(r).startswith("equal (tested: 3 trials x 20 steps")
    broken = parse(TWIN_STATES.replace("interp(g, a, beta1)", "interp(g, a, 0.5)"))
    assert not equivalent(load("lion"), broken).equal


def test_a_shape_only_one_program_handles_is_a_difference():
    a = parse("def f(w, g, lr=0.1):\n    return lr * g / sqrt(rowmean(g * g) + 1)\n")
    b = parse("def f(w, g, lr=0.1):\n    u = where(ndim(w) >= 2, g / sqrt(rowmean(g * g) + 1), g)\n"
              "    return lr * u\n")
    r = equivalent(a, b)
    assert not r.equal and "cannot run" in r.counterexample


def test_unknown_hyperparameter_is_an_error():
    with pytest.raises(DslError):
        equivalent(load("sgd"), load("lion"), {"nope": 1.0})


def test_a_cancelled_division_is_generic_not_exact():
    # lr * g / g is nan where g = 0; lr + 0 * g is lr there.
    a = parse("def f(w, g, lr=0.1):\n    return lr * g / g\n")
    b = parse("def f(w, g, lr=0.1):\n    return lr + 0 * g\n")
    r = equivalent(a, b)
    assert r.equal and r.kind == "generic"
    assert str(r) == "equal (generic: wherever no denominator, sqrt or log argument is zero)"
    assert "g" in r.detail and "a's update is nan" in r.detail  # the zeros in g showed it


def test_a_scaled_root_of_the_same_zeros_is_exact():
    # sqrt(4 (0.1 g^2 + 0.9 w)) is singular where sqrt(0.1 g^2 + 0.9 w) is: a constant factor under
    # a root or |.| is no new zero (both once read as different zero sets, so "generic")
    a = parse("def f(w, g, lr=0.1):\n    return lr * g / sqrt(0.1 * g * g + 0.9 * w)\n")
    b = parse("def f(w, g, lr=0.1):\n    return lr * g / sqrt(4 * (0.1 * g * g + 0.9 * w)) * 2\n")
    c = parse("def f(w, g, lr=0.1):\n    return lr * g / abs(sqrt(0.1 * g * g + 0.9 * w) * -3) * 3\n")
    assert equivalent(a, b).kind == "exact" and equivalent(a, c).kind == "exact"


def test_sign_of_a_normalised_momentum_is_generic():
    a = parse("def f(w, g, m, lr=0.1):\n    m = interp(g, m, 0.9)\n    return lr * m / sqrt(m * m), m\n")
    b = parse("def f(w, g, m, lr=0.1):\n    m = interp(g, m, 0.9)\n    return lr * sign(m), m\n")
    assert equivalent(a, b).kind == "generic"
    c = parse("def f(w, g, m, lr=0.1):\n    m = interp(g, m, 0.9)\n    return lr * sign(m * rms(g)), m\n")
    assert equivalent(c, b).kind == "tested"  # rms(g) = 0 gives sign 0, and no denominator is 0 there


@pytest.mark.parametrize("factor", ["w > 0", "abs(w)", "square(w)", "norm(w)", "max(w, 0)"])
def test_a_factor_that_may_be_zero_stays_inside_sign(factor):
    """sign(g f) is 0 where f is (a zero-initialised bias: norm(w) = 0 at step 1), not sign(g)."""
    a = parse(f"def f(w, g, lr=0.1):\n    return lr * sign(g * ({factor}))\n")
    b = parse("def f(w, g, lr=0.1):\n    return lr * sign(g)\n")
    assert not equivalent(a, b).equal
    assert "sign(g)" not in to_source(simplify(a))


def test_domain_ops_are_not_cancelled():
    # sympy's sin(asin(x)) = x holds only on [-1, 1]; the language's arcsin is nan outside.
    a = parse("def f(w, g, lr=0.1):\n    return lr * sin(arcsin(g))\n")
    b = parse("def f(w, g, lr=0.1):\n    return lr * g\n")
    assert not equivalent(a, b).equal


def test_nan_values_are_refused_inf_taken():
    with pytest.raises(DslError, match="nan value"):
        equivalent(load("sgd"), load("adamw"), {"lr": float("nan")})
    # inf is a legal default (a threshold's "off"): given as a value it was refused
    clip = parse("def c(w, g, lr=0.1, max_norm=1.0):\n    return lr * where(norm(g) < max_norm, g, g)\n")
    assert equivalent(clip, load("sgd"), {"max_norm": float("inf"), "lr": 0.1}).equal


def test_one_default_lr_is_both_sides_lr_and_two_different_ones_are_named():
    """``lr * g`` with no default against the zoo's sgd (lr=0.01) was "different": one side ran at
    1.37e-3, the other at 0.01, and the verdict did not say so."""
    plain = parse("def s(w, g, lr):\n    return lr * g\n")
    assert str(equivalent(plain, load("sgd"))) == "equal (exact)"
    verdict = equivalent(load("adam"), load("sgd"))
    assert verdict.kind == "different" and "default lr (0.001 and 0.01" in verdict.detail


def test_lion_and_adafactor_differ():
    r = equivalent(load("lion"), load("adafactor"))
    assert not r.equal and r.kind == "different" and r.counterexample


def test_all_nan_runs_are_no_evidence():
    a = parse("def f(w, g, lr=0.1):\n    return lr * arcsin(g * g + 2)\n")
    b = parse("def f(w, g, lr=0.1):\n    return lr * arccos(g * g + 3)\n")
    r = equivalent(a, b)
    assert not r.equal and r.kind == "undecided" and "not evidence" in r.detail


def test_nan_at_different_places_is_a_difference():
    a = parse("def f(w, g, lr=0.1):\n    return lr * log(g) * 0 + g\n")
    b = parse("def f(w, g, lr=0.1):\n    return g + 0 * w\n")
    assert equivalent(a, b).kind in ("generic", "different")  # never exact, never tested-equal
    assert not equivalent(a, parse("def f(w, g, lr=0.1):\n    return g * w\n")).equal


def test_the_counterexample_is_where_the_updates_differ_not_where_both_are_one_infinity():
    """``optdsl equiv adam adamw --set lr=inf`` named a point where both updates were -inf (inf -
    inf is nan, counted as the largest gap) and let numpy's warning through."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = equivalent(load("adam"), load("adamw"), {"lr": float("inf")})
    assert r.kind == "different"
    first_update, second_update = re.search(r"a's update is (\S+), b's is (\S+)", r.counterexample).groups()
    assert first_update != second_update  # (nan against -inf here)
    gap = _difference(np.array([-np.inf, 1.0]), np.array([-np.inf, 2.0]))
    assert gap == "at index (1,): a's update is 1, b's is 2"


def test_a_constant_state_read_for_its_shape_is_compared_not_refused():
    """`v` stays 0, but `ndim(v)` reads its shape: binding dropped it, and `equiv` said that
    neither program runs on any test shape (exit 2) instead of comparing them."""
    source = ("def f(w, g, m, v, lr=0.1):\n    v = sign(v)\n    m = interp(g, m, {})\n"
              "    return lr * m * where(ndim(v) >= 2, 1, 0.5), m, v\n")
    a, b = parse(source.format(0.9)), parse(source.format(0.8))
    assert equivalent(a, a).kind == "exact"
    r = equivalent(a, b)
    assert not r.equal and r.kind == "different" and r.counterexample


# Pairs that `equivalent` once called equal, found by running both through the interpreter with
# gradients up to 30x larger than its own and another lr.
GUARDED = ("    r = 0 * g\n    return lr * where(norm(r) == 0, 1, norm(w) / norm(r)) * r\n",
           "    r = 0 * g\n    return lr * (norm(w) / norm(r)) * r\n")  # 0 against 0 * inf: nan
THRESHOLD = ("    update = sign(interp(g, m, 0.9))\n    m = abs(1.537)\n    return lr * update, m\n",
             "    update = sign(interp(g, m, 0.9))\n    m = abs(0.8412)\n    return lr * update, m\n")
LR_OR_CONSTANT = ("    return lr * 0.001 * g\n", "    return lr * lr * g\n")


def test_a_division_a_where_guards_is_no_singularity_of_the_program():
    """``where(n == 0, 1, m / n)`` is finite at n = 0: the singular points of the division count
    only where its branch is taken (:func:`singularities`' example), so the guarded and the bare
    division are not equal 'exactly'. With ``r = 0 * g`` the bare one divides by ``norm(0 * g) = 0``
    at every step (sympy once kept that norm an unknown and said 'generic'), so they differ, and the
    guarded one is ``0 * g`` (wherever the gradient is finite: an inf in it makes ``norm(r)`` nan,
    and the whole update with it)."""
    a, b = (parse(f"def f(w, g, lr=0.1):\n{body}") for body in GUARDED)
    r = equivalent(a, b)
    assert r.kind == "different" and "a's update is 0, b's is nan" in r.counterexample
    r = equivalent(a, parse("def f(w, g, lr=0.1):\n    return 0 * g\n"))
    assert (r.kind, r.where) == ("generic", "wherever every value is finite")


@pytest.mark.parametrize(("pair", "head"), [(THRESHOLD, "def f(w, g, m, lr=0.1):\n"),
                                            (LR_OR_CONSTANT, "def f(w, g, lr):\n")])
def test_tests_reach_thresholds_and_an_lr_other_than_the_papers_constant(pair, head):
    """sign(0.1 g + 1.38) and sign(0.1 g + 0.76) differ only where |g| > 7.6, which normal
    gradients never reached; a program without a default lr ran at lr = 0.001, where lr * lr is
    lr * 0.001."""
    a, b = (parse(head + body) for body in pair)
    assert equivalent(a, b).kind == "different"


@pytest.mark.parametrize("guard", ["where(g != g, 0, g)", "where(g == g, g, 0)", "where(isfinite(g), g, 0)",
                                   "where(allfinite(g), g, 0)", "where(amax(g != g), 0, g)"])
def test_a_nan_guard_is_not_a_no_op(guard):
    """Each guard is the identity in real arithmetic; sympy took ``g != g`` for 0 ("exact"), and tests
    on finite gradients called the others equal. Gradients with nan and inf tell them apart."""
    a = parse(f"def f(w, g, lr=0.1):\n    return lr * {guard}\n")
    r = equivalent(a, load("sgd"), {"lr": 0.1})
    assert r.kind == "different", r
    assert equivalent(a, parse(f"def f(w, g, lr=0.1):\n    return {guard} * lr\n")).equal


@pytest.mark.parametrize(("a", "b"), [("lr * (not (g < 0))", "lr * (g >= 0)"),
                                      ("lr * where(g < 0, -1, 1)", "lr * where(g >= 0, 1, -1)"),
                                      ("where(g * 0 == 0, lr * g, 0)", "lr * g"),
                                      ("lr * g * ((g - g) == 0)", "lr * g")])
def test_a_proof_in_the_reals_is_not_exact_where_a_nan_tells_them_apart(a, b):
    """Each pair is equal for every real gradient, and was called "equal (exact)"; at a nan or inf
    gradient one steps and the other does not."""
    r = equivalent(*(parse(f"def f(w, g, lr=0.1):\n    return {x}\n") for x in (a, b)))
    assert (r.kind, r.where) == ("generic", "wherever every value is finite"), r
    assert "a nan or inf gradient tells them apart" in r.detail


def test_comparisons_that_agree_at_nan_stay_exact():
    a = parse("def f(w, g, lr=0.1):\n    return lr * where(g < 0, -1, 1)\n")
    b = parse("def f(w, g, lr=0.1):\n    return lr * where(0 > g, -1, 1)\n")
    assert str(equivalent(a, b)) == "equal (exact)"


def test_a_state_held_at_zero_stays_where_a_reduction_counts_its_elements():
    """``norm(v + 1)`` of a state held at 0 is sqrt(n); with the state replaced by the number 0 it
    was norm(1) = 1, and ``equivalent`` called it equal (exact) to ``lr * g``. Where a tensor joins
    the state (``sum(v + g)``) the number stands for it and the state still goes."""
    counted = parse("def f(w, g, v, lr=0.1):\n    v = sign(v)\n    return lr * g * norm(v + 1), v\n")
    plain = parse("def f(w, g, lr=0.1):\n    return lr * g\n")
    assert not equivalent(counted, plain)
    assert eliminate_constant_states(counted).state_names == ("v",)
    joined = parse("def f(w, g, v, lr=0.1):\n    v = sign(v)\n    return lr * g * sum(v + g), v\n")
    assert eliminate_constant_states(joined).state_names == ()


def test_a_proof_that_the_trajectories_contradict_where_finite_is_not_believed():
    """sympy takes atan(Piecewise((1, g > 0), (0, True))) as positive, so it 'proved' these equal;
    the trajectories differed at finite values (every g <= 0) and the verdict was still equal."""
    a = parse("def f(w, g, lr=0.1):\n    return lr * w * sign(arctan(g > 0))\n")
    b = parse("def f(w, g, lr=0.1):\n    return lr * w\n")
    verdict = equivalent(a, b)
    assert verdict.kind == "different" and "both are finite" in verdict.detail


@pytest.mark.parametrize("test", ["size(w) >= 128", "ndim(w) >= 4", "dim(w, 0) > 40"])
def test_every_shape_variant_runs_before_programs_are_called_equal(test):
    """The test shapes hold at most 30 elements and 3 axes, so a program that differs only on
    larger tensors was 'equal (tested)' (lr * g against sign(g) on every tensor of 128 elements)."""
    a = parse(f"def f(w, g, lr=0.1):\n    return lr * where({test}, sign(g), g)\n")
    b = parse("def f(w, g, lr=0.1):\n    return lr * g\n")
    assert equivalent(a, b).kind == "different"
    same = parse(f"def f(w, g, lr=0.1):\n    return lr * where({test}, g + 0, g)\n")
    assert equivalent(same, b)


@pytest.mark.parametrize("a, b", [
    ("lr * (g // 0.1)", "lr * floor(10 * g)"),  # 23.7 // 0.1 is 236; floor(10 * 23.7) is 237
    ("lr * g * (step * 0.1 > 0.3)", "lr * g * (step > 3)"),  # 3 * 0.1 > 0.3 in binary
    ("lr * (g // w) + lr * (g // w)", "2 * lr * floor(g / w)"),  # 1 // 0.1 is 9
])
def test_a_floor_or_comparison_of_decimal_literals_is_tried_on_decimals(a, b):
    """sympy reads 0.1 as 1/10, where the program computes with the binary 0.1: these were 'equal
    (exact)', and simplify turned the first into the second. A trial on weights and gradients of
    one decimal shows them apart."""
    def program(body):
        return parse(f"def f(w, g, step, lr=0.1):\n    return {body}\n")

    assert equivalent(program(a), program(b)).kind == "different"
    assert "floor(10" not in to_source(simplify(program(a)))


def test_steps_two_millionths_apart_are_told_apart():
    from optdsl.equiv import trajectories

    a = parse("def f(w, g, m, lr=0.1):\n    m = interp(g, m, 0.9)\n    return lr * m, m\n")
    b = parse("def f(w, g, m, lr=0.1):\n    m = interp(g, m, 0.9)\n    return lr * m * 1.000002, m\n")
    assert trajectories(a, b, {"lr": 0.1}, {"lr": 0.1}, steps=5, trials=2, seed=0).difference is not None


def test_a_number_factor_comes_out_of_a_reduction():
    """A winner showed ``dot(0.4831, 0.00234 * w)`` as it was searched: sympy took a reduction of c x
    and c times the reduction of x for two unknowns. A number comes out of an argument the reduction
    is homogeneous in (``c^p`` for degree p; ``|c|`` where it is even there, as norm and rms are),
    so such programs are proved equal, not only tested."""
    scaled = parse("def f(w, g, lr=0.1):\n    return lr * (norm(-3 * g) + rms(0.5 * g) * dot(2 * w, g)"
                   " + cosine_sim(0.25 * g, w) + mean(4 * g))\n")
    plain = parse("def f(w, g, lr=0.1):\n    return lr * (3 * norm(g) + 0.5 * rms(g) * 2 * dot(w, g)"
                  " + cosine_sim(g, w) + 4 * mean(g))\n")
    assert str(equivalent(scaled, plain)) == "equal (exact)"
    odd = parse("def f(w, g, lr=0.1):\n    return lr * cosine_sim(-0.25 * g, w)\n")  # odd in g: -cos
    assert not equivalent(odd, parse("def f(w, g, lr=0.1):\n    return lr * cosine_sim(g, w)\n")).equal
