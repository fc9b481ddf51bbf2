"""Evolutionary search for optimizers: mutate programs, evaluate them on small tasks, keep the best.

Pieces (one concept per module): :mod:`search.mutate` (random programs and mutations),
:mod:`search.warm_start` (the starting program), :mod:`search.tasks` (proxy training problems),
:mod:`search.evaluate` (fitness of one program), :mod:`search.executors` (local processes, Ray),
:mod:`search.store` (SQLite), :mod:`search.evolution` (regularized evolution),
:mod:`search.progress`, :mod:`search.report`, :mod:`search.export`, :mod:`search.commands`.
"""
