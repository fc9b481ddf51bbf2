"""Winners out of the store: DSL files and generated torch/jax modules, written atomically.

A stored program is exported in its readable form (:func:`optdsl.readable.readable`: folded,
dead code and dead states gone, sympy's shortest form, readable names), named ``found_<id>``,
with the learning rate the sweep preferred folded into its ``lr`` default (the geometric mean of
the per-task best ``lr``).

Example::

    paths = export_top(Store("search.sqlite"), k=3, outdir="winners")
    # winners/found_17.py (DSL), winners/found_17_torch.py, winners/found_17_jax.py, ...
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import codegen
from codegen.generated import replaceable_path, write_atomic
from optdsl.errors import DslError
from optdsl.ir import Hyper, Program
from optdsl.parser import parse
from optdsl.passes import eliminate_dead_code
from optdsl.printer import to_source
from optdsl.readable import Readable, readable

from .ablation import step
from .selection import ranked, winner
from .store import Store


def output_folder(outdir: str) -> str:
    """``outdir``, created (with its parents) if missing; DslError, with nothing created, when it
    exists but is not a folder (``export -o existing_file``) or cannot be created."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise DslError("exists and is not a folder; export writes several files into a folder", outdir,
                       hint="give a new or existing folder")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise DslError(f"cannot create the folder: {e.strerror}", outdir) from None
    return outdir


def preferred_lr(row: dict) -> float:
    """Geometric mean of the learning rates that won each task's sweep (1.0 if none)."""
    lrs = [v for v in (row.get("task_lr") or {}).values() if v and v > 0]
    return float(f"{math.exp(sum(map(math.log, lrs)) / len(lrs)):.3g}") if lrs else 1.0


def simplest(row: dict) -> Readable:
    """The row's program in its readable form (:func:`optdsl.readable.readable`, the tuned lr
    folded into the ``lr`` default), or, should the symbolic layer fail, with dead code removed
    and the tuned lr as the default (``equality`` then says so)."""
    raw = parse(row["source"], "<store>")
    lr = preferred_lr(row)
    try:
        return readable(raw, lr=lr)
    except Exception as e:  # noqa: BLE001 - the symbolic layer is an improvement, never a requirement
        live = eliminate_dead_code(raw)
        live = replace(live, hypers=(Hyper("lr", lr),) + tuple(h for h in live.hypers if h.name != "lr"))
        return Readable(live, to_source(live), "", f"exact (not simplified: {type(e).__name__})")


def exported_program(row: dict) -> Program:
    """The row's program as users get it: readable form, named ``found_<id>``, its scores and the
    kind of equality with the raw program in the docstring."""
    form = simplest(row)
    held_out = "not meta-validated" if row.get("meta_fitness") is None else f"{row['meta_fitness']:+.4f}"
    doc = (f"Found by optdsl search (program #{row['id']}): proxy fitness {row['fitness']:+.4f}, held-out "
           f"{held_out} (mean over tasks of log(tuned AdamW's loss / this one's), clipped to [-1, 1]; > 0 "
           f"beats AdamW). Simplified from the searched program; equality: {form.equality}.")
    if (removed := step(row)) is not None:
        doc += f" It is program #{row['parent']} with one op removed (in its flattened form: {removed})."
    return replace(form.program, name=_name(row), doc=doc)


def _name(row: dict) -> str:
    return f"found_{row['id']}"


def _paths(row: dict, outdir: str, targets) -> list[str]:
    """The files :func:`export_row` writes for ``row``: ``found_<id>.py``, then one per target."""
    return [os.path.join(outdir, f"{_name(row)}{suffix}.py") for suffix in ["", *(f"_{t}" for t in targets)]]


def export_row(row: dict, outdir: str, targets=("torch", "jax")) -> list[str]:
    """Write the DSL file and one generated module per target; returns the paths."""
    program = exported_program(row)
    output_folder(outdir)
    texts = [to_source(program), *(codegen.emit(program, target) for target in targets)]
    return [write_atomic(path, text) for path, text in zip(_paths(row, outdir, targets), texts)]


def export_top(store: Store, k: int, outdir: str, targets=("torch", "jax")) -> list[str]:
    """Export the ``k`` best distinct programs of the store, best first (held-out evidence
    first: :func:`search.selection.ranked`). A file of the user's among the names is refused before
    anything is written (:func:`codegen.generated.replaceable_path`)."""
    output_folder(outdir)
    rows = ranked(store, k)
    for row in rows:
        for path in _paths(row, outdir, targets):
            replaceable_path(path)
    return [path for row in rows for path in export_row(row, outdir, targets)]


def write_best(store: Store, path: str) -> tuple[dict, Program, str] | None:
    """The winner's generated torch optimizer at ``path``: ``(row, program, path)``."""
    row = winner(store)
    if row is None:
        return None
    program = exported_program(row)
    replaceable_path(path)
    return row, program, write_atomic(path, codegen.emit(program, "torch"))
