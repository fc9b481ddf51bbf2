"""Numeric fingerprint: a hash of what a program does on fixed inputs (the functional cache key).

Two programs that compute the same updates get the same fingerprint whatever their text: the
search uses it to skip evaluating functional duplicates (AutoML-Zero's functional-equivalence
cache; the Lion search's "hash of how outputs are computed").

The program runs ``steps`` steps of the reference interpreter (float64) on a 1-d and a 2-d
parameter (and one of each shape its shape tests tell apart that these miss) with weights and
gradients drawn from a fixed seed, the gradients with coordinates exactly 0 and larger ones, as in
training; a program reading ``step`` runs later steps too, and one with a state that counts the
steps (``step`` under another name: ``c = c + 1``) runs on to them. Each update is rounded to
``DIGITS`` significant digits, and values smaller than ``FLUSH`` times the largest one are flushed
to zero, so float noise (``(a + b) - b`` vs ``a``) does not split equal programs; nan, +inf and
-inf hash as themselves. A parameter the program cannot run on (``rowmean`` of a 1-d one) is left
out, and that fact is hashed.

Example:
    >>> from optdsl import load, parse
    >>> a = load("sgd")
    >>> b = parse("def sgd2(w, g, lr=0.01):\\n    x = g * 2\\n    return lr * (x - g)\\n")
    >>> fingerprint(a) == fingerprint(b)
    True
"""

from __future__ import annotations

import hashlib

import numpy as np

from .equiv import covering_shapes
from .errors import DslError
from .interpreter import Interpreter
from .ir import Program
from .passes import eliminate_dead_code, fold

SHAPES = ((6,), (4, 5))
DIGITS = 7
FLUSH = 1e-9
#: Where a program reading ``step`` is run after its first steps: doubling through the 60-300 steps
#: search tasks train for, so a use of ``step`` that starts later (``min(step, 4.5)`` in a bias
#: correction, a gate ``step > 4``) changes the updates seen.
LATER_STEPS = (8, 16, 32, 64, 128, 256, 512)


def _folded(program: Program) -> Program:
    """What decides the runs' inputs: the program as its canonical form sees it (a shape test or a
    read of ``step`` that folding removes changes no key, as canonicalizing it changes none)."""
    return eliminate_dead_code(fold(program))


def step_numbers(program: Program, steps: int = 4) -> tuple[int, ...]:
    """The step numbers ``program`` is run at: ``1 .. steps``, then, if its folded live part reads
    ``step``, :data:`LATER_STEPS` (the steps between skipped: a rule means the same at any step
    count; a dead or folded read changes nothing, so it changes no key).

    Example:
        >>> from optdsl import load
        >>> step_numbers(load("sgd")), step_numbers(load("adam"))[:6]
        ((1, 2, 3, 4), (1, 2, 3, 4, 8, 16))
    """
    return _numbers(_folded(program), steps)


def _numbers(folded: Program, steps: int) -> tuple[int, ...]:
    later = tuple(t for t in LATER_STEPS if t > steps) if folded.uses("step") else ()
    return (*range(1, steps + 1), *later)


