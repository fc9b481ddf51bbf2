"""Hyperparameter domains: declared in the signature, checked wherever a value arrives."""

import math

import numpy as np
import pytest
import torch

import codegen
from optdsl import DslError, Interpreter, extend, load, parse, to_source
from optdsl.domains import DOMAINS
from optdsl.simplify import bind

ACCUM = ("def f(w, g, m, lr=0.1, k: count = 2, c: positive = 1.0):\n    m = m + g\n"
         "    return lr * clip(m, c) / k, m\n")


@pytest.mark.parametrize("name", list(DOMAINS))
def test_a_domains_printed_test_is_its_test(name):
    domain = DOMAINS[name]
    printed = eval(f"lambda v: {domain.python}")  # our own table's text, as generated modules hold it
    for v in (-math.inf, -1.0, -0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3, True, 1e300, math.inf, math.nan):
        assert printed(v) == domain.holds(v), (name, v)


def test_a_signature_declares_domains_and_prints_them_back():
    p = parse(ACCUM)
    assert p.hyper_domains == {"k": "count", "c": "positive"}
    assert "k: count = 2, c: positive = 1" in to_source(p) and parse(to_source(p)) == p


@pytest.mark.parametrize("source, message, col", [
    ("def f(w, g, lr, k: count = 0.5):\n    return lr * g\n", "the default k=0.5 is outside its domain", 27),
    ("def f(w, g, lr, k: bogus = 1):\n    return lr * g\n", "hyperparameter 'k': unknown domain 'bogus'", 19),
    # a domain without a default had read as a state's unknown kind, or lr as a state
    ("def f(w, g, lr, k: count):\n    return lr * g\n", "hyperparameter 'k': a domain needs a default", 19),
    ("def f(w, g, lr: positive):\n    return lr * g\n", "hyperparameter 'lr': a domain needs a default", 16),
])
def test_a_default_outside_its_domain_or_an_unknown_domain_is_a_located_error(source, message, col):
    with pytest.raises(DslError, match=message) as e:
        parse(source)
    assert (e.value.line, e.value.col) == (1, col)


def test_every_target_refuses_a_value_outside_the_domain():
    """An audit: ``accum_steps=0`` never stepped and ``max_norm=-1`` climbed the loss, on every target."""
    p = parse(ACCUM)
    with pytest.raises(DslError, match="k=0 is outside its domain: it must be a whole number >= 1"):
        Interpreter(p, k=0)
    Interpreter(p, k=3, c=math.inf)  # inf: no clipping
    opt_cls = codegen.build(p, "torch")
    w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"Invalid c value: -1 \(it must be a number > 0\)"):
        opt_cls([w], c=-1)
    opt = opt_cls([w], k=3)
    with pytest.raises(ValueError, match="Invalid k value: 0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "k": 0})
    w.grad = torch.ones(3)
    opt.param_groups[0]["k"] = 0  # a group edited since (it never stepped), at the next step
    with pytest.raises(ValueError, match="Invalid k value: 0"):
        opt.step()
    assert not opt.state[w] and torch.equal(w, torch.zeros(3))
    opt.param_groups[0]["k"] = 3
    saved = opt.state_dict()
    saved["param_groups"][0]["k"] = 0  # a checkpoint's group is checked too (it had never stepped)
    with pytest.raises(ValueError, match="Invalid k value: 0"):
        opt_cls([w]).load_state_dict(saved)
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    factory = codegen.build(p, "jax")
    for bad in (1.5, np.int64(0), jax.numpy.asarray(0.0)):  # numbers as a config gives them, or an array
        with pytest.raises(ValueError, match="k=.* is outside its domain"):
            factory(k=bad)
    factory(k=4)
    with pytest.raises(ValueError, match="k=0.0 is outside its domain"):  # its init is not traced
        optax.inject_hyperparams(factory)(k=0).init({"w": jax.numpy.zeros(3)})


def test_lrs_own_domain_is_checked_on_every_target():
    p = parse("def f(w, g, lr: positive = 0.1):\n    return lr * g\n")
    with pytest.raises(DslError, match="lr=0 is outside its domain"):
        Interpreter(p, lr=0.0)
    with pytest.raises(ValueError, match=r"Invalid lr value: 0.0 \(it must be a number > 0\)"):
        codegen.build(p, "torch")([torch.nn.Parameter(torch.zeros(2))], lr=0.0)
    pytest.importorskip("jax")
    with pytest.raises(ValueError, match="learning_rate=0.0 is outside its domain"):
        codegen.build(p, "jax")(learning_rate=0.0)
    codegen.build(p, "jax")(learning_rate=lambda count: 0.0)  # a schedule's values are not looked at


@pytest.mark.parametrize("derive, name, bad", [
    (lambda p: extend.gradient_accumulation(p, 2), "accum_steps", 0),
    (lambda p: extend.clip_by_global_norm(p, 1.0), "max_norm", -1.0),
    (lambda p: extend.lookahead(p), "sync_period", 0),
    (lambda p: extend.lookahead(p), "slow_step_size", 1.5),
    (lambda p: extend.lr_multiplier(p, 2.0), "lr_mult", -1.0),
])
def test_a_derived_programs_arguments_keep_their_domain_past_the_derivation(derive, name, bad):
    p = derive(load("adam"))
    assert name in p.hyper_domains and parse(to_source(p)) == p
    with pytest.raises(DslError, match=f"{name}=.* is outside its domain"):
        Interpreter(p, **{name: bad})
    with pytest.raises(ValueError, match=f"Invalid {name} value"):
        codegen.build(p, "torch")([torch.nn.Parameter(torch.zeros(2))], **{name: bad})


def test_binding_values_checks_their_domains_and_keeps_lrs():
    """``optdsl simplify --set`` folded a value outside the domain into the program (k=0: a division
    by 0) where ``equiv --set`` refused it, and a bound lr lost its domain (an audit)."""
    p = parse("def f(w, g, m, lr: positive = 0.1, k: count = 2):\n    m = interp(g, m, 0.9)\n"
              "    return lr * m / k, m\n")
    with pytest.raises(DslError, match="k=0 is outside its domain"):
        bind(p, {"k": 0})
    assert bind(p, {"lr": 0.5, "k": 3}).hyper_domains == {"lr": "positive"}


def test_the_readable_form_keeps_lrs_domain():
    from optdsl.readable import readable, unsimplified

    p = parse("def f(w, g, lr: positive = 0.1):\n    return 2 * lr * g\n")
    assert readable(p, lr=0.3).program.hyper_domains == {"lr": "positive"}
    assert unsimplified(p, 0.3, "a test").program.hyper_domains == {"lr": "positive"}
