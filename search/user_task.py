"""The user's own training problem as a search task: an ordinary ``torch.nn.Module``, its data and
its loss, turned into the batched :class:`~search.tasks.Task` the built-in tasks use.

The search trains K copies of a model at once (learning rates x initialisation seeds x
candidates). :func:`task_from_module` runs the K copies of one module as a single computation:
the parameters of copy k are row k of stacked ``(K, *shape)`` tensors, and
``torch.func.vmap`` maps ``torch.func.functional_call`` over that axis. Where ``vmap`` cannot
run a model (data-dependent Python control flow, ``.item()``, some custom ops), the copies run
one after another instead; the task's description then says so and why.

A search refers to a user task by reference, ``path/to/file.py:function`` (the function takes
no arguments and returns a ``Task``): every worker imports the file itself, so no code travels
through the database or the job queue. :func:`check_task` refuses a broken task once, before a
search starts, with a located :class:`~optdsl.errors.DslError` (the CLI exits 2).

Example (``examples/custom_task.py`` is a complete one)::

    def make_task():
        x, y = ...                                  # training data, a held-out split xv, yv
        return task_from_module(
            name="wine_mlp",
            model=lambda: nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 3)),
            batches=lambda t: (x[idx[t - 1]], y[idx[t - 1]]),   # minibatch of step t = 1..steps
            loss=F.cross_entropy, steps=100, eval_batch=(xv, yv))

    optdsl search --task my_task.py:make_task --budget 10m
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, vmap

from codegen.generated import imported_modules
from optdsl.errors import DslError

from .devices import on_device, one_thread
from .tasks import Params, Task


def _to(data, device: torch.device):
    """``data`` (tensors in tuples, lists, dicts) with every tensor on ``device``."""
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if isinstance(data, (tuple, list)):
        return type(data)(_to(x, device) for x in data)
    if isinstance(data, dict):
        return {k: _to(v, device) for k, v in data.items()}
    return data


class ModuleCopies:
    """K copies of the module ``model()`` builds, as a function of stacked parameters.

    Parameters that require grad are what the optimizer trains; frozen parameters and buffers
    are taken from the module built with seed 0. Buffers are state: each copy keeps its own
    (batch-norm running statistics), reset at step 1 of every training run. Steps run in
    training mode, the held-out loss in eval mode; random ops (dropout) draw from a generator
    seeded with the step number, the same draw for every copy, so results are reproducible and
    comparable across candidates.
    """

    def __init__(self, model: Callable[[], nn.Module], loss: Callable):
        self.model, self.loss_fn = model, loss
        template = self._build(0)
        if not isinstance(template, nn.Module):
            raise TypeError(f"model() must return a torch.nn.Module, not {type(template).__name__}")
        params = dict(template.named_parameters())
        self.shapes = {n: tuple(p.shape) for n, p in params.items() if p.requires_grad}
        if not self.shapes:
            raise ValueError("the module has no parameter that requires grad: nothing to train")
        self.fixed = {n: p.detach() for n, p in params.items() if n not in self.shapes}
        self.buffers = {n: b.detach() for n, b in template.named_buffers()}
        self.template = template
        self.modules: dict[torch.device, nn.Module] = {}
        self.state: tuple | None = None  # (K, device, buffers of each copy) of the run in progress
        self.vectorized: bool | None = None  # None until the first call decides
        self.on_fallback: Callable[[str], None] | None = None

    def _build(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(seed)
            return self.model()

    def init(self, gen: torch.Generator) -> Params:
        """The trained parameters of a fresh module, torch seeded with the generator's seed."""
        params = dict(self._build(gen.initial_seed()).named_parameters())
        return {n: params[n].detach().clone() for n in self.shapes}

    def _module(self, device: torch.device) -> nn.Module:
        if device not in self.modules:
            self.modules[device] = copy.deepcopy(self.template).to(device)
        return self.modules[device]

    def _copy_buffers(self, k: int, device: torch.device, fresh: bool) -> dict[str, torch.Tensor]:
        if fresh or self.state is None or self.state[:2] != (k, device):
            stacked = {n: b.to(device).unsqueeze(0).repeat(k, *[1] * b.ndim) for n, b in self.buffers.items()}
            self.state = (k, device, stacked)
        return self.state[2]

    def _one(self, module, params, buffers, fixed, x, y) -> torch.Tensor:
        out = functional_call(module, {**params, **buffers, **fixed}, x if isinstance(x, tuple) else (x,))
        loss = self.loss_fn(out, y)
        if not isinstance(loss, torch.Tensor):  # (.item() or a float: torch.stack then named neither)
            raise TypeError(f"the loss returned a {type(loss).__name__}, not a tensor: return the torch "
                            "value itself (no .item() or float()), a tensor the gradient flows through")
        return loss

    def loss(self, params: Params, batch) -> torch.Tensor:
        """``(K,)`` losses of the K copies whose parameters are ``params`` (``(K, *shape)``)."""
        mode, t, (x, y) = batch
        first = next(iter(params.values()))
        k, device = first.shape[0], first.device
        module = self._module(device).train(mode == "train")
        buffers = self._copy_buffers(k, device, fresh=mode == "train" and t == 1)
        fixed = {n: v.to(device) for n, v in self.fixed.items()}
        x, y = _to(x, device), _to(y, device)

        def run(vectorized: bool) -> torch.Tensor:
            cuda = [torch.cuda.current_device()] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(t)
                if vectorized:
                    one = lambda p, b: self._one(module, p, b, fixed, x, y)
                    return vmap(one, randomness="same")(params, buffers)
                out = []
                for i in range(k):
                    torch.manual_seed(t)  # the same random draw for every copy, as under vmap
                    out.append(self._one(module, {n: v[i] for n, v in params.items()},
                                         {n: b[i] for n, b in buffers.items()}, fixed, x, y))
                return torch.stack(out)

        if self.vectorized is False:
            return run(False)
        try:
            out = run(True)
        except Exception as e:  # vmap's limits are many: the loop below tells them from the model's errors
            if self.vectorized:
                raise
            buffers = self._copy_buffers(k, device, fresh=mode == "train" and t == 1)  # undo its updates
            out = run(False)  # raises the model's own error if it is not vmap's
            self.vectorized = False
            if self.on_fallback is not None:
                self.on_fallback(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return out
        self.vectorized = True
        return out


def task_from_module(name: str, model: Callable[[], nn.Module], batches: Callable[[int], tuple],
                     loss: Callable, steps: int, eval_batch: tuple, description: str | None = None) -> Task:
    """A search task from ordinary torch code.

    ``model()`` builds a fresh module (the search seeds torch first: seed s gives copy group s its
    initial weights); ``batches(t)`` is the training batch ``(inputs, targets)`` of step
    ``t = 1..steps``, the same on every call; ``loss(model(inputs), targets)`` is a scalar;
    ``eval_batch`` is the held-out ``(inputs, targets)`` whose loss after ``steps`` steps is the
    task's result. ``inputs`` may be a tuple of the module's positional arguments. The data may
    live on the CPU: each batch moves to the device the search runs on.

    Example:
        >>> x, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> task = task_from_module("lin", lambda: nn.Linear(4, 1), lambda t: (x, y),
        ...                         nn.functional.mse_loss, steps=10, eval_batch=(x, y))
        >>> task.shapes, task.train_loss(task.unflatten(task.init_params(3)), 1).shape
        ({'weight': (1, 4), 'bias': (1,)}, torch.Size([3]))
    """
    for what, f in (("model", model), ("batches", batches), ("loss", loss)):
        if not callable(f):
            raise TypeError(f"task_from_module: {what} must be callable, not {type(f).__name__}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"task_from_module: steps must be a positive int, not {steps!r}")
    if not (isinstance(eval_batch, (tuple, list)) and len(eval_batch) == 2):
        raise TypeError("task_from_module: eval_batch must be a pair (inputs, targets)")
    copies = ModuleCopies(model, loss)
    size = sum(math.prod(s) for s in copies.shapes.values())
    text = description or f"{type(copies.template).__name__} ({size:,} parameters), {steps} steps"
    task = Task(name, text, copies.shapes, copies.init, copies.loss, lambda t: ("train", t, batches(t)),
                ("eval", 0, tuple(eval_batch)), steps)

    def fallback(reason: str) -> None:
        task.description = f"{text}; copies run one by one (vmap cannot run this model: {reason})"

    copies.on_fallback = fallback
    return task


# --- references: path/to/file.py:function ---------------------------------------------------------
def is_reference(name: str) -> bool:
    """Whether a task name is a reference to a user task (``FILE.py:FUNCTION``).

    Example:
        >>> is_reference("examples/custom_task.py:make_task"), is_reference("mlp")
        (True, False)
    """
    path, sep, _ = name.rpartition(":")
    return bool(sep) and path.endswith(".py")


def split_reference(ref: str, what: str = "--task") -> tuple[str, str]:
    """``(path, function)`` of ``FILE.py:FUNCTION``; a DslError for anything else.

    Example:
        >>> split_reference("examples/custom_task.py:make_task")
        ('examples/custom_task.py', 'make_task')
        >>> split_reference("mlp")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        optdsl.errors.DslError: optdsl search: --task 'mlp': expected FILE.py:FUNCTION; e.g. ...
    """
    path, sep, function = ref.rpartition(":")
    if not sep or not path.endswith(".py") or not function.isidentifier():
        raise DslError(f"{what} {ref!r}: expected FILE.py:FUNCTION", "optdsl search",
                       hint="e.g. --task examples/custom_task.py:make_task")
    return path, function


def absolute_reference(ref: str, what: str = "--task") -> str:
    """The reference with its file as an absolute path (workers may start elsewhere); the file
    must exist.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "mine.py")
        ...     Path(path).touch()
        ...     absolute_reference(os.path.relpath(path) + ":make") == path + ":make"
        True
        >>> absolute_reference("missing.py:make")
        Traceback (most recent call last):
        optdsl.errors.DslError: optdsl search: --task 'missing.py:make': no such file: missing.py
    """
    path, function = split_reference(ref, what)
    if not os.path.isfile(path):
        raise DslError(f"{what} {ref!r}: no such file: {path}", "optdsl search")
    return f"{os.path.abspath(path)}:{function}"


def located(e: BaseException, path: str, message: str) -> DslError:
    """A DslError at the deepest line of ``path`` in ``e``'s traceback (or of the file itself)."""
    source = Path(path).read_text(encoding="utf-8", errors="replace") if os.path.isfile(path) else None
    if isinstance(e, SyntaxError) and e.filename == path:
        return DslError(f"{message}: {e.msg}", path, e.lineno, (e.offset or 1) - 1, source)
    line = col = None
    for frame in traceback.extract_tb(e.__traceback__):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            line, col = frame.lineno, frame.colno
    if line and col is None and source:  # the caret at the statement, not before its indentation
        text = source.splitlines()[line - 1] if line <= len(source.splitlines()) else ""
        col = len(text) - len(text.lstrip())
    return DslError(f"{message}: {type(e).__name__}: {e}", path, line, col, source if line else None)


@contextlib.contextmanager
def _as_the_task_sees_it(path: str):
    """While the user's code builds its task: the task file's folder first on ``sys.path`` (the file
    may import its neighbours, at its top or inside its function) and torch, numpy and ``random``
    seeded with 0, their states restored after. The driver and every worker build the task
    themselves, and each process starts its generators elsewhere: data drawn from them while the
    task is built is then the same in all of them."""
    import random

    import numpy as np

    folder = os.path.dirname(os.path.abspath(path))
    states = random.getstate(), np.random.get_state()
    sys.path.insert(0, folder)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            np.random.seed(0)
            random.seed(0)
            yield
    finally:
        sys.path.remove(folder)
        random.setstate(states[0])
        np.random.set_state(states[1])


def _check_neighbours(path: str) -> None:
    """DslError where the task file imports a module its folder holds (``data.py``) that Python
    has already imported from elsewhere (another task's folder): the import would get that one."""
    import ast

    folder = os.path.dirname(os.path.abspath(path))
    source = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return  # (the import reports it, located)
    for name, node in imported_modules(tree):
        mine = [os.path.join(folder, f"{name}.py"), os.path.join(folder, name, "__init__.py")]
        loaded = getattr(sys.modules.get(name), "__file__", None)
        if loaded and any(map(os.path.isfile, mine)) and os.path.abspath(loaded) not in mine:
            raise DslError(f"imports {name}, which its folder holds, but this process has already imported a "
                           f"module {name} from {loaded} (another task's neighbour?), which the import "
                           "would get instead", path, node.lineno, node.col_offset, source,
                           hint=f"give one of the two {name} modules another name")


def _import(path: str):
    """The module of ``path``; on a Ray worker without that file, the module of the same name
    that the runtime environment shipped (``py_modules``) and put on ``sys.path``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if not os.path.isfile(path):
        try:
            return importlib.import_module(stem)
        except ImportError as e:
            raise DslError(f"no such task file: {path} (and no module {stem!r} shipped to this worker)",
                           path) from e
    _check_neighbours(path)
    name = f"_optdsl_task_{abs(hash(os.path.abspath(path))):x}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # the user's code; a sys.exit() there is an error too, Ctrl-C is not
        del sys.modules[name]
        raise located(e, path, "cannot import the task file") from e
    return module


@cache
def load_task(ref: str) -> Task:
    """The task ``FILE.py:FUNCTION`` returns (imported and built once per process).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "mine.py")
        ...     _ = Path(path).write_text("from search.tasks import quadratic\\n\\n"
        ...                               "def make():\\n    return quadratic('mine', steps=5)\\n")
        ...     task = load_task(f"{path}:make")
        ...     print(task.name, task.steps, load_task(f"{path}:make") is task)
        mine 5 True
    """
    path, function = split_reference(ref)
    with _as_the_task_sees_it(path):
        module = _import(path)
        make = getattr(module, function, None)
        if not callable(make):
            defined = [n for n, v in vars(module).items()
                       if callable(v) and getattr(v, "__module__", None) == module.__name__]
            raise DslError(f"{path} defines no function {function!r}", path,
                           hint=f"functions there: {', '.join(defined) or 'none'}")
        try:
            task = make()
        except (Exception, SystemExit) as e:  # the user's code: say where it failed
            raise located(e, path, f"{function}() failed") from e
    if not isinstance(task, Task):
        raise DslError(f"{function}() returned {type(task).__name__}, expected a search Task", path,
                       hint="build one with search.task_from_module(...)")
    return task


def check_task(ref: str, copies: int, limit: float, device: str = "cpu", passes: int = 1) -> Task:
    """Load the task ``ref`` and run its first steps as the search will, with ``copies`` copies
    on ``device``; a DslError says what is wrong: parameters whose shapes differ from
    ``task.shapes``, a loss that is not one finite number per copy, a loss with no gradient, a
    held-out loss that is not finite, or a task whose estimated job (``passes`` passes of
    ``task.steps`` steps of ``copies`` copies, timed on one thread as a worker runs them) takes
    longer than ``limit`` seconds. Returns the task.

    Example (a task whose ``shapes`` do not match what its ``init`` draws):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "broken.py")
        ...     _ = Path(path).write_text("from search.tasks import quadratic\\n\\ndef make():\\n"
        ...                               "    task = quadratic('broken', steps=5)\\n"
        ...                               "    task.shapes = {'a': (3,)}\\n    return task\\n")
        ...     try:
        ...         check_task(f"{path}:make", copies=4, limit=60.0)
        ...     except DslError as e:
        ...         print(e.message.split(": ", 1)[1])
        init gives parameters {'a': (8, 8), 'b': (32,)}, but the task's shapes are {'a': (3,)}
    """
    with one_thread():
        return _check(ref, copies, limit, device, passes)


def fingerprint(task: Task) -> dict:
    """What a task's stored scores depend on, for ``--resume`` to compare (:func:`changes`):
    its name, steps and parameter shapes, and the training losses at the first, middle and last
    steps and the held-out loss of seed 0's initial parameters (a changed model, data or loss
    moves them; the batches of later steps too, which the first step's loss does not see).

    Example:
        >>> from search.tasks import quadratic
        >>> sorted(fingerprint(quadratic("q", steps=5)))
        ['first_loss', 'held_out_loss', 'later_losses', 'name', 'shapes', 'steps']
    """
    with torch.no_grad():
        params = task.unflatten(task.init_copies([0], 1))
        first, held_out = float(task.train_loss(params, 1)[0]), float(task.eval_loss(params)[0])
        steps = sorted({(task.steps + 1) // 2, task.steps} - {1})
        later = [float(task.train_loss(params, t)[0]) for t in steps]
    return {"name": task.name, "steps": task.steps, "shapes": {n: list(s) for n, s in task.shapes.items()},
            "first_loss": first, "later_losses": later, "held_out_loss": held_out}


def changes(stored: dict, now: dict) -> list[str]:
    """How task fingerprint ``now`` differs from ``stored`` (:func:`fingerprint`), the losses
    within a relative 1e-4 (a GPU rounds otherwise than the CPU).

    Example:
        >>> changes({"steps": 40, "first_loss": 0.5}, {"steps": 80, "first_loss": 0.50001})
        ['steps 40 -> 80']

    (A key a fingerprint of an older optdsl did not store is not compared.)
    """
    def same(a, b) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-4)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(map(same, a, b))
        return a == b

    return [f"{key.replace('_', ' ')} {was} -> {now.get(key)}" for key, was in stored.items()
            if not same(was, now.get(key))]


def _check(ref: str, copies: int, limit: float, device: str, passes: int) -> Task:
    path, function = split_reference(ref)
    task = on_device(load_task(ref), device)  # as the evaluation takes it (a Task built on the CPU too)
    where = f"{function}()"  # the error names the file itself
    dev = torch.device(device)
    stage = "the first training steps failed"
    try:
        init = task.init(torch.Generator().manual_seed(0))
        got = {n: tuple(v.shape) for n, v in init.items()}
        if got != dict(task.shapes):
            raise DslError(f"{where}: init gives parameters {got}, but the task's shapes are {dict(task.shapes)}",
                           path)
        w = task.init_copies([0, 1], max(copies // 2, 1)).to(dev).requires_grad_()
        k = w.shape[0]
        with torch.device(device):
            seconds, moved = [], False
            for t in (1, 2, 3):
                start = time.perf_counter()
                loss = task.train_loss(task.unflatten(w), t)
                if not isinstance(loss, torch.Tensor) or tuple(loss.shape) != (k,):
                    shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                    raise DslError(f"{where}: the loss of {k} copies has shape {shape}, expected ({k},)", path,
                                   hint="loss(outputs, targets) must return one number (a scalar) per model")
                if t == 1 and not torch.isfinite(loss).all():
                    bad = int((~torch.isfinite(loss)).nonzero()[0, 0])  # (copy 0's may be finite)
                    raise DslError(f"{where}: the loss at the first step is not finite ({loss[bad].item()} "
                                   f"for model copy {bad} of {k}, before any update)", path)
                if not loss.requires_grad:
                    raise DslError(f"{where}: the loss does not depend on the trained parameters", path)
                (g,) = torch.autograd.grad(loss.sum(), w)
                moved = moved or bool(g.any())
                with torch.no_grad():
                    w = (w - 1e-3 * g).requires_grad_()
                seconds.append(time.perf_counter() - start)
            if not moved:  # (a search would pick weight decay tuned to the task: an audit's round() loss)
                raise DslError(f"{where}: the loss's gradient is exactly 0 for every parameter at each of "
                               "the first three steps: no update rule can train this task", path,
                               hint="a loss through round(), argmax, a comparison or .detach() has no "
                                    "gradient; compute it from the model's outputs with differentiable ops")
            stage = "the held-out loss (eval_batch) failed"  # the training steps ran: say which part failed
            with torch.no_grad():
                final = task.eval_loss(task.unflatten(w))
            if tuple(final.shape) != (k,):
                raise DslError(f"{where}: the held-out loss of {k} copies has shape {tuple(final.shape)}, "
                               f"expected ({k},)", path)
            if not torch.isfinite(final).all():
                bad = int((~torch.isfinite(final)).nonzero()[0, 0])
                raise DslError(f"{where}: the held-out loss (eval_batch) is not finite ({final[bad].item()} "
                               f"for model copy {bad} of {k}, after three small steps)", path)
    except DslError:
        raise
    except (Exception, SystemExit) as e:  # the user's code: say where it failed
        raise located(e, path, f"{where}: {stage}") from e
    estimate = min(seconds[1:]) * task.steps * passes
    if estimate > limit:
        what = f"a job on it would take about {estimate:.0f} s ({passes} passes of " if passes > 1 else \
            f"one evaluation would take about {estimate:.0f} s ("
        why = ": a sweep, its widening, a re-measurement" if passes > 1 else ""
        raise DslError(f"{where}: {what}{task.steps} steps of {k} model copies at {min(seconds[1:]):.3g} s"
                       f"{why}), more than the limit of {limit:g} s", path,
                       hint="use fewer steps, a smaller model or smaller batches")
    return task
