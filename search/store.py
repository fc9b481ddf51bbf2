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

Example:
    >>> s = Store(":memory:")
    >>> s.set_meta("seed", 0); s.get_meta("seed")
    0
"""

from __future__ import annotations

import json
import sqlite3
import time

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


class Store:
    """A search database at ``path`` (created if missing)."""

    def __init__(self, path: str):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)  # autocommit: a row is durable
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- settings and baselines ---------------------------------------------------------
    def set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_baseline(self, task: str, loss: float, lr: float, seconds: float = 0.0) -> None:
        self.db.execute("INSERT OR REPLACE INTO baselines VALUES (?, ?, ?, ?)", (task, loss, lr, seconds))

    def baselines(self) -> dict[str, dict]:
        rows = self.db.execute("SELECT * FROM baselines").fetchall()
        return {r["task"]: dict(r) for r in rows}

    # --- programs -------------------------------------------------------------------------
    def add(self, **row) -> int:
        """Insert one scored program; returns its id."""
        row.setdefault("created", time.time())
        for k in JSON_COLUMNS:
            if k in row and row[k] is not None:
                row[k] = json.dumps(row[k], sort_keys=True)
        cols = ", ".join(row)
        cur = self.db.execute(f"INSERT INTO programs ({cols}) VALUES ({', '.join('?' * len(row))})",
                              tuple(row.values()))
        return int(cur.lastrowid)

    def set_meta_validation(self, pid: int, fitness: float | None, task_score: dict) -> None:
        self.db.execute("UPDATE programs SET meta_fitness = ?, meta_task_score = ? WHERE id = ?",
                        (fitness, json.dumps(task_score, sort_keys=True), pid))

    def get(self, pid: int) -> dict:
        return self._decode(self.db.execute("SELECT * FROM programs WHERE id = ?", (pid,)).fetchone())

    def recent(self, n: int) -> list[dict]:
        """The ``n`` most recent rows, oldest first (regularized evolution's population)."""
        rows = self.db.execute("SELECT * FROM programs ORDER BY id DESC LIMIT ?", (n,)).fetchall()
        return [self._decode(r) for r in reversed(rows)]

    def all(self) -> list[dict]:
        return [self._decode(r) for r in self.db.execute("SELECT * FROM programs ORDER BY id")]

    def top(self, k: int) -> list[dict]:
        """The ``k`` best evaluated programs, one per structural hash and fitness, best first."""
        rows = self.db.execute(
            "SELECT * FROM programs WHERE fitness IS NOT NULL AND status = 'ok' AND cached_from IS NULL "
            "ORDER BY fitness DESC, id").fetchall()
        out, seen = [], set()
        for r in rows:
            # Equal hash, or a bit-equal fitness (same losses on every task): the same program
            # as far as the search can tell.
            if r["structural_hash"] not in seen and r["fitness"] not in seen:
                seen |= {r["structural_hash"], r["fitness"]}
                out.append(self._decode(r))
            if len(out) == k:
                break
        return out

    def meta_validated(self) -> list[dict]:
        """Every program with a meta-validation score, best held-out score first."""
        rows = self.db.execute("SELECT * FROM programs WHERE meta_fitness IS NOT NULL "
                               "ORDER BY meta_fitness DESC, fitness DESC, id").fetchall()
        return [self._decode(r) for r in rows]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM programs").fetchone()[0])

    @staticmethod
    def _decode(row) -> dict:
        d = dict(row)
        for k in JSON_COLUMNS:
            if d.get(k) is not None:
                d[k] = json.loads(d[k])
        return d
