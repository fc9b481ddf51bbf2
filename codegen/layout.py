"""Layout of generated Python: the lines black would write for 110 columns, written by the printers
themselves, so that a generated file is the same on every machine whether black is installed or
not (the tests check black finds nothing to change).

Example:
    >>> call("f", ["a", "b"])
    'f(a, b)'
    >>> print(bracketed("(", ["x" * 60, "y" * 60], ")"))
    (
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx,
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy,
    )
"""

from __future__ import annotations

LINE = 110  # generated files are laid out for this width (black's, as the repository's own)


def function(name: str, params: list[str], body: list[str], indent: int = 0) -> str:
    """``def name(params):`` and its body lines, laid out as black would (params on one line, or one
    per line when they do not fit)."""
    pad = " " * indent
    head = f"{pad}def {name}({', '.join(params)}):"
    if len(head) > LINE:
        inner = "".join(f"{pad}    {x},\n" for x in params)
        head = f"{pad}def {name}(\n{inner}{pad}):"
    lines = "\n".join(f"{pad}    {ln}" if ln else "" for part in body for ln in part.split("\n"))
    return f"{head}\n{lines}"


def call(fn: str, args: list[str], used: int = 0) -> str:
    """``fn(args)`` on one line when it fits after ``used`` columns, else one argument per line."""
    return bracketed(f"{fn}(", args, ")", used=used)


def bracketed(open_: str, items: list[str], close: str, one: bool = False, used: int = 0) -> str:
    """A bracketed list of items: on one line when it fits after ``used`` columns (and ``one`` does
    not ask for one item per line), else one item per line with a trailing comma, as black lays it
    out. Lines after the first are indented relative to the first."""
    comma = "," if open_ == "(" and len(items) == 1 else ""
    line = f"{open_}{', '.join(items)}{comma}{close}"
    if (not one or len(items) <= 1) and used + len(line) <= LINE and "\n" not in line:
        return line
    body = "".join("    " + x.replace("\n", "\n    ") + ",\n" for x in items)
    return f"{open_}\n{body}{close}"


def wrap_comprehension(line: str, indent: int = 4) -> str:
    """``x = [elt for ...]`` too wide for a function body (at ``indent``), laid out as black does: the
    comprehension on a line of its own, or where that is too wide, the element and the ``for`` clause.
    A line already nested (see :func:`codegen.torch_target._nested`) is left as it is."""
    head, sep, rest = line.partition(" = [")
    if line.startswith(" ") or indent + len(line) <= LINE or not sep or " for " not in rest or not rest.endswith("]"):
        return line
    if indent + 4 + len(rest) - 1 <= LINE:  # black first tries the whole comprehension inside the brackets
        return f"{head} = [\n    {rest[:-1]}\n]"
    elt, _, loops = rest[:-1].partition(" for ")
    return f"{head} = [\n    {elt}\n    for {loops}\n]"


def hugging_call(fn: str, args: list[str], used: int, indent: int) -> str:
    """``fn(args)`` starting at column ``used`` of a line indented ``indent`` columns, laid out as
    black lays out a call: on one line when it fits; else its arguments on one line of their own,
    when that fits; else one argument per line with a trailing comma. Lines after the first are
    indented relative to the line's indentation (as :func:`bracketed`'s).

    Example:
        >>> print(hugging_call("g", ["w" * 50, "x" * 50], used=100, indent=0))
        g(
            wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww, xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
        )
    """
    inner = ", ".join(args)
    if used + len(fn) + len(inner) + 2 <= LINE and "\n" not in inner:
        return f"{fn}({inner})"
    if indent + 4 + len(inner) <= LINE and "\n" not in inner:
        return f"{fn}(\n    {inner}\n)"
    return bracketed(f"{fn}(", args, ")", one=True)


def literal(value, used: int = 0, indent: int = 0) -> str:
    """A Python literal (str, number, bool, None, tuple, dict) as black prints it: double quotes;
    on one line when it fits after ``used`` columns, else one item per line, each laid out for its
    own place (``indent`` + 4 columns, its comma after it).

    Example:
        >>> literal((('m', 'full'), {'eps': 1e-08}, None))
        '(("m", "full"), {"eps": 1e-08}, None)'
    """
    if isinstance(value, str):
        text = repr(value)
        return f'"{text[1:-1]}"'.replace("\\'", "'") if text[0] == "'" and '"' not in value else text
    if isinstance(value, tuple | dict):
        pairs = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
        open_, close = ("{", "}") if isinstance(value, dict) else ("(", ")")
        keys = ["" if k is None else f"{literal(k)}: " for k, _ in pairs]
        flat = bracketed(open_, [k + literal(v) for k, (_, v) in zip(keys, pairs)], close, used=used)
        if "\n" not in flat:
            return flat
        at = indent + 4
        items = [k + literal(v, at + len(k) + 1, at) for k, (_, v) in zip(keys, pairs)]
        return bracketed(open_, items, close, one=True, used=used)
    return repr(value)
