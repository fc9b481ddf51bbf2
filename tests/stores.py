"""Hand-built search databases for the store and CLI tests: what a short search leaves, without
running one (the scores are made up; these tests are about files, not about fitness)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict

from search.candidate import describe
from search.evolution import SearchConfig
from search.store import Store
from search.warm_start import initial_program

PROGRAMS = ("adamw", "lion", "sgd")


def small_search_db(path: str) -> str:
    """A database at ``path`` holding a resumable search's settings (proxy task ``quadratic``,
    population 4), tuned AdamW's baseline and one scored row per program of :data:`PROGRAMS`
    (the first the warm start, the others its children); returns ``path``."""
    with Store(path) as store:
        store.set_meta("config", asdict(SearchConfig(tasks=("quadratic",), population=4, tournament=2)))
        store.set_meta("search_id", hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8])
        store.set_baseline("quadratic", 0.5, 0.01, 1.0)
        for i, name in enumerate(PROGRAMS):
            score = 0.1 * i - 0.05
            store.add(parent=None if i == 0 else 1, mutation="init adamw" if i == 0 else f"replace {name}",
                      status="ok", fitness=score, task_score={"quadratic": score}, task_loss={"quadratic": 0.4},
                      task_lr={"quadratic": 0.01}, eval_seconds=1.0, **describe(initial_program(name)))
    return path
