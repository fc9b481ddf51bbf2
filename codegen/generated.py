"""Shared helpers for code generators: check what goes into generated code, format it, load it, write it.

Generated text is built only from validated IR: identifiers pass :func:`check_identifier` again at
emission (a hand-built :class:`~optdsl.ir.Program` never went through the parser), numbers pass
:func:`number`, docstrings pass :func:`optdsl.printer.docstring`. Nothing is ever ``eval``-ed
except the finished module, by :func:`load_module`, exactly as an imported file would be.

Example:
    >>> mod = load_module("def f(x):\\n    return x + 1\\n", "demo")
    >>> mod.f(1)
    2
"""

from __future__ import annotations

import linecache
import math
import os
import sys
import tempfile
import types

from optdsl.errors import DslError
from optdsl.names import check_name
from optdsl.printer import format_number


def check_identifier(name: str, what: str = "name") -> str:
    """``name`` if the language's identifier policy (:func:`optdsl.names.check_name`) allows it
    in generated code; raises DslError otherwise.

    Example:
        >>> check_identifier("beta1")
        'beta1'
    """
    reason = check_name(name)
    if reason is not None:
        raise DslError(f"{what} {name!r} {reason}", hint="rename it")
    return name


def number(value: float) -> str:
    """A number as Python source text (``0.9``, ``1e-08``, ``1e999`` for inf); DslError for non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DslError(f"constant {value!r} is not a number")
    if not math.isfinite(value):
        # Python reads 1e999 as inf; these need no import and are floats in torch, jax and Triton
        # code alike (and carry an "e", so printers take them for float literals).
        return "(1e999 * 0)" if math.isnan(value) else ("1e999" if value > 0 else "-1e999")
    try:
        return format_number(float(value))
    except ValueError as e:
        raise DslError(str(e)) from None


def black_format(source: str, line_length: int = 110) -> str:
    """``source`` formatted by black when it is installed (deterministic either way)."""
    try:
        import black
    except ImportError:  # formatting is cosmetic: keep the unformatted, still valid, text
        return source
    return black.format_str(source, mode=black.Mode(line_length=line_length))


def load_module(source: str, name: str) -> types.ModuleType:
    """Execute generated ``source`` as a fresh module called ``name`` (not added to sys.modules
    unless torch.compile needs to find it: it is registered so tracebacks and inspect work)."""
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    code = compile(source, module.__file__, "exec")
    # inspect.getsource must find the text: @triton.jit reads its function's source from there.
    linecache.cache[module.__file__] = (len(source), None, source.splitlines(True), module.__file__)
    sys.modules[name] = module
    exec(code, module.__dict__)  # noqa: S102 - generated from validated IR only
    return module


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old file or
    the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".optdsl-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
