"""The cpp backend's loop (codegen.cpp_target): every element of every tensor of a group is stepped
exactly once, whatever its size against the cache line the loop takes at a time (16 floats, 8
doubles, the rest in a tail loop) and the chunks the threads share (CHUNK elements)."""

import pytest
import torch

import codegen
import optdsl
from codegen.cpp_target import CHUNK

# m counts the steps that reached each element (g = 1); w moves by lr m: exact in float32 and float64
COUNT = optdsl.parse("def count(w, g, m, lr=1.0):\n    m = m + g\n    return lr * m, m\n")
SIZES = [1, 7, 8, 15, 16, 17, 33, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 9]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_element_is_stepped_once(dtype, threads):
    Count = codegen.build(COUNT, "torch")
    params = [torch.zeros(n, dtype=dtype) for n in SIZES]
    opt = Count(params, backend="cpp")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(3):
            for p in params:
                p.grad = torch.ones_like(p)
            opt.step()
    finally:
        torch.set_num_threads(before)
    for p in params:
        assert torch.equal(opt.state[p]["m"], torch.full_like(p, 3.0))
        assert torch.equal(p, torch.full_like(p, -6.0))  # -(1 + 2 + 3)
