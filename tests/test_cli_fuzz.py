"""A seeded fuzz test of the command line (issue 11): hostile sources, flags and paths, and
damaged or foreign search databases. Every case must end in exit 0 or 2 (1 for ``equiv``'s "not
equivalent"), print no traceback, and leave every file but its own output as it was.

The CLI runs in-process (``optdsl.cli.main``), from inside the scratch folder, so a stray write
anywhere relative would show up in the folder's snapshot. Seeds and case counts are fixed: CI
runs the same cases every time; raise ``CASES`` locally to hunt (``FUZZ_CASES=500``).
"""

import os
import random
import sqlite3
from pathlib import Path

import pytest
from stores import small_search_db

from optdsl.cli import main

CASES = int(os.environ.get("FUZZ_CASES", "40"))
ZOO = Path(__file__).resolve().parent.parent / "optdsl" / "zoo"
BASES = [(ZOO / f"{n}.py").read_bytes() for n in ("adamw", "lion", "sgd", "momentum", "adafactor")]
# Pieces of hostile text: syntax outside the language, code that would run if evaluated, bytes that
# are not UTF-8, NUL, a UTF-8-encoded lone surrogate, huge literals, deep nesting, odd whitespace.
PIECES = [b"(", b")", b"**", b"[0]", b"lambda x: x", b"__import__('os').system('touch pwned')", b"import os\n",
          b"\x00", b"\xff", b"\xed\xa0\x80", b"\xe9", b"\r", b"\t", b"\\", b'"""', b"'", b"9" * 400, b"1e308 * 10",
          b"(" * 300, b"+g" * 300, b"\n    ", b"def ", b"return ", b"if g else ", b"for i in g: ", b"@", "é".encode(),
          "\u2028".encode(), b"\xef\xbb\xbf", b"#", b"nan", b"-inf", b"0x10", b"1_000", b"w.grad", b"g = g\n    "]


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder``: kind, mode, mtime and bytes (a folder's mtime is left out: it
    changes when an output is created inside it, and what is inside is listed anyway)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = os.lstat(p)
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(folder))] = (st.st_mode, None if p.is_dir() else st.st_mtime_ns, data)
    return out


