"""Is "tuned AdamW" tuned enough? The search's baseline tunes AdamW's learning rate per task and
keeps its weight decay at 0.01 (torch's default); this benchmark tunes the weight decay too.

For every task and every weight decay ``wd`` of ``--decays``, AdamW is tuned as the search tunes it
(:func:`search.evaluate.baseline`: the lr swept on seeds 0 and 1, then measured again with its two
neighbours on the seeds candidates are scored on: 2 and 3 for a proxy, 2..9 held out), and the table
gives ``log(loss at wd 0.01 / loss at wd)``: how much stronger that weight decay makes the baseline,
on the scale of a candidate's task score. The last column tunes ``(lr, wd)`` together as a user
would: the pair with the lowest loss on seeds 0 and 1, measured on the fresh seeds.

    python benchmarks/adamw_weight_decay.py                         # proxies and held-out tasks, cosine decay
    python benchmarks/adamw_weight_decay.py --tasks mlp,mlp_large --decays 0,0.1,1 --schedule constant
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from search.evaluate import CONFIRM_SEEDS, HELD_OUT_SEEDS, SCHEDULES, baseline
from search.tasks import META_TASKS, PROXY_TASKS, get_task

REFERENCE = 0.01  # the search's baseline: the zoo AdamW's weight decay


def tuned(task: str, decays: list[float], schedule: str) -> dict[float, dict]:
    """``{wd: baseline}`` for ``task``, each loss measured on the seeds its candidates are scored on."""
    fresh = HELD_OUT_SEEDS if task in META_TASKS else CONFIRM_SEEDS
    return {wd: baseline(task, fresh_seeds=fresh, schedule=schedule, weight_decay=wd) for wd in decays}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=",".join(PROXY_TASKS + META_TASKS), help="comma-separated task names")
    ap.add_argument("--decays", default="0,0.003,0.01,0.03,0.1,0.3,1", help="weight decays, comma-separated")
    ap.add_argument("--schedule", default="cosine", choices=SCHEDULES, help="the lr over each task's steps")
    args = ap.parse_args(argv)
    try:
        decays = sorted({float(x) for x in args.decays.split(",")} | {REFERENCE})
        tasks = [t.strip() for t in args.tasks.split(",")]
        for t in tasks:
            get_task(t)
    except (ValueError, KeyError) as e:
        ap.error(e.args[0])
    if any(not math.isfinite(wd) or wd < 0 for wd in decays):
        ap.error(f"--decays {args.decays}: weight decays are finite numbers >= 0")
    console = Console()
    title = f"AdamW's weight decay ({args.schedule} lr): log(loss at wd {REFERENCE} / loss at wd)"
    table = Table(title=title)
    table.add_column("task")
    for wd in decays:
        table.add_column(f"wd {wd:g}", justify="right")
    table.add_column("(lr, wd) tuned", justify="right")
    joint: dict[str, list[float]] = {"proxies": [], "held out": []}
    t0 = time.perf_counter()
    for task in tasks:
        with console.status(f"{task}: tuning AdamW at {len(decays)} weight decays ..."):
            row = tuned(task, decays, args.schedule)
        ref = row[REFERENCE]["loss"]
        gain = {wd: float(np.log(ref / b["loss"])) for wd, b in row.items()}
        chosen = min(row, key=lambda wd: row[wd]["sweep_loss"])
        joint["held out" if task in META_TASKS else "proxies"].append(gain[chosen])
        table.add_row(task, *[f"{gain[wd]:+.3f}" for wd in decays], f"{gain[chosen]:+.3f} (wd {chosen:g})")
    table.add_section()
    for kind, gains in joint.items():
        if gains:
            table.add_row(f"mean, {kind}", *[""] * len(decays), f"{np.mean(gains):+.3f}")
    console.print(table)
    console.print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
