"""Generated parts of the README: the op reference and the zoo list come from the code.

``python -m optdsl.docs`` rewrites the marked sections of README.md in place; a test fails when
the README is out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .ops import reference_table
from .source import load, zoo_names


def zoo_table() -> str:
    rows = ["| program | states | source |", "|---|---|---|"]
    for name in zoo_names():
        p = load(name)
        states = ", ".join(f"`{s.name}: {s.kind}`" if s.kind != "full" else f"`{s.name}`" for s in p.states)
        rows.append(f"| `{name}` | {states or '—'} | {(p.doc.splitlines() or [''])[0]} |")
    return "\n".join(rows)


SECTIONS = {"ops": reference_table, "zoo": zoo_table}


def render(text: str) -> str:
    """``text`` with every ``<!-- gen:KEY -->...<!-- /gen:KEY -->`` section regenerated."""
    for key, fn in SECTIONS.items():
        pattern = re.compile(rf"(<!-- gen:{key} -->\n).*?(<!-- /gen:{key} -->)", re.DOTALL)
        text = pattern.sub(lambda m, fn=fn: m.group(1) + fn() + "\n" + m.group(2), text)
    return text


def main(path: str = "README.md") -> int:
    readme = Path(path)
    readme.write_text(render(readme.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
