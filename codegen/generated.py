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

import ast
import hashlib
import linecache
import math
import os
import re
import secrets
import stat
import sys
import types

from optdsl.domains import DOMAINS
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
    """A number as Python source text (``0.9``, ``1e-08``, ``1e999`` for inf); DslError for non-numbers.

    Example:
        >>> number(0.9), number(1e-8), number(float("-inf")), number(float("nan"))
        ('0.9', '1e-08', '-1e999', '(1e999 * 0)')
    """
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


def domain_entries(program) -> list[str]:
    """The entries of a generated module's table of hyperparameter domains, ``"name": (words, test)``,
    printed from :data:`optdsl.domains.DOMAINS` for each hyperparameter of ``program`` that declares one.

    Example:
        >>> from optdsl import extend, load
        >>> domain_entries(extend.gradient_accumulation(load("sgd"), 4))
        ['"accum_steps": ("a whole number >= 1", lambda v: v >= 1 and float(v).is_integer())']
    """
    return [f'"{check_identifier(name)}": ("{DOMAINS[domain].words}", lambda v: {DOMAINS[domain].python})'
            for name, domain in program.hyper_domains.items()]


def load_module(source: str, name: str) -> types.ModuleType:
    """Execute generated ``source`` as a fresh module called ``name``, registered in sys.modules
    (torch.compile finds it there) and its text in linecache (so tracebacks and inspect work).

    Example:
        >>> import inspect
        >>> mod = load_module("def double(x):\\n    return 2 * x\\n", "demo_double")
        >>> mod.double(21), inspect.getsource(mod.double)
        (42, 'def double(x):\\n    return 2 * x\\n')
    """
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    code = compile(source, module.__file__, "exec")
    # inspect.getsource must find the text: @triton.jit reads its function's source from there.
    linecache.cache[module.__file__] = (len(source), None, source.splitlines(True), module.__file__)
    sys.modules[name] = module
    exec(code, module.__dict__)  # noqa: S102 - generated from validated IR only
    return module


def output_path(path: str) -> str:
    """The file a write to ``path`` lands in: ``path`` with symlinks resolved (a link is written
    through, never replaced). DslError, before anything is written, when that is not a regular
    file (a directory, a device such as ``/dev/full``, a FIFO, a socket) or its folder is missing
    or not writable.

    Example:
        >>> output_path("/dev/null")
        Traceback (most recent call last):
        optdsl.errors.DslError: /dev/null: is not a regular file (a device); refusing to replace it
    """
    if not path:  # realpath("") is the working folder: named as what it is, an empty name
        raise DslError("an empty file name", "''", hint="name the file to write")
    if path.endswith(tuple(filter(None, (os.sep, os.altsep)))) and not os.path.isdir(path):
        # realpath would drop the slash and write a file called "out": the user named a folder
        raise DslError("names a folder (it ends with a slash), not a file", path, hint="give a file name")
    if "\0" in path:  # (os refuses it with a ValueError, not an OSError)
        raise DslError("a file name cannot hold a NUL character", ascii(path), hint="give a file name")
    target = os.path.realpath(path)
    shown = path if target == os.path.abspath(path) else f"{path} (-> {target})"
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:  # a symlink loop, a name too long, a folder we may not search
        raise DslError(f"cannot write: {e.strerror}", path) from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(
            mode) else "a FIFO or socket"
        raise DslError(f"is not a regular file ({kind}); refusing to replace it", shown,
                       hint="give a file name" if stat.S_ISDIR(mode) else None)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise DslError(f"cannot write: no such folder {folder}", shown)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DslError(f"cannot write: the folder {folder} is not writable", shown)
    return target


# The sentences by which each file optdsl writes says so: a generated module's docstring, an
# exported program's, a plot's PNG text. A later write replaces a file that carries one of them,
# never one that merely mentions optdsl (a user's "# uses the optimizer generated by optdsl").
COMPILED_BY = "Generated by optdsl (`optdsl compile --target {target}`) from the program below; do not edit."
OPTAX_BY = "as an optax transformation, generated by optdsl from the program below."
FOUND_BY = "Found by optdsl search"  # then " of <database> (search <id>, program #<id>)"
PLOTTED_BY = "Generated by optdsl (optdsl report)"


