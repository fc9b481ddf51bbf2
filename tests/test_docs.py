"""The README's generated sections are current, and CI runs exactly the README's test command."""

import re
from pathlib import Path

from optdsl.docs import render

ROOT = Path(__file__).resolve().parent.parent


def test_readme_generated_sections_are_current():
    text = (ROOT / "README.md").read_text()
    assert render(text) == text, "run `python -m optdsl.docs` to regenerate the README"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"# 2\. the tests\n(.+)\n", readme).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command.replace("pip install", "python3 -m pip install -q") in ci
