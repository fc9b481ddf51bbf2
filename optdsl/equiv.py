"""Equivalence of two programs: the same update sequence, whatever the gradients.

Programs ``a`` and ``b`` are equivalent when, started from their initial states, they hand back
the same update at every step for every sequence of weights and gradients. States may differ in
number, order and names. Hyperparameters are bound to their defaults, or to ``values``.

Decided in this order:

1. *symbolic*, same canonical form (:func:`~optdsl.canonical.structural_hash`), after binding
   hyperparameters and removing dead code (so dead states never matter);
2. *symbolic*, a bijection between the states (same kind and first value) under which sympy
   proves the updates and the new state values equal; by induction over steps the update
   sequences are then equal (in exact real arithmetic);
3. *tested*, otherwise: both run through the reference interpreter (float64) on random weights
   and gradients, on a 1-d, a 2-d and a 3-d parameter together (static branches and global
   reductions are exercised), for ``steps`` steps and ``trials`` seeds; updates must agree to a
   relative tolerance. A difference gives a counterexample: the step, the shape, both updates.

Example:
    >>> from optdsl import load, parse
    >>> lion2 = parse(load("lion").source.replace("beta2=0.99", "beta2=0.9"))
    >>> equivalent(load("lion"), lion2).equal
    False
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import sympy

from .errors import DslError
from .interpreter import Interpreter
from .ir import Program
from .passes import eliminate_dead_code, fold
from .symbolic import to_sympy

SHAPES = ((7,), (5, 6), (2, 3, 4))
RTOL = 1e-7
MAX_BIJECTIONS = 120
SIMPLIFY_LIMIT = 80  # sympy.simplify is tried on differences at most this large


@dataclass(frozen=True)
class Equivalence:
    """The verdict: ``equal``; ``method`` "symbolic" (proved) or "tested" (randomized trajectories);
    ``detail`` says how; ``counterexample`` shows where they differ."""

    equal: bool
    method: str
    detail: str = ""
    counterexample: str | None = None

    def __str__(self) -> str:
        return f"{'equivalent' if self.equal else 'not equivalent'} ({self.method})"

    def __bool__(self) -> bool:
        return self.equal


def bound(program: Program, values: dict[str, float] | None) -> tuple[Program, dict[str, float]]:
    """``program`` without dead code, ignoring ``keep`` (only updates count here), and its
    hyperparameter values: the defaults, overridden by ``values``."""
    binding = {**program.hyper_defaults, **{k: float(v) for k, v in (values or {}).items()
                                             if k in program.hyper_defaults or k == "lr"}}
    unkept = replace(program, states=tuple(replace(s, keep=False) for s in program.states))
    return eliminate_dead_code(unkept), binding


def _is_zero(expr: sympy.Expr) -> bool:
    if expr == 0:
        return True
    expanded = sympy.expand(expr)
    if expanded == 0:
        return True
    if sympy.count_ops(expanded) <= SIMPLIFY_LIMIT:
        return sympy.simplify(expanded) == 0
    return False


def _bijections(a: Program, b: Program):
    """Maps from b's states to a's, pairing states of the same kind and first value."""
    if len(a.states) != len(b.states):
        return
    group = lambda s: (s.kind, s.init)
    keys = sorted({group(s) for s in a.states})
    if sorted(group(s) for s in a.states) != sorted(group(s) for s in b.states):
        return
    per_key = []
    for k in keys:
        sa = [s.name for s in a.states if group(s) == k]
        sb = [s.name for s in b.states if group(s) == k]
        per_key.append([dict(zip(sb, perm)) for perm in itertools.permutations(sa)])
    for count, combo in enumerate(itertools.product(*per_key)):
        if count >= MAX_BIJECTIONS:
            return
        yield {k: v for m in combo for k, v in m.items()}


def prove(a: Program, b: Program, values_a: dict[str, float] | None = None,
          values_b: dict[str, float] | None = None) -> str | None:
    """How sympy shows that dead-code-free ``a`` and ``b`` (hyperparameters bound to
    ``values_a``/``values_b``) give the same updates, or None."""
    from .canonical import structural_hash

    if structural_hash(fold(a, values=values_a)) == structural_hash(fold(b, values=values_b)):
        return "same canonical form"
    # Numbers enter sympy exactly (0.9 -> 9/10), so 1 - 0.9 and 0.1 agree.
    sa, sb = to_sympy(a, values=values_a), to_sympy(b, values=values_b)
    for mapping in _bijections(a, b):
        subs = {sb.symbols[nb]: sa.symbols[na] for nb, na in mapping.items()}
        ub = sb.update.xreplace(subs)
        if not _is_zero(sa.update - ub):
            continue
        new_b = dict(zip(b.state_names, sb.new_states))
        new_a = dict(zip(a.state_names, sa.new_states))
        if all(_is_zero(new_a[na] - new_b[nb].xreplace(subs)) for nb, na in mapping.items()):
            pairs = ", ".join(f"{nb} -> {na}" for nb, na in mapping.items())
            return "sympy proves the update and new states equal" + (f" under {pairs}" if pairs else "")
    return None


def _runnable(program: Program, values, shapes) -> list[tuple[int, ...]]:
    interp = Interpreter(program, **values)
    ok = []
    for shape in shapes:
        try:
            interp.spec(shape)
            ok.append(shape)
        except DslError:
            pass
    return ok


def _difference(x: np.ndarray, y: np.ndarray) -> str:
    """Where two updates differ most, and by how much."""
    gap = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
    gap = np.where(np.isnan(gap), np.inf, gap)
    i = np.unravel_index(int(np.argmax(gap)), x.shape)
    return f"at index {tuple(int(k) for k in i)}: a's update is {x[i]:.9g}, b's is {y[i]:.9g}"


def trajectories(a: Program, b: Program, values_a: dict[str, float], values_b: dict[str, float],
                 steps: int, trials: int, seed: int, shapes=SHAPES) -> str | None:
    """Run both on the same random weights and gradients; the first difference, described, or None."""
    ok_a, ok_b = _runnable(a, values_a, shapes), _runnable(b, values_b, shapes)
    if ok_a != ok_b:
        shape = next(s for s in shapes if (s in ok_a) != (s in ok_b))
        which = "a" if shape not in ok_a else "b"
        return f"shape {shape}: {which} cannot run on this shape and the other can"
    if not ok_a:
        raise DslError("neither program runs on any test shape", hint=f"tried {list(shapes)}")
    ia = Interpreter(a, np.float64, **values_a)
    ib = Interpreter(b, np.float64, **values_b)
    for trial in range(trials):
        rng = np.random.default_rng([seed, trial])
        params = {f"p{i}": rng.normal(size=s) for i, s in enumerate(ok_a)}
        pa, pb = dict(params), dict(params)
        state_a, state_b = ia.init(pa), ib.init(pb)
        for t in range(1, steps + 1):
            grads = {n: rng.normal(size=p.shape) for n, p in params.items()}
            ua, state_a = ia.updates(pa, grads, state_a, t)
            ub, state_b = ib.updates(pb, grads, state_b, t)
            for n in params:
                x, y = ua[n], ub[n]
                scale = max(np.max(np.abs(x[np.isfinite(x)]), initial=0.0),
                            np.max(np.abs(y[np.isfinite(y)]), initial=0.0))
                if not np.allclose(x, y, rtol=RTOL, atol=RTOL * scale, equal_nan=True):
                    return f"step {t}, parameter of shape {x.shape} (trial {trial}), {_difference(x, y)}"
            with np.errstate(all="ignore"):
                pa = {n: pa[n] - ua[n] for n in params}
                pb = {n: pb[n] - ub[n] for n in params}
    return None


def equivalent(a: Program, b: Program, values: dict[str, float] | None = None, steps: int = 20,
               trials: int = 3, seed: int = 0) -> Equivalence:
    """Decide whether ``a`` and ``b`` give the same update sequence (see the module docstring).

    Example: ``equivalent(load("adamw"), renamed_adamw)`` -> ``equivalent (symbolic)``.
    """
    unknown = set(values or {}) - set(a.hyper_defaults) - set(b.hyper_defaults) - {"lr"}
    if unknown:
        raise DslError(f"neither program has a hyperparameter {', '.join(sorted(unknown))}")
    ba, bind_a = bound(a, values)
    bb, bind_b = bound(b, values)
    try:
        proof = prove(ba, bb, bind_a, bind_b)
    except Exception:  # noqa: BLE001 - sympy's internals fail in many ways; then testing decides
        proof = None
    if proof:
        return Equivalence(True, "symbolic", proof)
    # A program without a default lr runs with lr = 1e-3.
    found = trajectories(ba, bb, {"lr": 1e-3, **bind_a}, {"lr": 1e-3, **bind_b}, steps, trials, seed)
    if found:
        return Equivalence(False, "tested", "the update sequences differ", found)
    detail = (f"no symbolic proof; updates agree (rtol {RTOL:g}) over {trials} trials x {steps} steps "
              f"on shapes {', '.join(map(str, SHAPES))}")
    return Equivalence(True, "tested", detail)


__all__ = ["Equivalence", "bound", "equivalent", "prove", "trajectories"]
