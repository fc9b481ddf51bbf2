"""The generated optimizer behaves as torch.optim's own do (issue 10, items 1-6): copies, state
edits, betas and schedulers, torch.optim checkpoints, validation, maximize, flags, per-parameter
step counts, in-place state, compile failures."""

from __future__ import annotations

import contextlib
import copy
import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import codegen
import optdsl
from codegen.runtime.torch_optimizer import _check_hyper


@pytest.fixture(scope="module")
def adamw():
    return codegen.build(optdsl.load("adamw"), "torch")


def _params(seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]


def _grads(t):
    g = torch.Generator().manual_seed(100 + t)
    return [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]


def _steps(opt, params, ts):
    for t in ts:
        for p, g in zip(params, _grads(t)):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("backend", ["eager", "compiled"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_optimizer_steps_like_the_original(adamw, backend, how):
    params = _params()
    opt = adamw(params, lr=0.1, backend=backend)
    _steps(opt, params, range(2))
    if how == "deepcopy":
        twin_params, twin = copy.deepcopy((params, opt))
    else:
        twin_params, twin = pickle.loads(pickle.dumps((params, opt)))
    assert twin.backend == backend
    _steps(opt, params, range(2, 4))
    _steps(twin, twin_params, range(2, 4))
    for a, b in zip(params, twin_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_state_edits_between_steps_are_honoured(adamw, backend):
    params = _params()
    opt = adamw(params, lr=0.1, backend=backend)
    _steps(opt, params, range(3))
    a, b = params
    a_before, b_before = a.detach().clone(), b.detach().clone()
    opt.state[a]["m"] = torch.zeros_like(a)  # reset a moment by replacing it...
    opt.state[a]["v"].zero_()  # ... or in place
    del opt.state[b]  # forget b: it starts afresh
    _steps(opt, params, range(3, 5))
    assert float(opt.state[a]["step"]) == 5 and float(opt.state[b]["step"]) == 2
    saved = opt.state_dict()["state"]
    for key in ("m", "v"):  # state_dict sees the tensors the step updated
        torch.testing.assert_close(saved[0][key], opt.state[a][key], rtol=0, atol=0)
    # each equals a new optimizer started from the edited state
    twin_a, twin_b = torch.nn.Parameter(a_before), torch.nn.Parameter(b_before)
    twin = adamw([twin_a, twin_b], lr=0.1, backend=backend)
    twin.state[twin_a] = {"step": torch.tensor(3.0), "m": torch.zeros_like(a), "v": torch.zeros_like(a)}
    _steps(twin, [twin_a, twin_b], range(3, 5))
    torch.testing.assert_close(a, twin_a, rtol=0, atol=0)
    torch.testing.assert_close(b, twin_b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["eager", "compiled", "cpp"])
def test_a_step_count_reset_in_place_counts_for_its_parameter(adamw, backend):
    """Resetting one parameter in place (its step with its moments) is what torch.optim.AdamW then
    steps: the bias correction reads that parameter's own count, not its neighbour's."""
    ours, theirs = _params(), _params()
    opt = adamw(ours, lr=0.1, backend=backend)
    ref = torch.optim.AdamW(theirs, lr=0.1)
    for t in range(6):
        if t == 3:
            for state in (opt.state[ours[1]], ref.state[theirs[1]]):
                for value in state.values():
                    value.zero_()
        _steps(opt, ours, [t])
        _steps(ref, theirs, [t])
    assert [float(opt.state[p]["step"]) for p in ours] == [6.0, 3.0]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_state_is_updated_in_place_with_a_step_count_per_parameter(adamw, backend):
    params = _params()
    opt = adamw(params, lr=0.1, backend=backend)
    _steps(opt, params, range(1))
    held = {(i, k): v for i, p in enumerate(params) for k, v in opt.state[p].items()}
    _steps(opt, params, range(1, 3))
    for (i, k), v in held.items():
        assert opt.state[params[i]][k] is v  # the same tensors, updated in place
    steps = [opt.state[p]["step"] for p in params]
    assert steps[0] is not steps[1] and [float(s) for s in steps] == [3.0, 3.0]


def test_betas_and_one_cycle_lr(adamw):
    params = _params()
    opt = adamw(params, lr=0.1, betas=(0.8, 0.95))
    group = opt.param_groups[0]
    assert group["betas"] == (0.8, 0.95) and (group["beta1"], group["beta2"]) == (0.8, 0.95)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)  # cycles betas[0]
    seen = []
    for t in range(4):
        for p, g in zip(params, _grads(t)):
            p.grad = g
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["betas"][0])
    assert len(set(seen)) > 1  # momentum moved
    opt.param_groups[0]["beta1"] = 0.5  # a user's edit of beta1 wins over the unchanged betas
    _steps(opt, params, range(4, 5))
    assert opt.param_groups[0]["betas"] == (0.5, 0.95)
    with pytest.raises(TypeError, match="betas"):
        codegen.build(optdsl.load("sgd"), "torch")(params, betas=(0.9, 0.99))
    fresh = adamw(params, lr=0.1)  # an edit before the first step counts as well (it was undone)
    loaded, scheduled = adamw(params, lr=0.1), adamw(params, lr=0.1)  # betas (0.9, 0.999) as made
    for opt in (loaded, scheduled):  # then (0.8, 0.999) as loaded
        opt.load_state_dict(adamw(params, lr=0.1, betas=(0.8, 0.999)).state_dict())
    for made in (fresh, loaded, copy.deepcopy(fresh), pickle.loads(pickle.dumps(fresh))):
        made.param_groups[0]["beta1"] = 0.0
        _steps(made, params, range(1))
        assert made.param_groups[0]["betas"] == (0.0, 0.999) and made.param_groups[0]["beta1"] == 0.0
    scheduled.param_groups[0]["betas"] = (0.7, 0.999)  # a scheduler's edit after the load wins too
    _steps(scheduled, params, range(1))
    assert scheduled.param_groups[0]["beta1"] == 0.7


def test_torch_settings_the_program_declares(adamw):
    """Code written for torch.optim.AdamW passes ``amsgrad=False``: the settings a program's torch
    declaration requires are accepted at those values, refused at others; betas given by position,
    as torch's signature has them, are told to come by keyword."""
    params = _params()
    ours = adamw(params, lr=0.1, amsgrad=False, decoupled_weight_decay=True)
    twin_params = _params()
    reference = torch.optim.AdamW(twin_params, lr=0.1, amsgrad=False)
    _steps(ours, params, range(3))
    _steps(reference, twin_params, range(3))
    for a, b in zip(params, twin_params):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"torch.optim.AdamW with amsgrad=False only, not amsgrad=True"):
        adamw(params, amsgrad=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nesterov'"):
        adamw(params, nesterov=False)
    with pytest.raises(TypeError, match=r"betas=\(beta1, beta2\)"):
        adamw(params, 0.1, (0.9, 0.999))
    momentum = codegen.build(optdsl.load("momentum"), "torch")
    momentum(params, nesterov=False)
    with pytest.raises(ValueError, match="nesterov=False only"):
        momentum(params, nesterov=True)
    adamw(params, capturable=False, differentiable=False)  # torch.optim's defaults, as code passes them
    for flag in ("capturable", "differentiable"):
        with pytest.raises(ValueError, match=f"does not support {flag}=True"):
            adamw(params, **{flag: True})
        # nor from a checkpoint (torch's load had kept the flag and saved it again: an audit)
        saved = torch.optim.AdamW(params, **{flag: True}).state_dict()
        with pytest.raises(ValueError, match=f"param group has {flag}=True; AdamW does not support"):
            adamw(params).load_state_dict(saved)


def _torch_trajectory(reference, make_ours, steps_before, steps_after, **kwargs):
    """Train torch.optim's ``reference`` for steps_before steps, load its state dict into ours,
    then run both for steps_after more: the params must agree."""
    theirs_params, ours_params = _params(), _params()
    theirs = reference(theirs_params, **kwargs)
    _steps(theirs, theirs_params, range(steps_before))
    for p, q in zip(ours_params, theirs_params):
        p.data.copy_(q.detach())
    ours = make_ours(ours_params)
    ours.load_state_dict(theirs.state_dict())
    _steps(theirs, theirs_params, range(steps_before, steps_before + steps_after))
    _steps(ours, ours_params, range(steps_before, steps_before + steps_after))
    return theirs_params, ours_params, ours


@pytest.mark.parametrize("name, reference, kwargs", [
    ("adamw", torch.optim.AdamW, {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}),
    ("adam", torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    ("momentum", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    ("nesterov", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("adafactor", torch.optim.Adafactor, {"lr": 0.01}),
])
def test_torch_optim_checkpoints_load_into_the_matching_program(name, reference, kwargs):
    cls = codegen.build(optdsl.load(name), "torch")
    theirs, ours, opt = _torch_trajectory(reference, lambda ps: cls(ps, backend="eager"), 3, 3, **kwargs)
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if "betas" in kwargs:  # the checkpoint's hyperparameters came along
        assert opt.param_groups[0]["beta1"] == kwargs["betas"][0]


def test_foreign_checkpoints_are_refused_when_loaded(adamw):
    params = _params()
    theirs = torch.optim.AdamW(params)
    _steps(theirs, params, range(1))
    lion = codegen.build(optdsl.load("lion"), "torch")(params)
    with pytest.raises(ValueError, match=r"exp_avg.*program 'lion'"):
        lion.load_state_dict(theirs.state_dict())
    amsgrad = torch.optim.AdamW(params, amsgrad=True)
    _steps(amsgrad, params, range(1))
    with pytest.raises(ValueError, match="group has amsgrad=True; program 'adamw' computes torch.optim"):
        adamw(params).load_state_dict(amsgrad.state_dict())
    adam = torch.optim.Adam(params)
    _steps(adam, params, range(1))
    with pytest.raises(ValueError, match="decoupled_weight_decay=False; program 'adamw' computes"):
        adamw(params).load_state_dict(adam.state_dict())
    # torch's RAdam keeps Adam's states, exp_avg and exp_avg_sq, and loaded as Adam without a word
    adam_cls = codegen.build(optdsl.load("adam"), "torch")
    for radam, ours in ((torch.optim.RAdam(params), adam_cls),
                        (torch.optim.RAdam(params, decoupled_weight_decay=True), adamw)):
        _steps(radam, params, range(1))
        with pytest.raises(ValueError, match="do not record 'amsgrad', which every torch.optim.Adam"):
            ours(params).load_state_dict(radam.state_dict())


def test_a_tuple_hyperparameter_takes_torchs_spelling():
    """torch.optim.Adafactor(params, eps=(None, 1e-3)) was a TypeError."""
    adafactor = codegen.build(optdsl.load("adafactor"), "torch")
    opt = adafactor(_params(), eps=(None, 0.002))
    assert opt.defaults["eps2"] == 0.002
    assert opt.defaults["eps1"] == optdsl.load("adafactor").hyper_defaults["eps1"]
    assert adafactor(_params(), eps=(1e-10, None)).defaults["eps1"] == 1e-10
    with pytest.raises(ValueError, match=r"eps must be a tuple \(eps1, eps2\)"):
        adafactor(_params(), eps=(1e-10,))
    with pytest.raises(ValueError, match="Invalid epsilon value: -1.0"):
        adafactor(_params(), eps=(None, -1.0))


def test_torchs_tuple_spelling_in_a_group_is_read_when_made_loaded_or_edited():
    """After loading a torch.optim.Adafactor checkpoint the group kept torch's ``eps`` beside
    eps1/eps2, and code written for torch.optim that then set ``group["eps"] = (None, 0.5)`` was
    silently ignored (the floor stayed 1e-3); a group made with ``eps=...`` ignored it too."""
    adafactor = codegen.build(optdsl.load("adafactor"), "torch")
    theirs_params, ours_params = _params(), _params()
    theirs = torch.optim.Adafactor(theirs_params, lr=0.01, foreach=False)
    _steps(theirs, theirs_params, range(3))
    for p, q in zip(ours_params, theirs_params):
        p.data.copy_(q.detach())
    ours = adafactor(ours_params, backend="eager")
    ours.load_state_dict(theirs.state_dict())
    assert "eps" not in ours.param_groups[0] and ours.param_groups[0]["eps2"] == 1e-3
    for opt in (theirs, ours):
        opt.param_groups[0]["eps"] = (None, 0.5)  # torch's spelling: the RMS floor eps2, 1e-3 -> 0.5
        _steps(opt, theirs_params if opt is theirs else ours_params, range(3, 6))
    assert ours.param_groups[0]["eps2"] == 0.5 and "eps" not in ours.param_groups[0]
    for a, b in zip(theirs_params, ours_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    made = adafactor([{"params": _params(), "eps": (None, 0.25)}])
    assert made.param_groups[0]["eps2"] == 0.25 and "eps" not in made.param_groups[0]
    made.param_groups[0]["eps"] = (None, -1.0)
    with pytest.raises(ValueError, match="Invalid epsilon value: -1.0"):
        _steps(made, made.param_groups[0]["params"], range(1))


def test_a_parameter_listed_twice_in_a_group_is_refused(adamw):
    """torch.optim warns and steps such a parameter twice a step; the generated AdamW stepped it
    once, differently on each backend (0.21 from torch on eager, 0.16 on cpp and compiled)."""
    p, q = _params()
    with pytest.raises(ValueError, match="lists the same parameter more than once"):
        adamw([p, q, p])
    opt = adamw([p])
    with pytest.raises(ValueError, match="lists the same parameter more than once"):
        opt.add_param_group({"params": (t for t in (q, q))})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("backend", ["eager", "compiled", "cpp"])
def test_states_follow_a_parameter_moved_to_another_dtype(adamw, backend):
    """After ``model.double()`` eager and cpp failed on the float32 states (torch.optim does too)
    and compiled stepped float64 params with float32 states. The states follow the param, as a
    loaded checkpoint's are placed: the steps after are those of states cast by hand."""

    def run(cast_by_hand):
        params = _params()
        opt = adamw(params, lr=0.01, backend=backend)
        _steps(opt, params, range(3))
        for p in params:
            p.data = p.data.double()
            if cast_by_hand:
                opt.state[p].update(m=opt.state[p]["m"].double(), v=opt.state[p]["v"].double())
        for t in range(3, 6):
            for p, g in zip(params, _grads(t)):
                p.grad = g.double()
            opt.step()
        assert {opt.state[p][k].dtype for p in params for k in "mv"} == {torch.float64}
        return params

    for a, b in zip(run(False), run(True)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["eager", "compiled", "cpp", None])
def test_a_state_of_another_shape_than_its_parameter_is_refused_before_the_kernels(adamw, backend):
    """A param given bigger data after a step (a grown vocabulary) kept its small states: the cpp
    kernels (the default's backend from step 1 on a model of 2^20 elements) wrote past their ends,
    a heap corruption or a segfault; compiled raised from deep inside dynamo. Every backend now
    raises one RuntimeError naming the param and the state, before any kernel runs."""
    params = _params()
    opt = adamw(params, lr=0.01, backend=backend)
    _steps(opt, params, range(1))
    params[0].data = torch.randn(5000, 4)
    params[0].grad = torch.ones(5000, 4)
    params[1].grad = torch.ones(5)
    message = r"parameter 0 of param group 0 has shape \(5000, 4\) but its state 'm' has shape \(3, 4\)"
    with pytest.raises(RuntimeError, match=message):
        opt.step()
    params[0].data = params[0].data[:3].reshape(4, 3)  # a view of another shape, the same storage
    with pytest.raises(RuntimeError, match=r"has shape \(4, 3\) but its grad has shape \(5000, 4\)"):
        opt.step()
    del opt.state[params[0]]  # as the message says: a fresh state, and the step goes on
    params[0].grad = torch.ones(4, 3)
    opt.step()
    assert opt.state[params[0]]["m"].shape == (4, 3)


@pytest.mark.parametrize("order", ["swapped", "other shapes"])
def test_a_checkpoint_of_other_parameters_is_refused_when_loaded(adamw, order):
    """Loading a checkpoint whose params were listed in another order: a state of the same number of
    elements was reshaped silently (a's first moment became b's), one of another size reached the cpp
    kernels (a segfault). Refused at load, naming the state; torch's row state (rows, 1) still loads."""
    shapes = [(3, 4), (4, 3)] if order == "swapped" else [(200, 3), (3,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    opt = adamw(params, backend="cpp")
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    other = adamw(params[::-1], backend="cpp")
    message = r"state 'm' of parameter 0 of param group 0 has shape \(\d+, \d+\) in"
    with pytest.raises(ValueError, match=message):
        other.load_state_dict(opt.state_dict())
    assert not other.state  # nothing loaded
    other = adamw(params, backend="cpp")
    other.load_state_dict(opt.state_dict())  # the same order loads
    other.step()



@pytest.mark.parametrize("name, reference, kwargs, message", [
    ("momentum", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}, "nesterov=True"),
    ("sgd", torch.optim.SGD, {"momentum": 0.9}, "momentum=0.9"),
    ("sgd", torch.optim.SGD, {"weight_decay": 0.01}, "weight_decay=0.01"),
    ("adamw", torch.optim.AdamW, {"amsgrad": True}, "amsgrad=True"),
])
def test_a_checkpoint_saved_before_any_step_is_checked_as_well(name, reference, kwargs, message):
    """A torch.optim checkpoint with no state yet was loaded unchecked: momentum SGD then said
    nesterov=True in its group and computed plain momentum."""
    params = _params()
    opt = codegen.build(optdsl.load(name), "torch")(params)
    with pytest.raises(ValueError, match=rf"param group has {message}; program '{name}'"):
        opt.load_state_dict(reference(params, lr=0.1, **kwargs).state_dict())
    opt.load_state_dict(reference(params, lr=0.1).state_dict())  # the settings it computes load


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": -1}, "Invalid learning rate: -1"),
    ({"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    ({"beta2": float("nan")}, "Invalid beta parameter at index 1: nan"),
    ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    # the edges of torch's ranges: a beta of 1 makes the bias correction 0 (nan steps)
    ({"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
    ({"betas": (-1e-9, 0.999)}, "Invalid beta parameter at index 0: -1e-09"),
    ({"lr": -1e-9}, "Invalid learning rate: -1e-09"),
    ({"eps": -1e-12}, "Invalid epsilon value: -1e-12"),
])
def test_hyperparameters_are_validated_with_torch_messages(adamw, kwargs, message):
    with pytest.raises(ValueError, match=message):
        adamw(_params(), **kwargs)
    adamw(_params(), lr=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0)  # the ranges' closed ends


def test_betas_edited_in_a_group_are_checked_at_the_next_step(adamw):
    params = _params()
    opt = adamw(params, lr=1e-3)
    opt.param_groups[0]["betas"] = (0.9, 1.0)
    for p, g in zip(params, _grads(0)):
        p.grad = g
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: 1.0"):
        opt.step()


def test_validation_of_other_hyperparameters_and_groups(adamw):
    _check_hyper("beta2_decay", -0.8)  # a name torch does not know: any number but nan
    with pytest.raises(ValueError, match="Invalid beta2_decay value: nan"):
        _check_hyper("beta2_decay", float("nan"))
    with pytest.raises(TypeError, match="a number is needed"):
        _check_hyper("d", "1")
    with pytest.raises(ValueError, match="Invalid learning rate"):
        adamw([{"params": _params(), "lr": -0.5}])


def test_a_program_whose_default_breaks_a_torch_rule_takes_its_own_range():
    """The paper's Program 4 averages with a weight of 1.109; a program whose own default for beta2
    (or lr, eps...) is outside torch's range refused its own defaults. Its module takes any number
    but nan there; torch's rules still hold where the defaults keep them."""
    source = ("def f(w, g, m, lr=-0.1, beta1=0.9, beta2=1.109):\n"
              "    m = interp(g, interp(g, m, beta2), beta1)\n")
    cls = codegen.build(optdsl.parse(source + "    return lr * m, m\n"), "torch")
    params = _params()
    opt = cls(params)
    _steps(opt, params, range(2))
    cls(params, betas=(0.9, 2.0), lr=-1.0)
    for kwargs, message in [({"beta2": float("nan")}, "Invalid beta2 value: nan"),
                            ({"betas": (1.5, 1.2)}, "Invalid beta parameter at index 0: 1.5")]:
        with pytest.raises(ValueError, match=message):
            cls(params, **kwargs)


def test_numpy_scalars_and_bools_are_numbers_as_in_torch(adamw):
    """torch.optim takes any real number: ``np.float32(1e-3)`` from a config (or a scheduler's
    numpy lr) was a TypeError, as were bools, which torch checks only for range (``lr=True`` is 1)."""
    params, twin = _params(), _params()
    ours = adamw(params, lr=np.float32(0.1), eps=np.float32(1e-8), weight_decay=np.int64(0),
                 betas=(np.float32(0.9), 0.99))
    f32 = lambda x: float(np.float32(x))  # the same numbers as Python floats
    same = adamw(twin, lr=f32(0.1), eps=f32(1e-8), weight_decay=0, betas=(f32(0.9), 0.99))
    extra = [torch.nn.Parameter(torch.randn(2))]
    ours.add_param_group({"params": extra, "lr": np.float32(0.2), "eps": np.float32(1e-6)})
    twin_extra = [torch.nn.Parameter(extra[0].detach().clone())]
    same.add_param_group({"params": twin_extra, "lr": f32(0.2), "eps": f32(1e-6)})
    for t in range(3):
        for opt, ps in ((ours, params + extra), (same, twin + twin_extra)):
            for p, g in zip(ps, [*_grads(t), torch.ones(2)]):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(params + extra, twin + twin_extra):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        adamw(_params(), lr=np.float32(-1))
    with pytest.raises(ValueError, match="Invalid epsilon value: -1"):
        adamw([{"params": _params(), "eps": np.int64(-1)}])
    for kwargs in ({"lr": True}, {"weight_decay": False}):  # as torch.optim.AdamW takes them
        torch.optim.AdamW(_params(), **kwargs)
        adamw(_params(), **kwargs)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 0: True"):
        adamw(_params(), betas=(True, 0.9))
    with pytest.raises(TypeError, match="a number is needed"):
        adamw(_params(), lr=np.array([0.1, 0.2]))


_CLIPPED = """def clipped(w, g, m, lr=0.01, beta1=0.9):
    g = where(global_norm(g) < 1, g, g / global_norm(g))
    m = interp(g, m, beta1)
    return lr * m, m
"""


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_a_one_element_tensor_lr_steps_as_its_number(backend):
    """torch.optim takes a Tensor lr of any 1-element shape: one of shape (1,) broadcast the step of
    a 0-d parameter to shape (1,) in a program with a global reduction ("output with shape [] doesn't
    match the broadcast shape [1]"), and the functional step returned that shape."""
    cls = codegen.build(optdsl.parse(_CLIPPED), "torch")
    runs = []
    for lr in (0.01, torch.tensor([0.01]), torch.tensor([[0.01]], dtype=torch.float64)):
        params = [torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.ones(2, 3))]
        opt = cls(params, lr=lr, backend=backend)
        for t in range(2):
            params[0].grad, params[1].grad = torch.tensor(0.5 + t), torch.full((2, 3), 0.1)
            opt.step()
        assert [tuple(p.shape) for p in params] == [(), (2, 3)]
        runs.append(params)
    for run in runs[1:]:
        for p, q in zip(runs[0], run):
            torch.testing.assert_close(p, q)


@pytest.mark.parametrize("name", ["adamw", "clipped"])
def test_the_functional_step_keeps_a_0d_parameter_0d_under_a_1_element_lr(name):
    program = codegen.build(optdsl.parse(_CLIPPED) if name == "clipped" else optdsl.load(name), "torch")
    program = program._program
    w = [torch.tensor(1.0), torch.ones(3)]
    g = [torch.tensor(0.5), torch.ones(3)]
    new, _ = program.step(w, g, program.init_states(w), lr=torch.tensor([0.01]), step=torch.tensor([1.0]))
    same, _ = program.step(w, g, program.init_states(w), lr=0.01, step=1)
    assert [tuple(t.shape) for t in new] == [(), (3,)]
    for a, b in zip(new, same):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_maximize_ascends(adamw, backend):
    up, down = _params(), _params()
    opt_up, opt_down = adamw(up, lr=0.1, maximize=True, backend=backend), adamw(down, lr=0.1, backend=backend)
    for t in range(3):
        for p, q, g in zip(up, down, _grads(t)):
            p.grad, q.grad = g.clone(), -g
        opt_up.step()
        opt_down.step()
    for p, q in zip(up, down):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert opt_up.param_groups[0]["maximize"] is True


@pytest.mark.parametrize("backend", ["eager", "compiled", "cpp"])
@pytest.mark.parametrize("default", [False, True])
def test_maximize_is_each_groups_own(backend, default):
    """torch.optim reads maximize per param group: one group ascends, the other descends."""
    ours = [torch.zeros(3, requires_grad=True) for _ in range(2)]
    theirs = [torch.zeros(3, requires_grad=True) for _ in range(2)]
    SGD = codegen.build(optdsl.load("sgd"), "torch")
    opt = SGD([{"params": [ours[0]]}, {"params": [ours[1]], "maximize": not default}], lr=0.1,
              maximize=default, backend=backend)
    ref = torch.optim.SGD([{"params": [theirs[0]]}, {"params": [theirs[1]], "maximize": not default}], lr=0.1,
                          maximize=default)
    for t in (*ours, *theirs):
        t.grad = torch.arange(1.0, 4.0)
    opt.step()
    ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name, backend", [("adamw", "eager"), ("lamb", "eager"), ("tiger", "eager"),
                                           ("clipped", "eager"), ("clipped", "cpp")])
def test_a_default_device_context_changes_nothing(name, backend):
    """Inside ``with torch.device(...)`` (how models are built on an accelerator) the runtime's own
    CPU tensors (step counts, numbers, per-step scalars, a global reduction's value) stay on the
    CPU: the steps are those taken outside it, as torch.optim's are (found: the step counts were
    made on the default device)."""
    program = optdsl.parse(_CLIPPED) if name == "clipped" else optdsl.load(name)
    cls = codegen.build(program, "torch")
    runs = []
    for device in (None, "meta"):
        params = _params()
        opt = cls(params, lr=0.1, backend=backend)
        for t in range(3):
            for p, g in zip(params, _grads(t)):
                p.grad = g
            with torch.device(device) if device else contextlib.nullcontext():
                opt.step()
        runs.append(params)
    for p, q in zip(*runs):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["adamw", "lion", "momentum"])
@pytest.mark.parametrize("backend", ["eager", "cpp"])
def test_complex_parameters_step_as_their_real_and_imaginary_parts(name, backend):
    """An elementwise program steps a complex parameter as torch.optim does: its real view
    (torch.view_as_real) stepped as a real parameter, bit for bit; states stay complex (found:
    the imaginary parts were dropped with a warning)."""
    cls = codegen.build(optdsl.load(name), "torch")
    g = torch.Generator().manual_seed(0)
    z = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.complex64, generator=g))
    r = torch.nn.Parameter(torch.view_as_real(z.detach()).clone())
    opt_z, opt_r = cls([z], lr=0.1, backend=backend), cls([r], lr=0.1, backend=backend)
    for _ in range(4):
        grad = torch.randn(3, 4, dtype=torch.complex64, generator=g)
        z.grad, r.grad = grad, torch.view_as_real(grad).clone()
        opt_z.step()
        opt_r.step()
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach(), rtol=0, atol=0)
    assert all(t.dtype == torch.complex64 for k, t in opt_z.state[z].items() if k != "step")


def test_complex_adamw_matches_torch_and_other_programs_refuse(adamw):
    z = torch.nn.Parameter(torch.randn(5, 2, dtype=torch.complex128))
    w = torch.nn.Parameter(z.detach().clone())
    ours, theirs = adamw([z], lr=0.1, weight_decay=0.1), torch.optim.AdamW([w], lr=0.1, weight_decay=0.1)
    for t in range(3):
        z.grad = torch.randn(5, 2, dtype=torch.complex128, generator=torch.Generator().manual_seed(t))
        w.grad = z.grad.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(z, w)
    copied = torch.nn.Parameter(z.detach().clone())
    resumed = adamw([copied], lr=0.1, weight_decay=0.1)
    saved = copy.deepcopy(ours.state_dict())
    resumed.load_state_dict(saved)  # complex states come back complex, copied (not the checkpoint's)
    assert resumed.state[copied]["m"].dtype == torch.complex128
    assert resumed.state[copied]["m"].data_ptr() != saved["state"][0]["m"].data_ptr()
    z.grad, copied.grad = torch.ones_like(z), torch.ones_like(z)
    ours.step()
    resumed.step()
    torch.testing.assert_close(z, copied, rtol=0, atol=0)
    lamb = codegen.build(optdsl.load("lamb"), "torch")
    z.grad = torch.ones_like(z)
    with pytest.raises(TypeError, match=r"cannot step the complex \(5, 2\) parameter.*norm\(\) reduces"):
        lamb([z]).step()
    dense, sparse = torch.nn.Parameter(z.detach().clone()), torch.nn.Parameter(z.detach().clone())
    dense.grad, sparse.grad = torch.ones_like(z), torch.ones_like(z).to_sparse()
    adamw([dense], lr=0.1).step()
    adamw([sparse], lr=0.1).step()  # densified, then stepped as its real and imaginary parts
    torch.testing.assert_close(sparse, dense, rtol=0, atol=0)


def test_foreach_and_fused_flags(adamw):
    assert adamw(_params(), foreach=True).backend == "eager"
    fused = adamw(_params(), fused=True)
    cpu = torch.device("cpu")
    assert fused._backend_for(cpu, 10) == "cpp"  # the C++ kernels: fused, and faster than compiled
    default = adamw(_params())  # a small CPU model: eager until its kernels can pay for their build
    assert default._backend_for(cpu, 10) == "eager" and default._backend_for(cpu, 1 << 22) == "cpp"
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        adamw(_params(), foreach=True, fused=True)
    with pytest.raises(ValueError, match="fused=True"):
        adamw(_params(), fused=True, backend="eager")


@pytest.mark.parametrize("source, why", [
    ("def f(w, g, lr=0.1):\n    return lr * g * dim(w, -1)\n", "dim() is a static op"),
    ("def f(w, g, m: scalar, lr=0.1):\n    m = m + 1\n    return lr * g / m, m\n",
     "state m is scalar-shaped"),
])
def test_asking_for_kernels_a_program_has_none_of_says_why(source, why):
    """``backend="cpp"`` for a program the kernels cannot run said "unknown backend 'cpp'"."""
    cls = codegen.build(optdsl.parse(source), "torch")
    message = rf"backend 'cpp' cannot run program 'f' \({re.escape(why)}\); choose from"
    with pytest.raises(ValueError, match=message):
        cls([torch.nn.Parameter(torch.zeros(3))], backend="cpp")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        cls([torch.nn.Parameter(torch.zeros(3))], backend="cuda")


def test_a_small_cpu_model_moves_to_the_kernels_after_its_first_thousand_steps(adamw, monkeypatch):
    """The default backend of a small CPU model: eager for the first 1,000 steps (a run that short
    never builds the kernels), cpp from then on, counted by the params' own step (so an edited or
    resumed count moves it); plain SGD, one multi-tensor op a step, stays eager."""
    cpu = torch.device("cpu")
    default = adamw(_params())
    assert [default._backend_for(cpu, 10, step) for step in (1, 1000, 1001)] == ["eager", "eager", "cpp"]
    sgd = codegen.build(optdsl.load("sgd"), "torch")(_params())
    assert sgd._backend_for(cpu, 10, 5000) == "eager" and sgd._backend_for(cpu, 1 << 22, 1) == "cpp"

    params = _params()
    kernels_only = codegen.build(optdsl.load("adamw"), "torch")  # a class of its own: its calls are not counted
    opt, reference = adamw(params, lr=0.1), kernels_only([p.detach().clone() for p in params], lr=0.1, backend="cpp")
    group_step, available = opt._program.backends["cpp"]
    steps = []

    def counted(*args, **kwargs):
        steps.append(kwargs["step"])
        group_step(*args, **kwargs)

    monkeypatch.setitem(opt._program.backends, "cpp", (counted, available))
    for t in range(4):
        for p, q, g in zip(params, reference.param_groups[0]["params"], _grads(t)):
            p.grad, q.grad = g.clone(), g.clone()
        if t == 1:  # the counts edited to 999, as a resumed run's would be
            for p, q in zip(params, reference.param_groups[0]["params"]):
                opt.state[p]["step"].fill_(999)
                reference.state[q]["step"].fill_(999)
        opt.step()
        reference.step()
    assert steps == [1001, 1002]  # steps 1 and 1000 ran eager
    for p, q in zip(params, reference.param_groups[0]["params"]):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_a_compile_failure_warns_and_explicit_compiled_raises():
    """A real inductor failure (the C++ compiler is made unusable): the default backend warns once
    and runs eager, with the same result; backend='compiled' raises."""
    script = textwrap.dedent("""
        import warnings, torch, torch._inductor.config as config, codegen, optdsl
        config.cpp.cxx = ("/nonexistent/c++",)
        AdamW = codegen.build(optdsl.load("amos"), "torch")  # its scalar state leaves it no C++ kernel
        w = torch.nn.Parameter(torch.ones(1 << 20))  # large enough that the default compiles
        opt = AdamW([w], lr=0.1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                w.grad = torch.ones(1 << 20)
                opt.step()
        v = torch.nn.Parameter(torch.ones(1 << 20))
        eager = AdamW([v], lr=0.1, backend="eager")
        for _ in range(2):
            v.grad = torch.ones(1 << 20)
            eager.step()
        print(sum("torch.compile failed" in str(c.message) for c in caught), torch.equal(w, v))
        strict = AdamW([w], lr=0.1, backend="compiled")
        w.grad = torch.ones(1 << 20)
        try:
            strict.step()
        except Exception as e:
            print("raised", type(e).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True)
    lines = out.stdout.split("\n")
    assert lines[0] == "1 True", out.stdout + out.stderr
    assert lines[1].startswith("raised"), out.stdout + out.stderr


def test_the_kernel_source_is_written_whole_under_a_name_of_its_own(tmp_path, monkeypatch):
    """Processes building the same kernels share one cache folder: the source was rewritten in place
    (``open(kernels.cpp, "w")``) while another process's compiler might be reading it. It is now
    written whole under a temporary name in that folder, then renamed over kernels.cpp (atomic); a
    failed write leaves no temporary behind. (A fake compiler: a script that copies its source.)"""
    import builtins
    import os

    from codegen.runtime import cpp_kernels

    compiler = tmp_path / "fake-c++"
    compiler.write_text(f"#!{sys.executable}\nimport shutil, sys\nshutil.copy(sys.argv[-3], sys.argv[-1])\n")
    compiler.chmod(0o755)
    monkeypatch.setattr(cpp_kernels, "_cpp_compiler", lambda: str(compiler))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    source = "// the kernels\n" + "int f(int x) { return x; }\n" * 1000
    real_open, real_replace, renamed = builtins.open, os.replace, []

    def open_(file, mode="r", *args, **kwargs):
        if str(file).endswith("kernels.cpp") and set(mode) & set("wax+"):
            raise AssertionError(f"kernels.cpp opened with mode {mode!r}: written in place")
        return real_open(file, mode, *args, **kwargs)

    def replace(src, dst):
        if str(dst).endswith(".cpp"):  # what the name kernels.cpp comes to hold, and from where
            with real_open(src, encoding="utf-8") as f:
                renamed.append((os.path.dirname(src) == os.path.dirname(dst), f.read()))
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", open_)
        m.setattr(os, "replace", replace)
        lib = cpp_kernels._cpp_build(source, ("-DX",))
    folder = os.path.dirname(lib)
    assert renamed == [(True, source)]
    assert sorted(os.listdir(folder)) == ["kernels.cpp", "kernels.so"]
    with open(lib, encoding="utf-8") as f:
        assert f.read() == source  # the compiler read the whole source
    with monkeypatch.context() as m:

        def fails(src, dst):
            raise OSError("disk full")

        m.setattr(os, "replace", fails)
        with pytest.raises(OSError, match="disk full"):
            cpp_kernels._cpp_build(source, ("-DY",))
    (other,) = [d for d in os.listdir(tmp_path / "cache") if d != os.path.basename(folder)]
    assert os.listdir(tmp_path / "cache" / other) == []


# --- the runtime as a module of its own -----------------------------------------------------------
def test_the_runtime_runs_a_hand_written_program_without_the_printer():
    """codegen.runtime.torch_optimizer is ordinary code: a program table written by hand (SGD with
    momentum, one path) drives the Optimizer base class, with no generated code at all."""
    from codegen.runtime import torch_optimizer as rt

    def segment(*, w, g, b, lr, momentum, **_):
        b = momentum * b + g
        return w - lr * b, (b,)

    def group(params, grads, states, hyper):
        torch._foreach_mul_(states["b"], hyper["momentum"])
        torch._foreach_add_(states["b"], grads)
        torch._foreach_add_(params, states["b"], alpha=-hyper["lr"])

    program = rt._Program(
        name="heavy_ball", hyper_defaults={"lr": 0.1, "momentum": 0.9}, state_names=("b",),
        paths=(rt._Path(states=(("b", "full", "zeros"),), needs_2d=False, flat=True),), tree=0,
        uniforms=(lambda **_: {},), segments=((segment,),), groups=(group,),
        torch_checkpoints={"SGD": {"states": {"momentum_buffer": "b"}, "hypers": {}, "requires": {}}},
    )

    class HeavyBall(rt._Optimizer):
        _program = program

        def __init__(self, params, lr=0.1, momentum=0.9, *, maximize=False, foreach=None, fused=None,
                     backend=None):
            super().__init__(params, {"lr": lr, "momentum": momentum}, maximize=maximize, foreach=foreach,
                             fused=fused, backend=backend)

    ours, theirs = _params(), _params()
    opt, ref = HeavyBall(ours, backend="eager"), torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    _steps(opt, ours, range(3))
    _steps(ref, theirs, range(3))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    new, _ = program.step(ours, _grads(3), {"b": [opt.state[p]["b"] for p in ours]}, lr=0.1, step=4)
    torch.testing.assert_close(new[0], ours[0] - 0.1 * (0.9 * opt.state[ours[0]]["b"] + _grads(3)[0]))
    with pytest.raises(ValueError, match="Invalid momentum value: -1"):
        HeavyBall(_params(), momentum=-1)


def test_the_runtime_block_is_copied_verbatim(adamw):
    from codegen.runtime import BEGIN, END, source

    block = source("torch_optimizer")
    assert block.startswith(BEGIN) and block.rstrip().splitlines()[-1].startswith(END)
    text = codegen.emit(optdsl.load("adamw"), "torch")
    assert block in text and text.count(block.splitlines()[0]) == 1


def test_no_two_runtime_modules_define_one_name():
    """The runtime modules are pasted side by side into one generated file, so a name two of them
    define at top level is one definition overriding the other there: the Triton runtime's
    ``_tensor(x)`` replaced torch_math's ``_tensor(x, like, dtype)``, and the Triton module's eager
    step (which runs tensors the kernels cannot take) raised TypeError for every program whose
    eager step calls it (found 2026-12-05). Each name also appears once in every generated module."""
    import ast

    from codegen.runtime import _text

    def defined(text):
        names = []
        for node in ast.parse(text).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.append(node.name)
            elif isinstance(node, ast.Assign):
                names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        return names

    modules = ("float_math", "torch_math", "torch_optimizer", "cpp_kernels", "triton_kernels", "jax_math")
    owners = {}
    for module in modules:
        for name in defined(_text(module)):
            owners.setdefault(name, set()).add(module)
    assert {n: sorted(m) for n, m in owners.items() if len(m) > 1} == {}
    for name in optdsl.zoo_names():
        for target in ("torch", "triton"):
            names = defined(codegen.emit(optdsl.load(name), target))
            assert sorted(n for n in set(names) if names.count(n) > 1) == [], (name, target)


@pytest.mark.parametrize("backend", ["eager", "compiled", "cpp"])
def test_an_empty_parameters_step_count_advances_as_torch_optims_does(adamw, backend):
    ours, theirs = [torch.zeros(0, 3, requires_grad=True), torch.zeros(2, requires_grad=True)], [
        torch.zeros(0, 3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    opt, ref = adamw(ours, lr=1e-3, backend=backend), torch.optim.AdamW(theirs, lr=1e-3)
    for _ in range(3):
        for t in (*ours, *theirs):
            t.grad = torch.ones_like(t)
        opt.step()
        ref.step()
    counts = [float(opt.state[p]["step"]) for p in ours], [float(ref.state[p]["step"]) for p in theirs]
    assert counts == ([3, 3], [3, 3])
