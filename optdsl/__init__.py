"""optdsl: deep-learning optimizers as small symbolic programs.

    >>> import optdsl
    >>> p = optdsl.load("lion")
    >>> print(optdsl.to_source(p, doc=False))  # doctest: +ELLIPSIS
    def lion(w, g, m, lr=0.0001, ...
"""

from .errors import DslError
from .interpreter import Interpreter
from .ir import Assign, Call, Const, Hyper, Program, State, Var
from .parser import parse, parse_all
from .printer import to_source
from .source import load, load_all, program, zoo_names
from .typecheck import validate

__all__ = [
           "Assign",
           "Call",
           "Const",
           "DslError",
           "Hyper",
           "Interpreter",
           "Program",
           "State",
           "Var",
           "load",
           "load_all",
           "parse",
           "parse_all",
           "program",
           "to_source",
           "validate",
           "zoo_names",
]
