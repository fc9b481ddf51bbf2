"""Generated parts of the README: the op reference and the zoo list come from the code.

``python -m optdsl.docs`` rewrites the marked sections of README.md in place; a test fails when
the README is out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .ops import reference_table
from .source import load, summary, zoo_names


def zoo_table() -> str:
    """The zoo list as a Markdown table: each program's name, states (with their shape where not
    full) and the first sentence of its docstring.

    Example:
        >>> rows = zoo_table().splitlines()
        >>> rows[0]
        '| program | states | source |'
        >>> print(next(row for row in rows if row.startswith("| `adamw`")))
        | `adamw` | `m`, `v` | AdamW (Loshchilov & Hutter 2019), as torch.optim.AdamW defines it. |
    """
    rows = ["| program | states | source |", "|---|---|---|"]
    for name in zoo_names():
        p = load(name)
        states = ", ".join(f"`{s.name}: {s.kind}`" if s.kind != "full" else f"`{s.name}`" for s in p.states)
        rows.append(f"| `{name}` | {states or '—'} | {summary(p.doc)} |")
    return "\n".join(rows)


SECTIONS = {"ops": reference_table, "zoo": zoo_table}


def render(text: str) -> str:
    """``text`` with every ``<!-- gen:KEY -->...<!-- /gen:KEY -->`` section regenerated.

    Example:
        >>> text = render("<!-- gen:zoo -->\\nstale\\n<!-- /gen:zoo -->\\n")
        >>> text.splitlines()[:3]
        ['<!-- gen:zoo -->', '| program | states | source |', '|---|---|---|']
        >>> "stale" in text
        False
    """
    for key, fn in SECTIONS.items():
        pattern = re.compile(rf"(<!-- gen:{key} -->\n).*?(<!-- /gen:{key} -->)", re.DOTALL)
        text = pattern.sub(lambda m, fn=fn: m.group(1) + fn() + "\n" + m.group(2), text)
    return text


def main(path: str = "README.md") -> int:
    """``python -m optdsl.docs [PATH]``: rewrite the generated sections of the file ``PATH`` in
    place (see :func:`render`); returns the exit status.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     readme = Path(d) / "README.md"
        ...     _ = readme.write_text("<!-- gen:ops -->\\n<!-- /gen:ops -->\\n")
        ...     status, lines = main(str(readme)), readme.read_text().splitlines()
        >>> status, lines[1]
        (0, '| function | args | shape rule | meaning |')
    """
    readme = Path(path)
    readme.write_text(render(readme.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
