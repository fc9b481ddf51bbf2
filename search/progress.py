"""Live progress of a search in the terminal (rich): what it has done, how fast, how well.

Shown: evaluations (and failures), evaluations/s, children trained/s (an evaluation is also a
guard's refusal, in milliseconds: about half of a long search's), proposed/s including cache hits,
cache hit rate, redundant-statement fraction, best fitness so far (0 = tuned AdamW, > 0 better),
children scored again on fresh seeds (confirmed), programs sent to meta-validation, the stage
(tuning AdamW on the tasks, searching, then meta-validating the best, then simplifying the winner
by ablation), elapsed / budget.

Example::

    with LiveProgress(budget_seconds=120) as show:
        Search(store, config, executor, progress=show).run(seconds=120)
"""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .store import failures


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def summary_table(search, budget_seconds: float | None = None, budget_evals: int | None = None) -> Table:
    """The progress panel for the current state of ``search`` (a :class:`search.evolution.Search`):
    a two-column table, one row per measure (rates are counts / elapsed seconds).

    Example (a stand-in for a search: its counters and an executor with 2 jobs running):
        >>> from collections import Counter
        >>> from types import SimpleNamespace
        >>> from search.evolution import Stats
        >>> stats = Stats(evaluated=14, statuses=Counter(ok=9, diverged=1, guard=4), best_fitness=0.05,
        ...               best_id=7)
        >>> t = summary_table(SimpleNamespace(stats=stats, executor=SimpleNamespace(in_flight=lambda: 2)))
        >>> rows = dict(zip(t.columns[0].cells, t.columns[1].cells))
        >>> rows["evaluations"]
        '14  (5 failed: 4 refused by the guards, 1 diverged; 2 running)'
        >>> rows["trained/s"].split("  ")[1]   # a guard's refusal is an evaluation, not a trained child
        '(10 children trained, the rest refused by the guards)'
    """
    st = search.stats
    el = max(st.elapsed, 1e-9)
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold cyan")
    t.add_column()
    budget = f" / {_clock(budget_seconds)}" if budget_seconds else (
        f" (budget: {budget_evals} evaluations of the evolution; held-out checks and ablation come "
        "on top)"
        if budget_evals else "")
    t.add_row("stage", st.stage)
    t.add_row("elapsed", _clock(el) + budget)
    t.add_row("evaluations", f"{st.evaluated}  ({failures(st.statuses)}; {search.executor.in_flight()} running)")
    t.add_row("evaluations/s", f"{st.evaluated / el:.2f}")
    trained = st.evaluated - st.statuses.get("guard", 0)
    t.add_row("trained/s", f"{trained / el:.2f}  ({trained} children trained, the rest refused by the "
                           "guards)")
    t.add_row("proposed/s", f"{st.proposed / el:.2f}  (incl. cache hits)")
    t.add_row("cache hit rate", f"{100 * st.cache_hit_rate:.1f}%")
    t.add_row("redundant statements", f"{100 * st.redundant_fraction:.1f}%")
    best = "-" if st.best_id is None else f"{st.best_fitness:+.4f}  (program #{st.best_id})"
    t.add_row("best proxy fitness", best + "   [dim]0 = tuned AdamW, higher is better[/dim]")
    t.add_row("confirmed", f"{st.confirmed}  (scored again on fresh seeds: above the population's median)")
    t.add_row("meta-validated", str(st.meta_validated))
    return t


LOG_EVERY = 30.0  # seconds between progress lines where stdout is not a terminal


def progress_line(search) -> str:
    """One line of the panel's main figures, for a log (stdout not a terminal).

    Example:
        >>> import time
        >>> from types import SimpleNamespace
        >>> from search.evolution import Stats
        >>> stats = Stats(evaluated=14, best_fitness=0.05, best_id=7, started=time.monotonic() - 61.2)
        >>> progress_line(SimpleNamespace(stats=stats))
        'searching: 1:01, 14 evaluations (0.23/s), cache hits 0.0%, best proxy fitness +0.0500 (#7)'
    """
    st = search.stats
    el = st.elapsed
    best = "-" if st.best_id is None else f"{st.best_fitness:+.4f} (#{st.best_id})"
    return (f"{st.stage}: {_clock(el)}, {st.evaluated} evaluations ({st.evaluated / max(el, 1e-9):.2f}/s), "
            f"cache hits {100 * st.cache_hit_rate:.1f}%, best proxy fitness {best}")


class SearchConsole(Console):
    """rich's Console, except where stdout's reader has gone (``optdsl search | head -1``): rich
    ends the process there (SystemExit(1), the winner not yet written); this one goes quiet, its
    output to /dev/null, and notes it (``reader_gone``): the search runs on, writes its winner,
    and exits with 141 as the other commands do."""

    reader_gone = False

    def on_broken_pipe(self) -> None:
        self.quiet = self.reader_gone = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class LiveProgress:
    """A callable for ``Search(progress=...)`` that redraws a rich panel at most 4 times a second."""

    def __init__(self, budget_seconds: float | None = None, budget_evals: int | None = None,
                 console: Console | None = None):
        self.budget_seconds, self.budget_evals = budget_seconds, budget_evals
        self.live = Live(Table(), console=console or Console(), refresh_per_second=4, transient=False)
        self.last = 0.0
        self.logged = time.monotonic()  # (the first line after LOG_EVERY seconds)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        suppress = self.live.__exit__(*exc)
        # rich ends the last render with a newline on a terminal only (rich issue 4192): in a log or a
        # pipe the next output would start on the panel's last line
        if not self.live.console.is_terminal:
            self.live.console.line()
        return suppress

    def __call__(self, search) -> None:
        now = time.monotonic()
        if now - self.last >= 0.25:
            self.last = now
            self.live.update(summary_table(search, self.budget_seconds, self.budget_evals))
        # rich draws a panel to a log or pipe at the end only: there a line every LOG_EVERY seconds
        if not self.live.console.is_terminal and now - self.logged >= LOG_EVERY:
            self.logged = now
            line = f"{time.strftime('%H:%M:%S')} {progress_line(search)}"
            self.live.console.print(line, highlight=False, markup=False, soft_wrap=True)
