"""The README's quick start runs as printed."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_start_runs(capsys):
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    exec(compile(block, "README quick start", "exec"), {})  # noqa: S102  (our own README, not user input)
    out = capsys.readouterr().out
    assert "equal (exact)" in out and r"\begin{aligned}" in out