def phrase(text: str) -> str:
    """A regular expression for ``text`` as a docstring may wrap it: any whitespace between words.

    Example:
        >>> bool(re.search(phrase("Found by optdsl search"), "Found by\\n    optdsl search"))
        True
    """
    return r"\s+".join(re.escape(word) for word in text.split())


_MODULES = [phrase(COMPILED_BY).replace(re.escape("{target}"), r"\w+"), phrase(OPTAX_BY)]
_FOUND = phrase(FOUND_BY) + r"[^#]{0,400}?\((?:search\s+\w+,\s+)?program\s+\#\d+\)"
_OURS = {  # what a file optdsl wrote carries; a generated module, the one kind nobody should edit
    False: re.compile("|".join([*_MODULES, _FOUND, re.escape(PLOTTED_BY)])),
    True: re.compile("|".join(_MODULES)),
}
_HEAD = 1 << 18  # bytes read for the sentence: a module's docstring quotes its program, which may be long


def imported_modules(tree: ast.AST) -> list[tuple[str, ast.stmt]]:
    """The top-level module each absolute import of a parsed Python file names, with its statement,
    in source order (``import a.b`` and ``from a.b import c``: ``a``; a relative import: none).

    Example:
        >>> tree = ast.parse("import os.path\\nfrom . import x\\nfrom torch import nn\\n")
        >>> [(name, node.lineno) for name, node in imported_modules(tree)]
        [('os', 1), ('torch', 3)]
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module.split(".")[0], node))
    return sorted(found, key=lambda f: (f[1].lineno, f[1].col_offset))


def written_by_optdsl(path: str, module: bool = False) -> bool:
    """Does the file at ``path`` carry a sentence only optdsl writes (``COMPILED_BY``...) in its
    first 256 KiB? With ``module``, one only a generated module carries (an exported program is
    a DSL source its user may since have edited). (False when it cannot be read.)

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     ours, theirs = os.path.join(d, "ours.py"), os.path.join(d, "theirs.py")
        ...     with open(ours, "w") as f:
        ...         _ = f.write(COMPILED_BY.format(target="torch") + "\\n")
        ...     with open(theirs, "w") as f:
        ...         _ = f.write("# trains with the optimizer generated by optdsl\\n")
        ...     written_by_optdsl(ours), written_by_optdsl(theirs), written_by_optdsl(os.path.join(d, "none"))
        (True, False, False)
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(_HEAD)
    except OSError:
        return False
    return _OURS[module].search(head) is not None


# The last line of a text file optdsl may later replace: the SHA-256 of the text above it. A file
# whose line no longer matches was edited since (a constant tuned in an exported program, a print
# added to a generated module), and is refused as a file of the user's is, never replaced silently.
_STAMP = "optdsl sha256 {}"
_STAMPED = re.compile(rb"^(?:# |<!-- )optdsl sha256 ([0-9a-f]{64})(?: -->)?\r?$", re.MULTILINE)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()  # (a checkout's CRLF is no edit)


def stamped(text: str, markdown: bool = False) -> str:
    """``text`` with a last line of its own holding the SHA-256 of the text above it, ``# optdsl
    sha256 <hex>`` (an HTML comment in ``markdown``): :func:`edited_since_written` then tells a file
    edited since it was written from one as it was.

    Example:
        >>> stamped("x = 1\\n").splitlines()[-1][:20]
        '# optdsl sha256 9e26'
    """
    text = text if text.endswith("\n") else text + "\n"
    line = _STAMP.format(_sha256(text.encode("utf-8")))
    return text + (f"<!-- {line} -->" if markdown else f"# {line}") + "\n"


