"""What a search found: a table of the best programs and two plots.

Printed: the search's totals (evaluations, cache hit rate, redundant statements, tuned AdamW's
losses), then the top programs with their proxy fitness, meta-validation fitness (the larger
held-out tasks; the funnel), memory (states per parameter), score per task, and simplified
source. Written (PNG): ``best_fitness.png`` (best fitness so far against evaluations, every
evaluation as a dot) and ``pareto_front.png`` (fitness against memory, the non-dominated
programs joined).

Example::

    report(Store("search.sqlite"), outdir="report")   # prints, and writes report/*.png
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

from codegen.generated import PLOTTED_BY
from optdsl.parser import parse
from optdsl.printer import to_source
from optdsl.tables import print_table

from .evolution import hurdles_only, weighs_losses
from .export import exported_program, replaceable_winner, search_id
from .guards import horizon_fault
from .selection import META_TOLERANCE, no_winner, ranked
from .store import Store, failures


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(fitness, memory)`` points (higher fitness, lower memory),
    sorted by memory.

    Example:
        >>> pareto_front([(1.0, 2.0), (0.5, 1.0), (0.4, 2.0), (1.2, 3.0)])
        [1, 0, 3]
    """
    front = []
    for i, (f, m) in enumerate(points):
        dominated = any((f2 >= f and m2 <= m) and (f2 > f or m2 < m) for f2, m2 in points)
        if not dominated and (f, m) not in [points[j] for j in front]:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))


def totals(store: Store) -> dict:
    """Counts over the whole store: evaluated, cached, failed (a sentence: how many, of which kind), hit
    rate, redundant fraction::

        cache_hit_rate = cached / rows,   redundant_fraction = 1 - live statements / statements

    Example:
        >>> from optdsl import load
        >>> from search.candidate import describe
        >>> store = Store(":memory:")
        >>> for status in ("ok", "cached", "diverged"):
        ...     _ = store.add(**describe(load("sgd")), status=status)
        >>> t = totals(store)
        >>> t["evaluated"], t["failed"], round(t["cache_hit_rate"], 3)
        (2, '1 failed: 1 diverged', 0.333)
    """
    counts = store.by_status()  # by SQLite: a long search's rows need not be read (hundreds of MB)
    rows = sum(c["rows"] for c in counts.values())
    evaluated = {s: c for s, c in counts.items() if s != "cached"}
    cached = rows - sum(c["rows"] for c in evaluated.values())
    stmts = sum(c["n_statements"] for c in counts.values())
    live = sum(c["n_live"] for c in counts.values())
    return {"rows": rows, "evaluated": rows - cached, "cached": cached,
            "failed": failures({s: c["rows"] for s, c in evaluated.items()}),
            "hurdled": evaluated.get("hurdle", {}).get("rows", 0),
            "cache_hit_rate": cached / rows if rows else 0.0,
            "redundant_fraction": 1 - live / stmts if stmts else 0.0,
            "eval_seconds": sum(c["eval_seconds"] for c in evaluated.values())}


def png_metadata(store: Store) -> dict:
    """The plots' PNG text chunk, which :func:`codegen.generated.written_by_optdsl` and
    :func:`search.export.replaceable_winner` read: a later report of the same search may replace its
    plots, never a user's files of the same names or another search's plots."""
    search = search_id(store)
    named = f"search {search}" if search else ""
    return {"Software": f"{PLOTTED_BY} of {os.path.basename(store.path)} ({named})"}


def _plot_paths(outdir: str, store: Store) -> list[str]:
    """The plots' paths in ``outdir``, the folder made; a file of the user's or another search's
    plot by either name is refused (DslError), an unwritable folder is an OSError, both before
    anything is written."""
    os.makedirs(outdir, exist_ok=True)
    paths = [os.path.join(outdir, name) for name in ("best_fitness.png", "pareto_front.png")]
    for path in paths:
        replaceable_winner(path, store.path, search_id(store), what="plots")
    return paths


