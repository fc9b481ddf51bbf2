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
    """The source of the top-level functions ``names`` of runtime ``module`` and of those they call,
    verbatim and in the file's order, two blank lines apart: for a module whose functions a program
    uses a few of.

    Example:
        >>> functions("torch_math", {"_sign"}).splitlines()[0]
        'def _sign(x):'
        >>> [line for line in functions("torch_math", {"_remainder"}).splitlines() if line.startswith("def")]
        ['def _fmod_parts(x, y):', 'def _remainder(x, y):']
    """
    text = _text(module)
    defined = {node.name: node for node in ast.parse(text).body if isinstance(node, ast.FunctionDef)}
    wanted, pending = set(), [n for n in names if n in defined]
    while pending:  # and what they call, transitively
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending += [c.func.id for c in ast.walk(defined[name]) if isinstance(c, ast.Call)
                        and isinstance(c.func, ast.Name) and c.func.id in defined]
    return "\n\n\n".join(ast.get_source_segment(text, defined[name]) for name in defined if name in wanted)


def _text(module: str) -> str:
    return resources.files(__package__).joinpath(f"{module}.py").read_text(encoding="utf-8")


__all__ = ["BEGIN", "END", "functions", "source"]
