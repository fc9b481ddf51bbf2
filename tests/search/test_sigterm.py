"""SIGTERM stops a search as Ctrl-C does (issue 11): finished evaluations kept,
``best_optimizer.py`` written, exit status 0, and no worker outlives the search."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _rows(db) -> list:
    """The stored rows, or [] while the file is not there yet (it appears complete)."""
    if not os.path.exists(db):
        return []
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute("SELECT id, source, status, fitness FROM programs ORDER BY id").fetchall()
    finally:
        c.close()


def _group(pgid: int) -> list[str]:
    """Command lines of the live (not zombie) processes in process group ``pgid``."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if stat[0] != "Z" and int(stat[2]) == pgid:
            out.append(cmdline)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_sigterm_keeps_the_work_and_writes_the_winner(tmp_path):
    db = str(tmp_path / "t.sqlite")
    proc = subprocess.Popen([sys.executable, "-m", "optdsl.cli", "search", "--db", db, "--tasks", "quadratic",
                             "--workers", "2", "--evals", "100000", "--population", "4", "--tournament", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(_rows(db)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        before = _rows(db)
        assert len(before) >= 2
        workers = [c for c in _group(proc.pid) if "spawn_main" in c]
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)  # the search alone, as `kill PID` or a scheduler does
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err  # stopped (its winner written all the same)
    assert "Traceback" not in err and "generated optimizer:" in out
    assert (tmp_path / "best_optimizer.py").is_file()
    assert _rows(db)[:len(before)] == before
    # The search joined its workers before exiting (a worker busy with a job is killed, not awaited).
    assert [c for c in _group(proc.pid) if "spawn_main" in c] == []
