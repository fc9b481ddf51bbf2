"""Winners out of the store: DSL files and generated torch/jax modules, written atomically.

A stored program is exported in its simplest form (:func:`optdsl.simplify.simplify`, falling
back to dead-code removal when that fails), named ``found_<id>``, with the learning rate the
sweep preferred as its default (the geometric mean of the per-task best ``lr``).

Example::

    paths = export_top(Store("search.sqlite"), k=3, outdir="winners")
    # winners/found_17.py (DSL), winners/found_17_torch.py, winners/found_17_jax.py, ...
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import codegen
from codegen.generated import write_atomic as _write_atomic
from optdsl.ir import Hyper, Program
from optdsl.parser import parse
from optdsl.passes import eliminate_dead_code
from optdsl.printer import to_source

from .store import Store


def write_atomic(path: str, text: str) -> str:
    """``codegen``'s atomic write (temporary file + rename), creating the folder; returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _write_atomic(path, text)
    return path


def simplest(program: Program) -> Program:
    """``program`` simplified (sympy), or with dead code removed if simplification fails."""
    try:
        from optdsl.simplify import simplify

        return simplify(program)
    except Exception:  # noqa: BLE001 - the symbolic layer is an improvement, never a requirement
        return eliminate_dead_code(program)


def preferred_lr(row: dict) -> float:
    """Geometric mean of the learning rates that won each task's sweep (1.0 if none)."""
    lrs = [v for v in (row.get("task_lr") or {}).values() if v and v > 0]
    return float(f"{math.exp(sum(map(math.log, lrs)) / len(lrs)):.3g}") if lrs else 1.0


def exported_program(row: dict) -> Program:
    """The row's program as users get it: simplest form, ``found_<id>``, lr defaulting to the
    sweep's choice."""
    program = simplest(parse(row["source"], "<store>"))
    hypers = (Hyper("lr", preferred_lr(row)),) + tuple(h for h in program.hypers if h.name != "lr")
    doc = (f"Found by optdsl search (program #{row['id']}): fitness {row['fitness']:+.4f} on the proxy "
           "tasks (log of tuned AdamW's loss over this one's; > 0 is better).")
    return replace(program, name=f"found_{row['id']}", hypers=hypers, doc=doc)


def export_row(row: dict, outdir: str, targets=("torch", "jax")) -> list[str]:
    """Write the DSL file and one generated module per target; returns the paths."""
    program = exported_program(row)
    paths = [write_atomic(os.path.join(outdir, f"{program.name}.py"), to_source(program))]
    for target in targets:
        paths.append(write_atomic(os.path.join(outdir, f"{program.name}_{target}.py"),
                                  codegen.emit(program, target)))
    return paths


def export_top(store: Store, k: int, outdir: str, targets=("torch", "jax")) -> list[str]:
    """Export the ``k`` best distinct programs of the store (best first)."""
    paths = []
    for row in store.top(k):
        paths += export_row(row, outdir, targets)
    return paths


def write_best(store: Store, path: str) -> tuple[dict, Program, str] | None:
    """The best program's generated torch optimizer at ``path``: ``(row, program, path)``."""
    top = store.top(1)
    if not top:
        return None
    program = exported_program(top[0])
    return top[0], program, write_atomic(path, codegen.emit(program, "torch"))
