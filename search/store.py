"""The search's record: one SQLite file (WAL), one row per program the search has scored.

Tables:
  ``meta``       key -> JSON value: the search's settings (seed, population, tasks, ...)
  ``baselines``  task -> tuned AdamW's loss and learning rate
  ``programs``   one row per scored child: its source as mutated (``source``, what the
                 population mutates further), the live part (``live_source``), structural hash,
                 fingerprint, parent id, mutation, status (ok, hurdle, diverged, error,
                 timeout, cached), fitness, per-task scores/losses/lrs (JSON), meta-validation
                 results, memory (states per parameter), timings.

Each row is committed on its own, so killing the process (even SIGKILL) loses at most the
evaluations in flight. Programs are stored as source text, never pickled. Regularized evolution's
population is the P most recent rows, so ``--resume`` rebuilds it with :meth:`Store.recent`.

The store opens only its own databases: the file carries a marker (``PRAGMA application_id`` =
:data:`APPLICATION_ID`) and a schema version (``PRAGMA user_version``); a database written before
the marker existed (the right tables, no marker) is marked when opened for writing. Anything
else (a folder, an empty, truncated, damaged or random file, another program's database) is a
DslError naming the file, and the file is left exactly as it was: it is inspected read-only
(``immutable``, so SQLite creates no ``-wal``/``-shm`` beside it) before it is really opened.
A new database is built beside its path and linked into place, so a database file is always
complete. ``exclusive=True`` takes an advisory lock (``flock``) on the file: one search writes
a database at a time. A row that cannot be read back (not UTF-8, wrong types, bad JSON, a source
that no longer parses) is skipped with a warning on stderr, so one damaged row blocks nothing.

Example:
    >>> s = Store(":memory:")
    >>> s.set_meta("seed", 0); s.get_meta("seed")
    0
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import stat
import sys
import time
from collections.abc import Mapping
from urllib.parse import quote

from optdsl.errors import DslError
from optdsl.parser import parse

from .ablation import PREFIX as ABLATION

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS baselines (
    task TEXT PRIMARY KEY, loss REAL NOT NULL, lr REAL NOT NULL, seconds REAL);
CREATE TABLE IF NOT EXISTS programs (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    parent INTEGER REFERENCES programs(id),
    mutation TEXT,
    source TEXT NOT NULL,
    live_source TEXT NOT NULL,
    structural_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    fitness REAL,
    task_score TEXT, task_loss TEXT, task_lr TEXT,
    meta_fitness REAL, meta_task_score TEXT,
    memory REAL,
    n_statements INTEGER, n_live INTEGER,
    cached_from INTEGER REFERENCES programs(id),
    eval_seconds REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS programs_hash ON programs(structural_hash);
CREATE INDEX IF NOT EXISTS programs_fingerprint ON programs(fingerprint);
CREATE INDEX IF NOT EXISTS programs_fitness ON programs(fitness);
"""
JSON_COLUMNS = ("task_score", "task_loss", "task_lr", "meta_task_score")
APPLICATION_ID = 0x6F707464  # b"optd": this file is an optdsl search database (PRAGMA application_id)
SCHEMA_VERSION = 1  # PRAGMA user_version of the SCHEMA above; 0: written before the marker existed
# What each column of a readable ``programs`` row holds (NOT NULL columns may not be None).
_INT, _NUM, _TEXT = (int,), (int, float), (str,)
COLUMN_TYPES = {"id": _INT, "created": _NUM, "parent": _INT, "mutation": _TEXT, "source": _TEXT,
                "live_source": _TEXT, "structural_hash": _TEXT, "fingerprint": _TEXT, "status": _TEXT,
                "fitness": _NUM, "task_score": _TEXT, "task_loss": _TEXT, "task_lr": _TEXT,
                "meta_fitness": _NUM, "meta_task_score": _TEXT, "memory": _NUM, "n_statements": _INT,
                "n_live": _INT, "cached_from": _INT, "eval_seconds": _NUM, "error": _TEXT}
NOT_NULL = {"id", "created", "source", "live_source", "structural_hash", "fingerprint", "status",
            "memory", "n_statements", "n_live"}
TABLES = {"meta": {"key", "value"}, "baselines": {"task", "loss", "lr", "seconds"},
          "programs": set(COLUMN_TYPES)}
# The statuses counted as failures (live and in reports), and what each means.
FAILED = {"guard": "refused by the guards", "diverged": "diverged", "error": "raised an error",
          "timeout": "timed out"}


