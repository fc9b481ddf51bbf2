"""Numeric fingerprint: a hash of what a program does on fixed inputs (the functional cache key).

Two programs that compute the same updates get the same fingerprint whatever their text: the
search uses it to skip evaluating functional duplicates (AutoML-Zero's functional-equivalence
cache; the Lion search's "hash of how outputs are computed").

The program runs ``steps`` steps of the reference interpreter (float64) on a 1-d and a 2-d
parameter with weights and gradients drawn from a fixed seed. Each update is rounded to
``DIGITS`` significant digits, and values smaller than ``FLUSH`` times the largest one are
flushed to zero, so float noise (``(a + b) - b`` vs ``a``) does not split equal programs; nan,
+inf and -inf hash as themselves. A parameter the program cannot run on (``rowmean`` of a 1-d
one) is left out, and that fact is hashed.

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

from .errors import DslError
from .interpreter import Interpreter
from .ir import Program

SHAPES = ((6,), (4, 5))
DIGITS = 7
FLUSH = 1e-9


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


def fingerprint(program: Program, values: dict[str, float] | None = None, steps: int = 4,
                seed: int = 0, digits: int = DIGITS) -> str:
    """Hex digest of the rounded updates of ``steps`` interpreter steps on fixed random inputs.

    Hyperparameters take their defaults, or ``values``; a program without a default lr runs with
    lr = 1e-3. Fewer ``digits`` make a coarser key that also merges near-duplicates (programs
    whose updates agree to that many significant digits), as the search does.
    Example: ``fingerprint(p) == fingerprint(simplify(p))``.
    """
    h = hashlib.blake2b(digest_size=16)
    hyper = {"lr": 1e-3, **program.hyper_defaults, **(values or {})}
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.normal(size=s) for i, s in enumerate(SHAPES)}
    grads = [{n: rng.normal(size=p.shape) for n, p in params.items()} for _ in range(steps)]
    opt = Interpreter(program, np.float64, **hyper)
    # A parameter the program cannot handle (rowmean of a 1-d one) is left out, and that fact is
    # hashed rather than the error's wording, which depends on the program's text.
    for name in list(params):
        try:
            opt.spec(params[name].shape)
        except DslError:
            del params[name]
            h.update(b"cannot run:" + name.encode())
    try:
        state = opt.init(params)
        for t in range(1, steps + 1):
            updates, state = opt.updates(params, {n: grads[t - 1][n] for n in params}, state, t)
            for name in sorted(updates):
                h.update(quantize(updates[name], digits))
            with np.errstate(all="ignore"):  # non-finite updates hash as such
                params = {n: params[n] - updates[n] for n in params}
    except DslError:
        h.update(b"error")
    return h.hexdigest()


__all__ = ["fingerprint", "quantize"]
