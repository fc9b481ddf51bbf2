"""Winners out of the store: DSL files and generated torch/jax modules, written atomically.

A stored program is exported in its readable form (:func:`optdsl.readable.readable`: folded,
dead code and dead states gone, sympy's shortest form, readable names), named ``found_<id>``,
with the learning rate the sweep preferred folded into its ``lr`` default (the geometric mean of
the per-task best ``lr``).

Example::

    paths = export_top(Store("search.sqlite"), k=3, outdir="winners")
    # winners/found_17.py (DSL), winners/found_17_torch.py, winners/found_17_jax.py, ...,
    # winners/ranking.md (their order and scores)
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from dataclasses import replace

import codegen
from codegen.generated import (
    FOUND_BY,
    PLOTTED_BY,
    phrase,
    replaceable_path,
    stamped,
    write_all_atomic,
    write_atomic,
)
from optdsl.errors import DslError
from optdsl.ir import Program
from optdsl.parser import parse
from optdsl.printer import to_source
from optdsl.readable import Readable, readable_within, unsimplified

from .ablation import step
from .evaluate import aggregate_words
from .evolution import hurdles_only, weighs_losses
from .selection import ranked, winner
from .store import Store


def output_folder(outdir: str) -> str:
    """``outdir``, created (with its parents) if missing; DslError, with nothing created, when it
    exists but is not a folder (``export -o existing_file``) or cannot be created.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     print(os.path.relpath(output_folder(os.path.join(d, "runs", "best")), d))
        runs/best
    """
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise DslError("exists and is not a folder; export writes several files into a folder", outdir,
                       hint="give a new or existing folder")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise DslError(f"cannot create the folder: {e.strerror}", outdir) from None
    return outdir


def preferred_lr(row: dict) -> float:
    """Geometric mean of the learning rates that won each task's sweep (1.0 if none), to 3
    significant digits: ``lr = exp(mean_t log lr_t)``.

    Example:
        >>> preferred_lr({"task_lr": {"mlp": 0.1, "logreg": 1.0}}), preferred_lr({"task_lr": {}})
        (0.316, 1.0)
    """
    lrs = [v for v in (row.get("task_lr") or {}).values() if v and v > 0]
    return float(f"{math.exp(sum(map(math.log, lrs)) / len(lrs)):.3g}") if lrs else 1.0


def simplest(row: dict, simplify: bool = True) -> Readable:
    """The row's program in its readable form (:func:`optdsl.readable.readable_within`, the
    tuned lr folded into the ``lr`` default): should the symbolic layer fail or take longer than
    :data:`optdsl.readable.READABLE_SECONDS`, or with ``simplify=False`` (a second Ctrl-C while a
    search wrote its winner), with dead code removed and the tuned lr as the default
    (``equality`` then says so).

    Example (the warm start, its ``lr * 0.001`` folded into the default lr 0.5 * 0.001):
        >>> from search.warm_start import adamw_program
        >>> form = simplest({"source": to_source(adamw_program()), "task_lr": {"mlp": 0.25, "logreg": 1.0}})
        >>> print(form.source, end="")
        def train(w, g, m, v, lr=0.0005):
            m = interp(g, m, 0.9)
            v = interp(square(g), v, 0.999)
            update = lr * (m / (sqrt(v) + 1e-08) + 0.01 * w)
            return update, m, v
        >>> form.equality
        'exact'
    """
    program = parse(row["source"], "<store>")
    if not simplify:
        return unsimplified(program, preferred_lr(row), "interrupted")
    return readable_within(program, preferred_lr(row))


def exported_program(row: dict, database: str | None = None, simplify: bool = True,
                     search: str | None = None, loss_averse: bool | None = True,
                     hurdle_only: tuple[str, ...] = ()) -> Program:
    """The row's program as users get it: readable form (:func:`simplest`), named ``found_<id>``,
    its scores (``loss_averse`` and ``hurdle_only``: how its search aggregates them,
    :func:`search.evolution.weighs_losses`, :func:`search.evolution.hurdles_only`),
    the search's database (its file name, when given) and id (``search``, when given) and the kind of
    equality with the raw program in the docstring.

    Example:
        >>> from optdsl import load
        >>> row = {"id": 7, "source": to_source(load("sgd")), "task_lr": {"mlp": 0.5}, "fitness": 0.023,
        ...        "meta_fitness": None, "mutation": None, "parent": None}
        >>> p = exported_program(row)
        >>> p.name, p.hyper_defaults
        ('found_7', {'lr': 0.5})
        >>> print(p.doc)
        Found by optdsl search (program #7): proxy fitness +0.0230, held-out not meta-validated (per
        task s = log(tuned AdamW's loss / this one's) clipped at -1 and +1, then the mean over the
        tasks, the best one left out when there are three or more, a loss s counted as (1 + s)^2 - 1;
        above 0 beats AdamW). Simplified from the searched program; equality: exact.
    """
    form = simplest(row, simplify)
    held_out = "not meta-validated" if row.get("meta_fitness") is None else f"{row['meta_fitness']:+.4f}"
    of = f" of {os.path.basename(database)}" if database not in (None, ":memory:") else ""
    named = f"search {search}, " if search else ""
    doc = (f"{FOUND_BY}{of} ({named}program #{row['id']}): proxy fitness {row['fitness']:+.4f}, "
           f"held-out {held_out} (per task s = log(tuned AdamW's loss / this one's) clipped at -1 and +1, "
           f"then {aggregate_words(loss_averse, hurdle_only=hurdle_only)}; above 0 beats AdamW). "
           f"Simplified from the searched program; equality: {form.equality}.")
    if (removed := step(row)) is not None:
        doc += f" It is program #{row['parent']} with one op removed (in its flattened form: {removed})."
    return replace(form.program, name=_name(row), doc=textwrap.fill(doc, 96, break_on_hyphens=False))


# the docstring that names the database (and the search's id) may be wrapped anywhere
# the search a file names as its author: "Found by optdsl search of DB (search ID, program #N)" in a
# winner, "Generated by optdsl (optdsl report) of DB (search ID)" in a plot's PNG text ("()": no id)
_SEARCH_OF = [
    re.compile(phrase(FOUND_BY) + r"\s+of\s+(.+?)\s+\((?:search\s+(\w+),\s+)?program\s+#", re.DOTALL),
    re.compile(re.escape(PLOTTED_BY) + r" of (.+?) \((?:search (\w+))?\)"),
]


def search_id(store: Store) -> str | None:
    """The id a search's database keeps from its creation (None for one made before ids were):
    its winners name it, so that a search of the same file name elsewhere, or a new database where
    an old one was, is not taken for their author (:func:`replaceable_winner`)."""
    return store.get_meta("search_id")


def replaceable_winner(path: str, database: str, search: str | None = None, what: str = "winner") -> str:
    """:func:`replaceable_path`, refusing also a winner (or ``what`` else: the plots) that another
    search wrote (DslError): the file names its database and the search's id
    (:func:`exported_program`, :func:`search.report.plot`), and two searches in one folder, or
    exports of two databases into one, would otherwise replace each other's winners silently.
    ``search`` is this search's id (None for a new search: every file naming an id is then
    another's); a file that names no id is judged by its database's file name. Files that name no
    database (a user's, an older optdsl's) are judged by :func:`replaceable_path` alone; a link is
    refused (its target is a file nobody named here).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "best_optimizer.py")
        ...     with open(path, "w") as f:
        ...         _ = f.write("# Found by optdsl search of a.sqlite (program #1): ...")
        ...     _ = replaceable_winner(path, os.path.join(d, "a.sqlite"))  # its own: replaceable
        ...     replaceable_winner(path, os.path.join(d, "b.sqlite"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        optdsl.errors.DslError: .../best_optimizer.py: holds the winner of another search (a.sqlite);...
    """
    if os.path.islink(path):  # the user named the database or folder, never the file the link reaches
        raise DslError(f"is a link to {os.readlink(path)}; writing the {what} here would replace that file",
                       path, hint="remove the link, or write into another folder")
    target = replaceable_path(path)
    try:
        with open(target, encoding="utf-8", errors="replace") as f:
            head = f.read(2048)
        named = next(filter(None, (pattern.search(head) for pattern in _SEARCH_OF)), None)
    except FileNotFoundError:
        return target
    other = " ".join(named.group(1).split()) if named else None  # the docstring may wrap a name with spaces
    other_id = named.group(2) if named else None
    mine = " ".join(os.path.basename(database).split())
    if other is not None and (other_id != search if other_id is not None else other != mine):
        which = f"{other}, search {other_id}" if other_id else other
        raise DslError(f"holds the {what} of another search ({which}); refusing to replace it", path,
                       hint="give each search a folder of its own, or move the file away")
    return target


def _name(row: dict) -> str:
    return f"found_{row['id']}"


def _paths(row: dict, outdir: str, targets) -> list[str]:
    """The files :func:`export_row` writes for ``row``: ``found_<id>.py``, then one per target."""
    return [os.path.join(outdir, f"{_name(row)}{suffix}.py") for suffix in ["", *(f"_{t}" for t in targets)]]


def export_row(row: dict, outdir: str, targets=("torch", "jax"), database: str | None = None,
               loss_averse: bool | None = True, hurdle_only: tuple[str, ...] = ()) -> list[str]:
    """Write the DSL file and one generated module per target, their docstrings naming the
    search's ``database`` when given; returns the paths.

    Example:
        >>> import tempfile
        >>> from optdsl import load
        >>> row = {"id": 7, "source": to_source(load("sgd")), "task_lr": {}, "fitness": 0.0,
        ...        "meta_fitness": None}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     print([os.path.basename(p) for p in export_row(row, d, targets=("torch",))])
        ['found_7.py', 'found_7_torch.py']
    """
    output_folder(outdir)
    return write_all_atomic(_files(row, outdir, targets, database, loss_averse=loss_averse,
                                   hurdle_only=hurdle_only))


def _files(row: dict, outdir: str, targets, database: str | None, search: str | None = None,
           loss_averse: bool | None = True, hurdle_only: tuple[str, ...] = ()) -> dict:
    """``{path: text}`` of the files :func:`export_row` writes (``search``: the search's id)."""
    program = exported_program(row, database, search=search, loss_averse=loss_averse, hurdle_only=hurdle_only)
    texts = [stamped(text) for text in [to_source(program), *(codegen.emit(program, t) for t in targets)]]
    return dict(zip(_paths(row, outdir, targets), texts))


def ranking(rows: list[dict], database: str, search: str | None, targets=("torch", "jax")) -> str:
    """``ranking.md`` of an export: the programs in rank order with both scores and their files
    (file names sort by id, and an earlier export's files may share the folder). Its first line
    names the search as a winner's docstring does, so that another search's export cannot replace it.

    Example:
        >>> row = {"id": 7, "fitness": 0.21, "meta_fitness": 0.1}
        >>> print(ranking([row], "s.sqlite", "ab12", targets=("torch",)).splitlines()[-1])
        | 1 | #7 | +0.100 | +0.210 | found_7.py, found_7_torch.py |
    """
    named = f"search {search}, " if search else ""
    score = lambda v: "not meta-validated" if v is None else f"{v:+.3f}"
    title = f"{FOUND_BY} of {os.path.basename(database)} ({named}program #{rows[0]['id']})"
    lines = [f"# {title}: its {len(rows)} best", "",
             ("Ranked as `optdsl report` ranks them: held-out evidence first (scores: per task log(tuned "
              "AdamW's loss / this one's), clipped at -1 and +1, over the tasks as each program's docstring "
              "says; > 0 beats AdamW)."), "",
             "| rank | program | held-out fitness | proxy fitness | files |", "|---|---|---|---|---|"]
    for rank, row in enumerate(rows, 1):
        files = ", ".join(os.path.basename(p) for p in _paths(row, "", targets))
        scores = f"{score(row['meta_fitness'])} | {score(row['fitness'])}"
        lines.append(f"| {rank} | #{row['id']} | {scores} | {files} |")
    return "\n".join(lines) + "\n"


def export_top(store: Store, k: int, outdir: str, targets=("torch", "jax")) -> list[str]:
    """Export the ``k`` best distinct programs of the store, best first (held-out evidence
    first: :func:`search.selection.ranked`), and their :func:`ranking` (``ranking.md``), all files
    or none. A file of the user's or another search's winner among the names, or a store with no
    scored program, is refused before anything is written (DslError).

    Example (the meta-validated program #2 comes first):
        >>> import tempfile
        >>> from optdsl import load
        >>> from search.candidate import describe
        >>> store = Store(":memory:")
        >>> for name, fitness in [("sgd", 0.2), ("adamw", 0.1)]:
        ...     _ = store.add(**describe(load(name)), status="ok", fitness=fitness, task_lr={"mlp": 0.5})
        >>> store.set_meta_validation(2, 0.05, {"mlp_large": 0.05})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     print([os.path.basename(p) for p in export_top(store, 2, d, targets=("torch",))])
        ['found_2.py', 'found_2_torch.py', 'found_1.py', 'found_1_torch.py', 'ranking.md']
    """
    rows = ranked(store, k)
    if not rows:  # before the folder is made: nothing is written
        raise DslError("holds no scored program to export", store.path,
                       hint=f"`optdsl report {store.path}` counts what the search tried and why it failed")
    # the search's settings read before the folder is made: one unreadable, nothing is created
    search, loss_averse, hurdle_only = search_id(store), weighs_losses(store), hurdles_only(store)
    output_folder(outdir)
    files = {path: text for row in rows for path, text in
             _files(row, outdir, targets, store.path, search, loss_averse, hurdle_only).items()}
    table = ranking(rows, store.path, search, targets)
    files[os.path.join(outdir, "ranking.md")] = stamped(table, markdown=True)
    for path in files:
        replaceable_winner(path, store.path, search)
    # every file made before any is written: a failure (a full disk) leaves the folder as it was
    return write_all_atomic(files)


def write_best(store: Store, path: str, simplify: bool = True) -> tuple[dict, Program, str] | None:
    """The winner's generated torch optimizer at ``path``: ``(row, program, path)``; None while
    the store holds no scored program. ``simplify``: see :func:`simplest`.

    Example:
        >>> import tempfile
        >>> from optdsl import load
        >>> from search.candidate import describe
        >>> store = Store(":memory:")
        >>> store.add(**describe(load("sgd")), status="ok", fitness=0.1, task_lr={"mlp": 0.5})
        1
        >>> with tempfile.TemporaryDirectory() as d:
        ...     row, program, path = write_best(store, os.path.join(d, "best_optimizer.py"))
        ...     print(program.name, "class Found1" in open(path).read())
        found_1 True
    """
    row = winner(store)
    if row is None:
        return None
    search = search_id(store)
    program = exported_program(row, store.path, simplify, search, weighs_losses(store), hurdles_only(store))
    replaceable_winner(path, store.path, search)
    return row, program, write_atomic(path, stamped(codegen.emit(program, "torch")))