def run(argv: list[str], capsys, allowed=(0, 2)) -> int:
    """``optdsl ARGV`` in-process; fails the test (naming the argv) on an exit status outside
    ``allowed``, an exception, or a traceback in the output."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: usage errors (2) and --help (0)
        code = e.code
    out, err = capsys.readouterr()
    assert code in allowed, (argv, code, err[-2000:])
    assert "Traceback" not in out + err, (argv, err[-2000:])
    return code


def check_unchanged(before: dict, after: dict, outputs: set[str], argv) -> None:
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    stray = {k for k in changed if not any(k == o or k.startswith(o + os.sep) for o in outputs)}
    assert not stray, (argv, sorted(stray))


def hostile_source(rng: random.Random) -> bytes:
    """A zoo program with one or two small edits: a span deleted, replaced or given a hostile
    piece, or a line repeated (about a third still parse); now and then in another encoding."""
    text = rng.choice(BASES)
    for _ in range(rng.choice([1, 1, 2])):
        i = rng.randrange(len(text) + 1)
        j = min(len(text), i + rng.randint(1, 12))
        op = rng.randrange(4)
        if op == 0:
            text = text[:i] + text[j:]
        elif op == 1:
            text = text[:i] + rng.choice(PIECES) + text[i:]
        elif op == 2:
            lines = text.split(b"\n")
            k = rng.randrange(len(lines))
            lines.insert(rng.randrange(len(lines) + 1), lines[k])
            text = b"\n".join(lines)
        else:
            text = text[:i] + rng.choice(PIECES) + text[j:]
    if rng.random() < 0.1:  # the whole file in another encoding
        text = text.decode("utf-8", "replace").encode(rng.choice(["latin-1", "utf-16", "cp1252"]), "replace")
    return text


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_hostile_sources(scratch, capsys):
    rng = random.Random(1101)
    src, out = scratch / "src.py", scratch / "out.py"
    for case in range(CASES):
        src.write_bytes(hostile_source(rng))
        target = rng.choice(["torch", "jax", "triton"])
        argv = rng.choice([["check", str(src)], ["show", str(src)], ["show", str(src), "--latex"],
                           ["compile", str(src), "--target", target],
                           ["compile", str(src), "--target", target, "-o", str(out)],
                           ["cost", str(src), "--shape", "8x8"], ["check", f"{src}:train"]])
        before = snapshot(scratch)
        run(argv, capsys)
        check_unchanged(before, snapshot(scratch), {"out.py"}, (case, argv, src.read_bytes()))


def _paths(folder: Path) -> list[str]:
    """Places a user may name: fine, missing, a folder, a FIFO (a device that tests may touch),
    a symlink to it, a dangling symlink, a symlink loop, an existing file, odd characters."""
    (folder / "dir").mkdir(exist_ok=True)
    if not (folder / "fifo").exists():
        os.mkfifo(folder / "fifo")
        (folder / "to_fifo").symlink_to("fifo")
        (folder / "dangling").symlink_to("nowhere/x.py")
        (folder / "loop").symlink_to("loop")
        (folder / "file.py").write_text("keep\n")
    names = ["new.py", "missing/x.py", "dir", "fifo", "to_fifo", "dangling", "loop", "file.py", "file.py/x",
             "sp ace.py", "-", "", "é.py", "new.sqlite", "dir/new.sqlite"]
    return [n if n in ("-", "") else str(folder / n) for n in names]


NUMBERS = ["0", "-1", "1", "2", "99999999999999999999", "abc", "", "1.5", "nan", "-0", "1e3"]
VALUES = {"--target": ["torch", "jax", "triton", "cuda", ""], "--shape": ["4x4", "4x-1", "0x0", "8", "x", "4x4x4x4x4"],
          "--dtype": ["float32", "bfloat16", "int8"], "--set": ["lr=nan", "lr=0.1", "beta1=2", "lr", "=1"],
          "--budget": ["0", "abc", "0s", "10m", "1h30m", "-5s"], "--tasks": ["quadratic", "nosuch", ",", ""],
          "--init": ["adamw", "adamw,", "nosuch", "lion,sgd"]}


def random_argv(rng: random.Random, paths: list[str]) -> list[str]:
    """A command line mixing good and bad names, numbers and paths."""
    command = rng.choice(["check", "show", "compile", "compile", "cost", "simplify", "zoo", "ops", "search",
                          "report", "export", "equiv"])

    def value(flag: str) -> str:
        return rng.choice(VALUES.get(flag, NUMBERS) + (paths if rng.random() < 0.2 else []))

    if command == "search":
        # Always at least one value the search must refuse before it starts (no real search runs).
        bad = rng.choice([["--workers", rng.choice(["0", "-1"])], ["--population", "0"], ["--tournament", "0"],
                          ["--evals", rng.choice(["0", "-3"])], ["--budget", rng.choice(["0", "abc", "0s"])],
                          ["--seed", "-1"], ["--tasks", "nosuch"], ["--init", "nosuch"],
                          ["--resume", rng.choice(paths[1:8])]])
        # (never the refused flag again: argparse keeps the last value given)
        extra = rng.sample([f for f in ("--db", "--population", "--tournament", "--seed", "--tasks", "--init")
                            if f != bad[0]], 2)
        argv = ["search", *bad]
        for flag in extra:
            argv += [flag, rng.choice(paths) if flag == "--db" else value(flag)]
        return argv + (["--evals", "1", "--workers", "1"] if "--resume" in argv else [])
    if command in ("zoo", "ops"):
        return [command] + rng.choice([[], [], ["--bogus"], [rng.choice(paths)]])
    if command in ("report", "export"):
        argv = [command, rng.choice(paths), "--top", rng.choice(["0", "-1", "1", "abc"])]
        return argv + (["-o", rng.choice(paths)] if command == "export" or rng.random() < 0.5 else [])
    argv = [command, rng.choice(["lion", "adamw", "nosuch", "lion:train", "lion:nosuch", *paths])]
    if command == "equiv":
        argv.append(rng.choice(["sgd", "lion", *paths]))
    flags = {"compile": ["--target", "-o"], "cost": ["--shape", "--dtype"], "equiv": ["--set", "--strict"],
             "show": ["--latex"]}.get(command, [])
    for flag in rng.sample(flags, rng.randint(0, len(flags))):
        argv += [flag] if flag in ("--latex", "--strict") else [flag, rng.choice(paths) if flag == "-o" else value(flag)]
    return argv


def test_hostile_flags_and_paths(scratch, capsys):
    rng = random.Random(1102)
    paths = _paths(scratch)
    for case in range(CASES):
        argv = random_argv(rng, paths)
        # What a command may write: its -o file or folder (through a link), never a FIFO or device.
        out = os.path.realpath(argv[argv.index("-o") + 1]) if "-o" in argv[:-1] else None
        special = out is not None and os.path.exists(out) and not (os.path.isfile(out) or os.path.isdir(out))
        outputs = {os.path.relpath(out, scratch)} if out and not special else set()
        before = snapshot(scratch)
        run(argv, capsys, allowed=(0, 1, 2) if argv[0] == "equiv" else (0, 2))
        check_unchanged(before, snapshot(scratch), outputs, (case, argv))


def damaged_database(rng: random.Random, good: bytes, path: Path) -> str:
    """A variant of a good search database: truncated, bit-flipped, with junk around it, with
    rows and settings garbled through SQL, or another program's database; returns which."""
    kind = rng.choice(["truncate", "flip", "flip", "junk", "sql", "sql", "foreign"])
    data = bytearray(good)
    if kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "junk":
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000)))
        data = data + junk if rng.random() < 0.5 else junk + data
    path.write_bytes(bytes(data))
    if kind == "sql":
        column = rng.choice(["source", "fitness", "task_score", "task_lr", "status", "n_live", "structural_hash",
                             "meta_fitness", "memory", "id", "parent"])
        value = rng.choice(["'{bad'", "'def ('", "CAST(x'80ff' AS TEXT)", "NULL", "'[1, 2]'", "'{\"q\": \"x\"}'",
                            "1e999", "-1", "x'00'", "'ok'", "'nan'"])
        c = sqlite3.connect(path)
        try:
            if rng.random() < 0.3:
                c.execute(f"UPDATE meta SET value = {value} WHERE key = 'config'")
            else:
                c.execute(f"UPDATE programs SET {column} = {value} WHERE id = {rng.randint(1, 3)}")
            c.commit()
        except sqlite3.Error:  # a constraint refused the value: this case is just the good file
            pass
        finally:
            c.close()
        kind += f" {column}"
    if kind == "foreign":  # another program's database, in either journal mode, maybe with our names
        path.unlink()
        c = sqlite3.connect(path)
        c.execute(f"PRAGMA journal_mode={rng.choice(['WAL', 'DELETE'])}")
        for table in rng.sample(["customers", "programs", "meta", "baselines", "orders"], rng.randint(1, 3)):
            c.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {rng.choice(['name', 'key', 'source'])} TEXT)")
        c.commit()
        c.close()
    return kind


def test_damaged_and_foreign_databases(tmp_path, capsys, monkeypatch):
    good = Path(small_search_db(str(tmp_path / "good.sqlite"))).read_bytes()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    rng = random.Random(1103)
    db, out = scratch / "s.sqlite", scratch / "out"
    for case in range(CASES):
        for leftover in (db, *scratch.glob("s.sqlite-*")):
            leftover.unlink(missing_ok=True)
        kind = damaged_database(rng, good, db)
        for argv in (["report", str(db), "--top", "1"], ["export", str(db), "--top", "1", "-o", str(out)]):
            before = snapshot(scratch)
            run(argv, capsys)
            check_unchanged(before, snapshot(scratch), {"out"}, (case, kind, argv))
