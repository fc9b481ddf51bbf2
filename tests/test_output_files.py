"""Generated files (``compile -o``, ``export``, ``best_optimizer.py``) are written atomically,
as regular files with the umask's mode, through symlinks, and never over a device or a folder
(issue 11)."""

import os
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


def test_output_path_resolves_links(tmp_path):
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.py").symlink_to("a.py")
    assert output_path(str(tmp_path / "b.py")) == str(tmp_path / "a.py")


@pytest.mark.parametrize("out, message", [
    ("/dev/full", "is not a regular file (a device)"),
    ("{tmp}", "is not a regular file (a directory)"),
    ("{tmp}/missing/x.py", "cannot write: no such folder"),
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
    assert len(os.listdir(tmp_path / "new" / "deeper")) == 3
