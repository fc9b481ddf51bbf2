"""The torch.optim checkpoints a program can load: a name map its docstring declares.

A program that *is* a torch.optim optimizer says so in one line of its docstring, and the
generated torch module then loads that optimizer's ``state_dict`` (``optdsl.zoo.adamw``)::

    torch.optim.AdamW checkpoints: exp_avg -> m, exp_avg_sq -> v; requires amsgrad=False; records amsgrad

The declaration is part of the program: :func:`optdsl.typecheck.validate` reads it (a name the
program does not have is an error there, so ``optdsl check`` and every target agree), and a
transformation that removes states or hyperparameters (``simplify``, ``bind``) drops the lines
that name them (:func:`without_stale`): a simplified momentum SGD with ``momentum=0`` has no
buffer to load ``momentum_buffer`` into.

Example:
    >>> from optdsl import load
    >>> torch_checkpoints(load("momentum"))["SGD"]["states"]
    {'momentum_buffer': 'b'}
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from .errors import DslError
from .ir import Program

_LINE = re.compile(r"^\s*torch\.optim\.(\w+) checkpoints: (.*?)(?:; requires (.*?))?(?:; records (.*))?$")
_RENAME = re.compile(r"(\w+) -> (\(\w+, \w+\)|\w+)")


def torch_checkpoints(program: Program) -> dict[str, dict]:
    """The torch.optim checkpoints ``program`` loads, declared in its docstring by a line::

        torch.optim.AdamW checkpoints: exp_avg -> m, exp_avg_sq -> v; requires amsgrad=False; records amsgrad

    (torch's state or tuple hyperparameter -> the program's name, ``eps -> (eps1, eps2)`` splits a
    tuple, nothing where no state loads: ``torch.optim.SGD checkpoints: ; requires momentum=0``;
    ``requires`` lists param-group settings a checkpoint must match, where it records them (an
    older torch did not record ``decoupled_weight_decay``); ``records``, after it, the settings
    every checkpoint of that class records, so that one without them is another optimizer's:
    torch's RAdam keeps ``exp_avg`` and ``exp_avg_sq`` as Adam does, but no ``amsgrad``).
    A name the program does not have, or a requirement that is not ``key=literal``, is a DslError.

    Example:
        >>> from optdsl import load
        >>> torch_checkpoints(load("adamw"))["AdamW"]["states"]
        {'exp_avg': 'm', 'exp_avg_sq': 'v'}
    """
    out = {}
    names = _names(program)
    for cls, renames, requires, records in _declarations(program.doc):
        states, hypers = {}, {}

        def fail(message, what, hint=None, cls=cls):
            raise DslError(f"{program.name}: torch.optim.{cls} checkpoints {message}", program.filename,
                           *_place(program, what), program.source, hint) from None

        if _RENAME.sub("", renames).replace(",", "").strip():
            fail(f"map {renames.strip()!r}, not torch_name -> ours, ...", renames.strip(),
                 hint="e.g. 'exp_avg -> m, exp_avg_sq -> v'; nothing before ';' when no state loads")
        for torch_name, targets in _targets(renames):
            if not set(targets) <= names:
                fail(f"map {torch_name} to {', '.join(targets)}, which the program does not have",
                     f"{torch_name} ->", hint="name one of its states or hyperparameters, or drop the line")
            if len(targets) > 1:  # eps -> (eps1, eps2): a tuple hyperparameter
                hypers[torch_name] = targets
            else:
                states[torch_name] = targets[0]
        required = {}
        for item in filter(None, (x.strip() for x in (requires or "").split(","))):
            key, _, value = item.partition("=")
            try:
                required[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                fail(f"require {item!r}, not key=literal", item)
        recorded = tuple(filter(None, (x.strip() for x in (records or "").split(","))))
        for key in recorded:
            if not key.isidentifier():
                fail(f"record {key!r}, not a param-group key", key, hint="e.g. '; records amsgrad'")
        out[cls] = {"states": states, "hypers": hypers, "requires": required, "records": recorded}
    return out


def without_stale(program: Program) -> Program:
    """``program`` without the declarations that name a state or hyperparameter it no longer has
    (``program`` itself when there is none).

    Example (plain SGD has no buffer ``b`` to load a momentum buffer into):
        >>> from optdsl import load
        >>> sgd = load("sgd")
        >>> stale = replace(sgd, doc=sgd.doc + "\\ntorch.optim.SGD checkpoints: momentum_buffer -> b")
        >>> without_stale(stale).doc == sgd.doc, without_stale(sgd) is sgd
        (True, True)
    """
    if "checkpoints:" not in program.doc:  # the search's programs: no docstring
        return program
    names = _names(program)
    doc = without_declarations(program.doc, lambda renames: not all(
        set(targets) <= names for _, targets in _targets(renames)))
    return program if doc == program.doc else replace(program, doc=doc)


def without_declarations(doc: str, which=lambda renames: True) -> str:
    """``doc`` without its declaration lines (those whose name map ``which`` picks), and without
    the blank lines that leaves at its end. A derived optimizer (``optdsl.extend``) is no longer
    the torch.optim one its inner program declares, so it drops them all.

    Example:
        >>> from optdsl import load
        >>> doc = load("adamw").doc
        >>> doc.splitlines()[-1].startswith("torch.optim.AdamW checkpoints:")
        True
        >>> without_declarations(doc).splitlines()[-1]
        'w <- w (1 - lr wd) - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)'
    """
    lines = doc.split("\n")
    kept = [line for line in lines if not ((m := _LINE.match(line)) and which(m[2]))]
    return doc if len(kept) == len(lines) else "\n".join(kept).rstrip()


def _place(program: Program, text: str) -> tuple[int | None, int | None]:
    """(line, 0-based column) of ``text`` on a declaration line of the program's source, for the
    error's caret; (None, None) where the program has no source (built in Python)."""
    for number, line in enumerate((program.source or "").splitlines(), start=1):
        # the docstring's opening quotes may precede the declaration on its source line
        if _LINE.match(line.lstrip().lstrip("rRuU").lstrip("\"'")) and text in line:
            return number, line.index(text)
    return None, None


def _names(program: Program) -> set[str]:
    return set(program.state_names) | set(program.hyper_defaults)


def _declarations(doc: str) -> list[tuple[str, str, str | None, str | None]]:
    return [m.groups() for m in map(_LINE.match, doc.split("\n")) if m]


def _targets(renames: str) -> list[tuple[str, tuple[str, ...]]]:
    """``exp_avg -> m, eps -> (eps1, eps2)`` as ``[("exp_avg", ("m",)), ("eps", ("eps1", "eps2"))]``."""
    return [(torch_name, tuple(re.findall(r"\w+", ours))) for torch_name, ours in _RENAME.findall(renames)]
