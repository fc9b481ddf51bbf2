"""What the search learns about a child before evaluating it: its live part and its cache keys.

Dead statements (and dead states) are dropped (:func:`optdsl.passes.eliminate_dead_code`); the
structural hash (:func:`optdsl.canonical.structural_hash`) is equal for programs that differ only
by names or the order of independent statements; the fingerprint
(:func:`optdsl.fingerprint.fingerprint`) is equal for programs that compute the same updates on
fixed inputs, rounded to :data:`FINGERPRINT_DIGITS` significant digits, so near-duplicates (a
constant changed in its fourth digit, ``eps`` 1e-8 vs 2e-8) share it too. A child whose hash or
fingerprint was seen before takes the earlier fitness.

Example:
    >>> from search.warm_start import adamw_program
    >>> info = describe(adamw_program())
    >>> info["n_live"] == info["n_statements"], info["memory"]
    (True, 2.0)
"""

from __future__ import annotations

import numpy as np

from optdsl.canonical import structural_hash
from optdsl.cost import memory_per_param
from optdsl.fingerprint import fingerprint
from optdsl.ir import Program
from optdsl.passes import eliminate_dead_code
from optdsl.printer import to_source

#: Significant digits of the functional cache key: updates that agree to 4 digits over the
#: fingerprint's steps train the proxies indistinguishably (their scores differ by noise).
FINGERPRINT_DIGITS = 4


def describe(program: Program, known: dict | None = None) -> dict:
    """``source``, ``live_source``, ``structural_hash``, ``fingerprint``, ``memory`` (states per
    parameter), ``n_statements`` and ``n_live`` (statements that reach an output).

    ``known`` may carry keys already computed (``structural_hash``, or the ``fingerprint`` of a
    structurally equal program): the fingerprint runs the interpreter and is the costly part."""
    known = known or {}
    live = eliminate_dead_code(program)
    fp = known.get("fingerprint")
    if fp is None:
        with np.errstate(all="ignore"):  # a candidate's nan/inf updates are a fact, not a warning
            fp = fingerprint(live, digits=FINGERPRINT_DIGITS)
    return {
        "source": to_source(program),
        "live_source": to_source(live),
        "structural_hash": known.get("structural_hash") or structural_hash(program),
        "fingerprint": fp,
        "memory": float(memory_per_param(live)),
        "n_statements": len(program.body),
        "n_live": len(live.body),
    }
