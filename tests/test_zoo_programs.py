"""Every zoo program: one per file named after it, parses, validates, round-trips through
to_source, states its update rule and cites its source, and specialises for 0-3-d tensors."""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pytest

from optdsl import Interpreter, load, parse, to_source, validate, zoo_names
from optdsl.passes import specialize

EXPECTED = {"sgd", "momentum", "nesterov", "adam", "adamw", "lion", "tiger", "adafactor", "adafactor_optax",
            "lamb", "lars", "adax", "amos"}
# A citation: an author and year, a library's definition, or a URL.
CITATION = re.compile(r"\(\w[\w &.,'-]* (19|20)\d\d|torch\.optim|optax\.|pytorch_optimizer|github\.com")


def test_zoo_holds_the_classic_optimizers():
    assert EXPECTED <= set(zoo_names())


@pytest.mark.parametrize("name", zoo_names())
def test_program_parses_validates_and_round_trips(name):
    text = resources.files("optdsl.zoo").joinpath(f"{name}.py").read_text()
    p = parse(text, f"{name}.py")
    assert p.name == name, "file name == program name"
    validate(p)
    assert parse(to_source(p)) == p
    assert load(name) == p


@pytest.mark.parametrize("name", zoo_names())
def test_docstring_states_the_rule_and_cites_a_source(name):
    doc = load(name).doc
    assert "<-" in doc or "=" in doc, "the docstring states the update rule"
    assert CITATION.search(doc), "the docstring cites its source"


@pytest.mark.parametrize("name", zoo_names())
@pytest.mark.parametrize("shape", [(), (1,), (6,), (1, 1), (4, 5), (2, 3, 4)])
def test_program_specialises_and_steps(name, shape):
    spec = specialize(load(name), shape)
    assert len(shape) >= 2 or all(s.kind in ("full", "scalar") for s in spec.states)
    rng = np.random.default_rng(0)
    params = {"p": rng.normal(size=shape)}
    opt = Interpreter(load(name))
    new, _ = opt.step(params, {"p": rng.normal(size=shape)}, opt.init(params), 1)
    assert np.all(np.isfinite(new["p"])) and new["p"].shape == shape
    assert not np.array_equal(new["p"], params["p"]), "one step moves the parameter"


def test_factored_programs_keep_row_and_col_states_only_when_factored():
    assert [s.name for s in specialize(load("adafactor"), (8,)).states] == ["v"]
    assert [s.name for s in specialize(load("adafactor"), (3, 4)).states] == ["r", "c"]
    assert [s.name for s in specialize(load("adafactor_optax"), (3, 4)).states] == ["v"]
    assert [s.name for s in specialize(load("adafactor_optax"), (128, 200)).states] == ["r", "c"]
