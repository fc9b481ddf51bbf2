"""Where the search's evaluations run: the CPU or a CUDA device.

A task's data live on the CPU where it was built (the built-in tasks keep theirs in the
closures of their ``loss`` and ``batch`` functions). :func:`on_device` gives the same task with
every tensor those functions hold moved to the device, so the unchanged task code runs there;
a task made by :func:`search.task_from_module` follows its parameters' device by itself. The
initial parameters are still drawn on the CPU (:meth:`Task.init_copies`), so a search starts
from the same weights on every device and results agree within float tolerance.

Example:
    >>> from search.tasks import get_task
    >>> task = on_device(get_task("logreg"), "meta")      # "cuda" on a GPU machine
    >>> w = task.init_params(2).to("meta")
    >>> task.train_loss(task.unflatten(w), 1).device
    device(type='meta')
"""

from __future__ import annotations

import dataclasses
import types
from contextlib import contextmanager

import torch

from .tasks import Task


def _moved(obj, device: torch.device, memo: dict):
    """``obj`` with its tensors on ``device``: tensors, containers of them, and Python functions
    whose closures hold them (copied with moved cells; the original is left as it was)."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, torch.Tensor):
        out = obj.to(device)
    elif isinstance(obj, (tuple, list)):
        out = type(obj)(_moved(x, device, memo) for x in obj)
    elif isinstance(obj, dict):
        out = {k: _moved(v, device, memo) for k, v in obj.items()}
    elif isinstance(obj, types.FunctionType) and obj.__closure__:
        cells = tuple(types.CellType() for _ in obj.__closure__)
        out = types.FunctionType(obj.__code__, obj.__globals__, obj.__name__, obj.__defaults__, cells)
        out.__kwdefaults__ = obj.__kwdefaults__
        memo[id(obj)] = out  # before the cells: a closure may refer to itself
        for new, old in zip(cells, obj.__closure__):
            try:
                new.cell_contents = _moved(old.cell_contents, device, memo)
            except ValueError:  # a cell not yet filled in the original stays empty
                pass
    else:
        out = obj
    memo[id(obj)] = out
    return out


_MOVED: dict[tuple[int, torch.device], tuple[Task, Task]] = {}  # (id, device) -> (task, its copy)


def on_device(task: Task, device: str | torch.device) -> Task:
    """``task`` with its data on ``device`` (the task itself on the CPU; made once per device).

    Example:
        >>> from search.tasks import get_task
        >>> task = get_task("logreg")
        >>> on_device(task, "cpu") is task, on_device(task, "meta") is on_device(task, "meta")
        (True, True)
        >>> on_device(task, "meta").eval_batch[0].device, task.eval_batch[0].device
        (device(type='meta'), device(type='cpu'))
    """
    device = torch.device(device)
    if device.type == "cpu":
        return task
    key = (id(task), device)
    if key not in _MOVED:  # the entry keeps ``task`` alive, so its id is not reused
        memo: dict = {}
        moved = dataclasses.replace(task, loss=_moved(task.loss, device, memo),
                                    batch=_moved(task.batch, device, memo),
                                    eval_batch=_moved(task.eval_batch, device, memo))
        _MOVED[key] = (task, moved)
    return _MOVED[key][1]


@contextmanager
def one_thread():
    """Run torch on one CPU thread inside the block (the previous count is restored). The
    search's main process shares the cores with its workers: there, the guards' small ops on
    two threads took 4.1-4.5 ms per child against 2.3-2.7 ms on one, the second thread waiting
    for a core a worker held.

    Example:
        >>> with one_thread():
        ...     torch.get_num_threads()
        1
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
