"""What the search learns about a child before evaluating it: its live part and its cache keys.

Dead statements (and dead states) are dropped (:func:`optdsl.passes.eliminate_dead_code`), and so
are states that stay at their start value (:func:`optdsl.passes.eliminate_constant_states`: a child
whose ``m = sign(m)`` keeps m at 0 needs no memory for it, and computes what the same program
reading 0 computes); the structural hash (:func:`optdsl.canonical.structural_hash`) is equal for
programs that differ only by names or the order of independent statements; the fingerprint
(:func:`optdsl.fingerprint.fingerprint`, scale-free) is equal for programs that compute the same
updates on fixed inputs up to a constant factor, rounded to :data:`FINGERPRINT_DIGITS` significant
digits, so near-duplicates (``eps`` 1e-8 vs 2e-8; a constant changed in its fourth digit moves
some of the probed updates across a rounding edge, and mostly does not share it) and
rescalings (``update = 0.99 * t``: a learning rate 0.99 times smaller, which the search's sweeps
tune away) share it too. A child whose hash or fingerprint was seen before takes the earlier
fitness, and the earlier learning rates times :func:`lr_factor`.

Example:
    >>> from search.warm_start import adamw_program
    >>> info = describe(adamw_program())
    >>> info["n_live"] == info["n_statements"], info["memory"]
    (True, 2.0)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from optdsl.canonical import structural_hash
from optdsl.cost import memory_per_param
from optdsl.errors import DslError
from optdsl.fingerprint import fingerprint, step_scale
from optdsl.ir import Program
from optdsl.parser import parse
from optdsl.passes import eliminate_constant_states, eliminate_dead_code
from optdsl.printer import to_source

#: Significant digits of the functional cache key: updates that agree to 4 digits over the
#: fingerprint's steps train the proxies indistinguishably (their scores differ by noise).
FINGERPRINT_DIGITS = 4


def live_part(program: Program) -> Program:
    """``program`` without dead code and without states that stay at their start value: what
    the search keys and counts (it trains the program itself: the same values).

    Example:
        >>> from optdsl import parse
        >>> p = parse("def train(w, g, m, v, lr):\\n    v = sign(v)\\n    m = interp(g, m, 0.9)\\n"
        ...           "    return lr * (m + v), m, v\\n")
        >>> live_part(p).state_names
        ('m',)
    """
    return eliminate_constant_states(eliminate_dead_code(program))


def describe(program: Program, known: dict | None = None) -> dict:
    """``source``, ``live_source``, ``structural_hash``, ``fingerprint``, ``memory`` (states per
    parameter), ``n_statements`` and ``n_live`` (statements that reach an output).

    ``known`` may carry what is already computed (``live``: the program without dead code, or
    the ``fingerprint`` of a structurally equal program): the fingerprint runs the interpreter
    and is the costly part. Both keys are taken from the live part, which has the same
    canonical form as the whole program and is a third of its size in a long search.

    Example (the momentum feeds nothing: its statement and state are dead):
        >>> from optdsl import parse
        >>> p = parse("def train(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * g, m\\n")
        >>> info = describe(p)
        >>> info["n_statements"], info["n_live"], info["memory"]
        (1, 0, 0.0)
        >>> print(info["live_source"], end="")
        def train(w, g, lr):
            return lr * g
    """
    known = known or {}
    live = known.get("live") or live_part(program)
    fp = known.get("fingerprint")
    if fp is None:
        with np.errstate(all="ignore"):  # a candidate's nan/inf updates are a fact, not a warning
            fp = fingerprint(live, digits=FINGERPRINT_DIGITS, scale_free=True)
    return {
        "source": to_source(program),
        "live_source": known.get("live_source") or to_source(live),
        "structural_hash": known.get("structural_hash") or structural_hash(live),
        "fingerprint": fp,
        "memory": float(memory_per_param(live)),
        "n_statements": len(program.body),
        "n_live": len(live.body),
    }


@functools.lru_cache(maxsize=1024)
def _scale(live_source: str) -> float:
    return step_scale(parse(live_source, "<store>"))


@functools.lru_cache(maxsize=1024)
def rule_key(live_source: str) -> str:
    """The fingerprint :func:`describe` gives a stored live part today (a database written before
    fingerprints were scale-free holds others): one key per rule up to the learning rate.

    Example:
        >>> rule_key("def f(w, g, lr):\\n    return lr * g\\n") == rule_key(
        ...     "def f(w, g, lr):\\n    return lr * (g - 0.01 * g)\\n")
        True
    """
    try:
        program = parse(live_source, "<store>")
    except DslError:  # a damaged row: its own key
        return live_source
    with np.errstate(all="ignore"):
        return fingerprint(program, digits=FINGERPRINT_DIGITS, scale_free=True)


def lr_factor(hit: dict, info: dict) -> float:
    """What the learning rates tuned for the scored row ``hit`` are multiplied by for the program
    described by ``info``, which shares its fingerprint: ``step_scale(hit) / step_scale(program)``
    (1 for the same live part or structural hash; the fingerprint is scale-free, the rates not).

    Example (twice the step: half the learning rate):
        >>> from optdsl import parse
        >>> sgd = describe(parse("def f(w, g, lr):\\n    return lr * g\\n"))
        >>> twice = describe(parse("def f(w, g, lr):\\n    return 2 * lr * g\\n"))
        >>> twice["fingerprint"] == sgd["fingerprint"], lr_factor(sgd, twice)
        (True, 0.5)
    """
    if hit["structural_hash"] == info["structural_hash"]:
        return 1.0
    ours, theirs = _scale(info["live_source"]), _scale(hit["live_source"])
    return theirs / ours if ours > 0 and theirs > 0 else 1.0


def same_rule(hit: dict, info: dict, grid: Sequence[float]) -> tuple[bool, dict | None]:
    """Does the scored row ``hit``, which shares the fingerprint of the program ``info`` describes,
    stand for it, and with which learning rates (task -> lr)? The fingerprint is scale-free, the
    sweep over ``grid`` is not: a rescaled program is the same rule only where the hit's tuned
    learning rates and the rescaled ones (:func:`lr_factor`) lie one grid point or more inside
    the grid's ends (``lr * 1e-05 * g``, tuned at the grid's end, scores worse than ``lr * g``).
    A refusal by the guards stands for every rescaling: none of them changes it.

    Example:
        >>> from optdsl import parse
        >>> grid = (0.01, 0.1, 1.0, 10.0, 100.0)
        >>> sgd = {**describe(parse("def f(w, g, lr):\\n    return lr * g\\n")), "status": "ok"}
        >>> twice = describe(parse("def f(w, g, lr):\\n    return 2 * lr * g\\n"))
        >>> same_rule({**sgd, "task_lr": {"mlp": 1.0}}, twice, grid)
        (True, {'mlp': 0.5})
        >>> same_rule({**sgd, "task_lr": {"mlp": 0.1}}, twice, grid)   # 0.05: past the grid's inner points
        (False, {'mlp': 0.05})
    """
    factor = lr_factor(hit, info)
    lrs = hit["task_lr"] or {}
    rescaled = {task: lr * factor for task, lr in lrs.items()}
    if factor == 1.0 or hit["status"] == "guard":
        return True, hit["task_lr"] and rescaled
    inside = all(grid[1] <= lr <= grid[-2] for lr in (*lrs.values(), *rescaled.values()))
    return bool(lrs) and inside, rescaled


#: What programs with the same live part share (their rows differ only in source and length).
SAME_LIVE_PART = ("live_source", "structural_hash", "fingerprint", "memory", "n_live")


class Seen:
    """The search's functional cache: scored rows by live source, structural hash and fingerprint,
    looked up cheapest first. Most children differ from a scored program only in dead code (a
    long search's programs are ~3/4 redundant statements), and their printed live part finds
    that program before any hash or interpreter run.

    Example:
        >>> from search.warm_start import adamw_program
        >>> seen = Seen()
        >>> info, hit = seen.describe(adamw_program())
        >>> seen.add({**info, "id": 1}); seen.describe(adamw_program())[1]["id"]
        1
    """

    def __init__(self):
        self.by_live: dict[str, dict] = {}
        self.by_hash: dict[str, dict] = {}
        self.by_fingerprint: dict[str, dict] = {}

    def add(self, row: dict) -> None:
        """Index a scored row (the first row with a key keeps it)."""
        self.by_live.setdefault(row["live_source"], row)
        self.by_hash.setdefault(row["structural_hash"], row)
        self.by_fingerprint.setdefault(row["fingerprint"], row)

    def describe(self, program: Program) -> tuple[dict, dict | None]:
        """:func:`describe` of ``program`` and the scored row it duplicates (``None`` if new)."""
        live = live_part(program)
        live_source = to_source(live)
        hit = self.by_live.get(live_source)
        if hit is not None:
            return {**{k: hit[k] for k in SAME_LIVE_PART}, "source": to_source(program),
                    "n_statements": len(program.body)}, hit
        key = structural_hash(live)
        hit = self.by_hash.get(key)
        info = describe(program, {"live": live, "live_source": live_source, "structural_hash": key,
                                  "fingerprint": hit and hit["fingerprint"]})
        return info, hit or self.by_fingerprint.get(info["fingerprint"])
