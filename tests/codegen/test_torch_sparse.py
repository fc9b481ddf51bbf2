"""Sparse-row gradients (nn.Embedding(sparse=True)) in the generated torch.optim.Optimizer."""

from __future__ import annotations

import sys

import pytest
import torch

import codegen
import optdsl
from codegen.torch_target import paths, row_separable
from optdsl.extend.lazy import lazy_updates

STEPS = 25
ROWS, USED, DIM = 30, 24, 6  # rows USED.. never appear in a batch: they must not change at all

ROW_STATE = '''
def rowada(w, g, r: row, m, v, lr=0.01, beta=0.9, eps=1e-8):
    """Momentum over a per-row second moment (a row state on 2-d tensors, full on 1-d)."""
    m = interp(g, m, beta)
    if ndim(w) >= 2:
        r = interp(rowmean(g * g), r, beta)
        vh = r
    else:
        v = interp(g * g, v, beta)
        vh = v
    return lr * m / (sqrt(vh) + eps), r, m, v
'''


class _Model(torch.nn.Module):
    def __init__(self, sparse: bool):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(ROWS, DIM, sparse=sparse, dtype=torch.float64)
        self.head = torch.nn.Linear(DIM, 1, dtype=torch.float64)

    def forward(self, ids):
        return self.head(self.emb(ids).mean(dim=1)).squeeze(-1)


def _train(model, opt, steps=STEPS):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, USED, (4, 3), generator=gen)
        target = torch.randn(4, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(ids), target).backward()
        opt.step()


def _rows_seen(steps=STEPS):
    gen = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(steps):
        seen |= set(torch.randint(0, USED, (4, 3), generator=gen).flatten().tolist())
        torch.randn(4, generator=gen, dtype=torch.float64)
    return sorted(seen)


@pytest.mark.parametrize("program", [lazy_updates(optdsl.load("adam")), lazy_updates(optdsl.load("lion")),
                                     lazy_updates(optdsl.parse(ROW_STATE))], ids=["adam", "lion", "row_state"])
def test_sparse_rows_equal_the_dense_step_on_the_densified_grad(program):
    cls = codegen.build(program, "torch")
    assert 0 in sys.modules[cls.__module__].SPARSE_PATHS  # (the 2-d path: the embedding's)
    sparse, dense = _Model(sparse=True), _Model(sparse=False)
    initial = sparse.emb.weight.detach().clone()
    opt_s, opt_d = cls(sparse.parameters(), lr=0.01), cls(dense.parameters(), lr=0.01, backend="eager")
    _train(sparse, opt_s)
    _train(dense, opt_d)
    assert sparse.emb.weight.grad.is_sparse and not dense.emb.weight.grad.is_sparse
    for p_s, p_d in zip(sparse.parameters(), dense.parameters()):
        torch.testing.assert_close(p_s, p_d, rtol=1e-12, atol=1e-14)
        state_s, state_d = opt_s.state[p_s], opt_d.state[p_d]
        assert state_s.keys() == state_d.keys()
        for key in state_s:
            torch.testing.assert_close(state_s[key], state_d[key], rtol=1e-12, atol=1e-14)
    never = [i for i in range(ROWS) if i not in _rows_seen()]
    assert len(never) >= ROWS - USED
    assert torch.equal(sparse.emb.weight[never], initial[never])  # bit-identical, states too
    for name, _, init in sys.modules[cls.__module__].PATHS[0].states:
        fill = 1.0 if init == "ones" else 0.0
        assert torch.equal(opt_s.state[sparse.emb.weight][name][never],
                           torch.full_like(opt_s.state[sparse.emb.weight][name][never], fill))


def test_generated_lazy_adam_matches_sparse_adam():
    """SparseAdam adds eps to sqrt(v) before the bias correction (Adam after it): a negligible eps."""
    cls = codegen.build(lazy_updates(optdsl.load("adam")), "torch")
    ours, ref = _Model(sparse=True), _Model(sparse=True)
    _train(ours, cls(ours.emb.parameters(), lr=0.01, eps=1e-30))
    ref_opt = torch.optim.SparseAdam(ref.emb.parameters(), lr=0.01, eps=1e-30)
    _train(ref, ref_opt)
    torch.testing.assert_close(ours.emb.weight, ref.emb.weight, rtol=1e-10, atol=1e-12)
    assert not torch.equal(ours.emb.weight, _Model(sparse=True).emb.weight)


def test_hybrid_and_fully_sparse_coo_grads_agree():
    """A (rows, cols)-indexed COO grad with repeated entries is coalesced to the same rows."""
    cls = codegen.build(lazy_updates(optdsl.load("adam")), "torch")
    torch.manual_seed(3)
    w0 = torch.randn(10, 4, dtype=torch.float64)
    dense_grad = torch.zeros(10, 4, dtype=torch.float64)
    dense_grad[[1, 4, 7]] = torch.randn(3, 4, dtype=torch.float64)
    results = []
    for grad in (dense_grad.to_sparse(1), dense_grad.to_sparse(), dense_grad):
        w = w0.clone()
        opt = cls([w], lr=0.1, backend="eager")
        for _ in range(3):
            w.grad = grad
            opt.step()
        results.append(w)
    torch.testing.assert_close(results[0], results[2], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(results[1], results[2], rtol=1e-12, atol=1e-14)
    assert torch.equal(results[0][[0, 2, 3]], w0[[0, 2, 3]])


@pytest.mark.parametrize("program", [optdsl.load("momentum"), optdsl.load("adamw"), optdsl.load("lion"),
                                     lazy_updates(optdsl.load("lamb")),
                                     lazy_updates(optdsl.load("adafactor"))], ids=lambda p: p.name)
def test_sparse_grads_of_other_programs_mean_their_dense_form(program):
    """Where a zero gradient moves a row (momentum, weight decay) or rows share a reduction, a step
    of the touched rows alone would be lazy: the grad is densified (torch.optim.SGD's meaning)."""
    cls = codegen.build(program, "torch")
    assert not sys.modules[cls.__module__].SPARSE_PATHS
    sparse, dense = _Model(sparse=True), _Model(sparse=False)
    opt_s, opt_d = cls(sparse.parameters(), lr=0.01), cls(dense.parameters(), lr=0.01, backend="eager")
    _train(sparse, opt_s, steps=5)
    _train(dense, opt_d, steps=5)
    assert sparse.emb.weight.grad.is_sparse  # the user's grad is left as it was
    for p_s, p_d in zip(sparse.parameters(), dense.parameters()):
        torch.testing.assert_close(p_s, p_d, rtol=1e-12, atol=1e-14)


def test_sparse_paths_are_still_at_a_zero_gradient():
    assert sys.modules[codegen.build(optdsl.load("sgd"), "torch").__module__].SPARSE_PATHS == {0}
    lazy_lamb = paths(lazy_updates(optdsl.load("lamb")))[2]
    assert "norm()" in row_separable(lazy_lamb)
    weight_decay = optdsl.parse("def f(w, g, lr=0.1, wd=0.0):\n    return lr * (g + wd * w)\n")
    assert not sys.modules[codegen.build(weight_decay, "torch").__module__].SPARSE_PATHS


def test_row_separable_reasons():
    assert row_separable(paths(optdsl.load("sgd"))[2]) is None
    program = optdsl.parse("def f(w, g, lr=0.1):\n    return lr * g / dim(w, 0)\n")
    assert "rows" in row_separable(paths(program)[2])
    program = optdsl.parse("def f(w, g, lr=0.1):\n    return lr * g / dim(w, -1)\n")
    assert row_separable(paths(program)[2]) is None
