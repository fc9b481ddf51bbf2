"""Reading program files: whatever bytes a file holds, the answer is a program or a located
DslError (exit 2 on the command line), never a UnicodeDecodeError."""

import io
import os
import sys

import pytest

from optdsl import DslError
from optdsl.cli import main
from optdsl.source import load

TEXT = "def f(w, g, lr):\n    # café\n    return lr * g\n"


@pytest.mark.parametrize("data, line, col, what", [
    (TEXT.encode("latin-1"), 2, 9, "(byte 0xe9)"),
    (TEXT.encode("utf-16"), 1, 0, "(it looks like UTF-16)"),
    (TEXT.encode("utf-8").replace(b"caf", b"c\xffaf"), 2, 7, "(byte 0xff)"),
])
def test_a_file_that_is_not_utf8_is_a_located_error(tmp_path, data, line, col, what):
    path = tmp_path / "p.py"
    path.write_bytes(data)
    with pytest.raises(DslError, match="not UTF-8") as info:
        load(str(path))
    e = info.value
    assert (e.filename, e.line, e.col) == (str(path), line, col) and what in e.message


def test_utf8_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "p.py"
    path.write_bytes(b"\xef\xbb\xbf" + TEXT.encode("utf-8"))
    assert load(str(path)).name == "f"


def test_the_command_line_answers_exit_2(tmp_path, monkeypatch, capsys):
    path = tmp_path / "p.py"
    path.write_bytes(TEXT.encode("latin-1"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode("latin-1"))))
    for src, where in ((str(path), f"{path}:2:10"), ("-", "<stdin>:2:10"), (str(tmp_path), str(tmp_path))):
        assert main(["check", src]) == 2
        assert capsys.readouterr().err.startswith(f"error: {where}: ")


def test_a_device_is_not_a_missing_file(capsys):
    assert main(["check", "/dev/null"]) == 2
    assert capsys.readouterr().err.startswith("error: /dev/null: not a regular file")


def test_a_zoo_name_means_the_zoo_even_beside_a_file_of_that_name(tmp_path, monkeypatch):
    """A file named ``lion`` in the working folder once replaced the zoo's Lion in every command."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lion").write_text("def evil(w, g, lr=0.1):\n    return lr * g\n")
    assert load("lion").name == "lion"
    assert load(f".{os.sep}lion").name == "evil"
