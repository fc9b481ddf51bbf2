"""Program -> program transformations. Each keeps the IR's invariants (see :mod:`optdsl.ir`)."""

from .deadcode import eliminate_dead_code, liveness
from .flatten import flatten
from .fold import fold
from .specialize import global_statements, hoist_globals, segments, specialize, static_key

__all__ = [
           "eliminate_dead_code",
           "flatten",
           "fold",
           "global_statements",
           "hoist_globals",
           "liveness",
           "segments",
           "specialize",
           "static_key",
]
