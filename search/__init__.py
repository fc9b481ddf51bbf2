"""Evolutionary search for optimizers: mutate programs, evaluate them on small tasks, keep the best.

Pieces (one concept per module): :mod:`search.mutate` (random programs and mutations),
:mod:`search.warm_start` (the starting program), :mod:`search.tasks` (proxy training problems),
:mod:`search.user_task` (the user's own model as a task), :mod:`search.devices` (CPU or CUDA),
:mod:`search.evaluate` (fitness of one program), :mod:`search.executors` (local processes, Ray),
:mod:`search.store` (SQLite), :mod:`search.evolution` (regularized evolution),
:mod:`search.progress`, :mod:`search.report`, :mod:`search.export`, :mod:`search.commands`.
"""

__all__ = ["Task", "task_from_module"]


def __getattr__(name: str):
    """``search.task_from_module`` and ``search.Task`` for task files, imported on first use
    (``import search`` alone does not load torch)."""
    if name == "task_from_module":
        from .user_task import task_from_module

        return task_from_module
    if name == "Task":
        from .tasks import Task

        return Task
    raise AttributeError(f"module 'search' has no attribute {name!r}")
