"""The language's ``sign``, ``arcsinh`` and ``cbrt`` in torch: the op table's spellings
(:mod:`codegen.runtime.torch_math`) against torch's own kernels and what ``sign`` and ``cbrt`` were
before, timed on one (160, 2432) float32 tensor (a proxy task's copies in one
search job), one thread, best of 7 rounds of 20 calls. Prints a table; results go into
docs/benchmarks.md by hand.

    python benchmarks/torch_math.py
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from rich.console import Console
from rich.table import Table

from codegen.runtime.torch_math import _arcsinh, _cbrt, _sign


def best_of(fn, x: torch.Tensor, rounds: int = 7, calls: int = 20) -> float:
    """Microseconds per call: the best round's mean."""
    fn(x)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn(x)
        best = min(best, (time.perf_counter() - t) / calls)
    return best * 1e6


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help, and no stray flags
    torch.set_num_threads(1)
    x = torch.randn(160, 2432, generator=torch.Generator().manual_seed(0))
    rows = [
        ("x + x (anchor)", lambda v: v + v),
        ("torch.sign (nan -> 0: not the language's)", torch.sign),
        ("sign: nested torch.where (before)", lambda v: torch.where(v > 0, 1.0, torch.where(v < 0, -1.0, v))),
        ("sign: torch_math._sign", _sign),
        ("arcsinh: torch.asinh (before)", torch.asinh),
        ("arcsinh: torch_math._arcsinh", _arcsinh),
        ("cbrt: sign(x) |x| ** (1/3) (before)", lambda v: torch.sign(v) * torch.abs(v) ** (1 / 3)),
        ("cbrt: torch_math._cbrt (an ulp)", _cbrt),
    ]
    anchor = best_of(rows[0][1], x)
    table = Table(title=f"{platform.machine()}, torch {torch.__version__}, 1 thread, (160, 2432) float32")
    for col in ("spelling", "us per call", "x the addition"):
        table.add_column(col, justify="left" if col == "spelling" else "right")
    for name, fn in rows:
        us = best_of(fn, x)
        table.add_row(name, f"{us:.0f}", f"{us / anchor:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
