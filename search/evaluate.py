"""Fitness: how well programs train the proxy tasks, relative to tuned AdamW on the same seeds.

Several candidates are scored together. For each task, every candidate trains ``S x L`` copies
of the model (``S`` initialisation seeds, ``L`` learning rates of its sweep), and the copies of
all candidates are rows of one parameter tensor: one forward and backward pass serves every
candidate, then each candidate's program steps its own rows
(:class:`~search.vectorized.VectorizedStep`). Copies that produce NaN/Inf or blow up fail. A
child's sweep is the whole grid on its first task and, after that, a window around its parent's
best learning rate moved as the child's own moved (:func:`evaluate_programs`).

Per task, a candidate's loss at learning rate ``lr`` is the mean over seeds of the final
held-out loss (infinite when any seed's copy failed), its task loss the best over the sweep,
and its score::

    score = clip(log(baseline_loss / loss), -1, +1)        (0: as good as tuned AdamW)

where ``baseline_loss`` is torch-style AdamW (bias correction, eps, weight decay 0.01) with the
same seeds, tuned over a finer grid (:func:`baseline`). On a held-out task (meta-validation)
both losses are measured again at the chosen lr on fresh seeds (:data:`HELD_OUT_SEEDS`), so
that the held-out score is not the luck of the draws the lr was chosen on. A task on which
every learning rate fails scores -1, the bottom of the scale. Fitness is the mean task score *without the best
one*, a loss ``s < 0`` counted as ``(1 + s)^2 - 1`` (:func:`aggregate`): the bound and the dropped
maximum keep any one task (a transformer whose loss collapses once it learns, a quadratic with a
lucky noise draw) from deciding the ranking, and the weight on losses keeps a rule that gives up
one task for the others from ranking as one that loses none, so a win must be broad.
``docs/search.md`` has the measurements behind these choices.

Before training, :func:`search.guards.guard` refuses rules that drift or ignore the gradient
(status ``guard``). Tasks run cheapest first; a candidate whose score on a task is below
``hurdle``, or that fails it, stops there (status ``hurdle`` / ``diverged``) and its remaining
tasks score -1, so clearly bad programs cost one small task instead of all of them. A task may be
a hurdle only (``hurdle_only``; of the default proxies, ``logreg``): it stops a program so, but its
score is not in the fitness.

Example:
    >>> from search.warm_start import adamw_program
    >>> (r,) = evaluate_programs([adamw_program()], ["quadratic"], {"quadratic": 1.0})
    >>> r["status"], sorted(r["task_loss"])
    ('ok', ['quadratic'])
"""

from __future__ import annotations

import itertools
import math
import time
import traceback
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import numpy as np
import torch

from optdsl.errors import DslError
from optdsl.ir import Program
from optdsl.parser import parse
from optdsl.source import load

from .devices import on_device, one_thread
from .guards import guard, horizon_fault
from .tasks import get_task, proxy_of
from .user_task import fingerprint, is_reference, located, split_reference
from .vectorized import VectorizedStep

