"""Guards: cheap checks that refuse a rule before any training, for exploits no task should reward.

Five properties every sensible update rule has, checked on a fixed synthetic trajectory:

  - **No drift.** Flipping the sign of the parameters and of every gradient flips the sign of
    every update: ``u(-w, -g_1..t) = -u(w, g_1..t)``. SGD, momentum, Adam/AdamW, Lion, LAMB,
    Adafactor all have this symmetry; a rule that adds a constant to every coordinate
    (``update + 0.0155``) or steps by an even function of the gradient (``lr * abs(g)``) does
    not: it moves the weights in one direction whatever the loss says, and small proxies can
    reward that by chance.
  - **The gradient matters.** Running the same trajectory with other gradients changes the
    updates. A rule that only decays the weights, or returns a constant, does not train.
  - **lr is a learning rate.** From the same weights and gradients, the step is proportional to
    ``lr`` over the search's sweep: ``u(lr_k) / lr_k`` is the same for every ``k``. The search
    tunes every candidate over that sweep, so a rule stepping by ``x / lr`` or ``sin(lr)`` scores
    as well as any, but it is not an optimizer a user can tune: in the 10-minute discovery runs
    such rules held a third of one seed's meta-validated places and, run through their generated
    torch optimizers at the usual learning rates (1e-5 .. 0.1), ended at 108-3,300x tuned AdamW's
    loss (docs/search.md). Nor may lr set anything but the step's size (``m = interp(g, m, lr)``,
    ``clip(g, lr)``): a scheduler or a user's tuning would then change the algorithm. Every zoo
    program the search evaluates is proportional to within 3e-16.
  - **The user's schedule sets the step.** A rule that reads ``step`` may use it for a transient
    (Adam's bias correction, a warm-up) but not as a schedule of its own: from the same weights,
    gradients and states, its updates at steps 100,001-100,004 and 1,000,001-1,000,004 agree
    within 1e-3 (Adam's correction with beta2 = 0.9999 differs by 5e-5 there). The tasks train
    for 60-300 steps under the search's schedule; a step growing as ``sqrt(step)`` (the winner of
    one 10-minute search under a cosine decay, ``cbrt(g / sqrt(v / step^3))``) fits them and is
    30x larger at step 100,000 than at step 100, which no user's schedule expects. A rule whose
    updates are finite early and not there is refused too (``exp(step)``), and so is one whose
    updates at steps 1,000 .. 86,000 (twelve windows 1.5x apart) are not finite or lie outside
    1/100 .. 100x the settled ones: a window where the step explodes or stops, past the tasks and
    the horizon check, which its scores cannot see (a rule that stops at steps 2,000 .. 99,990
    scored exactly as its original), or that are 0 at step 1,000,001 (a rule that stops at step
    1,001 passed every window). A state that counts the steps, its values the same whatever the
    gradients and the weights (``c = c + 1``, or ``c + abs(sign(g))``, which reads g to no effect
    where no coordinate is 0), is ``step`` under another name: the program read with it as ``step``
    takes these checks (a bias correction over a count of the steps a coordinate got a gradient, as
    lazy Adam's, passes), and a state that counts another way (``c = 0.5 c + 1``) is refused.
  - **An exact zero is a gradient too.** A coordinate whose gradient is exactly 0 at every step (a
    constant input feature, a dead unit, an embedding row no batch touches) gets a finite update:
    ``m / sqrt(v)`` without its eps is ``0 / 0`` there, and its exported optimizer turns such
    weights to nan on the first step of real training. The built-in proxies have such coordinates,
    so there the tasks fail the rule anyway; a user's task, or a built-in subset (``--tasks
    quadratic``), may not, and their searches had exported AdamW without its eps. Checked in
    float64 and float32 (an eps of 1e-60 is 0 in float32, where the tasks and users train).

A fifth, **the step lasts**, runs before meta-validation only (:func:`horizon_fault`; it takes
a few hundred times a guard's steps): with stationary gradients the gradient's part of the step
may shrink the way AdaGrad's does (``1/sqrt(t)``) but not vanish or blow up within a few
thousand steps. The tasks last 60-300 steps, so a state that grows by a factor each step
(``m = interp(x, m, 1.038)``: ``m`` times 1.038 per step, an exponential learning-rate decay fitted
to the tasks' length) can win them and then stop training (its step falls to ~1e-7 of its early size by step 1,000).
A slower one (1.014 per step) ends inside any fixed bound at step 1,000, so the check also refuses
a step whose change speeds up: an exponential, where a power law changes at a steady pace.

All run the candidate in float64 on a few steps of two small parameters (and one of each shape
variant its shape tests hold that these miss: a drift only where ``size(w) > 12`` is a drift on
every task) with :class:`search.vectorized.VectorizedStep`, all variants as rows of one batch; a
rule reading ``step`` also at steps 8 .. 512, so a drift or a ``1 / lr`` step that begins at step
5 is seen. IEEE arithmetic is sign-symmetric, so a symmetric rule negates exactly and the
tolerance can be tiny: a drift 1e-5 the size of the gradient term is still caught. Updates that
are not finite are left to the training tasks to judge.

Example:
    >>> from optdsl import parse
    >>> guard(parse("def train(w, g, lr):\\n    return lr * g + 0.01\\n"))
    'drift: the update does not change sign with the gradient and the weights (max asymmetry 0.0317)'
    >>> guard(parse("def train(w, g, lr):\\n    return lr * g\\n")) is None
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from optdsl.equiv import covering_shapes
from optdsl.fingerprint import step_numbers
from optdsl.ir import START_VALUES, Assign, Call, Const, Program, Var

from .vectorized import VectorizedStep

SHAPES = ((3, 4), (5,))
STEPS = 4
TOLERANCE = 1e-9  # relative, in float64: a symmetric rule negates exactly (IEEE ops are sign-symmetric)
LATE_STEPS = 100_000, 1_000_000  # where a rule's use of `step` must have settled ...
SETTLED = 1e-3  # ... to this relative change of its updates
MIDDLE_STEPS = tuple(int(1000 * 1.5**k) for k in range(12))  # 1,000 .. 86,497: between the two ...
MIDDLE_RATIO = 1e-2  # ... the updates' size within this factor of the settled size, both ways


def _shapes(program: Program) -> tuple[tuple[int, ...], ...]:
    return covering_shapes(program, shapes=SHAPES)


def _setup(program: Program, seed: int):
    """``program`` stepping parameters of :data:`SHAPES` and one of every shape variant they miss
    (:func:`~optdsl.equiv.covering_shapes`: a rule that drifts only where ``size(w) > 12`` drifts
    on every task), and a function drawing float64 N(0, 1) values of shape ``(*lead, P)`` from a
    generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    shapes = _shapes(program)
    p = sum(math.prod(s) for s in shapes)
    draw = lambda *lead: torch.randn(*lead, p, generator=gen, dtype=torch.float64)
    return VectorizedStep(program, shapes), draw


