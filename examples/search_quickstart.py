"""A short evolutionary search from AdamW, driven from Python instead of the CLI.

    python examples/search_quickstart.py          # about a minute on a laptop

It runs the same search as ``optdsl search --evals 40 --tasks quadratic,logreg --population 16`` (regularized
evolution, tournament selection, torch's AdamW as the warm start: 40 evaluations of the evolution, to
which the winner's ablation and held-out checks add as many again), prints the winner (chosen on the
held-out tasks) with its proxy and held-out scores side by side, as ``optdsl search`` does, and the
warm start's proxy scores beside it, then loads the winner's generated ``torch.optim.Optimizer`` and
takes one step with it.
"""

import os
import tempfile

import torch
from rich.console import Console

import codegen
from optdsl import to_source
from optdsl.tables import print_table
from search.evolution import Search, SearchConfig
from search.executors import LocalExecutor
from search.export import exported_program
from search.report import winner_table
from search.selection import verdict
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
    print_table(Console(), winner_table(best))  # proxy and held-out scores: log(tuned AdamW's loss / its)
    print(verdict(best))
    print(f"the warm start on the proxies: {start['fitness']:+.3f} ("
          + ", ".join(f"{task} {s:+.3f}" for task, s in start["task_score"].items()) + ")")

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
