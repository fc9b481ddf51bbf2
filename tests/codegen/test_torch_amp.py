"""AMP GradScaler through the generated optimizer: the fused-optimizer fast path (grad_scale/found_inf
handed to step) equals GradScaler's standard unscale path and torch.optim.AdamW under the same scaler."""

from __future__ import annotations

import sys

import pytest
import torch

import codegen
import optdsl


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _train(make_opt, steps=8, inf_at=(3,)):
    """Train a small model under GradScaler("cpu"); at the steps in inf_at one grad is made inf after
    backward. Returns the model, the optimizer and, per inf step, (params, states) before and after."""
    model = _model()
    opt = make_opt(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    gen = torch.Generator().manual_seed(1)
    skipped = []
    for t in range(steps):
        x, y = torch.randn(16, 6, generator=gen), torch.randn(16, 3, generator=gen)
        opt.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        if t in inf_at:
            model[0].weight.grad[0, 0] = float("inf")
            before = _snapshot(model, opt)
        scaler.step(opt)
        scaler.update()
        if t in inf_at:
            skipped.append((before, _snapshot(model, opt)))
    return model, opt, skipped


def _snapshot(model, opt):
    params = [p.detach().clone() for p in model.parameters()]
    states = [{k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()]
    return params, states


def _generated(fast, backend):
    AdamW = codegen.build(optdsl.load("adamw"), "torch")
    if not fast:
        AdamW = type("StandardPathAdamW", (AdamW,), {"_step_supports_amp_scaling": False})

    def make(params):
        return AdamW(params, lr=1e-2, weight_decay=0.1, backend=backend)

    return make


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_fast_path_equals_standard_path_and_torch_adamw(backend):
    assert codegen.build(optdsl.load("adamw"), "torch")._step_supports_amp_scaling
    fast, opt, skipped = _train(_generated(True, backend))
    standard, _, skipped_standard = _train(_generated(False, backend))
    reference, torch_opt, _ = _train(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, fused=False))
    for a, b, c in zip(fast.parameters(), standard.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=2e-5, atol=1e-6)
    for p, q in zip(fast.parameters(), reference.parameters()):
        assert float(opt.state[p]["step"]) == float(torch_opt.state[q]["step"]) == 7  # one of 8 skipped
    for before, after in skipped + skipped_standard:
        for x, y in zip(before[0], after[0]):
            assert torch.equal(x, y)
        for s, u in zip(before[1], after[1]):
            assert s.keys() == u.keys() and all(torch.equal(s[k], u[k]) for k in s)


def test_fast_path_unscales_grads_in_place_like_fused_adamw():
    AdamW = codegen.build(optdsl.load("adamw"), "torch")
    for make in (
        lambda p: AdamW(p, lr=1e-2, backend="eager"),
        lambda p: torch.optim.AdamW(p, lr=1e-2, fused=True),
    ):
        w = torch.nn.Parameter(torch.ones(4))
        opt = make([w])
        scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        scaler.scale((w * torch.tensor([1.0, -1.0, 2.0, 0.5])).sum()).backward()
        scaler.step(opt)
        torch.testing.assert_close(w.grad, torch.tensor([1.0, -1.0, 2.0, 0.5]))


def test_step_keywords_and_sparse_rows():
    Lion = codegen.build(optdsl.load("lion"), "torch")
    emb, ref = torch.nn.Embedding(5, 3, sparse=True), torch.nn.Embedding(5, 3, sparse=True)
    ref.load_state_dict(emb.state_dict())
    opt, opt_ref = Lion(emb.parameters(), lr=0.1), Lion(ref.parameters(), lr=0.1)
    rows = torch.tensor([0, 3, 3])
    (emb(rows).sum() * 8.0).backward()
    ref(rows).sum().backward()
    opt.step(grad_scale=torch.tensor(8.0), found_inf=torch.tensor(1.0))  # skipped: nothing changes
    assert torch.equal(emb.weight, ref.weight)  # state made at step 0, as torch's fused AdamW makes it
    assert float(opt.state[emb.weight]["step"]) == 0 and not opt.state[emb.weight]["m"].any()
    opt.step(grad_scale=torch.tensor(8.0), found_inf=torch.tensor(0.0))
    opt_ref.step()
    torch.testing.assert_close(emb.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(emb.weight.grad.to_dense(), ref.weight.grad.to_dense())


class _DeviceOnly(torch.Tensor):
    """A tensor whose value the host may not read (item, bool, float...): what any op computes from
    it is one too, so a host sync on found_inf anywhere in the step raises."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("the step read found_inf on the host")

    item = __bool__ = __float__ = __int__ = __index__ = tolist = numpy = _refuse


@pytest.mark.parametrize("name", ["adamw", "lamb"])
@pytest.mark.parametrize("backend", ["eager", "compiled"])
@pytest.mark.parametrize("on_host", [False, True])
def test_found_inf_skips_on_the_device_without_reading_it(name, backend, on_host, monkeypatch):
    Opt = codegen.build(optdsl.load(name), "torch")
    # a found_inf on an accelerator is never read on the host; one on the CPU is (a memory load)
    monkeypatch.setattr(sys.modules[Opt.__module__], "_read_is_free", lambda t: on_host)
    model = _model()
    opt = Opt(model.parameters(), lr=1e-2, backend=backend)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    for found in (0.0, 1.0, 1.0, 0.0):
        opt.zero_grad()
        model(x).square().sum().backward()
        before = _snapshot(model, opt)
        flag = torch.tensor(found) if on_host else torch.tensor(found).as_subclass(_DeviceOnly)
        opt.step(grad_scale=torch.tensor(2.0), found_inf=flag)
        params, states = _snapshot(model, opt)
        changed = [not torch.equal(a, b) for a, b in zip(before[0], params)]
        if found:
            assert not any(changed)  # params, states and step counts as they were
            for s, u in zip(before[1], states):
                assert s.keys() == u.keys() and all(torch.equal(s[k], u[k]) for k in s)
        else:
            assert all(changed)
    assert all(float(opt.state[p]["step"]) == 2 for p in model.parameters())
