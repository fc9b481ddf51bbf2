import pytest

from optdsl import load, parse
from search.family import lion_family

ONE_STATE = "def train(w, g, m, lr):\n{}    return update, m\n"
ADAM = "def train(w, g, m, v, lr):\n{}    return update, m, v\n"


@pytest.mark.parametrize("body", [
    "    update = lr * sign(interp(g, m, 0.9))\n    m = interp(g, m, 0.99)\n",        # Lion
    "    update = (sign(interp(g, m, 0.9)) + 0.01 * w) * lr\n    m = interp(g, m, 0.99)\n",  # with wd
    "    m = interp(g, m, 0.5735)\n    update = lr * sign(m)\n",                     # #2688, readable
    "    m = interp(m, g, 0.1)\n    update = -(sign(m) * 0.001) * -lr\n",            # argument order, signs
    "    update = sign(m) * lr / 3.0\n    m = interp(g, m, 0.9)\n",                  # the old momentum
])
def test_sign_of_a_momentum_is_lion_family(body):
    assert lion_family(parse(ONE_STATE.format(body)))


@pytest.mark.parametrize("body", [
    "    update = lr * sign(g)\n    m = interp(g, m, 0.9)\n",                       # signSGD
    "    update = lr * sign(interp(g, m, 0.9)) * abs(m)\n    m = interp(g, m, 0.99)\n",  # scaled by a state
    "    update = lr * sign(interp(g, m, 0.9))\n    m = interp(g * g, m, 0.99)\n",  # not a momentum of g
    "    m = interp(g, m, 0.9)\n    update = lr * (sign(m) + g)\n",                 # a gradient term added
])
def test_other_sign_rules_are_not(body):
    assert not lion_family(parse(ONE_STATE.format(body)))


def test_an_adam_step_with_a_sign_term_is_not_lion_family():
    # the 2-minute search's #2147: m / sqrt(v) + sign(g); the old text check called it Lion
    body = ("    m = interp(g, m, 0.2588)\n    v = interp(square(g), v, 0.999)\n"
            "    update = lr * (m / (7.524e-09 + sqrt(v)) + sign(g))\n")
    assert not lion_family(parse(ADAM.format(body)))
    assert lion_family(load("lion")) and not lion_family(load("adamw"))
