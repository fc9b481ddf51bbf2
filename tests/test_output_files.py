"""Generated files (``compile -o``, ``export``, ``best_optimizer.py``) are written atomically,
as regular files with the umask's mode, through symlinks, and never over a device or a folder
(issue 11)."""

import os
import re
import stat

import pytest
from stores import small_search_db

from codegen.generated import output_path, write_atomic
from optdsl.cli import main
from optdsl.errors import DslError


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_new_file_gets_the_umasks_mode_and_a_replaced_one_keeps_its_own(tmp_path, umask_027):
    new = tmp_path / "new.py"
    write_atomic(str(new), "x = 1\n")
    assert stat.S_IMODE(new.stat().st_mode) == 0o640 and new.read_text() == "x = 1\n"
    new.chmod(0o755)
    write_atomic(str(new), "x = 2\n")
    assert stat.S_IMODE(new.stat().st_mode) == 0o755 and new.read_text() == "x = 2\n"
    assert os.listdir(tmp_path) == ["new.py"]


def test_a_symlink_is_written_through(tmp_path):
    target = tmp_path / "real.py"
    target.write_text("old\n")
    link = tmp_path / "link.py"
    link.symlink_to(target.name)
    write_atomic(str(link), "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"
    dangling = tmp_path / "dangling.py"
    dangling.symlink_to("made.py")
    write_atomic(str(dangling), "made\n")
    assert (tmp_path / "made.py").read_text() == "made\n" and dangling.is_symlink()


@pytest.mark.parametrize("path, message", [
    ("/dev/full", "/dev/full: is not a regular file (a device); refusing to replace it"),
    ("/dev/null", "/dev/null: is not a regular file (a device); refusing to replace it"),
    ("{tmp}", "{tmp}: is not a regular file (a directory); refusing to replace it; give a file name"),
    ("{tmp}/missing/x.py", "{tmp}/missing/x.py: cannot write: no such folder {tmp}/missing"),
    ("{tmp}/file.py/x.py", "{tmp}/file.py/x.py: cannot write: Not a directory"),
    ("{tmp}/out/", "{tmp}/out/: names a folder (it ends with a slash), not a file; give a file name"),
    ("{tmp}/file.py/", "{tmp}/file.py/: names a folder (it ends with a slash), not a file; give a file name"),
    ("{tmp}/loop", "{tmp}/loop: cannot write: Too many levels of symbolic links"),
])
def test_paths_that_are_not_a_regular_files_place_are_refused(path, message, tmp_path):
    (tmp_path / "file.py").write_text("keep\n")
    (tmp_path / "loop").symlink_to("loop")
    path, message = path.format(tmp=tmp_path), message.format(tmp=tmp_path)
    devices = {p: os.stat(p) for p in ("/dev/full", "/dev/null")}
    with pytest.raises(DslError) as e:
        write_atomic(path, "x\n")
    assert str(e.value) == message
    assert sorted(os.listdir(tmp_path)) == ["file.py", "loop"] and (tmp_path / "file.py").read_text() == "keep\n"
    for p, st in devices.items():
        assert stat.S_ISCHR(os.stat(p).st_mode) and os.stat(p).st_rdev == st.st_rdev


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.py"
    out.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(str(out), "bad \ud800 text")  # fails halfway through the write
    assert out.read_text() == "old\n" and os.listdir(tmp_path) == ["out.py"]


def test_an_export_that_fills_the_disk_writes_none_of_its_files(tmp_path, capsys, monkeypatch):
    # Each file was atomic but the set was not: a full disk at the fifth file had left four.
    db = small_search_db(str(tmp_path / "s.sqlite"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "found_3.py").write_text("# Found by optdsl search of s.sqlite (program #3): an earlier export\n")
    fsync, calls = os.fsync, []

    def full_at_the_fifth(fd):
        calls.append(fd)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_at_the_fifth)
    assert main(["export", db, "--top", "2", "-o", str(out)]) == 2
    assert "cannot write: No space left on device" in capsys.readouterr().err
    assert os.listdir(out) == ["found_3.py"] and "an earlier export" in (out / "found_3.py").read_text()
    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["export", db, "--top", "2", "-o", str(out)]) == 0
    assert len(os.listdir(out)) == 7  # 2 x 3 and ranking.md


def test_output_path_resolves_links(tmp_path):
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.py").symlink_to("a.py")
    assert output_path(str(tmp_path / "b.py")) == str(tmp_path / "a.py")


