"""A short evolutionary search from AdamW, driven from Python instead of the CLI.

    python examples/search_quickstart.py          # about a minute on a laptop

It runs the same search as ``optdsl search --evals 40 --tasks quadratic,logreg`` (regularized
evolution, tournament selection, the paper's AdamW program as the warm start), prints the best
program and compares it with the warm start on the two proxy tasks, then loads the winner's
generated ``torch.optim.Optimizer`` and takes one step with it.
"""

import os
import tempfile

import torch

import codegen
from optdsl import to_source
from search.evolution import Search, SearchConfig
from search.executors import LocalExecutor
from search.export import exported_program
from search.store import Store


def main() -> None:
    folder = tempfile.mkdtemp(prefix="optdsl-search-")
    store = Store(os.path.join(folder, "search.sqlite"))
    config = SearchConfig(tasks=("quadratic", "logreg"), population=16, tournament=4, seed=0)
    executor = LocalExecutor(workers=2)  # spawned processes; programs travel as source text
    try:
        search = Search(store, config, executor)
        best = search.run(evals=40)
    finally:
        executor.close()

    start = store.get(1)  # the warm start is always the first row
    st = search.stats
    print(f"{st.evaluated} evaluations, {st.cached} cache hits ({100 * st.cache_hit_rate:.0f}%), "
          f"{100 * st.redundant_fraction:.0f}% of statements redundant")
    print(f"warm start fitness {start['fitness']:+.3f}, best {best['fitness']:+.3f} "
          "(log of tuned AdamW's loss over the program's; > 0 beats AdamW)")
    for task, s in best["task_score"].items():
        print(f"  {task:10s} warm start {start['task_score'][task]:+.3f}   best {s:+.3f}")

    program = exported_program(best)
    print(to_source(program))
    Optimizer = codegen.build(program, "torch")
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = Optimizer([w])  # lr defaults to the learning rate the search's sweep preferred
    w.grad = torch.randn(4, 3)
    opt.step()
    print(f"one step of {Optimizer.__name__} done; the search database is {store.path}")


if __name__ == "__main__":
    main()