def edited_since_written(path: str) -> bool:
    """Does the file at ``path`` carry a :func:`stamped` line that the text above it no longer
    matches, or text after it? (False for a file without one, an older optdsl's, or that cannot be
    read.)

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "gen.py")
        ...     with open(path, "w") as f:
        ...         _ = f.write(stamped("lr = 0.1\\n"))
        ...     as_written = edited_since_written(path)
        ...     with open(path, "r+") as f:
        ...         _ = f.write("lr = 0.3\\n")
        ...     as_written, edited_since_written(path)
        (False, True)
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    found = list(_STAMPED.finditer(data))
    if not found:
        return False
    last = found[-1]
    return data[last.end():].strip() != b"" or _sha256(data[: last.start()]) != last.group(1).decode()


def replaceable_path(path: str, force: bool = False,
                     hint: str = "move it away or write to another file", module: bool = False) -> str:
    """:func:`output_path`, refusing (DslError) also a file that is there and was not written by
    optdsl (with ``module``, that is not a module it generated) or was edited since
    (:func:`edited_since_written`), unless ``force``: a search's ``best_optimizer.py``, an export
    or ``compile -o`` replaces its own earlier output as it wrote it, never a file of the user's.

    Example::

        replaceable_path("notes.py")  # DslError if notes.py exists and optdsl did not write it
    """
    target = output_path(path)
    if not force and os.path.exists(target):
        if not written_by_optdsl(target, module):
            what = "is not a module generated" if module else "was not written"
            raise DslError(f"exists and {what} by optdsl; refusing to replace it", path, hint=hint)
        if edited_since_written(target):
            raise DslError("was edited since optdsl wrote it (its last line, a sha256 of the text above, no "
                           "longer matches); refusing to replace it", path, hint=hint)
    return target


def write_atomic(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically: readers see the old file or the new one,
    never half of one, and a failure (disk full, Ctrl-C) leaves the old file as it was.

    The text goes to a temporary file beside the target, is flushed to disk (fsync), then renamed
    over it. A symlink is written through (its target is replaced); a new file gets the umask's
    mode (``0o666 & ~umask``, as a shell redirection would), a replaced one keeps its mode. Paths
    :func:`output_path` refuses raise DslError and nothing is written. Returns ``path``.

    Example::

        write_atomic("out/adamw_torch.py", codegen.emit(program, "torch"))
    """
    return write_all_atomic({path: text})[0]


def write_all_atomic(files: dict[str, str]) -> list[str]:
    """:func:`write_atomic` for a set of files ``{path: text}``, all or none: every text is staged
    in its temporary file (flushed to disk) before any is renamed into place, so a failure while
    writing (a full disk halfway through an export) leaves every target as it was. Only the
    renames, which need no space, follow. Returns the paths.

    Example::

        write_all_atomic({"out/found_7.py": source, "out/found_7_torch.py": module})
    """
    staged = []  # (path, temporary file, target)
    try:
        for path, text in files.items():
            staged.append((path, *_staged(path, text)))
        for path, tmp, target in staged:
            try:
                os.replace(tmp, target)
            except OSError as e:  # the folder vanished, or its permissions changed meanwhile
                raise DslError(f"cannot write: {e.strerror or e}", path) from None
    finally:
        for _, tmp, _ in staged:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    for folder in dict.fromkeys(os.path.dirname(target) for _, _, target in staged):
        _fsync_folder(folder)
    return list(files)


def _staged(path: str, text: str) -> tuple[str, str]:
    """``text`` written and flushed to a new temporary file beside ``path``'s target, with the
    mode the target will have: ``(temporary file, target)``."""
    target = output_path(path)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    folder, name = os.path.split(target)
    for _ in range(100):  # a random name taken already: draw again
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            # O_EXCL: never follow or reuse something already there; 0o666: the kernel applies the umask.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise DslError(f"cannot write: {e.strerror}", path) from None
    else:
        raise DslError(f"cannot write: no free temporary name in {folder}", path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:  # the text as given, line ends too
            f.write(text)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError):  # disk full, quota, the folder vanished
            raise DslError(f"cannot write: {e.strerror or e}", path) from None
        raise
    return tmp, target


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (best effort: some file systems cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
