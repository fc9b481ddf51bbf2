"""The store opens only its own databases, leaves every other file as it was, lets one search
write at a time, and skips a row it cannot read (issue 11)."""

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from stores import small_search_db

from optdsl.cli import main
from optdsl.errors import DslError
from optdsl.parser import parse
from search.store import APPLICATION_ID, SCHEMA, SCHEMA_VERSION, Store, schema_version


def snapshot(folder) -> dict:
    """Every file under ``folder``: bytes, mode and mtime (what "left as it was" means)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            data = Path(p).read_bytes() if os.path.isfile(p) and not os.path.islink(p) else b""
            out[os.path.relpath(p, folder)] = (st.st_mode, st.st_mtime_ns, hashlib.sha256(data).hexdigest())
    return out


@pytest.fixture
def db(tmp_path):
    return small_search_db(str(tmp_path / "s.sqlite"))


def _damaged(kind: str, tmp_path, good: str) -> str:
    data = Path(good).read_bytes()
    path = tmp_path / f"{kind}.sqlite"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bit-flipped":  # the type byte of page 2, a b-tree page: SQLite's check must notice
        page = int.from_bytes(data[16:18], "big")
        path.write_bytes(data[:page] + bytes([data[page] ^ 0x40]) + data[page + 1:])
    elif kind == "cell-off-page":  # a table's first two cell pointers into its page's header: SQLite's
        # check reports both (the content is fixed: where a pointer lands decides how SQLite fails)
        with sqlite3.connect(path) as c:
            c.execute("CREATE TABLE t (x TEXT)")
            c.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(20)])
        c.close()
        data = path.read_bytes()
        size = int.from_bytes(data[16:18], "big")  # page 2 is t's, a leaf holding every row
        path.write_bytes(data[:size + 8] + (1).to_bytes(2, "big") * 2 + data[size + 12:])
    elif kind == "random":
        path.write_bytes(bytes((i * 97 + 13) % 256 for i in range(len(data))))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("def train(w, g, lr):\n    return lr * g\n")
    elif kind == "folder":
        path.mkdir()
    elif kind == "foreign":
        with sqlite3.connect(path) as c:
            c.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
            c.execute("INSERT INTO customers (name) VALUES ('Ada')")
        c.close()
    elif kind == "other-app":  # right tables, another program's marker
        path.write_bytes(data[:68] + (0x12345678).to_bytes(4, "big") + data[72:])
    elif kind == "altered":  # ours, a column dropped since
        path.write_bytes(data)
        with sqlite3.connect(path) as c:
            c.execute("ALTER TABLE baselines DROP COLUMN seconds")
        c.close()
    return str(path)


KINDS = ["truncated", "bit-flipped", "cell-off-page", "random", "empty", "text", "folder", "foreign",
         "other-app", "altered"]


@pytest.mark.parametrize("kind", KINDS)
def test_foreign_or_damaged_files_are_refused_and_left_as_they_were(kind, tmp_path, db, capsys):
    path = _damaged(kind, tmp_path, db)
    os.remove(db)
    before = snapshot(tmp_path)
    for argv in (["report", path], ["export", path, "-o", str(tmp_path / "out")],
                 ["search", "--resume", path, "--evals", "1", "--workers", "1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: ") and "Traceback" not in err
        if kind == "cell-off-page":  # SQLite's report in one line: its header and the rest counted
            assert err == (f"error: {path}: is damaged (On tree page 2 cell 1: Offset 1 out of range "
                           "3906..4092; 1 more problem(s)); restore it from a copy\n")
    assert snapshot(tmp_path) == before  # no -wal/-shm, no WAL switch, no new tables, no export folder


def test_an_altered_search_database_says_what_differs(tmp_path, db):
    """A column dropped from one of ours was called "not an optdsl search database (tables: ...)"."""
    with pytest.raises(DslError, match="is an optdsl search database, but its table 'baselines' lacks "
                                       "column.s. seconds") as e:
        Store(_damaged("altered", tmp_path, db))
    assert "another optdsl version" in e.value.hint


def test_foreign_schema_keeps_its_journal_mode_and_tables(tmp_path, db):
    path = _damaged("foreign", tmp_path, db)
    with pytest.raises(DslError, match="not an optdsl search database .tables: customers"):
        Store(path)
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert [r[0] for r in c.execute("SELECT name FROM sqlite_master")] == ["customers"]
    c.close()


def test_new_database_carries_marker_and_version(tmp_path):
    path = str(tmp_path / "n.sqlite")
    Store(path).close()
    header = Path(path).read_bytes()[:100]
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID
    assert int.from_bytes(header[60:64], "big") == SCHEMA_VERSION == schema_version(path)
    assert os.listdir(tmp_path) == ["n.sqlite"]  # the temporary it was built in is gone


def test_database_appears_complete_or_not_at_all(tmp_path):
    """Regression (kill-and-resume under -n 2: "no such table: programs"): whoever sees the
    file sees its tables, because it is built aside and linked into place."""
    paths = [str(tmp_path / f"c{i}.sqlite") for i in range(20)]
    problems, done = [], threading.Event()

    def watch():
        while not done.is_set():
            for p in paths:
                if os.path.exists(p):
                    try:
                        schema_version(p)
                    except DslError as e:
                        problems.append(str(e))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for p in paths:
            Store(p).close()
    finally:
        done.set()
        watcher.join()
    assert problems == []


def test_a_search_stopped_as_its_database_appears_can_be_resumed(tmp_path, monkeypatch, capsys):
    """The settings were written ~35 ms after the file appeared: a Ctrl-C or kill in between left a
    database that the same command called existing and --resume said held no search."""
    import search.commands

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    db = str(tmp_path / "s.sqlite")
    with monkeypatch.context() as m:
        m.setattr(search.commands, "make_executor", stopped)  # the first thing after the database
        assert main(["search", "--db", db, "--tasks", "quadratic", "--evals", "2", "--workers", "1"]) == 130
    with Store(db, readonly=True) as store:
        assert store.get_meta("config")["tasks"] == ["quadratic"] and store.get_meta("search_id")
    assert main(["search", "--resume", db, "--evals", "2", "--workers", "1"]) == 0
    capsys.readouterr()
    # one made so by an earlier version: both commands say what to do
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM meta WHERE key = 'config'")
    c.close()
    assert main(["search", "--db", db, "--tasks", "quadratic", "--evals", "1", "--workers", "1"]) == 2
    assert "stopped before its search began" in capsys.readouterr().err
    assert main(["search", "--resume", db, "--evals", "1", "--workers", "1"]) == 2
    assert "delete it and start the search again" in capsys.readouterr().err


def _legacy(path: str) -> str:
    """A database as written before the marker: today's tables, application_id 0, WAL."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.executescript(SCHEMA)
    c.execute("INSERT INTO meta VALUES ('seed', '0')")
    c.close()
    return path


