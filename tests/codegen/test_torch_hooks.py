"""load_state_dict's hooks act on a generated optimizer as on torch.optim's own: a pre-hook's returned
checkpoint is what loads, a post-hook's edits of ``opt.state`` stand, and a pre-hook runs before the
checkpoint is checked, so that it may rename a foreign checkpoint's states (audit r2, item 1: the
optimizer translated and checked the caller's dict before torch ran the pre-hooks, and re-copied its
state over the post-hooks' edits)."""

from __future__ import annotations

import copy

import pytest
import torch

import codegen
import optdsl


@pytest.fixture(scope="module")
def adamw():
    return codegen.build(optdsl.load("adamw"), "torch")


def _stepped(cls, **kwargs):
    p = torch.nn.Parameter(torch.ones(3))
    opt = cls([p], lr=1e-2, **kwargs)
    p.grad = torch.ones(3)
    opt.step()
    return p, opt


@pytest.mark.parametrize("which", ["generated", "torch.optim"])
def test_a_pre_hooks_checkpoint_loads_and_a_post_hooks_edits_stand(adamw, which):
    """Resuming with first moments reset (pre-hook) and second moments adjusted (post-hook): the
    generated AdamW loaded the checkpoint as saved, torch.optim.AdamW as the hooks made it."""
    cls, m, v = (adamw, "m", "v") if which == "generated" else (torch.optim.AdamW, "exp_avg", "exp_avg_sq")
    p, opt = _stepped(cls)
    saved = copy.deepcopy(opt.state_dict())

    def reset_first_moments(o, state_dict):
        state_dict = copy.deepcopy(state_dict)
        for s in state_dict["state"].values():
            s[m] = torch.zeros_like(s[m])
        return state_dict

    def fill_second_moments(o):
        for s in o.state.values():
            s[v].fill_(123.0)

    opt.register_load_state_dict_pre_hook(reset_first_moments)
    opt.register_load_state_dict_post_hook(fill_second_moments)
    opt.load_state_dict(saved)
    assert opt.state[p][m].tolist() == [0.0] * 3
    assert opt.state[p][v].tolist() == [123.0] * 3
    assert saved["state"][0][m].tolist() != [0.0] * 3  # the caller's checkpoint as it was


def test_a_pre_hook_renames_a_foreign_checkpoint_before_it_is_checked(adamw):
    """A checkpoint whose states have names of its own was refused ("the checkpoint holds state
    ['first', 'second']") before the pre-hook that renames them ran."""
    theirs_p, theirs = _stepped(torch.optim.AdamW)
    foreign = copy.deepcopy(theirs.state_dict())
    for s in foreign["state"].values():
        s["first"], s["second"] = s.pop("exp_avg"), s.pop("exp_avg_sq")
    p, opt = _stepped(adamw)
    with pytest.raises(ValueError, match=r"holds state \['first', 'second'\]"):
        opt.load_state_dict(foreign)

    def rename(o, state_dict):
        state_dict = copy.deepcopy(state_dict)
        for s in state_dict["state"].values():
            s["m"], s["v"] = s.pop("first"), s.pop("second")
        return state_dict

    opt.register_load_state_dict_pre_hook(rename)
    opt.load_state_dict(foreign)
    torch.testing.assert_close(opt.state[p]["m"], theirs.state[theirs_p]["exp_avg"], rtol=0, atol=0)
    torch.testing.assert_close(opt.state[p]["v"], theirs.state[theirs_p]["exp_avg_sq"], rtol=0, atol=0)


def test_hooks_see_what_torch_shows_them_and_run_once(adamw):
    """A pre-hook sees the caller's checkpoint untranslated (a torch.optim.AdamW one keeps torch's
    names) in a shallow copy it may edit; a post-hook sees the state as loaded, in the program's
    names; each runs once a load, stays registered after a load (one that fails too), and a state it
    replaces is the one the next step updates."""
    _, theirs = _stepped(torch.optim.AdamW)
    checkpoint = theirs.state_dict()
    p, opt = _stepped(adamw)
    seen = []

    def pre(o, state_dict):
        seen.append(("pre", sorted(state_dict["state"][0])))
        state_dict["param_groups"] = [dict(group, lr=0.5) for group in state_dict["param_groups"]]

    def post(o):
        seen.append(("post", sorted(o.state[p])))
        o.state[p]["m"] = torch.full((3,), 7.0)  # replaced, not edited: the step must take this one

    pre_handle = opt.register_load_state_dict_pre_hook(pre)
    opt.register_load_state_dict_post_hook(post)
    opt.load_state_dict(checkpoint)
    assert seen == [("pre", ["exp_avg", "exp_avg_sq", "step"]), ("post", ["m", "step", "v"])]
    assert opt.param_groups[0]["lr"] == 0.5 and checkpoint["param_groups"][0]["lr"] == 1e-2
    assert opt.state[p]["v"].data_ptr() != theirs.state[next(iter(theirs.state))]["exp_avg_sq"].data_ptr()
    p.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(opt.state[p]["m"], torch.full((3,), 0.9 * 7.0 + 0.1))
    seen.clear()
    with pytest.raises(ValueError, match="holds state"):  # refused after the pre-hook ran
        opt.load_state_dict({**checkpoint, "state": {0: {"other": torch.ones(3)}}})
    assert seen == [("pre", ["other"])]
    pre_handle.remove()
    seen.clear()
    opt.load_state_dict(checkpoint)
    assert seen == [("post", ["m", "step", "v"])]