@pytest.mark.parametrize("out, message", [
    ("/dev/full", "is not a regular file (a device)"),
    ("{tmp}", "is not a regular file (a directory)"),
    ("{tmp}/missing/x.py", "cannot write: no such folder"),
    ("{tmp}/new/", "names a folder (it ends with a slash), not a file"),  # once wrote a file "new"
])
def test_compile_o_refuses_with_exit_2(out, message, tmp_path, capsys):
    out = out.format(tmp=tmp_path)
    assert main(["compile", "lion", "-o", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: {message}") and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_compile_o_writes_a_regular_file(tmp_path, capsys):
    out = tmp_path / "lion_torch.py"
    assert main(["compile", "lion", "-o", str(out)]) == 0
    assert out.is_file() and "class" in out.read_text()


def test_export_into_an_existing_file_is_refused(tmp_path, capsys):
    db = small_search_db(str(tmp_path / "s.sqlite"))
    (tmp_path / "taken").write_text("keep\n")
    assert main(["export", db, "-o", str(tmp_path / "taken")]) == 2
    assert "taken: exists and is not a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "keep\n"
    assert main(["export", db, "--top", "1", "-o", str(tmp_path / "new" / "deeper")]) == 0
    assert len(os.listdir(tmp_path / "new" / "deeper")) == 4  # the program, its two modules, ranking.md


def test_compile_o_replaces_its_own_output_but_not_a_users_file(tmp_path, capsys):
    out = tmp_path / "mine.py"
    out.write_text("precious\n")
    assert main(["compile", "lion", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not a module generated by optdsl" in err
    assert "--force" in err and "Traceback" not in err
    assert out.read_text() == "precious\n"
    for target in ("jax", "torch"):  # its own output, whatever the target, is replaced without asking
        assert main(["compile", "lion", "--target", target, "-o", str(tmp_path / "gen.py")]) == 0
    assert main(["compile", "lion", "-o", str(out), "--force"]) == 0
    assert "class Lion" in out.read_text()


def test_an_output_edited_since_optdsl_wrote_it_is_not_replaced(tmp_path, capsys):
    """A generated module a user had since edited was replaced by the next ``compile -o`` without a
    word. Its last line now holds the SHA-256 of the text above it: an edit anywhere, or text added
    after that line, is refused as a file of the user's is; a CRLF checkout is no edit; a file
    without the line (an older optdsl's) is replaced as before."""
    out = tmp_path / "lion_gen.py"
    assert main(["compile", "lion", "-o", str(out)]) == 0
    written = out.read_text()
    assert re.search(r"\n# optdsl sha256 [0-9a-f]{64}\n\Z", written)
    out.write_bytes(written.replace("\n", "\r\n").encode())
    assert main(["compile", "lion", "-o", str(out)]) == 0 and out.read_text() == written
    for edited in (written.replace("beta1=0.9", "beta1=0.95", 1), written + "print('mine')\n"):
        out.write_text(edited)
        assert main(["compile", "lion", "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert "lion_gen.py: was edited since optdsl wrote it" in err and "--force" in err
        assert out.read_text() == edited
    assert main(["compile", "lion", "-o", str(out), "--force"]) == 0 and out.read_text() == written
    out.write_text(written[: written.rindex("# optdsl sha256")])
    assert main(["compile", "lion", "-o", str(out)]) == 0 and out.read_text() == written


def test_an_exported_program_tuned_since_is_not_replaced(tmp_path, capsys):
    db = small_search_db(str(tmp_path / "s.sqlite"))
    folder = tmp_path / "out"
    assert main(["export", db, "--top", "1", "-o", str(folder)]) == 0
    [program] = [p for p in folder.iterdir() if re.fullmatch(r"found_\d+\.py", p.name)]
    assert main(["check", str(program)]) == 0  # the line is a comment to the language's parser
    ranking = (folder / "ranking.md").read_text()
    assert re.search(r"\n<!-- optdsl sha256 [0-9a-f]{64} -->\n\Z", ranking)
    for path, edit in [(program, "    return update"), (folder / "ranking.md", "| 1 |")]:
        kept = {p.name: p.read_text() for p in folder.iterdir()}
        path.write_text(path.read_text().replace(edit, edit + " ", 1))
        assert main(["export", db, "--top", "1", "-o", str(folder)]) == 2
        assert f"{path.name}: was edited since optdsl wrote it" in capsys.readouterr().err
        path.write_text(kept[path.name])
        assert {p.name: p.read_text() for p in folder.iterdir()} == kept
    best = tmp_path / "best_optimizer.py"
    assert main(["search", "--resume", db, "--evals", "1"]) == 0
    best.write_text(best.read_text().replace("class ", "class  ", 1))
    assert main(["search", "--resume", db, "--evals", "1"]) == 2
    assert "best_optimizer.py: was edited since optdsl wrote it" in capsys.readouterr().err


def test_only_optdsls_own_sentence_marks_a_file_as_its_output(tmp_path, capsys):
    """Any mention of "generated by optdsl" in a file's first kilobyte counted, so a user's script
    saying so was replaced; and a program with a long docstring put the sentence past that
    kilobyte, so its module could not be compiled again onto itself."""
    script = tmp_path / "train.py"
    script.write_text("# trains with the optimizer generated by optdsl\nimport os\n")
    assert main(["compile", "lion", "-o", str(script)]) == 2
    assert "exists and is not a module generated by optdsl" in capsys.readouterr().err
    assert script.read_text().startswith("# trains")
    notes = "\n".join(f"    Note {i}: a line of this optimizer's long documentation." for i in range(40))
    src = tmp_path / "mine.py"
    src.write_text(f'def mine(w, g, lr=0.1):\n    """Mine.\n\n{notes}\n    """\n    return lr * g\n')
    for target in ("torch", "jax", "triton"):
        out = str(tmp_path / f"mine_{target}.py")
        assert [main(["compile", str(src), "--target", target, "-o", out]) for _ in range(2)] == [0, 0]


def test_compile_o_does_not_replace_an_exported_program(tmp_path, capsys):
    # an exported DSL file is a source its user may have tuned: compile -o replaced it silently
    db = small_search_db(str(tmp_path / "s.sqlite"))
    assert main(["export", db, "--top", "1", "-o", str(tmp_path / "out")]) == 0
    [program] = [p for p in (tmp_path / "out").iterdir() if re.fullmatch(r"found_\d+\.py", p.name)]
    kept = program.read_text()
    assert main(["compile", "lion", "-o", str(program)]) == 2
    assert "is not a module generated by optdsl" in capsys.readouterr().err and program.read_text() == kept
    module = program.with_name(program.stem + "_torch.py")
    assert main(["compile", "lion", "-o", str(module)]) == 0  # a generated module is replaced
    assert main(["compile", "lion", "-o", str(program), "--force"]) == 0


@pytest.mark.parametrize("target, name", [("torch", "torch"), ("jax", "optax"), ("jax", "jax")])
def test_compile_o_refuses_a_name_that_hides_what_the_module_imports(target, name, tmp_path, capsys):
    # -o torch.py wrote a module that `import torch` in that folder then found (a circular import)
    assert main(["compile", "lion", "--target", target, "-o", str(tmp_path / f"{name}.py")]) == 2
    assert f"would hide the module {name}" in capsys.readouterr().err and os.listdir(tmp_path) == []


def test_compile_o_never_replaces_the_program_it_compiles(tmp_path, capsys):
    src = tmp_path / "prog.py"
    src.write_text("def p(w, g, lr=0.1):\n    return lr * g\n")
    for ref in (str(src), f"{src}:p"):
        assert main(["compile", ref, "-o", str(src), "--force"]) == 2
        assert "is the program being compiled" in capsys.readouterr().err
    assert src.read_text() == "def p(w, g, lr=0.1):\n    return lr * g\n"


def test_search_and_export_leave_a_users_files_alone(tmp_path, capsys):
    mine = "# my own file\n"
    (tmp_path / "best_optimizer.py").write_text(mine)
    assert main(["search", "--db", str(tmp_path / "s.sqlite"), "--evals", "1"]) == 2
    assert "best_optimizer.py: exists and was not written by optdsl" in capsys.readouterr().err
    assert (tmp_path / "best_optimizer.py").read_text() == mine and not (tmp_path / "s.sqlite").exists()
    db = small_search_db(str(tmp_path / "t.sqlite"))
    out = tmp_path / "winners"
    assert main(["export", db, "--top", "2", "-o", str(out)]) == 0
    written = sorted(os.listdir(out))
    assert main(["export", db, "--top", "2", "-o", str(out)]) == 0  # its own files: replaced
    user = out / written[-1]
    user.write_text(mine)
    for name in written[:-1]:
        os.remove(out / name)
    assert main(["export", db, "--top", "2", "-o", str(out)]) == 2
    assert f"{user.name}: exists and was not written by optdsl" in capsys.readouterr().err
    assert os.listdir(out) == [user.name] and user.read_text() == mine  # nothing written, nothing replaced


def test_a_search_never_writes_its_winner_through_a_link(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main(["compile", "lion", "-o", str(elsewhere / "lion_gen.py")]) == 0
    generated = (elsewhere / "lion_gen.py").read_text()
    (tmp_path / "best_optimizer.py").symlink_to(elsewhere / "lion_gen.py")
    capsys.readouterr()
    assert main(["search", "--db", str(tmp_path / "s.sqlite"), "--evals", "1"]) == 2
    assert "best_optimizer.py: is a link to" in capsys.readouterr().err
    assert (elsewhere / "lion_gen.py").read_text() == generated and not (tmp_path / "s.sqlite").exists()


def test_a_winner_is_never_replaced_by_another_searchs(tmp_path, capsys):
    """best_optimizer.py and export's found_<id>.py name their database; a second search in the same
    folder, or an export of another database into the same folder, is refused and leaves them alone."""
    first = small_search_db(str(tmp_path / "first.sqlite"))
    assert main(["search", "--resume", first, "--evals", "1"]) == 0  # its own winner: written, then replaced
    assert main(["search", "--resume", first, "--evals", "1"]) == 0
    best = tmp_path / "best_optimizer.py"
    written = best.read_text()
    assert "Found by optdsl search of first.sqlite (search " in " ".join(written.split())
    assert main(["search", "--db", str(tmp_path / "second.sqlite"), "--evals", "1"]) == 2
    err = capsys.readouterr().err
    assert "best_optimizer.py: holds the winner of another search (first.sqlite, search " in err
    assert "a folder of its own" in err and "Traceback" not in err
    assert best.read_text() == written and not (tmp_path / "second.sqlite").exists()
    (tmp_path / "notes.txt").write_text("not a database")  # resumed by mistake: its own fault is named
    assert main(["search", "--resume", str(tmp_path / "notes.txt"), "--evals", "1"]) == 2
    assert "notes.txt: is damaged or not an SQLite database" in capsys.readouterr().err
    out = tmp_path / "winners"
    assert main(["export", first, "--top", "9", "-o", str(out)]) == 0
    exported = {name: (out / name).read_text() for name in os.listdir(out)}
    (tmp_path / "other").mkdir()
    other = small_search_db(str(tmp_path / "other" / "third.sqlite"))  # same program ids, another search
    assert main(["export", other, "--top", "9", "-o", str(out)]) == 2
    assert "holds the winner of another search (first.sqlite, search " in capsys.readouterr().err
    assert {name: (out / name).read_text() for name in os.listdir(out)} == exported
    # a database of the same file name elsewhere (or a new one where the first was) is another search
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "best_optimizer.py").write_text(written)
    assert main(["search", "--db", str(tmp_path / "copy" / "first.sqlite"), "--evals", "1"]) == 2
    assert "holds the winner of another search (first.sqlite, search " in capsys.readouterr().err
    assert (tmp_path / "copy" / "best_optimizer.py").read_text() == written


def test_a_search_in_a_missing_folder_names_its_database(tmp_path, capsys):
    db = tmp_path / "nodir" / "x.sqlite"
    assert main(["search", "--db", str(db), "--evals", "1"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {db}: cannot write: no such folder")


def test_an_empty_output_name_is_refused(tmp_path, capsys):
    assert main(["compile", "lion", "-o", ""]) == 2  # once wrote to stdout
    assert "-o: an empty file name" in capsys.readouterr().err
    assert main(["search", "--db", str(tmp_path), "--evals", "1"]) == 2
    assert "is a folder; --db names the search's database file" in capsys.readouterr().err


def test_output_dash_is_stdout_not_a_file_named_dash(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compile", "lion", "-o", "-"]) == 0
    assert "class Lion(_Optimizer)" in capsys.readouterr().out
    assert not (tmp_path / "-").exists()


def test_a_search_whose_winner_would_overwrite_its_database_is_refused_before_any_work(tmp_path, capsys):
    db = tmp_path / "best_optimizer.py"
    assert main(["search", "--db", str(db), "--evals", "1", "--tasks", "quadratic"]) == 2
    assert "is where the search writes its winner" in capsys.readouterr().err
    assert not db.exists()
    program = tmp_path / "prog.py"
    program.write_text("def f(w, g, lr):\n    return lr * g\n")
    assert main(["search", "--db", str(program), "--evals", "1"]) == 2
    assert "already exists and is not a search database" in capsys.readouterr().err
    assert program.read_text() == "def f(w, g, lr):\n    return lr * g\n"


def test_report_and_export_of_a_search_that_scored_nothing_say_so(tmp_path, capsys):
    from search.store import Store

    db = tmp_path / "refused.sqlite"
    with Store(str(db)) as store:
        source = "def f(w, g, lr):\n    return 0.0\n"
        store.add(source=source, live_source=source, structural_hash="h", fingerprint="f", status="guard",
                  error="ignores the gradient", memory=0.0, n_statements=0, n_live=0, parent=None,
                  mutation="init file")
    assert main(["report", str(db)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # (rich wraps at the terminal's width)
    # it said "1 program scored" above "No program was scored", and nothing of the warm start's failure
    assert "1 program tried" in out and "No program trained to a score" in out
    assert "The warm start #1 (init file): refused by the guards (ignores the gradient)." in out
    assert main(["export", str(db), "-o", str(tmp_path / "out")]) == 2
    assert "holds no scored program to export" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_report_replaces_its_own_plots_never_a_users_file(tmp_path, capsys):
    from optdsl import load
    from search.candidate import describe
    from search.store import Store

    db, plots = tmp_path / "s.sqlite", tmp_path / "plots"
    with Store(str(db)) as store:
        store.add(**describe(load("sgd")), status="ok", fitness=-0.3, task_lr={"mlp": 0.5})
    assert main(["report", str(db), "-o", str(plots)]) == 0
    assert main(["report", str(db), "-o", str(plots)]) == 0  # its own plots: replaced
    capsys.readouterr()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pareto_front.png").write_bytes(b"my precious")
    assert main(["report", str(db), "-o", str(mine)]) == 2
    out, err = capsys.readouterr()
    assert "exists and was not written by optdsl" in err
    assert out == ""  # refused before the report is printed (it had printed it all, then failed)
    assert (mine / "pareto_front.png").read_bytes() == b"my precious" and not (mine / "best_fitness.png").exists()


def test_an_export_says_which_files_rank_where(tmp_path, capsys):
    # its files are named by program id, so a folder listing said nothing of the order, and files
    # of an earlier export of the same search stay beside them
    db = small_search_db(str(tmp_path / "s.sqlite"))
    assert main(["export", db, "--top", "2", "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    table = (tmp_path / "out" / "ranking.md").read_text()
    assert printed[-1].endswith("ranking.md")
    assert table.startswith("# Found by optdsl search of s.sqlite (search ")
    ids = [m[1] for p in printed if (m := re.fullmatch(r"found_(\d+)\.py", os.path.basename(p)))]
    rows = [line for line in table.splitlines() if line.startswith(("| 1 ", "| 2 "))]
    assert [row.split(" | ")[1] for row in rows] == [f"#{i}" for i in ids]
    assert f"found_{ids[0]}.py, found_{ids[0]}_torch.py, found_{ids[0]}_jax.py" in rows[0]


def test_report_does_not_replace_another_searchs_plots(tmp_path, capsys):
    # a second search's report -o into the same folder replaced the first one's plots silently,
    # where export refuses to replace another search's winners
    first, second = (small_search_db(str(tmp_path / name)) for name in ("a.sqlite", "b.sqlite"))
    plots = tmp_path / "plots"
    assert main(["report", first, "-o", str(plots)]) == 0
    kept = (plots / "best_fitness.png").read_bytes()
    assert b"(optdsl report) of a.sqlite (search " in kept
    assert main(["report", second, "-o", str(plots)]) == 2
    assert "holds the plots of another search (a.sqlite, search " in capsys.readouterr().err
    assert (plots / "best_fitness.png").read_bytes() == kept
    assert main(["report", first, "-o", str(plots)]) == 0  # its own: replaced


def test_a_nul_in_an_output_name_is_an_error_not_a_traceback(tmp_path, capsys):
    """A NUL reaches main() only from Python (a shell cannot pass one): os raised ValueError."""
    assert main(["compile", "lion", "-o", str(tmp_path / "a\x00b.py")]) == 2
    assert "a file name cannot hold a NUL character" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_a_newer_optdsls_database_is_named_as_such_not_as_no_search_database(tmp_path, capsys):
    """--db on a database a newer optdsl wrote said it 'already exists and is not a search
    database (was written by a newer optdsl ...)', which contradicts itself."""
    import sqlite3

    from search.store import SCHEMA_VERSION, Store

    db = tmp_path / "s.sqlite"
    Store(str(db)).close()
    with sqlite3.connect(db) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert main(["search", "--db", str(db), "--evals", "1", "--tasks", "quadratic"]) == 2
    err = capsys.readouterr().err
    assert "already exists and this optdsl cannot read (was written by a newer optdsl" in err
    assert "not a search database" not in err
