"""The language's ops on Python floats where Python's own operators differ from numpy's meaning: a
generated module computes its per-step scalars (bias corrections, schedules: from lr, step and the
hyperparameters) in Python floats, not in 0-d tensors, which cost a dispatch each (~5 us, several
per step, on a small model's step of a few hundred).

Python's ``max(nan, 1.0)`` is 1.0 where ``np.maximum`` keeps nan, and its ``max`` of equal values
keeps the first where numpy keeps the second (``np.maximum(0.0, -0.0)`` is -0.0); ``np.sign``
keeps nan. The op table's ``python`` spellings call these (see :data:`optdsl.ops.Op.python`); the
block between the markers is copied into generated modules function by function.

Example:
    >>> _fmax(float("nan"), 1.0), _fmax(0.0, -0.0), _fsign(-3.0), _fsign(float("nan"))
    (nan, -0.0, -1.0, nan)
"""

# --- optdsl runtime: begin (codegen/runtime/float_math.py, copied verbatim; edit it there)
import math


def _fmax(a, b):
    """max(a, b) as np.maximum: nan if either is nan, b where they are equal."""
    return a if a > b or math.isnan(a) else b


def _fmin(a, b):
    """min(a, b) as np.minimum: nan if either is nan, b where they are equal."""
    return a if a < b or math.isnan(a) else b


def _fsign(x):
    """sign(x) in {-1.0, 0.0, 1.0}, nan kept (np.sign)."""
    return 1.0 if x > 0 else (-1.0 if x < 0 else (x if math.isnan(x) else 0.0))
# --- optdsl runtime: end
