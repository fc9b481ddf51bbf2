"""The identifier policy (optdsl/names.py): every reserved name is refused where a program binds
it, with a location and a usable suggestion; names the passes invent obey it too."""

import keyword

import pytest

import codegen
from optdsl import DslError, parse
from optdsl.ir import fresh_name
from optdsl.names import GENERATED, RESERVED, check_name, suggest


def _binding_sites(name):
    """A program binding ``name`` as a temporary, a state and a hyperparameter."""
    return [
        f"def f(w, g, lr):\n    {name} = g\n    return lr * {name}\n",
        f"def f(w, g, {name}, lr):\n    return lr * g, {name}\n",
        f"def f(w, g, lr, {name}=0.5):\n    return lr * g\n",
    ]


@pytest.mark.parametrize("name", sorted(RESERVED - set(keyword.kwlist)) + ["_x", "__m", "é"])
def test_reserved_names_are_refused_with_a_location(name):
    for text in _binding_sites(name):
        with pytest.raises(DslError) as info:
            parse(text, "p.py")
        assert info.value.line is not None and str(info.value).startswith("p.py:")


@pytest.mark.parametrize("name", ["print", "len", "type", "Tensor", "backend", "BLOCK", "update_fn",
                                  "match", "sqrt", "pi"])
def test_the_reason_names_the_group(name):
    with pytest.raises(DslError, match=f"'{name}' {check_name(name)}; rename it, e.g. '{name}_'"):
        parse(_binding_sites(name)[0])


def test_suggestions_pass_the_policy():
    for name in sorted(RESERVED) + ["_x", "__", "é"]:
        assert check_name(suggest(name)) is None


def test_ordinary_names_pass():
    for name in ["m", "v", "beta1", "update", "weight_decay", "lr_1", "t_3", "x_"]:
        assert check_name(name) is None
    assert {"torch", "jnp", "tl", "self", "learning_rate"} <= GENERATED
    # a hyperparameter or a global named so clashed with the cpp group step's own arguments
    assert {"path", "program"} <= GENERATED


def test_fresh_names_skip_reserved_ones():
    assert fresh_name("global_norm", set()) == "global_norm_1"
    assert fresh_name("t", {"t"}) == "t_1"
    assert fresh_name("_internal", set()) == "_internal"  # printers' own names keep their `_`


@pytest.mark.parametrize("target", ["torch", "jax"])
def test_a_hoisted_global_reduction_gets_an_allowed_name(target):
    # The hoisting pass once named the temporary after its op (`global_norm`), which the printers
    # then refused as a reserved name.
    p = parse("def f(w, g, lr):\n    u = g / max(1, global_norm(g))\n    return lr * u\n")
    assert callable(codegen.build(p, target))


def test_keys_torch_writes_into_param_groups_are_reserved():
    """A hyperparameter lives in its param group under its own name; OneCycleLR overwrote one named
    ``initial_lr`` (0.5 -> 0.04) and named parameters refused one named ``param_names``."""
    import torch

    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([("p", p)], lr=0.1, momentum=0.9)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    torch.optim.swa_utils.SWALR(opt, swa_lr=0.05)
    written = set(opt.param_groups[0]) - set(opt.defaults) - {"params"}
    assert {"initial_lr", "param_names", "swa_lr"} <= written
    assert all(check_name(key) for key in written)
