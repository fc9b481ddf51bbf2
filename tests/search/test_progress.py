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
