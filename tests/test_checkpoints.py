"""The torch.optim checkpoint declarations of a program's docstring: checked where the program is,
kept in step with its states and hyperparameters by the transformations that remove them."""

from dataclasses import replace

import pytest

import codegen
from optdsl import DslError, load, parse, to_source
from optdsl.checkpoints import torch_checkpoints, without_stale
from optdsl.cli import main
from optdsl.simplify import bind, simplify

DECLARED = '''
def my_sgd(w, g, b, lr=0.01, momentum=0.9):
    """Momentum SGD.

    torch.optim.SGD checkpoints: momentum_buffer -> {target}{requires}
    """
    b = momentum * b + g
    return lr * b, b
'''


@pytest.mark.parametrize("target, requires, message", [
    ("buf", "", "torch.optim.SGD checkpoints map momentum_buffer to buf, which the program does not have"),
    ("b", "; requires nesterov", "torch.optim.SGD checkpoints require 'nesterov', not key=literal"),
    ("b", "; records nesterov=False",
     "torch.optim.SGD checkpoints record 'nesterov=False', not a param-group key"),
    ("b, exp_avg => m", "", ("torch.optim.SGD checkpoints map 'momentum_buffer -> b, exp_avg => m', not "
                             "torch_name -> ours, ...")),  # a typo was ignored
])
def test_a_bad_declaration_is_refused_by_check_not_first_by_compile(tmp_path, capsys, target, requires,
                                                                    message):
    source = DECLARED.format(target=target, requires=requires)
    with pytest.raises(DslError, match="my_sgd: " + message.replace("(", r"\(")):
        parse(source)
    path = tmp_path / "my_sgd.py"
    path.write_text(source)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{path}:5:" in err and "^" in err  # the declaration's line, a caret
    # the same on a docstring's first line, after its opening quotes
    one_line = source.replace('"""Momentum SGD.\n\n    torch', '"""torch')
    path.write_text(one_line)
    assert main(["check", str(path)]) == 2
    assert f"{path}:3:" in capsys.readouterr().err


def test_a_good_declaration_is_read():
    program = parse(DECLARED.format(target="b", requires="; requires nesterov=False, dampening=0"))
    assert torch_checkpoints(program) == {"SGD": {"states": {"momentum_buffer": "b"}, "hypers": {},
                                                  "requires": {"nesterov": False, "dampening": 0},
                                                  "records": ()}}
    recorded = parse(DECLARED.format(target="b",
                                     requires="; requires nesterov=False; records nesterov, dampening"))
    assert torch_checkpoints(recorded)["SGD"]["records"] == ("nesterov", "dampening")


def test_simplify_drops_a_declaration_whose_state_is_gone_and_its_output_compiles(tmp_path):
    """`optdsl simplify momentum --set momentum=0` printed the SGD declaration of a buffer `b` it no
    longer had, so its output passed `optdsl check` and failed `optdsl compile`."""
    plain = simplify(load("momentum"), {"momentum": 0})
    assert plain.state_names == () and torch_checkpoints(plain) == {}
    reread = parse(to_source(plain))  # the printed form is a program of its own
    assert torch_checkpoints(reread) == {}
    for target in ("torch", "jax"):
        if target == "jax":
            pytest.importorskip("optax")
        codegen.emit(reread, target)
    # what still holds stays: AdamW without weight decay still loads torch's AdamW checkpoints
    assert torch_checkpoints(simplify(load("adamw"), {"weight_decay": 0})) == torch_checkpoints(load("adamw"))
    assert torch_checkpoints(simplify(load("adamw"), {"weight_decay": 0}))["AdamW"]["records"] == ("amsgrad",)


def test_bind_drops_a_declaration_that_maps_onto_a_bound_hyperparameter():
    adafactor = load("adafactor")
    declared = torch_checkpoints(adafactor)["Adafactor"]["hypers"]
    ((_, ours),) = declared.items()  # eps -> (eps1, eps2)
    assert torch_checkpoints(bind(adafactor, {ours[0]: 1e-30})) == {}
    assert torch_checkpoints(bind(adafactor, {"weight_decay": 0.0})) == torch_checkpoints(adafactor)


def test_a_derived_optimizer_no_longer_claims_its_inner_programs_checkpoints():
    """layerwise_adaptation(adamw) is LAMB, not torch.optim.AdamW: it must not load AdamW's
    checkpoints as if it were (found by a new-user walkthrough); the description stays."""
    from optdsl.extend import layerwise_adaptation, lookahead

    adamw = load("adamw")
    for derived in (layerwise_adaptation(adamw), lookahead(adamw)):
        assert torch_checkpoints(derived) == {} and derived.doc.startswith(adamw.doc.splitlines()[0])
    # a dropped last paragraph leaves no blank line behind
    sgd = load("sgd")
    stale = replace(sgd, doc=sgd.doc + "\n\ntorch.optim.SGD checkpoints: momentum_buffer -> b")
    assert without_stale(stale).doc == sgd.doc
