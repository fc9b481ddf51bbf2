"""The one exception type users see: a located, explained problem with a DSL program."""

from __future__ import annotations


def _printable(text: str, keep: str = "\t") -> str:
    """``text`` with what a terminal or a UTF-8 stream cannot show (a NUL, an escape, a lone
    surrogate) spelled as Python escapes: printing an error must never fail or garble a terminal."""
    return "".join(c if c.isprintable() or c in keep else ascii(c)[1:-1] for c in text)


#: Columns of a source line an error shows: a long generated line (thousands of terms) is cut to
#: the part around the error, so the message stays a few lines on a terminal.
EXCERPT_COLUMNS = 100


def _excerpt(line: str, col: int) -> tuple[str, int]:
    """``line`` as an error shows it, and the caret's column there: printable, at most
    :data:`EXCERPT_COLUMNS` columns from a third of that before ``col`` on, cut ends marked ``...``.

    Example:
        >>> _excerpt("x" * 300, 150)[1], len(_excerpt("x" * 300, 150)[0])
        (36, 106)
    """
    before, after = _printable(line[:col]), _printable(line[col:])
    if len(before) + len(after) <= EXCERPT_COLUMNS:
        return before + after, len(before)
    head = "..." if len(before) > EXCERPT_COLUMNS // 3 else ""
    before = before[len(before) - EXCERPT_COLUMNS // 3:] if head else before
    tail = "..." if len(before) + len(after) > EXCERPT_COLUMNS else ""
    after = after[:EXCERPT_COLUMNS - len(before)]
    return head + before + after + tail, len(head) + len(before)


class DslError(Exception):
    """A problem in a DSL program, rendered as ``file:line:col: message`` plus the source line.

    Every user-facing failure of the language (syntax outside the subset, unknown op, bad arity,
    undefined name, shape mismatch, bad return) raises this. The CLI maps it to exit code 2.

    Example:
        >>> from optdsl import parse
        >>> try:
        ...     parse("def f(w, g, lr):\\n    return foo(g)\\n")
        ... except DslError as e:
        ...     print(str(e).splitlines()[0])
        <string>:2:12: unknown function 'foo'; see `optdsl ops` for the vocabulary
    """

    def __init__(self, message: str, filename: str = "<string>", line: int | None = None,
                 col: int | None = None, source: str | None = None, hint: str | None = None):
        self.message = message
        self.filename = filename
        self.line = line
        self.col = col
        self.source = source
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        """``file:line:col: message``, then the source line with a caret under the column and the
        hint: what the CLI prints (``str(error)`` is this)."""
        where = self.filename
        if self.line is not None:
            where += f":{self.line}:{(self.col or 0) + 1}"
        # an error of no file and no place (a flag's value) is its message alone
        text = self.message if where == "<string>" else f"{where}: {self.message}"
        if self.hint:
            text += f"; {self.hint}"
        if self.source is not None and self.line is not None:
            lines = self.source.splitlines()
            if 0 < self.line <= len(lines):
                shown, caret = _excerpt(lines[self.line - 1], self.col or 0)
                text += f"\n    {shown}\n    {' ' * caret}^"
        return _printable(text, keep="\n\t")

    def at(self, filename: str, source: str) -> DslError:
        """The same error, located in ``filename`` whose text is ``source`` (keeps line/col)."""
        if self.source is not None:
            return self
        return DslError(self.message, filename, self.line, self.col, source, self.hint)