#: The candidate's learning-rate sweep on the program's ``lr`` input, a factor 2.5 apart (the
#: paper's AdamW program scales lr by 1e-3 itself, so it sees 4e-5 .. 2.4): wide enough that a
#: child whose constants moved its scale by 10x in either direction is still tuned. Under the
#: cosine decay the warm start's best lies 2-3x above where the grid ended until 2026-12-06 (0.15:
#: tuned AdamW's is 0.32 on `embedding`), and so did 15 of the 17 meta-validated rules of a README
#: job on `quadratic`, `logreg` and `embedding`: three points more at the top.
CANDIDATE_LRS = tuple(float(f"{0.1 * 2.5 ** i:.4g}") for i in range(-1, 12))
#: AdamW's sweep for the baseline: 1e-4 .. 1e-1, a factor ~1.8 apart (10 ** its exponents).
BASELINE_EXPONENTS = tuple(float(e) for e in np.linspace(-4, -1, 13))
BASELINE_LRS = tuple(float(10 ** e) for e in BASELINE_EXPONENTS)
#: How far tuned AdamW's sweep goes past an end of BASELINE_LRS while its best lies there: 8 more
#: points of the same spacing (down to 1e-6, up to 10), 4 at a time. The embedding tasks' AdamW
#: is best at 0.18-0.32 under the cosine decay, and three proxies' at 64x batches above 0.1.
BASELINE_REACH = 8
#: The most passes over one task a job may train: tuned AdamW's sweep, its two extensions past an end
#: (BASELINE_REACH, 4 points at a time) and a held-out task's re-measurement on fresh seeds; a
#: candidate's sweep, its widening, a re-measurement and a confirmation. A user task whose one
#: pass takes more than a job's limit over this is refused before the search starts.
PASSES_PER_JOB = 2 + BASELINE_REACH // 4
#: Initialisation seeds every candidate and the baseline train from.
SEEDS = (0, 1)
#: Seeds a held-out task's loss is measured on, at the learning rate its sweep on :data:`SEEDS`
#: chose. Fresh seeds keep that choice from also picking the luckiest draws, and eight of them
#: because three held-out tasks vary a lot with the initialisation: the final loss of one
#: program at one lr spans 3x over seeds on ``mlp_large`` and 40x on ``transformer_large``
#: (solved or not), so two seeds moved a winner's score there by 0.4-0.9 (docs/search.md).
HELD_OUT_SEEDS = tuple(range(2, 10))
#: Seeds a promising candidate's proxy losses are measured on again, at the learning rates its
#: sweep chose (``confirm_above`` of :func:`evaluate_programs`). The best of a sweep on two seeds is
#: the luckiest of several draws, and a search that keeps the best of thousands of children keeps
#: the luckiest of those: moving the grid by a fraction of a step moved signSGD's proxy fitness
#: from +0.18 to +0.01..+0.05 and an Adam-like winner's from +0.23 to +0.14..+0.21; on these seeds
#: the two average -0.09 and +0.15 over those placements, close to their held-out -0.11 and +0.09
#: (docs/search.md).
CONFIRM_SEEDS = (2, 3)
SCORE_BOUND = 1.0
HURDLE = -0.5  # stop a candidate after a task where its loss is 1.65x tuned AdamW's or worse
DIVERGED = 1e3  # a copy whose training loss exceeds this multiple of its initial loss has failed
SYNC_EVERY = 16  # steps between the host's reads of which copies live, on a GPU
#: A sweep that knows where a program's learning rate was best (a held-out task: its proxy
#: version; a child: its parent on the same task) starts this many grid points either side of
#: it, and widens while the best point lies on an edge. Over 11 meta-validated winners x 6
#: held-out tasks, every held-out optimum was within one grid point of its proxy's
#: (docs/search.md): the window finds the whole sweep's best at half its cost.
SWEEP_REACH = 2
#: How the learning rate moves over a task's steps, for every candidate and tuned AdamW alike
#: (``--schedule``): held (the default) or a cosine decay to 0, as real training runs mostly do.
SCHEDULES = ("constant", "cosine")