def quantize(x: np.ndarray, digits: int = DIGITS) -> bytes:
    """``x`` rounded to ``digits`` significant digits (tiny values flushed), as bytes:
    ``x = 0`` where ``|x| <= FLUSH * max|x|``, else ``round(x / 10^(floor(log10|x|) - digits + 1))``
    with its decade; nan, inf and -inf are coded apart.

    Example:
        >>> quantize(np.array([1.0, 2.0])) == quantize(np.array([1.0000001, 2.0]))  # 8th digit: same
        True
        >>> quantize(np.array([1.0, 2.0])) == quantize(np.array([1.000001, 2.0]))  # 7th digit: differs
        False
        >>> quantize(np.array([1.0, 1e-12])) == quantize(np.array([1.0, 0.0]))  # flushed to zero
        True
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    vals = np.where(finite, x, 0.0)
    scale = np.max(np.abs(vals), initial=0.0)
    vals = np.where(np.abs(vals) <= FLUSH * scale, 0.0, vals)
    mag = np.floor(np.log10(np.where(vals == 0, 1.0, np.abs(vals))))
    mantissa = np.round(vals / 10.0 ** (mag - digits + 1))
    # Rounding may carry into the next decade (9.9999999 -> 10.000000): renormalise.
    carry = np.abs(mantissa) >= 10**digits
    mantissa = np.where(carry, np.round(mantissa / 10), mantissa)
    mag = np.where(carry, mag + 1, mag)
    code = np.where(np.isnan(x), 1, np.where(x == np.inf, 2, np.where(x == -np.inf, 3, 0)))
    return b"".join(a.astype(np.int64).tobytes() for a in (mantissa + 0.0, mag, code))


def _kinds(shape: tuple[int, ...]) -> np.ndarray:
    """Each coordinate's kind for :func:`_as_in_training`: its position modulo 5, and 5 for the last
    row of a matrix of several rows."""
    kind = np.arange(int(np.prod(shape))).reshape(shape) % 5
    if len(shape) >= 2 and shape[-2] > 1:
        kind[..., -1, :] = 5
    return kind


def _as_in_training(g: np.ndarray, step: int) -> np.ndarray:
    """A N(0, 1) gradient ``g`` given what real gradients have and N(0, 1) draws never do, one kind
    of coordinate each, by position after the first (kept as drawn, so that a tensor of one element
    still sees its gradient): exactly 0 at every step (a constant input feature), 0 from the second
    step on (a unit that died), 100 times the draw; and, in a matrix of several rows, a last row 0 at
    every step (an embedding row no batch touches). Without them, momentum and momentum frozen where
    ``g == 0``, ``clip(g, 6)`` and ``g`` shared a key, and the second took the first's score (an
    audit). No coordinate is tiny: an eps far below the draws' scale stays unseen, so that near-copies
    differing in it (eps 1e-8 or 1.4e-8) are one rule, held out once (``g / (|g| + 1e-7)`` and
    ``sign(g)`` share a key too)."""
    kind = _kinds(g.shape)
    g = np.where(kind == 3, 1e2 * g, g)
    return np.where((kind == 1) | ((kind == 2) & (step > 1)) | (kind == 5), 0.0, g)


def _counts_steps(trace: list[dict], params: dict) -> bool:
    """Does a state of the run ``trace`` (the states after each step) count the steps: one value at
    every coordinate whose gradient is never 0, in every parameter, a value that changes over the
    steps? (``c = c + 1``, or ``c + abs(sign(g))``, which counts the steps wherever g is not 0.)"""
    drawn = {p: np.isin(_kinds(w.shape), (0, 3, 4)) for p, w in params.items()}

    def one_value(state: str, states: dict) -> float | None:
        values = np.concatenate([np.ravel(v[state][drawn[p]] if v[state].shape == drawn[p].shape else v[state])
                                 for p, v in states.items() if state in v] or [np.empty(0)])
        uniform = values.size and np.isfinite(values).all() and (values == values[0]).all()
        return float(values[0]) if uniform else None

    # (the states of every parameter: one a shape's path does not read is not kept for that shape)
    for state in sorted({s for v in trace[0].values() for s in v} if trace else ()):
        seen = [one_value(state, states) for states in trace]
        if None not in seen and len(set(seen)) > 1:
            return True
    return False


def _inputs(folded: Program, seed: int, steps: int) -> tuple[dict, list[dict]]:
    """The fixed weights (one parameter per shape of ``SHAPES``, and one for each shape variant of
    the folded program they miss: :func:`~optdsl.equiv.covering_shapes`) and ``steps`` gradients of
    a seed (the first the same whatever ``steps``), each :func:`_as_in_training`."""
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.normal(size=s) for i, s in enumerate(covering_shapes(folded, shapes=SHAPES))}
    return params, [{n: _as_in_training(rng.normal(size=p.shape), t) for n, p in params.items()}
                    for t in range(1, steps + 1)]


def _runnable(opt: Interpreter, params: dict) -> tuple[dict, list[str]]:
    """The parameters the program can run on, and the names of those it cannot (rowmean of a 1-d one)."""
    left_out = []
    for name, value in params.items():
        try:
            opt.spec(value.shape)
        except DslError:
            left_out.append(name)
    return {n: v for n, v in params.items() if n not in left_out}, left_out


def step_scale(program: Program, values: dict[str, float] | None = None, seed: int = 0) -> float:
    """The size of the first step on the fingerprint's inputs, at lr = 1e-3: ``max |u_1|`` over
    its finite entries (0 if there are none or the program cannot run).

    A program whose step is proportional to lr (every program the search scores) and the same
    program times a constant ``c`` have scales in the ratio ``c``: what a tuned learning rate
    absorbs.

    Example:
        >>> from optdsl import parse
        >>> a = parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * sign(m), m\\n")
        >>> b = parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n"
        ...           "    return 0.25 * lr * sign(m), m\\n")
        >>> step_scale(a), step_scale(b)
        (0.001, 0.00025)
    """
    params, grads = _inputs(_folded(program), seed, 1)
    return _first_step_size(program, values, params, grads[0])


def _first_step_size(program: Program, values: dict[str, float] | None, params: dict, grad: dict) -> float:
    opt = Interpreter(program, np.float64, **{**program.hyper_defaults, **(values or {}), "lr": 1e-3})
    params, _ = _runnable(opt, params)
    try:
        with np.errstate(all="ignore"):
            updates, _ = opt.updates(params, grad, opt.init(params), 1)
    except DslError:
        return 0.0
    finite = [np.abs(u[np.isfinite(u)]) for u in updates.values()]
    return float(max((np.max(u, initial=0.0) for u in finite), default=0.0))


def fingerprint(program: Program, values: dict[str, float] | None = None, steps: int = 4,
                seed: int = 0, digits: int = DIGITS, scale_free: bool = False) -> str:
    """Hex digest of the rounded updates of ``steps`` interpreter steps on fixed random inputs
    (and, for a program reading ``step``, of :func:`step_numbers`' later ones).

    Hyperparameters take their defaults, or ``values``; a program without a default lr runs with
    lr = 1e-3. Fewer ``digits`` make a coarser key that also merges near-duplicates (programs
    whose updates agree to that many significant digits), as the search does. ``scale_free``:
    the program runs at ``lr = 1e-3 * 1e-3 / step_scale(program)``, the lr at which its first
    step's largest entry is 1e-3, so a program and the same one times a constant (``0.5 * lr * u`` and
    ``lr * u``: one rule, which a tuned learning rate cannot tell apart) share the key.

    Example:
        >>> from optdsl import load, parse
        >>> twice = parse("def f(w, g, lr=0.01):\\n    return lr * (2 * g - g)\\n")
        >>> fingerprint(load("sgd")) == fingerprint(twice)
        True
        >>> half = parse("def f(w, g, lr=0.01):\\n    return 0.5 * lr * g\\n")
        >>> fingerprint(half) == fingerprint(load("sgd")), fingerprint(half, scale_free=True) == fingerprint(
        ...     load("sgd"), scale_free=True)
        (False, True)
    """
    h = hashlib.blake2b(digest_size=16)
    folded = _folded(program)  # (what picks the inputs: read once, the search's hot path)
    numbers = _numbers(folded, steps)
    params, grads = _inputs(folded, seed, len(numbers))
    hyper = {"lr": 1e-3, **program.hyper_defaults, **(values or {})}
    if scale_free:  # step_scale, on the same first weights and gradient
        scale = _first_step_size(program, values, params, grads[0])
        hyper["lr"] = 1e-6 / scale if 0 < scale < np.inf else 1e-3
    opt = Interpreter(program, np.float64, **hyper)
    # A parameter the program cannot handle (rowmean of a 1-d one) is left out, and that fact is
    # hashed rather than the error's wording, which depends on the program's text.
    params, left_out = _runnable(opt, params)
    for name in left_out:
        h.update(b"cannot run:" + name.encode())
    try:
        trace = _run(h, opt, params, zip(numbers, grads), numbers, digits)
        # A count read where step is not: run step by step, the count reaching LATER_STEPS. (Where
        # step is read, the later steps already move the key; 2.7% of a search's programs, a count of
        # another kind among them, would each take ~0.3 s to run so.)
        if not folded.uses("step") and _counts_steps(trace, params):
            h.update(b"counts the steps")
            _, grads = _inputs(folded, seed, LATER_STEPS[-1])
            _run(h, opt, params, enumerate(grads, 1), [t for t in LATER_STEPS if t > steps], digits)
    except DslError:
        h.update(b"error")
    return h.hexdigest()


def _run(h, opt: Interpreter, params: dict, steps, hashed, digits: int) -> list[dict]:
    """Step ``params`` through ``steps`` (pairs of a step number and its gradients), hashing the
    updates of the step numbers in ``hashed`` into ``h``; the states after each step."""
    state, trace = opt.init(params), []
    for t, grad in steps:
        updates, state = opt.updates(params, {n: grad[n] for n in params}, state, t)
        trace.append(state)
        if t in hashed:
            for name in sorted(updates):
                h.update(quantize(updates[name], digits))
        with np.errstate(all="ignore"):  # non-finite updates hash as such
            params = {n: params[n] - updates[n] for n in params}
    return trace


__all__ = ["fingerprint", "quantize", "step_numbers", "step_scale"]
