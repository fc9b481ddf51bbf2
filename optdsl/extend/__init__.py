"""Derived optimizers: functions Program -> Program, one trick per module.

Each returns an ordinary program (it prints as DSL source with :func:`optdsl.to_source` and
passes :func:`optdsl.validate`); new names come from :func:`optdsl.ir.fresh_name`, so tricks
compose: ``lookahead(clip_by_global_norm(load("adamw")))``.

Example:
    >>> from optdsl import load, validate
    >>> from optdsl.extend import layerwise_adaptation
    >>> validate(layerwise_adaptation(load("adamw"))).name
    'adamw_layerwise'
"""

from .accumulate import gradient_accumulation
from .clip import clip_by_global_norm, clip_by_norm, clip_by_value
from .ema import ema_of_weights
from .layerwise import layerwise_adaptation
from .lazy import lazy_updates
from .lookahead import lookahead
from .lr_multiplier import lr_multiplier
from .schedule import lr_schedule, piecewise_linear
from .weight_decay import weight_decay

__all__ = ["clip_by_global_norm", "clip_by_norm", "clip_by_value", "ema_of_weights", "gradient_accumulation",
           "layerwise_adaptation", "lazy_updates", "lookahead", "lr_multiplier", "lr_schedule",
           "piecewise_linear", "weight_decay"]
