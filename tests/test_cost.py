"""Cost model: state memory, traffic, flops, reductions."""

import math

import pytest
from rich.table import Table

from optdsl import load, parse
from optdsl.cost import cost, memory_per_param

FACTORED = """
def fac(w, g, r: row, c: col, s: scalar, lr=0.1):
    r = interp(rowmean(g * g), r, 0.9)
    c = interp(colmean(g * g), c, 0.9)
    s = s + norm(g)
    u = g / sqrt(r * c / mean(r)) / s
    return lr * u / rms(u), r, c, s
"""


@pytest.mark.parametrize("name, states, traffic", [("sgd", 0, 12), ("lion", 1, 20), ("adamw", 2, 28)])
def test_memory_bound_model_on_the_zoo(name, states, traffic):
    c = cost(load(name), shape=(256, 512))
    assert c.states_per_param == states and memory_per_param(load(name)) == states
    assert c.bytes_per_param == traffic  # (reads + writes) x 4 bytes
    assert c.state_bytes == states * 256 * 512 * 4
    assert c.reductions == 0 and c.passes == 1


def test_low_precision_parameters_keep_float32_states():
    c = cost(load("adamw"), shape=(1024,), dtype="bfloat16")
    assert c.bytes_per_param == 2 + 2 + 4 + 4 + 2 + 4 + 4
    assert cost(load("adamw"), shape=(1024,), dtype="float64").bytes_per_param == 56


def test_factored_states_are_sublinear_and_scalars_free():
    c = cost(parse(FACTORED), shape=(1000, 2000))
    assert c.state_elements == 1000 + 2000 + 1
    assert c.states_per_param < 0.002
    assert c.reductions == 5  # rowmean, colmean, norm, mean, rms
    assert c.passes == 3  # row/col/norm sweep, then u and rms(u), then the update


def test_flops_count_the_op_table():
    c = cost(load("sgd"))
    assert c.flops_per_param == 1
    # interp (3) + sign (1) + mul + add + mul (1 each) per element, plus per-tensor scalar work
    assert cost(load("lion")).flops_per_param == pytest.approx(3 + 1 + 1 + 1 + 1 + 3, rel=1e-3)
    huge = cost(load("lion"), shape=(10**11, 10**11))  # totals in whole numbers, exact at any size
    assert huge.flops == 10 * 10**22 and huge.bytes_per_step == 20 * 10**22


def test_shape_picks_the_specialisation():
    p = parse("def f(w, g, v, r: row, lr=0.1):\n"
              "    if ndim(w) >= 2:\n        r = interp(rowmean(g * g), r, 0.9)\n        u = g / sqrt(r)\n"
              "    else:\n        v = interp(g * g, v, 0.9)\n        u = g / sqrt(v)\n"
              "    return lr * u, v, r\n")
    assert cost(p, shape=(64,)).states_per_param == 1
    assert cost(p, shape=(64, 64)).states_per_param == pytest.approx(1 / 64)


def test_table_and_dict():
    c = cost(load("adamw"))
    assert isinstance(c.table(), Table)
    d = c.as_dict()
    assert d["bytes_per_step"] == d["bytes_read"] + d["bytes_written"] and d["shape"] == [4096, 4096]
    with pytest.raises(ValueError):
        cost(load("sgd"), dtype="int8")


def test_an_empty_tensor_costs_nothing_per_parameter_nan():
    """A size-0 tensor (a model may hold one) was a ZeroDivisionError; it moves nothing, every target
    leaving it alone (Adafactor's column state of a (0, 5) matrix still holds 5 numbers: it was counted
    as read and written), per parameter 0 / 0."""
    empty = cost(load("adamw"), shape=(0,))
    assert empty.numel == empty.state_bytes == empty.bytes_read == empty.bytes_written == 0
    assert math.isnan(empty.bytes_per_param) and math.isnan(empty.states_per_param)
    factored = cost(load("adafactor"), shape=(0, 5))
    assert factored.state_elements == 5  # memory held, but no step runs: no traffic, no work
    assert factored.bytes_read == factored.bytes_written == factored.flops == factored.passes == 0


@pytest.mark.parametrize("shape, title, per_param", [
    ("", "shape () (0-d)", "8"), ("3x0x5", "shape 3x0x5", "-"), ("7", "shape 7", "8")])
def test_the_cost_command_takes_0d_and_empty_shapes(shape, title, per_param, capsys):
    # '' and a size 0 were refused ("sizes must be positive") though cost() and every target take
    # them; an empty tensor's per-parameter column then divided by zero
    from optdsl.cli import main

    assert main(["cost", "adamw", "--shape", shape]) == 0
    out = capsys.readouterr().out
    assert title in out and [line.split("│")[3].strip() for line in out.splitlines()
                             if "state memory" in line] == [per_param]


@pytest.mark.parametrize("shape", ["1_000", "٣", "1e9x1e9", "4x-1", "x", "99999999999999999999x9"])
def test_the_cost_command_refuses_shapes_a_tensor_cannot_have(shape, capsys):
    from optdsl.cli import main

    assert main(["cost", "adamw", "--shape", shape]) == 2
    assert capsys.readouterr().err.startswith(f"error: --shape {shape!r}: ")


@pytest.mark.parametrize("name, shape, sweeps, traffic", [
    ("lamb", (64, 32), [("g", "m", "v", "w"), ("m", "v", "w")], 40),  # the norms, then the update
    ("lars", (64, 32), [("g", "w"), ("b", "g", "w")], 28),
    ("tiger", (7,), [("g",), ("g", "m", "w")], 24),
    ("adafactor", (64, 32), [("g", "w"), ("g",), ("g", "w")], 24.375),  # + its row and column states
])
def test_traffic_counts_every_sweep_a_reduction_needs(name, shape, sweeps, traffic):
    """The model counted each array once whatever the sweeps (LAMB 28 bytes a parameter where its
    kernel moves 40): a fused kernel re-reads what each sweep needs, and a state written by an
    earlier sweep is read back rather than recomputed (LAMB's update sweep reads m and v, not g)."""
    from optdsl.cost import sweep_reads
    from optdsl.passes import specialize

    c = cost(load(name), shape=shape)
    assert sweep_reads(specialize(load(name), shape)) == sweeps and c.passes == len(sweeps)
    assert c.bytes_per_param == traffic


def test_a_global_reduction_takes_a_sweep_of_its_own():
    from optdsl.extend import clip_by_global_norm

    clipped = clip_by_global_norm(load("adamw"))
    assert cost(clipped, shape=(64, 32)).bytes_per_param == 32  # g for the norm, then AdamW's 28


def test_a_global_reduction_counts_and_a_state_the_step_never_reads_is_not_read():
    assert cost(parse("def f(w, g, lr):\n    return lr * g / global_norm(g)\n"), (64, 64)).reductions == 1
    kept = cost(parse("def f(w, g, s: row(keep=True), lr):\n    return lr * g, 1.0\n"), (64, 32))
    assert kept.bytes_read == 64 * 32 * 8  # w and g: the row state is written, never read
