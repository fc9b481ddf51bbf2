"""Guards: cheap checks that refuse a rule before any training, for exploits no task should reward.

Two properties every sensible update rule has, checked on a fixed synthetic trajectory:

  - **No drift.** Flipping the sign of the parameters and of every gradient flips the sign of
    every update: ``u(-w, -g_1..t) = -u(w, g_1..t)``. SGD, momentum, Adam/AdamW, Lion, LAMB,
    Adafactor all have this symmetry; a rule that adds a constant to every coordinate
    (``update + 0.0155``) or steps by an even function of the gradient (``lr * abs(g)``) does
    not: it moves the weights in one direction whatever the loss says, and small proxies can
    reward that by chance.
  - **The gradient matters.** Running the same trajectory with other gradients changes the
    updates. A rule that only decays the weights, or returns a constant, does not train.

Both run the candidate in float64 on a few steps of two small parameters with
:class:`search.vectorized.VectorizedStep`, all variants as rows of one batch. IEEE arithmetic is
sign-symmetric, so a symmetric rule negates exactly and the tolerance can be tiny: a drift
1e-5 the size of the gradient term is still caught. Updates that are not finite are
left to the training tasks to judge.

Example:
    >>> from optdsl import parse
    >>> guard(parse("def train(w, g, lr):\\n    return lr * g + 0.01\\n"))
    'drift: the update does not change sign with the gradient and the weights (max asymmetry 1)'
    >>> guard(parse("def train(w, g, lr):\\n    return lr * g\\n")) is None
    True
"""

from __future__ import annotations

import math

import torch

from optdsl.ir import Program

from .vectorized import VectorizedStep

SHAPES = ((3, 4), (5,))
STEPS = 4
TOLERANCE = 1e-9  # relative, in float64: a symmetric rule negates exactly (IEEE ops are sign-symmetric)


def _trajectory(program: Program) -> torch.Tensor:
    """Updates ``(3, STEPS, P)`` of three runs: (w, g), (-w, -g) and (w, g') with fresh g'."""
    gen = torch.Generator().manual_seed(1234)
    p = sum(math.prod(s) for s in SHAPES)
    w0 = torch.randn(1, p, generator=gen, dtype=torch.float64)
    grads = torch.randn(STEPS, 1, p, generator=gen, dtype=torch.float64)
    other = torch.randn(STEPS, 1, p, generator=gen, dtype=torch.float64)
    step = VectorizedStep(program, SHAPES)
    w = torch.cat([w0, -w0, w0])
    lr = torch.full((3, 1), 0.1, dtype=torch.float64)
    states = step.init(w)
    out = []
    for t in range(1, STEPS + 1):
        g = torch.cat([grads[t - 1], -grads[t - 1], other[t - 1]])
        update, states = step(w, g, states, lr, t)
        out.append(update)
        w = w - update
    return torch.stack(out, 1)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max(|a| + |b|)`` over finite entries (0 when both are 0 everywhere)."""
    ok = torch.isfinite(a) & torch.isfinite(b)
    scale = (a.abs() + b.abs())[ok].max() if ok.any() else torch.tensor(0.0)
    if scale == 0:
        return 0.0
    return float((a - b)[ok].abs().max() / scale)


def guard(program: Program) -> str | None:
    """``None`` if ``program`` passes both guards, else why it is refused (one line)."""
    with torch.no_grad():
        u = _trajectory(program)
    if not torch.isfinite(u).all():
        return None  # non-finite updates: the tasks fail the candidate where it matters
    asymmetry = _relative(u[0], -u[1])
    if asymmetry > TOLERANCE:
        return ("drift: the update does not change sign with the gradient and the weights "
                f"(max asymmetry {asymmetry:.3g})")
    if _relative(u[0], u[2]) <= TOLERANCE:
        return "ignores the gradient: other gradients give the same updates"
    return None


__all__ = ["guard"]