def failures(counts: Mapping[str, int]) -> str:
    """How many of the statuses counted in ``counts`` (status -> count) are failures, and of which
    kind: ``'5 failed: 3 refused by the guards, 2 diverged'`` (``'0 failed'``).

    Example:
        >>> failures({"ok": 1, "guard": 2, "diverged": 1, "hurdle": 1})
        '3 failed: 2 refused by the guards, 1 diverged'
    """
    kinds = [f"{counts[s]} {what}" for s, what in FAILED.items() if counts.get(s)]
    return f"{sum(counts.get(s, 0) for s in FAILED)} failed" + (f": {', '.join(kinds)}" if kinds else "")


# What a damaged file can make SQLite raise; the message itself may be undecodable text.
DB_ERRORS = (sqlite3.Error, UnicodeDecodeError)


def _text(raw: bytes) -> str | bytes:
    """SQLite TEXT as str; bytes that are not UTF-8 (a damaged row) stay bytes, and fail the row's
    type check instead of the whole query."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def schema_version(path: str) -> int:
    """The schema version of the optdsl search database at ``path`` (0: written before the
    marker); DslError naming the file if it is anything else. Reads only: SQLite opens the file
    ``immutable`` (no ``-wal``/``-shm`` created) unless a ``-wal`` beside it says a search holds
    rows there.

    Example:
        >>> schema_version("/")
        Traceback (most recent call last):
        optdsl.errors.DslError: /: is a folder, not a search database
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise DslError(f"cannot open the search database: {e.strerror}", path) from None
    if stat.S_ISDIR(mode):
        raise DslError("is a folder, not a search database", path)
    if not stat.S_ISREG(mode):
        raise DslError("is not a regular file, so not a search database", path)
    try:
        db = sqlite3.connect(_read_only_uri(path), uri=True)
    except DB_ERRORS as e:
        raise DslError(f"cannot open the search database: {e}", path) from None
    db.text_factory = _text
    try:
        check = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
        columns = {n: {r[1] for r in db.execute(f"PRAGMA table_info({quote_name(n)})")}
                   for n in names if isinstance(n, str)}
    except DB_ERRORS as e:
        raise DslError(f"is damaged or not an SQLite database ({e})", path) from None
    finally:
        db.close()
    if check != ["ok"]:  # SQLite's report: a header line, then one line per problem found
        problems = [line for row in check for line in str(row).splitlines() if not line.startswith("***")]
        more = f"; {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
        raise DslError(f"is damaged ({(problems or check)[0]}{more})", path, hint="restore it from a copy")
    ours = all(columns.get(table) == cols for table, cols in TABLES.items())
    if app == APPLICATION_ID and ours:
        if version > SCHEMA_VERSION:
            raise DslError(f"was written by a newer optdsl (schema {version}; this one reads up to "
                           f"{SCHEMA_VERSION})", path)
        return version
    if app == 0 and ours:
        return 0
    if app == APPLICATION_ID:  # ours, altered since (or by another optdsl): say what differs
        table = next(t for t, cols in TABLES.items() if columns.get(t) != cols)
        raise DslError(f"is an optdsl search database, but its table {table!r} "
                       f"{_difference(TABLES[table], columns.get(table))}", path,
                       hint="it was altered, or written by another optdsl version; start a new one with --db")
    what = f"application id {app:#x}" if app not in (0, APPLICATION_ID) else \
        f"tables: {', '.join(sorted(map(str, names))) or 'none'}"
    raise DslError(f"is not an optdsl search database ({what})", path)


def _difference(expected: set[str], have: set[str] | None) -> str:
    """How a table's columns ``have`` (None: no such table) differ from ``expected``.

    Example:
        >>> _difference({"id", "source"}, {"id", "note"})
        'lacks column(s) source; has column(s) note too'
    """
    if have is None:
        return "is missing"
    parts = [f"lacks column(s) {', '.join(sorted(expected - have))}" if expected - have else "",
             f"has column(s) {', '.join(sorted(have - expected))} too" if have - expected else ""]
    return "; ".join(filter(None, parts))


def _read_only_uri(path: str) -> str:
    """SQLite's URI that opens ``path`` for reading only, ``immutable`` (no ``-shm`` created: the
    folder may be read-only) unless a ``-wal`` beside it says a search holds rows there."""
    wal = os.path.exists(path + "-wal")
    return f"file:{quote(os.path.abspath(path))}?mode=ro" + ("" if wal else "&immutable=1")