def _start(program: Program, steps: int = STEPS):
    """``(step, normal, w0, grads)``: the guards' weights ``(1, P)`` and gradients ``(steps, 1, P)``,
    the first draws of ``normal`` (the same for every check that starts here)."""
    step, normal = _setup(program, 1234)
    return step, normal, normal(1), normal(steps, 1)


def _trajectory(program: Program, lrs: Sequence[float], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Updates ``(4 + len(lrs), T, P)`` at the steps :func:`~optdsl.fingerprint.step_numbers` (``1 ..
    STEPS``, then later ones for a rule reading ``step``: a drift or a gradient ignored from step 5
    on is seen): (w, g), (-w, -g) and (w, g') with fresh g' at lr 0.1, the weights moving; then
    (w, g) at each of ``lrs`` with the weights held, so that the steps differ by lr alone; last (w,
    g) with every third coordinate of g exactly 0, at lr 0.1. All are rows of one batch, in
    ``dtype``."""
    numbers = step_numbers(program, STEPS)
    step, normal, w0, grads = _start(program, len(numbers))
    other = normal(len(numbers), 1).to(dtype)
    w0, grads = w0.to(dtype), grads.to(dtype)
    n, p = len(lrs), w0.shape[1]
    zeros = grads * (torch.arange(p) % 3 != 0)
    w = torch.cat([w0, -w0, w0, w0.expand(n, p), w0])
    lr = torch.tensor([0.1] * 3 + list(lrs) + [0.1], dtype=dtype)[:, None]
    moves = torch.tensor([1.0] * 3 + [0.0] * n + [1.0], dtype=dtype)[:, None]
    states = step.init(w)
    out = []
    for i, t in enumerate(numbers):
        g = torch.cat([grads[i], -grads[i], other[i], grads[i].expand(n, p), zeros[i]])
        update, states = step(w, g, states, lr, t)
        out.append(update)
        w = w - moves * update
    return torch.stack(out, 1)


def _late_updates(program: Program, start: int) -> torch.Tensor:
    """Updates ``(STEPS, P)`` of ``program`` at steps ``start + 1 .. start + STEPS`` from its initial
    states, with :func:`_trajectory`'s weights (held) and gradients at lr 0.1."""
    step, _, w, grads = _start(program)
    states, lr, out = step.init(w), torch.tensor([[0.1]], dtype=torch.float64), []
    for t in range(STEPS):
        update, states = step(w, grads[t], states, lr, start + t + 1)
        out.append(update[0])
    return torch.stack(out)


def _schedule_fault(program: Program) -> str | None:
    """Why ``program``'s use of ``step`` is a schedule of its own, or None (see the module's doc)."""
    early, late = (_late_updates(program, start) for start in LATE_STEPS)
    if not (torch.isfinite(early).all() and torch.isfinite(late).all()):
        return f"its updates are not finite by step {LATE_STEPS[0] + 1:,}"
    change = _relative(early, late)
    if change > SETTLED:
        return (f"its updates still change with step at step {LATE_STEPS[0]:,} (by {change:.3g} to step "
                f"{LATE_STEPS[1]:,}), where the user's lr schedule should set the step")
    settled = float(late.abs().mean())
    if settled == 0:  # every window would lie 'within' 0 of it
        return (f"its updates are 0 at step {LATE_STEPS[1] + 1:,}: it stops training past the tasks, "
                "where the user's lr schedule should set the step")
    for start in MIDDLE_STEPS:
        size = float(_late_updates(program, start).abs().mean())
        if not (math.isfinite(size) and MIDDLE_RATIO * settled <= size <= settled / MIDDLE_RATIO):
            return (f"its updates at step {start + 1:,} are {size:.3g} in size where they settle at "
                    f"{settled:.3g}: a window of its own between the tasks and step {LATE_STEPS[0]:,}")
    return None


def _clock_states(program: Program) -> dict[str, list[torch.Tensor]]:
    """The states whose values are the same whatever the gradients and the weights (two draws, every
    coordinate non-zero, within :data:`TOLERANCE`) and that change over the guards' steps, each with
    its values after steps 1 .. :data:`STEPS`: a count of the steps under another name (a state such
    a rule leaves as it is, or sets to a number, counts nothing). Judged by its values, not its text:
    ``c = c + 1 + 0 * g`` and ``c = c + abs(sign(g))`` read g and count the steps all the same (an
    audit brought a refused ``sqrt(step)`` schedule back through them).

    Example:
        >>> from optdsl import parse
        >>> list(_clock_states(parse("def f(w, g, m, c, lr):\\n    c = c + abs(sign(g))\\n"
        ...                          "    m = interp(g, m, 0.9)\\n    return lr * m * c, m, c\\n")))
        ['c']
    """
    if not program.states:
        return {}
    step, normal, w, grads = _start(program)
    w, other = torch.cat([w, normal(1)]), normal(STEPS, 1)
    states, lr, seen = step.init(w), torch.full((2, 1), 0.1, dtype=torch.float64), []
    for t in range(STEPS):
        _, states = step(w, torch.cat([grads[t], other[t]]), states, lr, t + 1)
        seen.append(dict(zip(step.program.state_names, states)))  # (its program: dead states gone)
    same = lambda a, b: bool(((a == b) | (a.isnan() & b.isnan())).all())
    return {s: [at[s][0] for at in seen] for s in sorted(seen[0])
            if all(_relative(at[s][0], at[s][1]) <= TOLERANCE for at in seen)
            and not all(same(seen[0][s], later[s]) for later in seen[1:])}


def _read_as_step(program: Program, clocks: dict[str, list[torch.Tensor]]) -> Program | None:
    """``program`` with each clock state read as the count of steps it keeps, ``c = c0 + d (step -
    1)`` before the body (its values at the guards' steps are ``c0 + d t``, ``c0`` its start value);
    None where one keeps a count of another kind (``c = 0.9 c + 1``). A count of the steps where the
    gradient is not 0 (lazy Adam's per-coordinate bias correction) or finite (a nan-skipping one)
    then gets the checks ``step`` gets."""
    prologue = []
    for name, values in clocks.items():
        start = START_VALUES.get(program.state(name).init)
        if start is None:  # (a copy of w)
            return None
        d = float(values[0].flatten()[0]) - start
        if not all(bool((v == start + d * t).all()) for t, v in enumerate(values, 1)):
            return None
        step_count = Call("sub", (Var("step"), Const(1.0)))
        prologue.append(Assign(name, Call("add", (Const(start), Call("mul", (Const(d), step_count))))))
    return replace(program, body=(*prologue, *program.body))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max(|a| + |b|)`` over finite entries (0 when both are 0 everywhere)."""
    ok = torch.isfinite(a) & torch.isfinite(b)
    scale = (a.abs() + b.abs())[ok].max() if ok.any() else torch.tensor(0.0)
    if scale == 0:
        return 0.0
    return float((a - b)[ok].abs().max() / scale)


#: Decades below the sweep over which the step must be proportional to lr as well. The tuned lr
#: becomes the generated optimizer's default with the program's own scale folded in, and users and
#: schedulers take it down from there: a 10-minute winner's `max(0.01427, lr) * tanh(...)` was
#: proportional over the sweep (0.04 and up), and no lr trained the breast-cancer MLP with it.
LR_DECADES_BELOW = 4


def _lr_fault(updates: torch.Tensor, lrs: Sequence[float]) -> str | None:
    """Why ``updates`` (one row per lr of ``lrs``, the weights held) are not proportional to lr.
    Rows with a non-finite update are left out: the tasks fail those learning rates, and a rule
    must not pass by breaking at some of them (``arcsin(lr)`` is nan above 1)."""
    per_lr = updates / torch.tensor(lrs, dtype=updates.dtype).reshape(-1, *[1] * (updates.dim() - 1))
    per_lr = per_lr[torch.isfinite(per_lr).flatten(1).all(dim=1)]
    if len(per_lr) < 2:
        return None
    # _relative of each row against the first, all rows at once (the guard runs on every child)
    rest, first = per_lr[1:].flatten(1), per_lr[0].flatten()
    diff, scale = (rest - first).abs().amax(1), (rest.abs() + first.abs()).amax(1)
    spread = float(torch.where(scale > 0, diff / scale, 0.0).max())
    if spread > TOLERANCE:
        return f"the step is not proportional to lr (step / lr varies by {spread:.3g} over the sweep)"
    return None


def guard(program: Program, lrs: Sequence[float] | None = None) -> str | None:
    """``None`` if ``program`` passes the guards, else why it is refused (one line). ``lrs``: the
    learning-rate sweep the steps must be proportional over (default: the search's, ``CANDIDATE_LRS``).

    Checks ``u(-w, -g) = -u(w, g)``, ``u(w, g') != u(w, g)``, ``u(lr_k) / lr_k`` constant over ``k``
    (the sweep and :data:`LR_DECADES_BELOW` decades below it), ``u`` finite where g is exactly 0
    and, for a rule reading ``step``, ``u(t = 10^5 + i) = u(t = 10^6 + i)`` within 1e-3.

    Example:
        >>> from optdsl import load, parse
        >>> guard(load("lion")) is None
        True
        >>> guard(parse("def train(w, g, lr):\\n    return lr * 0.01 * w\\n"))
        'ignores the gradient: other gradients give the same updates'
        >>> guard(parse("def train(w, g, lr):\\n    return sin(lr) * g\\n"))[:27]
        'lr is not a learning rate: '
        >>> guard(parse("def train(w, g, step, lr):\\n    return lr * g * sqrt(step)\\n"))[:25]
        'a schedule of its own: it'
        >>> no_eps = "def f(w, g, v, lr):\\n    v = interp(g * g, v, 0.9)\\n    return lr * g / sqrt(v), v\\n"
        >>> guard(parse(no_eps))
        'not finite where a gradient coordinate is exactly 0 (0 / 0: guard the division with an eps)'
    """
    if lrs is None:
        from .evaluate import CANDIDATE_LRS  # the evaluator imports this module

        lrs = CANDIDATE_LRS
    lrs = (*(min(lrs) * 10.0**-k for k in range(LR_DECADES_BELOW, 0, -1)), *lrs)
    with torch.no_grad():
        u = _trajectory(program, lrs)
    if not torch.isfinite(u[:3]).all():
        return None  # non-finite updates: the tasks fail the candidate where it matters
    asymmetry = _relative(u[0], -u[1])
    if asymmetry > TOLERANCE:
        return ("drift: the update does not change sign with the gradient and the weights "
                f"(max asymmetry {asymmetry:.3g})")
    if _relative(u[0], u[2]) <= TOLERANCE:
        return "ignores the gradient: other gradients give the same updates"
    shapes = _shapes(program)
    ends = list(itertools.accumulate(math.prod(shape) for shape in shapes))
    for shape, start, end in zip(shapes, [0, *ends], ends):
        if end > start and _relative(u[0, :, start:end], u[2, :, start:end]) <= TOLERANCE:
            return (f"ignores the gradient of a parameter of shape {shape}: other gradients give the same "
                    "updates")
    fault = _lr_fault(u[3:-1], lrs)
    if fault is not None:
        return f"lr is not a learning rate: {fault}"
    zero = "not finite where a gradient coordinate is exactly 0 (0 / 0: guard the division with an eps)"
    if not torch.isfinite(u[-1]).all():
        return zero
    with torch.no_grad():
        # in float32 too, where the tasks and users train (an eps of 1e-60 is 0 there)
        if not torch.isfinite(_trajectory(program, lrs, torch.float32)[-1]).all():
            return zero
        clocks = _clock_states(program)
    if clocks:  # step under another name: step's checks, or a refusal where it is no count of them
        counted, name = _read_as_step(program, clocks), next(iter(clocks))
        if counted is None:
            return f"a schedule of its own: state {name} counts the steps its own way; read step instead"
        with torch.no_grad():
            fault = _schedule_fault(counted)
        if fault is not None:
            return f"a schedule of its own: state {name} counts the steps, and {fault}"
    if program.uses("step"):
        with torch.no_grad():
            fault = _schedule_fault(program)
        return None if fault is None else f"a schedule of its own: {fault}"
    return None


HORIZON = 1000  # steps of the long run
HORIZON_RATIO = 1e-3  # the step at the end over the step early on must lie in [ratio, 1 / ratio]
# the log-change over [s/4, s/2) -> [s/2, s) may be at most 1.3x that over [s/8, s/4) -> [s/4, s/2), + 0.15
ACCELERATION = 1.3, 0.15


def horizon_fault(program: Program, steps: int = HORIZON) -> str | None:
    """Why ``program``'s step does not last ``steps`` steps, or None.

    With the weights held and stationary N(0, 1) gradients, ``d_t = |u(w, g_t) - u(w, -g_t)| / 2``
    (the gradient's part of the step: weight decay cancels) is averaged over windows; every step
    must be finite and

    - the last tenth over ``[s/10, s/5)`` must lie in ``[1e-3, 1e3]`` (AdaGrad's ratio is ~0.43;
      a state growing 3.8% per step gives ~1e-7);
    - the change must not speed up: over the doubling windows ``D_1 = [s/8, s/4)``,
      ``D_2 = [s/4, s/2)``, ``D_3 = [s/2, s)``, ``|log(D_2 / D_3)| <= 1.3 |log(D_1 / D_2)| + 0.15``.
      A power law ``t^-p`` (AdaGrad, an EMA of ``g^2`` before it settles) changes by the same
      factor ``2^p`` from each window to the next; a step decaying as ``c^t`` changes by the
      square of the previous factor, a schedule fitted to the tasks' length that falls to nothing
      past it (a state growing 1.4% per step halves the step every ~100 steps and overflows float32
      near step 6,300). A window where the step is 0 throughout has stopped: it does not last.

    Example:
        >>> from optdsl import load, parse
        >>> horizon_fault(load("adamw")) is None
        True
        >>> horizon_fault(parse("def train(w, g, m, lr):\\n    m = interp(g * g, m, 1.038)\\n"
        ...                     "    return lr * g / sqrt(m), m\\n"))
        'the step does not last: its gradient part falls to 3.2e-07 of its early size by step 1000'
    """
    step, normal = _setup(program, 4321)
    w = normal(1).expand(2, -1)
    sign = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    lr = torch.full((2, 1), 0.1, dtype=torch.float64)
    with torch.no_grad():
        states, sizes = step.init(w), []
        for t in range(1, steps + 1):
            update, states = step(w, sign * normal(1), states, lr, t)
            sizes.append(float((update[0] - update[1]).abs().mean()) / 2)
    sizes = torch.tensor(sizes, dtype=torch.float64)
    if not torch.isfinite(sizes).all():
        return f"the step does not last: not finite at step {int((~torch.isfinite(sizes)).nonzero()[0]) + 1}"
    early, late = float(sizes[steps // 10: steps // 5].mean()), float(sizes[-(steps // 10):].mean())
    if early == 0:  # (a rule that stops after the tasks' length had passed here)
        return f"the step does not last: its gradient part is 0 over steps {steps // 10}-{steps // 5}"
    ratio = late / early
    if not HORIZON_RATIO <= ratio <= 1 / HORIZON_RATIO:
        change = "falls" if ratio < 1 else "grows"
        return f"the step does not last: its gradient part {change} to {ratio:.2g} of its early size by step {steps}"
    windows = [(steps // k, steps // (k // 2)) for k in (8, 4, 2)]
    means = [float(sizes[lo:hi].mean()) for lo, hi in windows]
    if 0 in means:  # no log-change to compare: the step stopped for a whole window
        lo, hi = windows[means.index(0)]
        return f"the step does not last: its gradient part is 0 over steps {lo}-{hi}"
    first, second = math.log(means[0] / means[1]), math.log(means[1] / means[2])
    factor, slack = ACCELERATION
    if abs(second) > factor * abs(first) + slack:
        (a1, b1), (a2, b2), (a3, b3) = windows
        return (f"the step does not last: its gradient part changes {math.exp(abs(first)):.3g}x from steps "
                f"{a1}-{b1} to {a2}-{b2}, then {math.exp(abs(second)):.3g}x to {a3}-{b3}: "
                "a schedule fitted to the tasks' length")
    return None


__all__ = ["guard", "horizon_fault"]
