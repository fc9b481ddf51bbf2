"""The cpp backend's loop (codegen.cpp_target): every element of every tensor of a group is stepped
exactly once, whatever its size against the cache line the loop takes at a time (16 floats, 8
doubles, the rest in a tail loop) and the chunks the threads share (CHUNK elements)."""

import pytest
import torch

import codegen
import optdsl
from codegen.cpp_target import CHUNK


def counter(k: int) -> optdsl.Program:
    """States s1..sk, state j growing by j g: with g = 1 after t steps s_j = j t and w = -lr (1 + .. + k)
    (1 + .. + t), exact in float32 and float64. Seven arrays (k = 5) make the loop prefetch less
    far ahead in each (codegen.cpp_target.IN_FLIGHT)."""
    names = [f"s{j}" for j in range(1, k + 1)]
    body = "".join(f"    {n} = {n} + {j} * g\n" for j, n in enumerate(names, 1))
    states = ", ".join(names)
    return optdsl.parse(
        f"def count{k}(w, g, {states}, lr=1.0):\n{body}    return lr * ({' + '.join(names)}), {states}\n"
    )


SIZES = [1, 7, 8, 15, 16, 17, 33, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 9]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 5])
def test_every_element_is_stepped_once(dtype, threads, k):
    Count = codegen.build(counter(k), "torch")
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
        for j in range(1, k + 1):
            assert torch.equal(opt.state[p][f"s{j}"], torch.full_like(p, 3.0 * j))
        assert torch.equal(p, torch.full_like(p, -6.0 * k * (k + 1) / 2))
