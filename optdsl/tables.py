"""Tables printed whole: rich fits a table to the terminal by cutting cells it cannot wrap (a
number becomes ``-0.0…``), which loses the very values a table exists to show."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement


def print_table(console: Console, table) -> None:
    """Print ``table`` at the console's width, or, where the console is narrower than the table
    needs, at the width it needs (the terminal then wraps the lines): a column of text needs its
    longest word, a ``no_wrap`` column (numbers) its longest cell. Sets each column's
    ``min_width`` to that need, as rich would otherwise squeeze a column below it and cut cells
    to ``…``.

    Example:
        >>> from rich.table import Table
        >>> import io
        >>> t = Table("quantity")
        >>> t.add_column("value", justify="right", no_wrap=True)
        >>> t.add_row("bytes moved", "469,762,048")
        >>> out = io.StringIO()
        >>> print_table(Console(file=out, width=12), t)
        >>> "469,762,048" in out.getvalue()
        True
    """
    for column in table.columns:  # rich squeezes a column below its longest word: say what it needs
        cells = [str(cell) for cell in (column.header, *column.cells)]
        words = cells if column.no_wrap else [word for cell in cells for word in cell.split()]
        column.min_width = max([column.min_width or 0, *map(cell_len, words)])
    # the table's own min_width (a title's length, say) may wrap at a narrow console: not a need
    own, table.min_width = table.min_width, None
    need = Measurement.get(console, console.options.update_width(1 << 16), table).minimum
    table.min_width = own
    if need <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = need  # print() takes no width above the console's own
    try:
        console.print(table)
    finally:
        console.width = width
