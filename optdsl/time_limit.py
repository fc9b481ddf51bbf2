"""A wall-clock limit on symbolic work: sympy has no deadline of its own, and some expressions
(an evalf of a cube root of a complex power, an exact power with a 16-digit exponent) run for
minutes. Every caller has a cheaper answer to fall back on (testing instead of a proof, the
statement-by-statement form instead of sympy's), so a limit turns a hang into that answer.

The limit is a ``SIGALRM`` timer, so it interrupts Python code only: a single C call (one huge
integer power) finishes first. Where there is no such timer (Windows, or outside the main
thread) the block runs without a limit. A timer already armed by someone else (pytest-timeout's)
is left to fire first when it is due first, and re-armed for what is left of it afterwards.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

#: Seconds between the timer's later firings, once a block's time is up.
REPEAT = 0.1


class SymbolicTimeout(TimeoutError):
    """Raised inside a :func:`time_limit` block whose time is up."""


class Limit:
    """What :func:`time_limit` yields: ``expired`` turns true when its timer fires. Code inside
    that catches every exception to fall back on a cheaper answer can swallow the timeout and
    still finish; the block's owner reads ``expired`` to know its answer came past the limit."""

    expired = False


def _available() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def time_limit(seconds: float):
    """Run the block for at most ``seconds`` of wall-clock time: past it, :class:`SymbolicTimeout`
    is raised where the block's Python code then is, and again every :data:`REPEAT` seconds until
    the block ends (a ``try`` inside it that catches the first cannot keep it running), and the
    :class:`Limit` it yields is marked ``expired``. Limits nest: an inner one never outlasts an
    outer one, and an outer one that fell due inside an inner block fires right after it.

    Example:
        >>> try:
        ...     with time_limit(0.05):
        ...         while True:
        ...             pass
        ... except SymbolicTimeout as e:
        ...     print(e)
        took more than 0.05 s
    """
    limit = Limit()
    if not _available():
        yield limit
        return
    start = time.monotonic()
    other_left, other_interval = signal.getitimer(signal.ITIMER_REAL)
    if other_left and other_left <= seconds:  # an earlier timer (an outer limit's, another's) fires first
        yield limit
        return

    def expire(signum, frame):
        limit.expired = True
        raise SymbolicTimeout(f"took more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    seconds = max(seconds, 1e-6)  # a timer of 0 is no timer
    # It fires again every REPEAT seconds until the block ends: a caller inside may catch the first
    # one to fall back on a cheaper answer, and the block must end all the same.
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT)
    try:
        yield limit
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if other_left:  # the outer timer with what is left of it; at once if it fell due meanwhile
            left = max(other_left - (time.monotonic() - start), 1e-6)
            signal.setitimer(signal.ITIMER_REAL, left, other_interval)


__all__ = ["Limit", "SymbolicTimeout", "time_limit"]
