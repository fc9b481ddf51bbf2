import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import scaled_examples

from optdsl import parse, to_source
from optdsl.ir import Call
from optdsl.ops import OPS
from optdsl.typecheck import validate
from search.mutate import mutate, random_program, scale_constant
from search.warm_start import adamw_program, initial_program


@settings(deadline=None, max_examples=scaled_examples(40))
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 30))
def test_mutation_chains_always_parse_back(seed, steps):
    rng = np.random.default_rng(seed)
    program = adamw_program()
    for _ in range(steps):
        child, what = mutate(program, rng)
        assert child != program
        assert what.split()[0] in ("insert", "delete", "change")
        assert parse(to_source(child)) == child
        validate(child)
        program = child


@settings(deadline=None, max_examples=scaled_examples(30))
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12))
def test_random_programs_are_valid_paper_form(seed, n):
    p = random_program(np.random.default_rng(seed), n_statements=n)
    assert p.state_names == ("m", "v") and len(p.body) == n and p.body[-1].target == "update"
    assert parse(to_source(p)) == p
    for a in p.body:
        assert OPS[a.expr.op].search



@pytest.mark.parametrize("seed", [263, 1215])
def test_a_negated_constant_is_not_a_statement(seed):
    # These seeds once drew `update = neg(c)`: it prints as `-c` and read back as the constant
    # statement `update = -c`, which is not the paper's one-call form.
    p = random_program(np.random.default_rng(seed), n_statements=1)
    assert isinstance(p.body[0].expr, Call) and parse(to_source(p)) == p

def test_mutations_cover_every_kind_and_the_vocabulary():
    rng = np.random.default_rng(0)
    kinds, ops = set(), set()
    program = adamw_program()
    for _ in range(400):
        child, what = mutate(program, rng)
        kinds.add(what.split()[0])
        ops |= {a.expr.op for a in child.body if hasattr(a.expr, "op")}
        program = child if len(child.body) < 15 else adamw_program()
    assert kinds == {"insert", "delete", "change"}
    assert len(ops) > 20


def test_constant_scaling_is_a_power_of_two_factor():
    rng = np.random.default_rng(1)
    ratios = [scale_constant(3.0, rng) / 3.0 for _ in range(200)]
    a = np.log2(ratios)
    assert abs(np.mean(a)) < 0.25 and 0.7 < np.std(a) < 1.3


def test_init_programs_are_flattened_and_bound():
    lion = initial_program("lion")
    assert lion.name == "train" and lion.hypers == () and lion.state_names == ("m",)
    assert all(not hasattr(x, "op") for a in lion.body if hasattr(a.expr, "args") for x in a.expr.args)
