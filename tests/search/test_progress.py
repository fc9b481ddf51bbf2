"""The search's live panel in a log or a pipe."""

import io

from rich.console import Console
from rich.table import Table

from search.progress import LiveProgress


def test_output_after_the_panel_starts_on_a_line_of_its_own_in_a_file():
    """rich ends a live display's last render with a newline on a terminal only; the README job's
    output piped to a file had printed the winner's table on the panel's last line."""
    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=False)
    with LiveProgress(budget_seconds=1, console=console) as show:
        panel = Table(show_header=False)
        panel.add_row("meta-validated", "16")
        show.live.update(panel)
    console.print("Winner")
    assert "\nWinner" in out.getvalue()
    assert out.getvalue().splitlines()[-1] == "Winner"


def test_a_log_gets_a_progress_line_every_while_not_only_the_last_panel(monkeypatch):
    """Under ``nohup`` or ``> log`` rich draws the panel once, at the end: ten minutes of nothing."""
    from collections import Counter
    from types import SimpleNamespace

    import search.progress
    from search.evolution import Stats

    monkeypatch.setattr(search.progress, "LOG_EVERY", 0.0)
    out = io.StringIO()
    stats = Stats(evaluated=3, statuses=Counter(ok=3), best_fitness=0.1, best_id=2)
    running = SimpleNamespace(stats=stats, executor=SimpleNamespace(in_flight=lambda: 1))
    with LiveProgress(budget_seconds=60, console=Console(file=out, width=120)) as show:
        show(running)
        logged = out.getvalue()
    assert "searching: 0:00, 3 evaluations" in logged and "best proxy fitness +0.1000 (#2)\n" in logged