def remove_database(path: str) -> None:
    """Delete the SQLite file ``path`` and the ``-wal`` and ``-shm`` files beside it, those that exist
    (its connection closed first)."""
    for leftover in (path, path + "-wal", path + "-shm"):
        if os.path.lexists(leftover):
            os.unlink(leftover)


def quote_name(name: str) -> str:
    """``name`` as an SQL identifier (a foreign database's table names are arbitrary text): in
    double quotes, each ``"`` doubled.

    Example:
        >>> print(quote_name('odd "name'))
        "odd ""name"
    """
    return '"' + name.replace('"', '""') + '"'


class Store:
    """A search database at ``path``.

    ``Store(path)`` creates it if missing and opens it for writing otherwise; ``readonly=True``
    opens an existing one for reading only (``report``, ``export``: the file is never written);
    ``exclusive=True`` also takes the one-search-per-database lock (DslError if another process
    holds it), released by :meth:`close` or the process's end, however it ends. A file that
    :func:`schema_version` refuses, or a read-only one opened for writing, is a DslError.
    """

    def __init__(self, path: str, readonly: bool = False, exclusive: bool = False, meta: dict | None = None):
        """``meta``: settings a new database holds from its first moment (see :meth:`_create`)."""
        self.path = path
        self.warned: set = set()  # rows already reported as unreadable
        self.parsed: set[int] = set()  # rows whose source parsed (a row's source never changes)
        self._lock = None
        if path == ":memory:":
            self.db = self._connect(path)
            self.db.executescript(SCHEMA)
            self._mark()
            return
        if not os.path.lexists(path):
            if readonly:
                raise DslError("no such search database", path)
            self._create(path, exclusive, meta or {})
            version = SCHEMA_VERSION
        else:
            version = schema_version(path)
            if not readonly:
                self._check_writable(path)
                if exclusive:
                    self._lock = self._take_lock(path)
        try:
            self.db = self._connect(_read_only_uri(path) if readonly else path, uri=readonly)
            if readonly:
                self.db.execute("PRAGMA query_only = ON")  # belt and braces: nothing here writes
            else:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                if version < SCHEMA_VERSION:  # today's tables without the marker: mark them
                    self._mark()
        except DB_ERRORS as e:
            self.close()
            raise DslError(f"cannot open the search database: {e}", path) from None

    @staticmethod
    def _connect(path: str, uri: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, timeout=30, uri=uri)  # autocommit: a row is durable
        db.row_factory = sqlite3.Row
        db.text_factory = _text
        return db

    def _mark(self) -> None:
        self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _create(self, path: str, exclusive: bool, meta: dict) -> None:
        """Build the schema and ``meta``'s rows in a temporary file beside ``path``, lock it if
        asked, and link it into place: readers never see a half-made database (a search stopped
        as it began left one without its settings, which neither a new search nor --resume took),
        and of two searches creating the same path one gets "already exists"."""
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise DslError(f"cannot create the search database: no such folder {folder}", path)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        done = False
        try:
            db = self._connect(tmp)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(f"BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; "
                             f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            with db:
                db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(meta[k])) for k in meta])
            db.close()
            if exclusive:
                self._lock = self._take_lock(tmp)  # the lock is on the file, so it moves with it
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise DslError("already exists", path, hint=f"continue it with `optdsl search --resume "
                               f"{path}`, or pick another --db") from None
            except OSError:  # a file system without hard links: rename (not atomic against a race)
                os.replace(tmp, path)
            done = True
        except (OSError, *DB_ERRORS) as e:
            raise DslError(f"cannot create the search database: {getattr(e, 'strerror', None) or e}",
                           path) from None
        finally:
            remove_database(tmp)
            if not done:
                self.close()

    @staticmethod
    def _check_writable(path: str) -> None:
        """A search must be able to write the database and create files beside it (the WAL,
        ``best_optimizer.py``): refuse up front rather than fail at the first INSERT. A file
        without write permission bits is refused even for root, who could write it anyway."""
        folder = os.path.dirname(os.path.abspath(path))
        if not os.stat(path).st_mode & 0o222 or not os.access(path, os.W_OK):
            raise DslError("is read-only; a search must write its database", path,
                           hint="make it writable (chmod u+w), or read it with `optdsl report`")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DslError(f"its folder {folder} is not writable; a search writes files beside its "
                           "database", path)

    @staticmethod
    def _take_lock(path: str) -> int:
        """An exclusive ``flock`` on the file at ``path`` (not SQLite's own POSIX locks, which it
        does not disturb); the kernel drops it when the process ends, even by SIGKILL."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DslError("is in use by another search (one search writes a database at a time)", path,
                           hint="wait for it to end, or stop it; `optdsl report` can read it") from None
        return fd

    def close(self) -> None:
        """Close the database, then release the lock (in that order: closing any descriptor of the
        file drops this process's POSIX locks, SQLite's included)."""
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None
        if getattr(self, "_lock", None) is not None:
            os.close(self._lock)
            self._lock = None

    def __del__(self):  # a Store dropped unclosed (an error on the way) must not keep the lock
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- queries: every SQLite failure is a DslError naming the file -------------------------
    def _query(self, sql: str, params: tuple = ()) -> list:
        try:
            return self.db.execute(sql, params).fetchall()
        except DB_ERRORS as e:
            raise DslError(f"database error: {e}", self.path) from None

    def _write(self, sql: str, params: tuple = ()) -> int:
        try:
            return self.db.execute(sql, params).lastrowid
        except DB_ERRORS as e:
            raise DslError(f"cannot write the search database: {e}", self.path) from None

    def _warn(self, what, reason: str) -> None:
        if what not in self.warned:
            self.warned.add(what)
            print(f"warning: {self.path}: {what} is unreadable ({reason}); skipped", file=sys.stderr)

    # --- settings and baselines ---------------------------------------------------------
    def set_meta(self, key: str, value) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default=None):
        """The JSON value stored under ``key`` (``default`` if none); DslError if it is unreadable:
        settings cannot be skipped the way a row can."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:
            return default
        try:
            return json.loads(rows[0][0])
        except (TypeError, ValueError) as e:
            raise DslError(f"setting {key!r} is unreadable ({type(e).__name__}: {e})", self.path) from None

    def set_baseline(self, task: str, loss: float, lr: float, seconds: float = 0.0) -> None:
        self._write("INSERT OR REPLACE INTO baselines VALUES (?, ?, ?, ?)", (task, loss, lr, seconds))

    def baselines(self) -> dict[str, dict]:
        """task -> tuned AdamW's ``loss``, ``lr``, ``seconds`` (unreadable entries skipped)."""
        out = {}
        for r in self._query("SELECT * FROM baselines"):
            d = dict(r)
            if isinstance(d["task"], str) and all(isinstance(d[k], _NUM) for k in ("loss", "lr")):
                out[d["task"]] = d
            else:
                self._warn(f"the baseline of {d['task']!r}", "wrong types")
        return out

    # --- programs -------------------------------------------------------------------------
    def add(self, **row) -> int:
        """Insert one scored program; returns its id."""
        row.setdefault("created", time.time())
        for k in JSON_COLUMNS:
            if k in row and row[k] is not None:
                row[k] = json.dumps(row[k], sort_keys=True)
        cols = ", ".join(row)
        return int(self._write(f"INSERT INTO programs ({cols}) VALUES ({', '.join('?' * len(row))})",
                               tuple(row.values())))

    def set_meta_validation(self, pid: int, fitness: float | None, task_score: dict) -> None:
        self._write("UPDATE programs SET meta_fitness = ?, meta_task_score = ? WHERE id = ?",
                    (fitness, json.dumps(task_score, sort_keys=True), pid))

    def get(self, pid: int) -> dict:
        """Program ``pid``'s row; DslError if there is none or it is unreadable."""
        rows = self._query("SELECT * FROM programs WHERE id = ?", (pid,))
        row = self._decode(rows[0], parsed=True) if rows else None
        if row is None:
            raise DslError(f"program #{pid} is {'unreadable' if rows else 'not in the database'}", self.path)
        return row

    def warm_starts(self) -> list[dict]:
        """The rows of the search's initial programs (``--init``: mutation ``init NAME``), in id order."""
        rows = self._query("SELECT * FROM programs WHERE mutation LIKE 'init %' ORDER BY id")
        return [d for d in map(self._decode, rows) if d is not None]

    def recent(self, n: int) -> list[dict]:
        """The ``n`` most recent readable rows of the evolution, oldest first (regularized evolution's
        population): not the winner's ablations (:mod:`search.ablation`), which end a search, so that
        a resumed search continues the population whether the last one ended or was stopped (a
        finished search's 32 most recent rows had been one-op variants of its winner)."""
        rows = self._query("SELECT * FROM programs WHERE substr(coalesce(mutation, ''), 1, ?) != ? "
                           "ORDER BY id DESC LIMIT ?", (len(ABLATION), ABLATION, n))
        return [d for d in (self._decode(r, parsed=True) for r in reversed(rows)) if d is not None]

    def all(self) -> list[dict]:
        """Every readable row, in id order (sources are not parsed here: that is the caller's cost)."""
        rows = self._query("SELECT * FROM programs ORDER BY id")
        return [d for d in map(self._decode, rows) if d is not None]

    def originals(self) -> list[dict]:
        """Every readable row that is not a cache hit, in id order: a 10-minute search's 96,000 rows
        hold some 10,000 of them, and decoding them all took seconds and hundreds of MB where only these
        are needed."""
        rows = self._query("SELECT * FROM programs WHERE cached_from IS NULL ORDER BY id")
        return [d for d in map(self._decode, rows) if d is not None]

    def by_status(self) -> dict[str, dict]:
        """Per status, the number of rows and their sums of ``n_statements``, ``n_live`` and
        ``eval_seconds``, counted by SQLite without reading the rows into Python."""
        rows = self._query("SELECT status, COUNT(*), TOTAL(n_statements), TOTAL(n_live), TOTAL(eval_seconds) "
                           "FROM programs GROUP BY status")
        keys = ("rows", "n_statements", "n_live", "eval_seconds")
        return {r[0]: dict(zip(keys, r[1:])) for r in rows}

    def top(self, k: int) -> list[dict]:
        """The ``k`` best evaluated programs, one per structural hash and fitness, best first.
        Rows are read a few at a time, as far as needed, and a row's source is parsed once: the
        funnel asks after every child that beats AdamW, and reading all 7,000 rows of a 2-minute
        search, parsing the best again, took 16 ms a call (now 1-2)."""
        out, seen = [], set()
        try:
            cursor = self.db.execute(
                "SELECT * FROM programs WHERE fitness IS NOT NULL AND status = 'ok' AND cached_from IS NULL "
                "ORDER BY fitness DESC, id")
            try:
                while len(out) < k and (rows := cursor.fetchmany(2 * k)):
                    for r in rows:
                        # Equal hash, or a bit-equal fitness (same losses on every task): the same
                        # program as far as the search can tell.
                        if len(out) == k or r["structural_hash"] in seen or r["fitness"] in seen:
                            continue
                        d = self._decode(r, parsed=True)
                        if d is not None:
                            seen |= {d["structural_hash"], d["fitness"]}
                            out.append(d)
            finally:
                cursor.close()
        except DB_ERRORS as e:
            raise DslError(f"database error: {e}", self.path) from None
        return out

    def meta_validated(self) -> list[dict]:
        """Every program with a meta-validation score, best held-out score first."""
        rows = self._query("SELECT * FROM programs WHERE meta_fitness IS NOT NULL "
                           "ORDER BY meta_fitness DESC, fitness DESC, id")
        return [d for d in (self._decode(r, parsed=True) for r in rows) if d is not None]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM programs")[0][0])

    def _decode(self, row, parsed: bool = False) -> dict | None:
        """The row as a dict with its JSON columns decoded, or None (warned once) if it is
        unreadable; ``parsed`` also requires its source to parse (callers that will parse it)."""
        d = dict(row)
        pid = d.get("id")
        try:
            for k, types in COLUMN_TYPES.items():
                v = d[k]
                missing = v is None and k in NOT_NULL
                if missing or v is not None and (isinstance(v, bool) or not isinstance(v, types)):
                    raise ValueError(f"column {k} holds {type(v).__name__}")
            if d["meta_fitness"] is not None and d["fitness"] is None:  # (meta-validated: it was scored)
                raise ValueError("a held-out score without a proxy fitness")
            for k in JSON_COLUMNS:
                if d[k] is not None:
                    d[k] = json.loads(d[k])
                    numbers = all(v is None or isinstance(v, _NUM) and not isinstance(v, bool)
                                  for v in d[k].values()) if isinstance(d[k], dict) else False
                    if not numbers or not all(isinstance(t, str) for t in d[k]):
                        raise ValueError(f"column {k} is not a JSON object of task -> number")
            if parsed and pid not in self.parsed:
                parse(d["source"], "<store>")
                self.parsed.add(pid)
        except (ValueError, DslError, RecursionError) as e:
            reason = e.message if isinstance(e, DslError) else str(e)
            self._warn(f"program #{pid}", reason)
            return None
        return d
