"""Fitness: how well a program trains the proxy tasks, relative to tuned AdamW.

For each task, the program trains K copies of the model at once, copy k with learning rate
``lrs[k]`` (:class:`~search.vectorized.VectorizedStep` over the task's ``(K, P)`` parameters),
and the task's loss is the best held-out loss over the sweep. Copies that produce NaN/Inf or
blow up count as failed; a task where every copy fails fails the candidate. Per task::

    score = log(baseline_loss / loss)        (> 0: better than AdamW, clipped to [-10, 10])

where ``baseline_loss`` is torch-style AdamW (bias correction, eps, weight decay 0.01) tuned over
a finer learning-rate grid on the same task (:func:`baseline`). Fitness is the mean score.

Hurdles: tasks run cheapest first; once a task scores below ``hurdle`` the candidate stops
and its remaining tasks take that score (status ``hurdle``), so clearly bad programs cost one
task instead of all of them.

Example:
    >>> from search.warm_start import adamw_program
    >>> r = evaluate_program(adamw_program(), ["quadratic"], {"quadratic": 1.0})
    >>> r["status"], sorted(r["task_loss"])
    ('ok', ['quadratic'])
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Sequence

import numpy as np
import torch

from optdsl.errors import DslError
from optdsl.ir import Program
from optdsl.parser import parse
from optdsl.source import load

from .tasks import get_task
from .vectorized import VectorizedStep

#: The candidate's learning-rate sweep (the program's ``lr`` input; AdamW in the paper's form
#: scales it by 1e-3 itself).
CANDIDATE_LRS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
#: AdamW's sweep for the baseline: 1e-4 .. 1e-1, a factor ~1.8 apart.
BASELINE_LRS = tuple(float(x) for x in np.logspace(-4, -1, 13))
SCORE_CLIP = 10.0
DIVERGED = 1e3  # a copy whose training loss exceeds this multiple of its initial loss has failed


class CandidateFailed(Exception):
    """Every copy of the sweep failed on a task (NaN, Inf, divergence)."""


def train_copies(program: Program, task_name: str, lrs: Sequence[float], seed: int = 0) -> np.ndarray:
    """Final held-out loss of each learning rate's copy (inf where the copy failed).

    Example:
        >>> from optdsl import load
        >>> train_copies(load("sgd"), "quadratic", [0.01, 0.1]).shape
        (2,)
    """
    task = get_task(task_name)
    k = len(lrs)
    step = VectorizedStep(program, list(task.shapes.values()))
    w = task.init_params(k, seed)
    lr = torch.tensor(lrs, dtype=torch.float32).reshape(k, 1)
    states = step.init(w)
    alive = torch.ones(k, dtype=torch.bool)
    first = None
    for t in range(1, task.steps + 1):
        f = w.requires_grad_()
        loss = task.train_loss(task.unflatten(f), t)
        (g,) = torch.autograd.grad(loss.sum(), f)
        with torch.no_grad():
            first = loss.detach().abs() + 1e-3 if first is None else first
            alive &= torch.isfinite(loss) & (loss.abs() < DIVERGED * first)
            if not alive.any():
                raise CandidateFailed(f"every copy diverged by step {t} on {task_name}")
            update, states = step(w.detach(), g, states, lr, t)
            w = w.detach() - update
    with torch.no_grad():
        final = task.eval_loss(task.unflatten(w))
    ok = alive & torch.isfinite(final) & (final.abs() < DIVERGED * first)
    if not ok.any():
        raise CandidateFailed(f"every copy diverged on {task_name}")
    return torch.where(ok, final, torch.tensor(math.inf)).numpy().astype(np.float64)


def score(loss: float, baseline_loss: float) -> float:
    """``log(baseline / loss)``, clipped to ``[-10, 10]``: 0 is as good as tuned AdamW."""
    if not math.isfinite(loss):
        return -SCORE_CLIP
    return float(np.clip(math.log(max(baseline_loss, 1e-30) / max(loss, 1e-30)), -SCORE_CLIP, SCORE_CLIP))


def baseline(task_name: str) -> dict:
    """Torch-style AdamW tuned over :data:`BASELINE_LRS`: ``{"loss", "lr", "seconds"}``."""
    t0 = time.perf_counter()
    losses = train_copies(load("adamw"), task_name, BASELINE_LRS)
    i = int(np.argmin(losses))
    return {"loss": float(losses[i]), "lr": BASELINE_LRS[i], "seconds": time.perf_counter() - t0}


def evaluate_program(program: Program, tasks: Sequence[str], baselines: dict[str, float],
                     hurdle: float | None = None, lrs: Sequence[float] = CANDIDATE_LRS) -> dict:
    """Fitness of ``program`` on ``tasks``; never raises for a bad program.

    Returns ``{"status": ok|hurdle|diverged|error, "fitness": float|None, "task_score",
    "task_loss", "task_lr", "seconds", "error"}``; failed candidates have fitness None (worst).
    """
    t0 = time.perf_counter()
    out = {"status": "ok", "fitness": None, "task_score": {}, "task_loss": {}, "task_lr": {}, "error": None}
    try:
        for i, name in enumerate(tasks):
            losses = train_copies(program, name, lrs)
            j = int(np.argmin(losses))
            out["task_loss"][name], out["task_lr"][name] = float(losses[j]), float(lrs[j])
            out["task_score"][name] = score(float(losses[j]), baselines[name])
            if hurdle is not None and out["task_score"][name] < hurdle and i < len(tasks) - 1:
                out["status"] = "hurdle"
                break
        scores = list(out["task_score"].values())
        scores += [scores[-1]] * (len(tasks) - len(scores))  # hurdled: the rest score as badly
        out["fitness"] = float(np.mean(scores))
    except CandidateFailed as e:
        out["status"], out["error"] = "diverged", str(e)
    except Exception as e:  # noqa: BLE001 - a broken candidate must never stop the search
        out["status"], out["error"] = "error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
    out["seconds"] = time.perf_counter() - t0
    return out


def run_job(job: dict) -> dict:
    """A worker's entry point: programs arrive as source text, results leave as plain data.

    ``job["kind"]`` is ``"evaluate"`` (``source``, ``tasks``, ``baselines``, ``hurdle``) or
    ``"baseline"`` (``task``)."""
    torch.set_num_threads(1)  # one core per worker; also makes results bit-reproducible
    if job["kind"] == "baseline":
        return {"id": job["id"], **baseline(job["task"])}
    t0 = time.perf_counter()
    try:
        program = parse(job["source"], "<candidate>")
    except DslError as e:
        return {"id": job["id"], "status": "error", "fitness": None, "error": f"unparsable: {e}",
                "seconds": time.perf_counter() - t0, "task_score": {}, "task_loss": {}, "task_lr": {}}
    return {"id": job["id"], **evaluate_program(program, job["tasks"], job["baselines"], job.get("hurdle"))}
