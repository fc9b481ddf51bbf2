"""Runtime code of the generated modules: ordinary, importable, tested Python.

Each generated standalone file needs only its target's libraries, so a printer copies the source of
a runtime module into the file verbatim (:func:`source`) and then prints only what is specific to
the program. The runtime never reads anything of optdsl: it works the same imported from here (as
the tests do) and pasted into a file.

Example:
    >>> "class _Optimizer(torch.optim.Optimizer)" in source("torch_optimizer")
    True
"""

from __future__ import annotations

import ast
from importlib import resources

BEGIN = "# --- optdsl runtime: begin"
END = "# --- optdsl runtime: end"


def source(module: str) -> str:
    """The runtime block of ``codegen/runtime/<module>.py``: the text between its ``BEGIN`` and ``END``
    marker lines (both kept), exactly as written in the file.

    Example:
        >>> lines = source("float_math").splitlines()
        >>> lines[0]
        '# --- optdsl runtime: begin (codegen/runtime/float_math.py, copied verbatim; edit it there)'
        >>> lines[-1]
        '# --- optdsl runtime: end'
    """
    text = _text(module)
    start, stop = text.index(BEGIN), text.index(END)
    return text[start : text.index("\n", stop) + 1]


def functions(module: str, names) -> str:
    """The source of the top-level functions ``names`` of runtime ``module``, verbatim and in the
    file's order, two blank lines apart: for a module whose functions a program uses a few of.

    Example:
        >>> functions("torch_math", {"_sign"}).splitlines()[0]
        'def _sign(x):'
    """
    text = _text(module)
    found = [ast.get_source_segment(text, node) for node in ast.parse(text).body
             if isinstance(node, ast.FunctionDef) and node.name in names]
    return "\n\n\n".join(found)


def _text(module: str) -> str:
    return resources.files(__package__).joinpath(f"{module}.py").read_text(encoding="utf-8")


__all__ = ["BEGIN", "END", "functions", "source"]
