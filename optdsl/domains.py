"""Hyperparameter domains: the values a hyperparameter may take, declared in the signature.

``def f(w, g, m, lr, accum_steps: count = 4, max_norm: positive = 1.0)``: ``accum_steps`` must be a
whole number >= 1, ``max_norm`` a number > 0. The default is checked where the program is parsed,
and every value given later where it arrives: the interpreter's, the generated torch optimizer's
(its arguments and param groups, as torch.optim checks ``lr``) and the optax transformation's
(a Python number; a traced one cannot be looked at). Outside its domain a value is an error, not a
silent change of the algorithm: ``accum_steps=0`` had never stepped, ``max_norm=-1`` climbed the
loss (an audit). A hyperparameter without a domain takes any number but nan.

Each domain carries its test twice, as a function and as Python source over ``v`` that the code
generators print into standalone modules (the op table's way); a test holds them to each other.

Example:
    >>> DOMAINS["count"].holds(4.0), DOMAINS["count"].holds(0.5), DOMAINS["positive"].words
    (True, False, 'a number > 0')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .errors import DslError
from .printer import format_number


@dataclass(frozen=True)
class Domain:
    """``name`` as written in a signature, ``words`` for the error, ``holds(v)``, and ``python``: the
    same test as Python source over ``v``."""

    name: str
    words: str
    holds: Callable[[float], bool]
    python: str


DOMAINS = {d.name: d for d in (
    Domain("count", "a whole number >= 1", lambda v: v >= 1 and float(v).is_integer(),
           "v >= 1 and float(v).is_integer()"),
    Domain("positive", "a number > 0", lambda v: v > 0, "v > 0"),
    Domain("nonnegative", "a number >= 0", lambda v: v >= 0, "v >= 0"),
    Domain("fraction", "a number in [0, 1]", lambda v: 0 <= v <= 1, "0 <= v <= 1"),
)}


def outside(name: str, value: float, domain: str | None) -> str | None:
    """Why ``value`` may not be hyperparameter ``name``'s (``domain``: a key of :data:`DOMAINS`, or
    None for any number but nan), or None.

    Example:
        >>> outside("accum_steps", 0, "count")
        'accum_steps=0 is outside its domain: it must be a whole number >= 1'
        >>> outside("beta", math.nan, None)
        'beta=nan is not a number'
        >>> outside("max_norm", math.inf, "positive") is None
        True
    """
    if domain is not None and not DOMAINS[domain].holds(value):
        shown = format_number(float(value))
        return f"{name}={shown} is outside its domain: it must be {DOMAINS[domain].words}"
    if math.isnan(value):
        return f"{name}=nan is not a number"
    return None


def check_domains(program, values: dict[str, float]) -> None:
    """DslError where one of ``values`` (hyperparameter -> number) lies outside the domain ``program``
    declares for it.

    Example:
        >>> from optdsl import parse
        >>> check_domains(parse("def f(w, g, lr, k: count = 2):\\n    return lr * g / k\\n"), {"k": 0.5})
        Traceback (most recent call last):
        optdsl.errors.DslError: hyperparameter k=0.5 is outside its domain: it must be a whole number >= 1
    """
    for name, value in values.items():
        why = name in program.hyper_domains and outside(name, float(value), program.hyper_domains[name])
        if why:
            raise DslError(f"hyperparameter {why}")


__all__ = ["DOMAINS", "Domain", "check_domains", "outside"]
