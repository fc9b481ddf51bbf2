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

from importlib import resources

BEGIN = "# --- optdsl runtime: begin"
END = "# --- optdsl runtime: end"


def source(module: str) -> str:
    """The runtime block of ``codegen/runtime/<module>.py``: the text between its ``BEGIN`` and ``END``
    marker lines (both kept), exactly as written in the file."""
    text = resources.files(__package__).joinpath(f"{module}.py").read_text(encoding="utf-8")
    start, stop = text.index(BEGIN), text.index(END)
    return text[start : text.index("\n", stop) + 1]


__all__ = ["BEGIN", "END", "source"]
