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
    """Names of the programs in the zoo, sorted.

    Example:
        >>> zoo_names()[:3], "lion" in zoo_names()
        (['adafactor', 'adafactor_optax', 'adam'], True)
    """
    return sorted(f.name[:-3] for f in resources.files("optdsl.zoo").iterdir()
                  if f.name.endswith(".py") and not f.name.startswith("_"))


def zoo_source(name: str) -> str:
    """The source text of the zoo program ``name``; a DslError listing the zoo if there is none.

    Example:
        >>> zoo_source("sgd").splitlines()[0]
        'def sgd(w, g, lr=0.01):'
    """
    if name not in zoo_names():
        raise DslError(f"no zoo program named {name!r}", hint=f"the zoo has: {', '.join(zoo_names())}")
    return resources.files("optdsl.zoo").joinpath(f"{name}.py").read_text()


def summary(doc: str) -> str:
    """A docstring's first sentence, its lines joined: the text of the zoo's tables. A sentence
    ends at a full stop followed by a space or the end, outside brackets and quotes.

    Example:
        >>> summary("LAMB (You et al. 2020), as optax.lamb\\ndefines it. More.\\n\\nDetails.")
        'LAMB (You et al. 2020), as optax.lamb defines it.'
    """
    text = " ".join(doc.split("\n\n")[0].split())
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "([":
            depth += 1
        elif not quoted and ch in ")]":
            depth -= 1
        elif not quoted and depth == 0 and ch == "." and text[i + 1 : i + 2] in ("", " "):
            return text[: i + 1]
    return text


def decode(data: bytes, filename: str) -> str:
    """Program text from a file's bytes: UTF-8 (a leading byte-order mark is dropped), else a
    DslError that names the file, line and column of the first byte that is not UTF-8.

    Example:
        >>> try:
        ...     decode(b"def f(w, g, lr):\\n    return g  # caf\\xe9\\n", "f.py")
        ... except DslError as e:
        ...     print(e.line, e.col, e.message)
        2 19 this is not UTF-8 text (byte 0xe9)
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        col = start - (data.rfind(b"\n", 0, start) + 1)
        kind = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        shown = data.decode("utf-8", "backslashreplace")  # to show the line, bad bytes as \xe9
        raise DslError(f"this is not UTF-8 text{kind} (byte 0x{data[start]:02x})", filename, line, col,
                       shown, hint="save it as UTF-8") from None


_STDIN: list = [None, ""]  # the stdin object read, and its text


def read(path: str) -> str:
    """The text of the program file at ``path`` (``-``: standard input), decoded by :func:`decode`.

    Example (a leading UTF-8 byte-order mark is dropped):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "f.py")
        ...     with open(path, "wb") as f:
        ...         _ = f.write(b"\\xef\\xbb\\xbfdef f(w, g, lr):\\n    return lr * g\\n")
        ...     text = read(path)
        >>> text
        'def f(w, g, lr):\\n    return lr * g\\n'
    """
    if path == "-":  # read once, however many programs of it a command loads (equiv -:a -:b)
        if _STDIN[0] is not sys.stdin:
            stdin = getattr(sys.stdin, "buffer", None)  # a text-only stdin (a test's StringIO) has none
            text = decode(stdin.read(), "<stdin>") if stdin is not None else sys.stdin.read()
            _STDIN[:] = [sys.stdin, text]
        return _STDIN[1]
    try:
        with open(path, "rb") as f:
            return decode(f.read(), path)
    except OSError as e:
        raise DslError(f"cannot read it: {e.strerror}", path) from None


def file_and_name(src: str) -> tuple[str, str]:
    """``(path, program name or "")`` of a reference ``path`` or ``path:name`` (a path holding a
    colon is a path when it exists).

    Example:
        >>> file_and_name("rules.py:lion")
        ('rules.py', 'lion')
    """
    path, _, name = src.rpartition(":") if ":" in src and not os.path.exists(src) else (src, "", "")
    return path, name


def names_file(src: str) -> bool:
    """Does :func:`load` read ``src`` from a file (``path`` or ``path:name``), not from stdin (``-``,
    ``-:name``) or the zoo? A zoo name means the zoo's program even beside a file of that name
    (``./lion`` reads the file).

    Example:
        >>> names_file("lion"), names_file("./lion"), names_file("rules.py:lion"), names_file("-")
        (False, True, True, False)
    """
    if src == "-" or src.startswith("-:"):
        return False
    return os.sep in src or src.endswith(".py") or src not in zoo_names()


def load(src: str) -> Program:
    """The program ``src`` names: a zoo name (``"lion"``), a path, ``path:name``, ``-`` (stdin)
    or ``-:name``. A zoo name means the zoo's program even beside a file of that name (``./lion``
    reads the file).

    Example:
        >>> load("adamw").name
        'adamw'
    """
    if src == "-" or src.startswith("-:"):
        return parse(read("-"), "<stdin>", src[2:] or None)
    if not names_file(src):
        return parse(zoo_source(src), f"<zoo:{src}>", src)
    path, name = file_and_name(src)
    if os.path.exists(path) and os.path.isfile(path):
        return parse(read(path), path, name or None)
    if os.path.isdir(path):
        raise DslError("a directory, not a program file", path)
    if os.path.exists(path):  # /dev/null, a FIFO, a socket: nothing a program is read from
        raise DslError("not a regular file; a program is read from a file", path)
    if src.endswith(".py") or os.sep in src:
        raise DslError("no such file", path)
    raise DslError(f"{src!r} is neither a zoo program nor a file",
                   hint=f"the zoo has: {', '.join(zoo_names())}")


def load_all(path: str) -> dict[str, Program]:
    """Every program in the file at ``path``, by name, in file order.

    Example:
        >>> import tempfile
        >>> text = "def a(w, g, lr):\\n    return lr * g\\n\\ndef b(w, g, m, lr):\\n    return g, m\\n"
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "rules.py")
        ...     with open(path, "w") as f:
        ...         _ = f.write(text)
        ...     programs = load_all(path)
        >>> {name: p.state_names for name, p in programs.items()}
        {'a': (), 'b': ('m',)}
    """
    return parse_all(read(path), path)


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