def test_databases_written_before_the_marker_are_read_and_then_marked(tmp_path):
    path = _legacy(str(tmp_path / "old.sqlite"))
    before = snapshot(tmp_path)
    with Store(path, readonly=True) as store:  # reading does not migrate
        assert store.get_meta("seed") == 0
    assert snapshot(tmp_path) == before and schema_version(path) == 0
    with Store(path) as store:
        assert store.get_meta("seed") == 0
    assert schema_version(path) == SCHEMA_VERSION


def test_bad_settings_json_refuses_resume(db, capsys):
    with sqlite3.connect(db) as c:
        c.execute("UPDATE meta SET value = '{\"population\": ' WHERE key = 'config'")
    c.close()
    assert main(["search", "--resume", db, "--evals", "1", "--workers", "1"]) == 2
    assert "setting 'config' is unreadable (JSONDecodeError" in capsys.readouterr().err
    assert main(["report", db]) == 0  # the programs are still readable


def test_unusable_settings_refuse_resume(db, capsys):
    with sqlite3.connect(db) as c:
        c.execute("""UPDATE meta SET value = '{"population": 0, "tasks": ["quadratic"]}' WHERE key = 'config'""")
    c.close()
    assert main(["search", "--resume", db, "--evals", "1", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "stored search settings are unusable (population 0: must be a whole number from 1 to" in err


@pytest.mark.parametrize("name", ["held_out_seeds", "confirm_seeds"])
def test_stored_seeds_must_be_seeds(db, capsys, name):
    with sqlite3.connect(db) as c:
        c.execute(f"""UPDATE meta SET value = json_set(value, '$.{name}', json('[2, "x"]'))
                      WHERE key = 'config'""")
    c.close()
    assert main(["search", "--resume", db, "--evals", "1", "--workers", "1"]) == 2
    assert f"{name} (2, 'x') are not seeds (integers >= 0)" in capsys.readouterr().err


@pytest.mark.parametrize("name, value, said", [("schedule", "linear", "is not one of constant, cosine"),
                                                ("loss_averse", "yes", "is not true or false"),
                                                ("hurdle_only", "logreg", "are not some of its tasks")])
def test_a_stored_setting_must_be_one_the_search_knows(db, capsys, name, value, said):
    with sqlite3.connect(db) as c:
        c.execute(f"""UPDATE meta SET value = json_set(value, '$.{name}', '{value}') WHERE key = 'config'""")
    c.close()
    assert main(["search", "--resume", db, "--evals", "1", "--workers", "1"]) == 2
    assert f"{name} {value!r} {said}" in capsys.readouterr().err


def test_resume_refuses_settings_it_would_ignore(db, capsys):
    """The stored search decides its tasks, warm starts, population...: a --resume given other
    ones is refused (exit 2, the database untouched), not continued with them silently dropped."""
    before = snapshot(os.path.dirname(db))
    extra = ["--tasks", "quadratic", "--init", "lion", "--population", "4", "--batch", "2",
             "--db", "other.sqlite"]
    assert main(["search", "--resume", db, "--evals", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert "--db, --init, --population, --batch, --tasks cannot change them" in err and "Traceback" not in err
    assert snapshot(os.path.dirname(db)) == before
    # at their defaults too (the stored search's seed is 0: the audit's was 5, silently kept)
    assert main(["search", "--resume", db, "--evals", "1", "--seed", "0", "--schedule", "cosine"]) == 2
    assert "--seed, --schedule cannot change them" in capsys.readouterr().err


def test_read_only_database_refuses_resume_but_reads(db, capsys):
    os.chmod(db, 0o444)
    before = snapshot(os.path.dirname(db))
    assert main(["search", "--resume", db, "--evals", "1", "--workers", "1"]) == 2
    assert "is read-only" in capsys.readouterr().err
    assert main(["report", db]) == 0
    assert snapshot(os.path.dirname(db)) == before


def test_one_search_writes_a_database_at_a_time(db, capsys):
    with Store(db, exclusive=True):
        assert main(["search", "--resume", db, "--evals", "1", "--workers", "1"]) == 2
        assert "is in use by another search" in capsys.readouterr().err
        with pytest.raises(DslError, match="in use"):
            Store(db, exclusive=True)
        assert main(["report", db]) == 0  # reading a running search is fine
    Store(db, exclusive=True).close()  # released with the first


def test_a_resume_continues_the_evolution_not_the_winners_ablations(tmp_path):
    """A finished search's last rows are its winner's one-op ablations; a resumed search's population
    is the evolution's most recent children (it had been 32 of 32 ablations: an audit)."""
    from search.ablation import PREFIX
    from search.candidate import describe

    store = Store(str(tmp_path / "s.sqlite"))
    info = describe(parse("def train(w, g, lr):\n    return lr * g\n"))
    mutations = ("init adamw", "insert", None, f"{PREFIX}t = sin(m) -> t = m", f"{PREFIX}u = g * m -> u = g")
    ids = [store.add(status="ok", fitness=0.1, mutation=m, **info) for m in mutations]
    assert [r["id"] for r in store.recent(4)] == ids[:3]
    assert [r["id"] for r in store.recent(2)] == ids[1:3]


def test_unreadable_rows_are_skipped_with_a_warning(db, tmp_path, capsys):
    with sqlite3.connect(db) as c:
        c.execute("UPDATE programs SET source = CAST(x'64656680ff' AS TEXT) WHERE id = 1")  # not UTF-8
        c.execute("UPDATE programs SET task_score = '{bad' WHERE id = 2")
        # the best row's source no longer parses: export and report fall back to the next best
        c.execute("INSERT INTO programs (created, source, live_source, structural_hash, fingerprint, status,"
                  " fitness, memory, n_statements, n_live) VALUES (0, 'def (', '', 'h', 'f', 'ok', 9.0, 0, 1, 1)")
    c.close()
    with Store(db, readonly=True) as store:
        assert [r["id"] for r in store.all()] == [3, 4]
        assert [r["id"] for r in store.recent(4)] == [3]  # the population a resume starts from
        assert [r["id"] for r in store.top(5)] == [3]
    err = capsys.readouterr().err
    assert "program #1 is unreadable (column source holds bytes); skipped" in err
    assert "program #2 is unreadable (Expecting property name" in err and "program #4" in err
    assert err.count("program #1 ") == 1  # once per row and store, not once per query
    assert main(["report", db]) == 0
    assert main(["export", db, "--top", "1", "-o", str(tmp_path / "out")]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["found_3.py", "found_3_jax.py", "found_3_torch.py",
                                                    "ranking.md"]



def test_a_held_out_score_without_a_proxy_fitness_is_an_unreadable_row(db, tmp_path, capsys):
    # SQLite stores a nan as NULL: an audit's database, its fitness NULLed, crashed report and export
    with sqlite3.connect(db) as c:
        c.execute("UPDATE programs SET meta_fitness = 0.5, meta_task_score = '{\"quadratic\": 0.5}'")
        c.execute("UPDATE programs SET fitness = NULL WHERE id = 3")
    c.close()
    assert main(["report", db]) == 0
    assert main(["export", db, "-o", str(tmp_path / "out")]) == 0
    assert "program #3 is unreadable (a held-out score without a proxy fitness)" in capsys.readouterr().err


def test_an_export_refused_for_an_unreadable_setting_leaves_no_folder(db, tmp_path, capsys):
    with sqlite3.connect(db) as c:
        c.execute("UPDATE meta SET value = '{bad' WHERE key = 'search_id'")
    c.close()
    assert main(["export", db, "-o", str(tmp_path / "new" / "out")]) == 2
    assert "search_id" in capsys.readouterr().err and not (tmp_path / "new").exists()

def test_the_best_rows_are_read_as_far_as_needed_and_each_source_parsed_once(monkeypatch):
    # The funnel asks for the top rows after every child that beats AdamW: reading and parsing a
    # search's every row each time cost 16 ms a call at 7,000 rows.
    from optdsl import parse
    from search import store as store_module
    from search.candidate import describe

    store = Store(":memory:")
    for i in range(300):
        info = describe(parse(f"def train(w, g, lr):\n    return lr * g * {i + 1}\n"))
        store.add(status="ok", fitness=i / 1000, **{**info, "structural_hash": f"h{i}"})
    parsed = []
    monkeypatch.setattr(store_module, "parse", lambda source, name: parsed.append(source))
    assert [r["fitness"] for r in store.top(3)] == [0.299, 0.298, 0.297]
    assert len(parsed) == 3
    assert [r["fitness"] for r in store.top(5)] == [0.299, 0.298, 0.297, 0.296, 0.295]
    assert len(parsed) == 5


def test_totals_are_counted_by_sqlite_and_cache_hits_are_not_read_for_them():
    # a 10-minute search's 96,000 rows (86,000 cache hits, 212 MB) took `report` 7 s and 743 MB
    from optdsl import load
    from search.candidate import describe
    from search.report import totals

    store = Store(":memory:")
    info = describe(load("sgd"))
    first = store.add(**info, status="ok", fitness=0.1, eval_seconds=2.0)
    for status in ("guard", "hurdle", "diverged", "ok"):
        store.add(**info, status=status, eval_seconds=1.0)
    for _ in range(5):
        store.add(**info, status="cached", cached_from=first)
    rows = store.all()
    assert [r["id"] for r in store.originals()] == [r["id"] for r in rows if r["cached_from"] is None]
    t = totals(store)
    assert (t["rows"], t["evaluated"], t["cached"], t["hurdled"]) == (10, 5, 5, 1)
    assert t["failed"] == "2 failed: 1 refused by the guards, 1 diverged"
    assert t["eval_seconds"] == 6.0 and t["cache_hit_rate"] == 0.5
    statements = sum(r["n_statements"] for r in rows)
    assert t["redundant_fraction"] == 1 - sum(r["n_live"] for r in rows) / statements


def test_reading_creates_no_file_beside_the_database_so_a_read_only_folder_serves(db, tmp_path):
    # Opened as a plain connection, a WAL database made its -wal and -shm while report or export
    # read it, and on a read-only folder (a mounted archive) SQLite could not open it at all.
    before = snapshot(tmp_path)
    with Store(db, readonly=True) as store:
        assert store.top(1) and snapshot(tmp_path) == before
    with Store(db) as writer, Store(db, readonly=True) as store:  # a search running: its rows are read
        writer.set_meta("note", "written while read")
        assert store.get_meta("note") == "written while read"