def schedule_factor(schedule: str, t: int, steps: int) -> float:
    """The learning rate's multiplier at step ``t`` (1-based) of ``steps``: 1 for ``constant``,
    ``(1 + cos(pi (t - 1) / steps)) / 2`` for ``cosine`` (1 at the first step, near 0 at the last).

    Example:
        >>> schedule_factor("constant", 7, 10), schedule_factor("cosine", 1, 10)
        (1.0, 1.0)
        >>> round(schedule_factor("cosine", 6, 10), 3)
        0.5
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (t - 1) / steps))
    raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")


def train_copies(programs: Sequence[Program], task_name: str, lrs: Sequence[float],
                 seeds: Sequence[int] = SEEDS, device: str = "cpu",
                 points: Sequence[Sequence[int]] | None = None,
                 schedule: str = "constant") -> tuple[np.ndarray, list[str | None]]:
    """Final held-out losses ``(C, S, L)`` of every candidate's copies (inf where a copy failed),
    and per candidate the error its step raised (``None`` if none). ``points``: per candidate,
    the indices of ``lrs`` it trains (all by default; the others stay inf). Training runs on
    ``device`` (the initial weights are drawn on the CPU, so every device starts from the same ones),
    each learning rate moved over the steps by ``schedule`` (:func:`schedule_factor`).

    Example:
        >>> from optdsl import load
        >>> losses, errors = train_copies([load("sgd")], "quadratic", [0.01, 0.1])
        >>> losses.shape, errors
        ((1, 2, 2), [None])
        >>> losses, _ = train_copies([load("sgd")], "quadratic", [0.01, 0.1], points=[[1]])
        >>> bool(np.isinf(losses[0, :, 0]).all() and np.isfinite(losses[0, :, 1]).all())
        True
    """
    points = [list(range(len(lrs)))] * len(programs) if points is None else [list(p) for p in points]
    task = on_device(get_task(task_name), device)
    start = task.init_copies(seeds, 1)  # (S, P): one copy per seed
    # copy rows: per candidate, per seed, its learning rates in turn
    w = torch.cat([start.repeat_interleave(len(p), 0) for p in points]).to(device)
    lr = torch.tensor([lrs[j] for p in points for _ in seeds for j in p], dtype=torch.float32, device=device)
    # What the steps create (states, constants) is made on the device. On the CPU that is the
    # default already, and the device mode's hook on every torch call cost ~40% of a small task.
    placed = torch.device(device) if torch.device(device).type != "cpu" else nullcontext()
    with placed, _flushing_denormals():
        final, errors = _train(programs, task, w, lr.reshape(-1, 1), [len(seeds) * len(p) for p in points],
                               schedule)
    out = np.full((len(programs), len(seeds), len(lrs)), math.inf)
    at = 0
    for i, p in enumerate(points):
        n = len(seeds) * len(p)
        out[i][:, p] = final[at:at + n].reshape(len(seeds), len(p))
        at += n
    return out, errors


@contextmanager
def _flushing_denormals():
    """Subnormal floats flushed to zero while the copies train: softmax tails and decaying
    moments produce them, and the CPU handles each one ~100x slower (the logreg task ran 2x
    faster flushed). Values below 1.2e-38 do not move a loss; torch has no getter, so the
    default (off) is restored."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _train(programs: Sequence[Program], task, w: torch.Tensor, lr: torch.Tensor,
           counts: Sequence[int], schedule: str = "constant",
           sync_every: int | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Train the copies ``w`` (K, P) at learning rates ``lr`` (K, 1) moved by ``schedule``,
    candidate i stepping the next ``counts[i]`` rows: their final held-out losses ``(K,)`` (inf
    where a copy failed). Which copies live is read on the host every ``sync_every`` steps
    (default: every step on the CPU, where it is free; every ``SYNC_EVERY`` on a GPU, where each
    read waits for the device's queue to drain). The losses are the same either way: dead copies
    are zeroed at every step."""
    steps: list[VectorizedStep | None] = []
    errors: list[str | None] = []
    for p in programs:
        try:
            steps.append(VectorizedStep(p, list(task.shapes.values())))
            errors.append(None)
        except DslError as e:
            steps.append(None)
            errors.append(str(e))
    rows = [slice(a, b) for a, b in itertools.pairwise([0, *itertools.accumulate(counts)])]
    states = [st.init(w[r]) if st is not None else None for st, r in zip(steps, rows)]
    live = [st is not None for st in steps]  # on the host: which candidates still step
    alive = torch.tensor(live).repeat_interleave(torch.tensor(counts))  # which copies do
    every = sync_every or (1 if w.device.type == "cpu" else SYNC_EVERY)
    first, storage = None, w.untyped_storage().data_ptr()
    for t in range(1, task.steps + 1):
        f = w.detach().requires_grad_()  # shares w's storage: the graph is freed before w moves
        loss = task.train_loss(task.unflatten(f), t)
        (g,) = torch.autograd.grad(loss.sum(), f)
        with torch.no_grad():
            factor = schedule_factor(schedule, t, task.steps)
            lr_t = lr if factor == 1.0 else lr * factor
            first = loss.detach().abs() + 1e-3 if first is None else first
            alive &= torch.isfinite(loss) & (loss.abs() < DIVERGED * first)
            if t % every == 0:
                now = alive.cpu()
                live = [was and bool(now[r].any()) for was, r in zip(live, rows)]
                if not any(live):
                    break
            for i, (st, r) in enumerate(zip(steps, rows)):
                if not live[i]:
                    continue
                try:
                    update, new = st(w[r], g[r], states[i], lr_t[r], t)
                    # a state that is w itself (``m = w``) must keep this step's value
                    states[i] = [x.clone() if x.untyped_storage().data_ptr() == storage else x for x in new]
                    w[r] -= update
                except Exception as e:  # noqa: BLE001 - one candidate's failure is its own
                    errors[i] = f"{type(e).__name__}: {e}"
                    alive[r], live[i] = False, False
            # failed copies stop carrying nan/inf through the shared passes (read on the host, only
            # their rows are written: on the CPU a mask over all of w cost a full pass per step)
            if every == 1:
                w.index_fill_(0, torch.nonzero(~alive).flatten(), 0.0)
            else:
                w.masked_fill_(~alive[:, None], 0.0)
    with torch.no_grad():
        final = task.eval_loss(task.unflatten(w))
    ok = alive & torch.isfinite(final) & (final.abs() < DIVERGED * first)
    out = torch.where(ok, final, torch.tensor(math.inf)).double().cpu().numpy()
    return out, errors


def _grid_index(lrs: Sequence[float], lr: float) -> int:
    """The point of ``lrs`` nearest ``lr`` on a log scale."""
    return int(np.argmin(np.abs(np.log(np.asarray(lrs, dtype=float)) - math.log(lr))))


def _reference(task: str, tuned: dict[str, float]) -> float | None:
    """The lr that won ``task`` itself or its proxy version in ``tuned``, if any."""
    for name in (task, proxy_of(task)):
        lr = tuned.get(name) if name else None
        if _usable(lr):
            return lr
    return None


def _usable(lr: float | None) -> bool:
    """A stored best lr to start a sweep from (not missing, failed or non-positive)."""
    return bool(lr) and math.isfinite(lr) and lr > 0


def sweep_window(task: str, tuned: dict[str, float], lrs: Sequence[float] = CANDIDATE_LRS,
                 reach: int = SWEEP_REACH, shift: int = 0) -> tuple[int, int]:
    """First and last index of ``lrs`` to train ``task`` on: ``reach`` points either side of the
    lr that won ``task`` itself or its proxy version in ``tuned`` (task -> best lr), or of the
    median of those winners for a task with neither, moved by ``shift`` grid points; the whole
    sweep when ``tuned`` has no winner.

    Example:
        >>> sweep_window("mlp_large", {"mlp": CANDIDATE_LRS[5], "logreg": CANDIDATE_LRS[7]})
        (3, 7)
        >>> sweep_window("conv_large", {"mlp": CANDIDATE_LRS[5], "logreg": CANDIDATE_LRS[7]})
        (4, 8)
        >>> sweep_window("mlp", {"mlp": CANDIDATE_LRS[5]}, shift=-4)
        (0, 3)
    """
    at = [_grid_index(lrs, lr) for lr in tuned.values() if _usable(lr)]
    if not at:
        return 0, len(lrs) - 1
    ref = _reference(task, tuned)
    centre = _grid_index(lrs, ref) if ref is not None else int(np.ceil(np.median(at)))
    centre = min(max(centre + shift, 0), len(lrs) - 1)
    return max(0, centre - reach), min(len(lrs) - 1, centre + reach)


def widening_sweep(programs: Sequence[Program], task_name: str, lrs: Sequence[float],
                   windows: Sequence[tuple[int, int]], seeds: Sequence[int] = SEEDS,
                   device: str = "cpu", schedule: str = "constant") -> tuple[np.ndarray, list[str | None]]:
    """:func:`train_copies`, each program on ``lrs[lo..hi]`` of its window, widened to the end
    of the sweep on the side of an edge where its best (:func:`best_over_sweep`) lies, and to the
    whole sweep if every point of its window failed; the points never trained are ``inf``. Over
    a sweep whose loss falls then rises, this finds the whole sweep's best: a point beside the
    best is always trained. A widening is one more pass, over the programs that widen; it goes
    to the end at once because a pass of a few copies costs nearly what one of many does.

    Example:
        >>> from optdsl import load
        >>> losses, _ = widening_sweep([load("sgd")], "quadratic", CANDIDATE_LRS, [(0, 1)])
        >>> losses.shape, bool(np.isinf(losses[0, 0, -1]))
        ((1, 2, 13), True)
    """
    losses = np.full((len(programs), len(seeds), len(lrs)), math.inf)
    errors: list[str | None] = [None] * len(programs)
    span = [list(w) for w in windows]
    todo = {i: range(lo, hi + 1) for i, (lo, hi) in enumerate(span)}
    last = len(lrs) - 1
    while todo:
        ids = list(todo)
        part, errs = train_copies([programs[i] for i in ids], task_name, lrs, seeds, device,
                                  points=[todo[i] for i in ids], schedule=schedule)
        todo = {}
        for i, loss_i, err in zip(ids, part, errs):
            trained = np.isfinite(loss_i)
            losses[i][trained] = loss_i[trained]
            errors[i] = errors[i] or err
            if err is not None:
                continue
            lo, hi = span[i]
            mean = losses[i, :, lo:hi + 1].mean(0)
            if np.isinf(mean).all():  # failed everywhere in reach: the rest of the sweep, at once
                span[i] = [0, last]
                todo[i] = [j for j in range(len(lrs)) if not lo <= j <= hi]
            elif (best := lo + int(np.argmin(mean))) == lo and lo > 0:
                span[i][0] = 0
                todo[i] = range(lo)
            elif best == hi and hi < last:
                span[i][1] = last
                todo[i] = range(hi + 1, last + 1)
        todo = {i: p for i, p in todo.items() if len(p)}
    return losses, errors


def best_over_sweep(losses: np.ndarray, lrs: Sequence[float]) -> tuple[float, float]:
    """``(loss, lr)``: the learning rate whose mean loss over seeds (axis 0) is lowest.

    Example:
        >>> best_over_sweep(np.array([[1.0, 0.5], [1.0, np.inf]]), [0.1, 1.0])
        (1.0, 0.1)
    """
    mean = losses.mean(0)  # inf wherever any seed failed
    j = int(np.argmin(mean))
    return float(mean[j]), float(lrs[j])


def score(loss: float, baseline_loss: float) -> float:
    """``clip(log(baseline / loss), -1, 1)``: 0 is as good as tuned AdamW; a failure is -1.

    Example:
        >>> round(score(0.5, 1.0), 4), score(1.0, 1.0), score(math.inf, 1.0), score(1e-9, 1.0)
        (0.6931, 0.0, -1.0, 1.0)
    """
    if not math.isfinite(loss):
        return -SCORE_BOUND
    ratio = math.log(max(baseline_loss, 1e-30) / max(loss, 1e-30))
    return float(np.clip(ratio, -SCORE_BOUND, SCORE_BOUND))


def aggregate(scores: Sequence[float], loss_averse: bool = True) -> float:
    """Fitness from task scores: their mean after dropping the single best (with 3 or more
    tasks), so that a win on one task alone never makes a winner. With ``loss_averse``, a loss
    ``s < 0`` counts as ``(1 + s)^2 - 1``: about twice its size while small, still -1 for a failure,
    so a rule that gives up one task for gains elsewhere ranks below one that loses none (the
    proxies' fitness then follows the worst held-out task better: docs/search.md).

    Example:
        >>> round(aggregate([1.0, 0.0, -0.2]), 4), aggregate([1.0, 0.0, -0.2], loss_averse=False)
        (-0.18, -0.1)
        >>> aggregate([0.5, 0.1]), aggregate([-1.0, -1.0, -1.0])
        (0.3, -1.0)
    """
    scores = sorted(scores)
    kept = np.clip(np.array(scores[:-1] if len(scores) >= 3 else scores, dtype=float), -SCORE_BOUND,
                   SCORE_BOUND)
    if loss_averse:  # (within the bounds: (1 + s)^2 - 1 rises again below -1)
        kept = np.where(kept < 0, (1 + kept) ** 2 - 1, kept)
    return float(kept.mean())


def aggregate_words(loss_averse: bool | None, tasks: int | None = None,
                    hurdle_only: Sequence[str] = ()) -> str:
    """:func:`aggregate` in words, over ``tasks`` tasks (None: any number); ``loss_averse`` None:
    not known (the search's settings are unreadable); ``hurdle_only``: proxies left out of it.

    Example:
        >>> aggregate_words(False, tasks=2)
        'the mean over the tasks'
        >>> aggregate_words(True, tasks=6)
        'the mean over the tasks, the best one left out, a loss s counted as (1 + s)^2 - 1'
        >>> aggregate_words(False, tasks=2, hurdle_only=["logreg"])
        'the mean over the tasks (of the proxies, logreg only as a hurdle)'
    """
    words = "the mean over the tasks"
    if hurdle_only:
        words += f" (of the proxies, {', '.join(hurdle_only)} only as a hurdle)"
    if tasks is None or tasks >= 3:
        words += ", the best one left out" + (" when there are three or more" if tasks is None else "")
    weight = {True: ", a loss s counted as (1 + s)^2 - 1", False: "",
              None: ", a loss s counted as (1 + s)^2 - 1 or as s (the search's settings are unreadable)"}
    return words + weight[loss_averse]


def baseline(task_name: str, seeds: Sequence[int] = SEEDS, device: str = "cpu",
             fresh_seeds: Sequence[int] = (), schedule: str = "constant",
             weight_decay: float | None = None) -> dict:
    """Torch-style AdamW tuned over :data:`BASELINE_LRS` on ``seeds``, the sweep extended past an
    end while its best lies there (:data:`BASELINE_REACH`): ``{"loss", "lr", "seconds",
    "sweep_loss"}``, the last the chosen lr's mean loss on ``seeds``. With ``fresh_seeds`` (the
    seeds candidates are scored on), ``loss`` is measured again on them at the chosen lr and its two
    neighbours, and the lowest kept: an lr chosen on two seeds can sit at the edge of stability on
    others (``mlp``'s 0.056: 0.071 on seeds 0 and 1, 0.106 on 2 and 3, where 0.032 gives 0.060), and
    tuned AdamW must not lose by that. ``weight_decay``: AdamW's (the zoo program's 0.01 if None;
    ``benchmarks/adamw_weight_decay.py`` measures others).

    Example:
        >>> b = baseline("quadratic", fresh_seeds=(2, 3))
        >>> sorted(b), b["lr"] in BASELINE_LRS
        (['loss', 'lr', 'seconds', 'sweep_loss'], True)
        >>> round(baseline("embedding", schedule="cosine")["lr"], 3)  # past the grid's 0.1
        0.316
    """
    t0 = time.perf_counter()
    adamw = load("adamw")
    if weight_decay is not None:
        decayed = lambda h: replace(h, default=float(weight_decay)) if h.name == "weight_decay" else h
        adamw = replace(adamw, hypers=tuple(map(decayed, adamw.hypers)))
    exponents = list(BASELINE_EXPONENTS)
    spacing = exponents[1] - exponents[0]
    losses = train_copies([adamw], task_name, BASELINE_LRS, seeds, device, schedule=schedule)[0][0]
    while len(exponents) < len(BASELINE_LRS) + BASELINE_REACH:
        j = int(np.argmin(losses.mean(0)))
        if 0 < j < len(exponents) - 1:
            break
        side = 1 if j else -1  # past the top end, or the bottom one
        more = sorted(exponents[j] + side * spacing * k for k in range(1, 5))
        extra = train_copies([adamw], task_name, [float(10 ** e) for e in more], seeds, device,
                             schedule=schedule)[0][0]
        exponents = exponents + more if side > 0 else more + exponents
        losses = np.concatenate([losses, extra] if side > 0 else [extra, losses], axis=1)
    rates = [float(10 ** e) for e in exponents]
    swept, lr = best_over_sweep(losses, rates)
    loss = swept
    if fresh_seeds:  # the chosen lr and its neighbours again, the best of them
        j = rates.index(lr)
        near = [(float(losses[:, k].mean()), rates[k]) for k in range(max(j - 1, 0), min(j + 2, len(rates)))]
        loss, lr = min(remeasure([adamw] * len(near), task_name, near, fresh_seeds, device, schedule)[0])
    return {"loss": loss, "lr": lr, "seconds": time.perf_counter() - t0, "sweep_loss": swept}


def remeasure(programs: Sequence[Program], task_name: str, chosen: Sequence[tuple[float, float]],
              seeds: Sequence[int], device: str = "cpu",
              schedule: str = "constant") -> tuple[list[tuple[float, float]], list[str | None]]:
    """Each program's ``(loss, lr)`` with the loss measured again at its chosen ``lr`` as the
    mean over ``seeds`` (inf if any copy fails), all in one pass; a program whose chosen loss is
    not finite keeps it. A sweep's best loss is the lowest of several noisy ones, so it is
    biased low; the same lr trained from other seeds is not.

    Example:
        >>> from optdsl import load
        >>> (again,), errors = remeasure([load("sgd")], "quadratic", [(0.5, 0.01)], seeds=(2, 3))
        >>> again[1], again[0] != 0.5, errors
        (0.01, True, [None])
    """
    out, errors = list(chosen), [None] * len(programs)
    todo = [i for i, (loss, _) in enumerate(chosen) if math.isfinite(loss)]
    if todo:
        rates = [chosen[i][1] for i in todo]
        losses, errs = train_copies([programs[i] for i in todo], task_name, rates, seeds, device,
                                    points=[[k] for k in range(len(todo))], schedule=schedule)
        for k, i in enumerate(todo):
            out[i], errors[i] = (float(losses[k][:, k].mean()), rates[k]), errs[k]
    return out, errors


def _fresh_result() -> dict:
    return {"status": "ok", "fitness": None, "task_score": {}, "task_loss": {}, "task_lr": {}, "error": None}


def refusal(program: Program, lrs: Sequence[float] = CANDIDATE_LRS, horizon: bool = False) -> tuple[str, str] | None:
    """``(status, reason)`` when ``program`` is not to be trained: the guards refuse it
    (``guard``), with ``horizon`` its step does not last (``horizon``), or they cannot run it
    (``error``); None for a program to train.

    Example:
        >>> refusal(parse("def train(w, g, lr):\\n    return lr * g + 0.01\\n"))[0]
        'guard'
    """
    try:
        with one_thread():  # the search's main process runs them too, beside its workers
            reason = guard(program, lrs)
            if reason is not None:
                return "guard", reason
            reason = horizon_fault(program) if horizon else None
            return None if reason is None else ("horizon", reason)
    except Exception as e:  # noqa: BLE001 - a program the evaluator cannot run is an error
        return "error", f"{type(e).__name__}: {e}"


def evaluate_programs(programs: Sequence[Program], tasks: Sequence[str], baselines: dict[str, float],
                      hurdle: float | None = HURDLE, lrs: Sequence[float] = CANDIDATE_LRS,
                      seeds: Sequence[int] = SEEDS, device: str = "cpu", horizon: bool = False,
                      tuned: Sequence[dict[str, float]] | None = None,
                      from_parent: bool = False, fresh_seeds: Sequence[int] = (),
                      schedule: str = "constant", confirm_above: float | None = None,
                      confirm_seeds: Sequence[int] = CONFIRM_SEEDS, loss_averse: bool = True,
                      hurdle_only: Sequence[str] = ()) -> list[dict]:
    """Fitness of each program on ``tasks``, candidates batched together, trained on ``device``;
    never raises for a bad program.

    Each result is ``{"status": ok|hurdle|diverged|horizon|guard|error, "fitness": float|None,
    "task_score", "task_loss", "task_lr", "seconds", "error"}``: fitness is the :func:`aggregate`
    of the task scores, in [-1, 1] (tasks not run count -1), None for a program refused by the
    guards or broken. With ``horizon`` (meta-validation), a program whose step does not last
    (:func:`search.guards.horizon_fault`) is not trained and scores -1 (status ``horizon``).
    With ``tuned`` (per program, the lr that won each task in a related run), a task's sweep is a
    :func:`widening_sweep` from a :func:`sweep_window` instead of the whole grid: the window is
    centred on the related run's lr, moved by the median of the shifts (in grid points) between
    this program's best lrs and the related run's on the tasks it has already trained. With
    meta-validation, the related run is the program's own on the proxies (a held-out task starts
    at its proxy version's lr); with ``from_parent``, it is the parent's on the same tasks, and
    the first task runs the whole sweep to measure the shift (a mutation that rescales the step
    moves every task's best lr by about as much: in the 10-minute runs, 99.4-100% of the later
    tasks' best lrs lay within 2 points of the parent's moved by the median shift). Every copy's
    learning rate follows ``schedule`` over a task's steps (:func:`schedule_factor`; compare with
    baselines measured under the same one): a task's lr is then the schedule's peak. With
    ``confirm_above``, a program that passed every task with a fitness above it has each task's
    loss measured again at its chosen lr on ``confirm_seeds`` (:func:`remeasure`), and is scored on
    those losses (``"confirmed": True``): the fitness of what a search keeps is then no sweep's
    lucky draw, at the cost of one short pass per task for the few that are kept. ``loss_averse``:
    see :func:`aggregate` (a search stored before it keeps the plain mean). Tasks in ``hurdle_only``
    are trained and scored, and can stop a program as any task can, but are left out of the fitness
    (:data:`search.tasks.HURDLE_ONLY`).

    Example (SGD trains the quadratic, worse than tuned AdamW; a drifting rule is refused untrained):
        >>> from optdsl import load
        >>> drift = parse("def train(w, g, lr):\\n    return lr * g + 0.01\\n")
        >>> sgd, refused = evaluate_programs([load("sgd"), drift], ["quadratic"],
        ...                                  {"quadratic": baseline("quadratic")["loss"]})
        >>> sgd["status"], round(sgd["fitness"], 2), sgd["task_lr"], refused["status"], refused["fitness"]
        ('ok', -0.98, {'quadratic': 0.1}, 'guard', None)
    """
    t0 = time.perf_counter()
    results = [_fresh_result() for _ in programs]
    active = []
    for i, p in enumerate(programs):
        refused = refusal(p, lrs, horizon)
        if refused is not None:
            results[i]["status"], results[i]["error"] = refused
        else:
            active.append(i)
    shifts: list[list[int]] = [[] for _ in programs]  # per program: its best lr's move from the related run's
    for k, name in enumerate(tasks):
        if not active:
            break
        batch = [programs[i] for i in active]
        try:
            whole = (0, len(lrs) - 1)  # trained in one pass: its edges are the grid's
            windows = [whole if tuned is None or (from_parent and not shifts[i]) else
                       sweep_window(name, tuned[i], lrs, shift=int(np.ceil(np.median(shifts[i] or [0]))))
                       for i in active]
            losses, errors = widening_sweep(batch, name, lrs, windows, seeds, device, schedule)
            chosen = [best_over_sweep(loss_i, lrs) for loss_i in losses]
            if fresh_seeds:
                chosen, again = remeasure(batch, name, chosen, fresh_seeds, device, schedule)
                errors = [a or b for a, b in zip(errors, again)]
        except Exception as e:  # noqa: BLE001 - e.g. a shape the task's model cannot take
            chosen, errors = [(math.inf, math.nan)] * len(active), [f"{e}"] * len(active)
        still = []
        for i, (loss, lr), err in zip(active, chosen, errors):
            r = results[i]
            if err is not None:
                r["status"], r["error"] = "error", err
                continue
            r["task_loss"][name], r["task_lr"][name] = loss, lr
            ref = _reference(name, tuned[i]) if tuned is not None else None
            if ref is not None and math.isfinite(loss):
                shifts[i].append(_grid_index(lrs, lr) - _grid_index(lrs, ref))
            r["task_score"][name] = score(loss, baselines[name])
            last = k == len(tasks) - 1
            if not math.isfinite(loss):
                r["status"], r["error"] = "diverged", f"every learning rate failed on {name}"
            elif hurdle is not None and r["task_score"][name] < hurdle and not last:
                r["status"] = "hurdle"
            else:
                still.append(i)
        active = still
    counted = [t for t in tasks if t not in hurdle_only]
    fitness = lambda r: aggregate([r["task_score"].get(t, -SCORE_BOUND) for t in counted], loss_averse)
    if confirm_above is not None:
        kept = [i for i in active if results[i]["status"] == "ok" and fitness(results[i]) > confirm_above]
        _confirm([programs[i] for i in kept], [results[i] for i in kept], tasks, baselines, confirm_seeds,
                 device, schedule)
    for r in results:
        if r["status"] in ("ok", "hurdle", "diverged", "horizon"):
            r["fitness"] = fitness(r)
        r["seconds"] = (time.perf_counter() - t0) / max(len(programs), 1)
    return results


def _confirm(programs: Sequence[Program], results: Sequence[dict], tasks: Sequence[str],
             baselines: dict[str, float], seeds: Sequence[int], device: str, schedule: str) -> None:
    """Score ``results`` again on each task's loss measured at its chosen lr on ``seeds``: one
    pass per task for all of them. A loss that fails there fails the task (status ``diverged``)."""
    for name in tasks:
        live = [k for k, r in enumerate(results) if r["status"] == "ok"]
        if not live:
            break
        chosen = [(results[k]["task_loss"][name], results[k]["task_lr"][name]) for k in live]
        again, errors = remeasure([programs[k] for k in live], name, chosen, seeds, device, schedule)
        for k, (loss, _), err in zip(live, again, errors):
            r = results[k]
            r["task_loss"][name], r["task_score"][name] = loss, score(loss, baselines[name])
            if err is not None:
                r["status"], r["error"] = "error", err
            elif not math.isfinite(loss):
                r["status"], r["error"] = "diverged", f"its lr failed on {name} on seeds {list(seeds)}"
    for r in results:
        r["confirmed"] = True


def evaluate_program(program: Program, tasks: Sequence[str], baselines: dict[str, float],
                     hurdle: float | None = HURDLE, lrs: Sequence[float] = CANDIDATE_LRS,
                     seeds: Sequence[int] = SEEDS, device: str = "cpu") -> dict:
    """:func:`evaluate_programs` for one program.

    Example (SGD stops at the quadratic's hurdle: logreg is never trained and counts -1):
        >>> from optdsl import load
        >>> base = {"quadratic": baseline("quadratic")["loss"], "logreg": 0.1}
        >>> r = evaluate_program(load("sgd"), ["quadratic", "logreg"], base)
        >>> r["status"], round(r["task_score"]["quadratic"], 2), round(r["fitness"], 2)
        ('hurdle', -0.85, -0.99)
    """
    return evaluate_programs([program], tasks, baselines, hurdle, lrs, seeds, device)[0]


def _error(message: str) -> dict:
    return {**_fresh_result(), "status": "error", "error": message, "seconds": 0.0}


def run_job(job: dict) -> dict:
    """A worker's entry point: programs arrive as source text, results leave as plain data.

    ``job["kind"]`` is ``"evaluate"`` (``sources``: a batch of programs, ``tasks``,
    ``baselines``, ``hurdle``, optional ``lrs``, ``horizon``, ``tuned``, ``from_parent``,
    ``fresh_seeds``, ``confirm_above``, ``confirm_seeds``, ``loss_averse`` and ``hurdle_only``: see
    :func:`evaluate_programs`) ->
    ``{"id", "results": [...]}`` in the order of ``sources``; or ``"baseline"`` (``task``,
    optional ``fresh_seeds``) -> ``{"id", "loss", "lr", "seconds"}``, and a built-in task's
    :func:`~search.user_task.fingerprint` as ``"print"``. Either kind runs on
    ``job["device"]`` (default ``cpu``) under ``job["schedule"]`` (default ``constant``).

    Example (it sets torch to one thread; ``one_thread`` restores the count here):
        >>> job = {"id": 7, "kind": "evaluate", "tasks": ["quadratic"], "baselines": {"quadratic": 0.15},
        ...        "sources": ["def train(w, g, lr):\\n    return lr * g\\n", "not a program"]}
        >>> with one_thread():
        ...     out = run_job(job)
        >>> out["id"], [r["status"] for r in out["results"]], out["results"][1]["error"][:11]
        (7, ['ok', 'error'], 'unparsable:')
    """
    torch.set_num_threads(1)  # one core per worker; also makes results bit-reproducible
    device, schedule = job.get("device", "cpu"), job.get("schedule", "constant")
    if job["kind"] == "baseline":
        fresh = job.get("fresh_seeds", ())
        try:
            tuned = baseline(job["task"], device=device, fresh_seeds=fresh, schedule=schedule)
            if not is_reference(job["task"]):  # for --resume to see a built-in task a newer optdsl changed
                tuned["print"] = fingerprint(get_task(job["task"]))
            return {"id": job["id"], **tuned}
        except Exception as e:
            if not is_reference(job["task"]):
                raise
            # the user's task failed past the steps check_task ran: where, in the user's file
            path, function = split_reference(job["task"])
            error = located(e, path, f"{function}(): tuning AdamW on it failed")
            return {"id": job["id"], "error": error.message, "where": [error.filename, error.line, error.col]}
    programs, slots = [], []
    results: list[dict | None] = []
    for source in job["sources"]:
        try:
            programs.append(parse(source, "<candidate>"))
            slots.append(len(results))
            results.append(None)
        except DslError as e:
            results.append(_error(f"unparsable: {e}"))
    kw = {"lrs": tuple(job["lrs"])} if job.get("lrs") else {}
    try:
        tuned = job.get("tuned")
        scored = evaluate_programs(programs, job["tasks"], job["baselines"], job.get("hurdle"), device=device,
                                   horizon=job.get("horizon", False), from_parent=job.get("from_parent", False),
                                   tuned=None if tuned is None else [tuned[i] for i in slots],
                                   fresh_seeds=job.get("fresh_seeds", ()), schedule=schedule,
                                   confirm_above=job.get("confirm_above"),
                                   confirm_seeds=job.get("confirm_seeds", CONFIRM_SEEDS),
                                   loss_averse=job.get("loss_averse", True),
                                   hurdle_only=job.get("hurdle_only", ()), **kw)
    except Exception as e:  # noqa: BLE001 - never let a batch take the worker down
        scored = [_error(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}") for _ in programs]
    for slot, r in zip(slots, scored):
        results[slot] = r
    return {"id": job["id"], "results": results}
