"""Program -> program transformations. Each keeps the IR's invariants (see :mod:`optdsl.ir`)."""

from .constant_states import constant_states, eliminate_constant_states
from .cse import eliminate_common
from .deadcode import eliminate_dead_code, liveness
from .flatten import flatten
from .fold import fold
from .globals import global_statements, hoist_globals, segments
from .specialize import MissingAxis, Variants, shape_value, specialize, static_key, variants

__all__ = [
           "MissingAxis",
           "Variants",
           "constant_states",
           "eliminate_common",
           "eliminate_constant_states",
           "eliminate_dead_code",
           "flatten",
           "fold",
           "global_statements",
           "hoist_globals",
           "liveness",
           "segments",
           "shape_value",
           "specialize",
           "static_key",
           "variants",
]
