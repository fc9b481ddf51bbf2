"""The cost of writing a search task as an ordinary ``nn.Module``: evaluations per second of the
built-in ``mlp`` proxy (64-32-10 on digits, written batched over the K copies with ``einsum``)
against the same model, data and initialisation as a module made a task by
``search.task_from_module`` (``torch.func.vmap`` over ``functional_call``).

One evaluation here is what a search job does per task: 4 candidates trained together, each over
the 2 seeds x 10 learning rates of the sweep (80 model copies), single-threaded as a worker is.
Runs alternate between the two tasks, so a load that changes during the run hits both alike.

    python benchmarks/user_task_overhead.py --rounds 5
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from optdsl import load
from search import task_from_module
from search.evaluate import CANDIDATE_LRS, train_copies
from search.tasks import get_task

PROGRAMS = ("adamw", "lion", "sgd", "momentum")


class DigitsMLP(nn.Module):
    """The built-in ``mlp`` task's model: He-initialised ReLU layers, a zero-initialised output
    layer, weights drawn in the built-in task's order (so seed s gives both the same weights)."""

    def __init__(self, dims=(64, 32, 10)):
        super().__init__()
        self.layers = len(dims) - 1
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            std = 0.0 if i == self.layers - 1 else math.sqrt(2 / a)
            self.register_parameter(f"w{i}", nn.Parameter(torch.randn(a, b) * std))
            self.register_parameter(f"b{i}", nn.Parameter(torch.zeros(b)))

    def forward(self, x):
        for i in range(self.layers):
            x = x @ getattr(self, f"w{i}") + getattr(self, f"b{i}")
            x = F.relu(x) if i < self.layers - 1 else x
        return x


def digits_mlp_module():
    """The ``mlp`` proxy, rebuilt from :class:`DigitsMLP` on its own minibatches."""
    ref = get_task("mlp")
    return task_from_module("mlp_module", DigitsMLP, ref.batch, F.cross_entropy, ref.steps, ref.eval_batch)


def digits_mlp_module_loop():
    """The same, its copies run one by one (what a model that ``vmap`` cannot run gets)."""
    task = digits_mlp_module()
    task.loss.__self__.vectorized = False
    return task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, the best of which is shown")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give 1 or more")
    torch.set_num_threads(1)
    programs = [load(p) for p in PROGRAMS]
    here = os.path.abspath(__file__)
    tasks = {"built-in mlp (einsum)": "mlp", "task_from_module (vmap)": f"{here}:digits_mlp_module",
             "task_from_module, copies one by one": f"{here}:digits_mlp_module_loop"}
    for name in tasks.values():  # warm up: data, imports, first calls
        train_copies(programs[:1], name, CANDIDATE_LRS[:2])
    wall: dict[str, list[float]] = {k: [] for k in tasks}
    cpu: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(args.rounds):
        for label, name in tasks.items():
            w0, c0 = time.perf_counter(), time.process_time()
            train_copies(programs, name, CANDIDATE_LRS)
            wall[label].append(time.perf_counter() - w0)
            cpu[label].append(time.process_time() - c0)
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; a job: {len(programs)} candidates x 20 copies")
    print("| task | evals/s (best wall) | evals/s (CPU time) |")
    print("|---|---|---|")
    for label in tasks:
        print(f"| {label} | {len(programs) / min(wall[label]):.2f} | {len(programs) / min(cpu[label]):.2f} |")
    a, b, _ = tasks
    print(f"adapter overhead: {min(wall[b]) / min(wall[a]):.2f}x wall, {min(cpu[b]) / min(cpu[a]):.2f}x CPU time")


if __name__ == "__main__":
    main()
