"""Search, report and export arguments are checked before any work starts (issue 11): a value
the command cannot run with is exit 2 with a message naming the flag, and no file appears."""

import os

import pytest
from stores import small_search_db

from optdsl.cli import main

SEARCH = ["search", "--tasks", "quadratic"]


@pytest.mark.parametrize("flags, message", [
    (["--workers", "-1"], "--workers -1: must be a whole number from 1 to 4096"),
    (["--workers", "0"], "--workers 0: must be a whole number from 1 to 4096"),
    (["--workers", "100000"], "--workers 100000: must be a whole number from 1 to 4096"),
    (["--population", "0"], "--population 0: must be a whole number from 1 to 1000000"),
    (["--population", "9" * 20], f"--population {'9' * 20}: must be a whole number from 1 to"),
    (["--tournament", "0"], "--tournament 0: must be a whole number from 1 to 1000000"),
    (["--batch", "0"], "--batch 0: must be a whole number from 1 to 10000"),
    (["--population", "4", "--tournament", "5"], "--tournament 5 is larger than --population 4"),
    (["--evals", "0"], "--evals 0: must be a whole number from 1 to"),
    (["--evals", "-3"], "--evals -3: must be a whole number from 1 to"),
    (["--budget", "0"], "--budget '0': must be a time of more than 0 seconds and at most 366 days"),
    (["--budget", "0s"], "--budget '0s': must be a time of more than 0 seconds"),
    (["--budget", "9" * 400 + "s"], f"--budget '{'9' * 400}s': must be a time of more"),  # (was: > 0 s)
    (["--budget", "99999h"], "--budget '99999h': must be a time of more than 0 seconds and at most 366 days"),
    (["--budget", "ten minutes"], "--budget 'ten minutes': expected e.g. 90s, 10m, 1h30m"),
    # read as 2 minutes, and as 10 s (Arabic-Indic digits match \d)
    (["--budget", "1m1m"], "--budget '1m1m': expected e.g. 90s, 10m, 1h30m"),
    (["--budget", "\u0661\u0660s"], "--budget '\u0661\u0660s': expected e.g. 90s, 10m, 1h30m"),
    (["--seed", "-1"], "--seed -1: must be a whole number from 0 to"),
    (["--tasks", ""], "--tasks: unknown task(s) (none given)"),  # once: the default tasks
    (["--tasks", "mlp@0,conv_large@4,mlp@x"], "--tasks: unknown task(s) mlp@0, conv_large@4, mlp@x"),
    # it was ignored: the search ran on local processes
    (["--ray-address", "10.0.0.1:6379"], "--ray-address 10.0.0.1:6379 goes with --executor ray"),
    # a warm start the guards refuse would never be trained: AdaX's step factor grows without bound
    (["--init", "lion,adax"], "--init adax: the search's guards refuse it (a schedule of its own: "),
    # the paper's AdamW listing has no eps: 0 / 0 wherever a gradient coordinate is exactly 0
    (["--init", "paper_adamw"], "--init paper_adamw: the search's guards refuse it (not finite where a "),
])
def test_search_refuses_values_it_cannot_run_with(flags, message, tmp_path, capsys):
    db = tmp_path / "s.sqlite"
    assert main([*SEARCH, "--db", str(db), *flags]) == 2
    assert f"error: optdsl search: {message}" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # no database, no best_optimizer.py


@pytest.mark.parametrize("argv, message", [
    (["export", "{db}", "--top", "0", "-o", "{out}"], "optdsl export: --top 0: must be a whole number from 1"),
    (["export", "{db}", "--top", "-1", "-o", "{out}"], "optdsl export: --top -1: must be a whole number from 1"),
    (["report", "{db}", "--top", "0"], "optdsl report: --top 0: must be a whole number from 1 to 1000000"),
    (["export", "{db}", "-o", "{db}"], "{db}: exists and is not a folder"),
    (["report", "{db}", "-o", "{db}"], "{db}: -o: exists and is not a folder"),
])
def test_report_and_export_refuse_bad_values(argv, message, tmp_path, capsys):
    db = small_search_db(str(tmp_path / "s.sqlite"))
    out = str(tmp_path / "out")
    fill = {"db": db, "out": out}
    assert main([a.format(**fill) for a in argv]) == 2
    assert f"error: {message.format(**fill)}" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["s.sqlite"]


def test_a_winner_left_beside_the_database_does_not_hide_a_bad_argument(tmp_path, capsys):
    (tmp_path / "best_optimizer.py").write_text("def mine():\n    pass\n")
    assert main([*SEARCH[:1], "--tasks", "nosuch", "--db", str(tmp_path / "s.sqlite")]) == 2
    assert "--tasks: unknown task(s) nosuch" in capsys.readouterr().err


def test_search_where_best_optimizer_cannot_be_written_is_refused_up_front(tmp_path, capsys):
    (tmp_path / "best_optimizer.py").mkdir()
    assert main([*SEARCH, "--db", str(tmp_path / "s.sqlite"), "--evals", "1"]) == 2
    assert "best_optimizer.py: is not a regular file (a directory)" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["best_optimizer.py"]


@pytest.mark.parametrize("command", [["report"], ["export", "-o", "{out}"]])
def test_report_and_export_take_the_database_as_search_names_it(command, tmp_path, capsys):
    # `optdsl search --db s.sqlite`, then `optdsl report --db s.sqlite` was "unrecognized arguments"
    fill = {"out": str(tmp_path / "out")}
    argv = [a.format(**fill) for a in command]
    db = small_search_db(str(tmp_path / "s.sqlite"))
    assert main([*argv, db]) == 0
    positional = capsys.readouterr().out
    if "export" in argv:
        for name in os.listdir(tmp_path / "out"):
            os.remove(tmp_path / "out" / name)
    assert main([*argv, "--db", db]) == 0
    assert capsys.readouterr().out == positional
    with pytest.raises(SystemExit, match="2"):  # argparse's own exit: usage, then the error
        main([*argv, "--db", db, db])
    assert "not allowed with argument --db" in capsys.readouterr().err


def test_init_files_are_kept_by_absolute_path_and_each_program_once(tmp_path, monkeypatch):
    """``--init ./rule.py,rule.py`` seeded the same program twice, and the database kept the
    relative path, so ``--resume`` from another folder failed with "./rule.py: no such file"."""
    from optdsl.source import zoo_source
    from search.commands import _inits

    (tmp_path / "rule.py").write_text(zoo_source("lion"))
    (tmp_path / "other.py").write_text(zoo_source("tiger"))
    monkeypatch.chdir(tmp_path)
    rule, other = str(tmp_path / "rule.py"), str(tmp_path / "other.py")
    assert _inits("./rule.py,rule.py") == rule
    assert _inits("other.py:tiger, adamw, lion, rule.py") == f"{other}:tiger,adamw,lion"