def plot(store: Store, outdir: str) -> list[str]:
    """Write ``best_fitness.png`` and ``pareto_front.png`` into ``outdir``; returns the paths.

    Example::

        plot(Store("search.sqlite", readonly=True), "report")   # ['report/best_fitness.png', ...]
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = _plot_paths(outdir, store)
    metadata = png_metadata(store)
    rows = store.originals()
    xs, ys, best, running = [], [], [], float("-inf")
    for i, r in enumerate(rows, 1):
        if r["fitness"] is not None:
            xs.append(i)
            ys.append(r["fitness"])
            if r["status"] == "ok":
                running = max(running, r["fitness"])
        best.append(running)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(xs, ys, s=6, alpha=0.3, label="each evaluation")
    ax.step(range(1, len(best) + 1), best, where="post", color="C3", label="best so far")
    ax.axhline(0, color="grey", lw=0.8, ls="--", label="tuned AdamW")
    lo = min([b for b in best if b > float("-inf")] + [0.0]) - 1
    ax.set_ylim(lo, max(best + [0.0]) + 0.3)
    ax.set_xlabel("evaluations")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # (2.25 evaluations is none)
    ax.set_ylabel("fitness (0 = tuned AdamW)")
    ax.legend(loc="lower right")
    ax.set_title("Search progress (fitness: log(AdamW loss / loss) over the tasks, best one left out)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120, metadata=metadata)
    plt.close(fig)

    ok = [r for r in rows if r["status"] == "ok" and r["fitness"] is not None]
    pts = [(r["fitness"], r["memory"]) for r in ok]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[1] for p in pts], [p[0] for p in pts], s=8, alpha=0.3, label="evaluated programs")
    ax.plot([pts[i][1] for i in front], [pts[i][0] for i in front], "o-", color="C3", label="Pareto front")
    for i in front:
        ax.annotate(f"#{ok[i]['id']}", (pts[i][1], pts[i][0]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("memory: optimizer states per parameter")
    ax.set_ylabel("fitness (0 = tuned AdamW)")
    ax.set_title("Quality vs memory")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120, metadata=metadata)
    plt.close(fig)
    return paths


def scores_table(rows: list[dict], title: str) -> Table:
    """One column per program, one row per measure (proxy and held-out scores side by side,
    then each task's score): stays readable in 80 columns.

    Example:
        >>> rows = [{"id": i, "fitness": 0.1 * i, "meta_fitness": None, "memory": 2.0, "n_live": 5,
        ...          "task_score": {"mlp": 0.1 * i}, "meta_task_score": None} for i in (1, 2)]
        >>> t = scores_table(rows, "Best")
        >>> [c.header for c in t.columns], list(t.columns[2].cells)[0]
        (['program', '#1', '#2'], '+0.200')
    """
    tasks = list(dict.fromkeys(k for r in rows for k in (r["task_score"] or {})))
    meta_tasks = list(dict.fromkeys(k for r in rows for k in (r["meta_task_score"] or {})))
    table = Table(title=title, min_width=len(title))  # (a title wider than the table wraps)
    table.add_column("program", style="bold")
    for r in rows:
        table.add_column(f"#{r['id']}", justify="right", no_wrap=True)
    fmt = lambda v: "-" if v is None else f"{v:+.3f}"
    table.add_row("proxy fitness", *[fmt(r["fitness"]) for r in rows])
    table.add_row("held-out (meta-validation)", *[fmt(r["meta_fitness"]) for r in rows])
    table.add_row("memory (states/param)", *[f"{r['memory']:g}" for r in rows])
    table.add_row("live statements", *[str(r["n_live"]) for r in rows], end_section=True)
    for k in tasks:
        table.add_row(f"proxy: {k}", *[fmt((r["task_score"] or {}).get(k)) for r in rows])
    for k in meta_tasks:
        table.add_row(f"held-out: {k}", *[fmt((r["meta_task_score"] or {}).get(k)) for r in rows])
    return table


def winner_table(row: dict, best: dict | None = None) -> Table:
    """The winner's scores, proxy and held-out side by side (:func:`scores_table` of one row);
    ``best``: the best held-out row, named where the winner is not it (a simpler program that ties
    with it, see :func:`search.selection.ties`).

    Example:
        >>> row = {"id": 7, "fitness": 0.1, "meta_fitness": 0.05, "memory": 1.0, "n_live": 4,
        ...        "task_score": {}, "meta_task_score": {}}
        >>> winner_table(row).title
        'Winner: program #7, the best held out (0 = tuned AdamW, higher is better)'
        >>> winner_table(row, {"id": 3, "meta_fitness": 0.058}).title.split(" (0 =")[0]
        'Winner: program #7, the simplest within 0.01 of the best held out (#3, +0.058)'
    """
    why = "the best held out" if row.get("meta_fitness") is not None else "the best on the proxies"
    if best is not None and best["id"] != row["id"] and row.get("meta_fitness") is not None:
        why = (f"the simplest within {META_TOLERANCE} of the best held out "
               f"(#{best['id']}, {best['meta_fitness']:+.3f})")
    return scores_table([row], f"Winner: program #{row['id']}, {why} (0 = tuned AdamW, higher is better)")


def report(store: Store, outdir: str | None = None, top: int = 5, console: Console | None = None) -> list[str]:
    """Print the report; write the plots into ``outdir`` if given. Returns the plot paths.

    Example:
        >>> import io
        >>> from optdsl import load
        >>> from search.candidate import describe
        >>> store = Store(":memory:")
        >>> _ = store.add(**describe(load("sgd")), status="ok", fitness=-0.3, task_lr={"mlp": 0.5})
        >>> out = io.StringIO()
        >>> report(store, console=Console(file=out, width=200))    # no outdir: no plots
        []
        >>> print(out.getvalue().split(", 0 cache hits")[0])
        :memory:: 1 program tried, 1 evaluated (0 failed; 0 stopped at a hurdle)
    """
    if outdir:  # an -o the plots cannot go to fails before the report is printed, not after it
        _plot_paths(outdir, store)
    console = console or Console()
    t = totals(store)
    programs = f"{t['rows']} program{'s' * (t['rows'] != 1)}"
    console.print(f"[bold]{store.path}[/bold]: {programs} tried, {t['evaluated']} evaluated "
                  f"({t['failed']}; {t['hurdled']} stopped at a hurdle), {t['cached']} cache hits "
                  f"({100 * t['cache_hit_rate']:.1f}%), redundant statements {100 * t['redundant_fraction']:.1f}%")
    base = store.baselines()
    if base:
        console.print("tuned AdamW: " + ", ".join(f"{k} {v['loss']:.4g} (lr {v['lr']:.2g})"
                                                  for k, v in base.items()))
    rows = ranked(store, top)
    if not rows:
        console.print(no_winner(store))
    else:
        title = (f"Top {len(rows)} programs, held-out evidence first "
                 "(scores: log(AdamW loss / loss) clipped to [-1, 1], > 0 beats AdamW)")
        print_table(console, scores_table(rows, title))
    loss_averse, hurdle_only = weighs_losses(store), hurdles_only(store)
    for r in rows:
        console.print(f"[bold]#{r['id']}[/bold] (parent #{r['parent']}, {r['mutation']}):")
        if r["meta_fitness"] is not None and not r["meta_task_score"]:  # -1 with no task: say why
            why = horizon_fault(parse(r["source"], "<store>")) or "it could not be trained there"
            console.print(f"  held out {r['meta_fitness']:+.3f} without training: {why}", markup=False)
        # soft_wrap: source must not be re-wrapped to the terminal's (or a pipe's 80) columns
        console.print(to_source(exported_program(r, loss_averse=loss_averse, hurdle_only=hurdle_only)),
                      markup=False, highlight=False, soft_wrap=True)
    paths = plot(store, outdir) if outdir else []
    for p in paths:
        console.print(f"wrote {p}")
    return paths
