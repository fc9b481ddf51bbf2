"""Checks that a generated file is laid out by its printer alone (issue 10, item 7): black finds
nothing to change in it, and the text is the same in a process where black cannot be imported."""

from __future__ import annotations

import subprocess
import sys


def assert_black_finds_nothing(folder) -> None:
    """``black --check -l 110`` passes on every file in ``folder``."""
    out = subprocess.run([sys.executable, "-m", "black", "--check", "-l", "110", str(folder)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def emitted_without_black(name: str, target: str) -> str:
    """``codegen.emit(optdsl.load(name), target)`` in a fresh process where black cannot be imported."""
    script = ("import sys\nsys.modules['black'] = None\nimport codegen, optdsl\n"
              f"sys.stdout.write(codegen.emit(optdsl.load({name!r}), {target!r}))\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
