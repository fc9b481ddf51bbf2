"""optdsl: deep-learning optimizers as small symbolic programs.

    >>> import optdsl
    >>> p = optdsl.load("lion")
    >>> print(optdsl.to_source(p, doc=False))  # doctest: +ELLIPSIS
    def lion(w, g, m, lr=0.0001, ...
"""

import importlib

from .errors import DslError

# Each name is imported from its module when first asked for (PEP 562), so that `import optdsl.cli`
# takes milliseconds, not the ~0.3 s of sympy: the CLI's Ctrl-C handling is in place before they load
# (a Ctrl-C there printed a traceback).
_HOME = {
    **dict.fromkeys(("Assign", "Call", "Const", "Hyper", "Program", "State", "Var"), "ir"),
    "Interpreter": "interpreter",
    "parse": "parser",
    "parse_all": "parser",
    "to_source": "printer",
    **dict.fromkeys(("load", "load_all", "program", "zoo_names"), "source"),
    "validate": "typecheck",
}


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'optdsl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_HOME})


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
