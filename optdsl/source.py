"""Where programs come from: ``SRC`` is a zoo name, a file path, ``FILE:NAME``, or ``-`` (stdin)."""

from __future__ import annotations

import inspect
import os
import sys
import textwrap
from importlib import resources

from .errors import DslError
from .ir import Program
from .parser import parse, parse_all


def zoo_names() -> list[str]:
    """Names of the programs in the zoo, sorted."""
    return sorted(f.name[:-3] for f in resources.files("optdsl.zoo").iterdir()
                  if f.name.endswith(".py") and not f.name.startswith("_"))


def zoo_source(name: str) -> str:
    if name not in zoo_names():
        raise DslError(f"no zoo program named {name!r}", hint=f"the zoo has: {', '.join(zoo_names())}")
    return resources.files("optdsl.zoo").joinpath(f"{name}.py").read_text()


def load(src: str) -> Program:
    """The program ``src`` names: a zoo name (``"lion"``), a path, ``path:name``, or ``-``.

    Example:
        >>> load("adamw").name
        'adamw'
    """
    if src == "-":
        return parse(sys.stdin.read(), "<stdin>")
    path, _, name = src.rpartition(":") if ":" in src and not os.path.exists(src) else (src, "", "")
    if os.path.exists(path) and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return parse(f.read(), path, name or None)
    if os.sep not in src and not src.endswith(".py") and src in zoo_names():
        return parse(zoo_source(src), f"<zoo:{src}>", src)
    if src.endswith(".py") or os.sep in src:
        raise DslError(f"no such file: {path}")
    raise DslError(f"{src!r} is neither a zoo program nor a file",
                   hint=f"the zoo has: {', '.join(zoo_names())}")


def load_all(path: str) -> dict[str, Program]:
    """Every program in the file at ``path``."""
    with open(path, encoding="utf-8") as f:
        return parse_all(f.read(), path)


def program(fn) -> Program:
    """Decorator: parse a Python function as a DSL program (its body is never run).

    Example:
        >>> @program
        ... def sgd(w, g, lr=0.1):
        ...     return lr * g
        >>> sgd.hyper_defaults
        {'lr': 0.1}
    """
    text = textwrap.dedent(inspect.getsource(fn))
    return parse(text, inspect.getsourcefile(fn) or "<function>", fn.__name__)
