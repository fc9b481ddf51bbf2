"""The examples a new user runs first, run as they would run them: each file as a script in a fresh
process, checked for what it promises to print. (``custom_task.py`` is searched on in
tests/search/test_user_task.py; the paper's listings are parsed in tests/test_parser.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(name: str, tmp_path: Path) -> str:
    # TMPDIR: the search example keeps its database in a fresh temporary folder, here the test's own
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_search_quickstart_prints_the_winner_with_both_scores_and_steps_with_it(tmp_path):
    out = _run("search_quickstart.py", tmp_path)
    assert "proxy fitness" in out and "held-out (meta-validation)" in out
    assert "on the held-out tasks (" in out  # the verdict, in plain words (each of its three forms)
    assert "the warm start on the proxies:" in out
    assert "def found_" in out and "done; the search database is" in out
    assert list(tmp_path.glob("optdsl-search-*/search.sqlite"))


def test_train_digits_torch_trains_generated_lion_and_adamw(tmp_path):
    out = _run("train_digits_torch.py", tmp_path)
    lion = [float(x) for x in out.split("Lion (generated):")[1].splitlines()[0].split()]
    assert len(lion) == 8 and lion[-1] < lion[0] / 2  # the loss of each epoch, falling


def test_train_digits_jax_trains_generated_lion(tmp_path):
    pytest.importorskip("optax")
    out = _run("train_digits_jax.py", tmp_path)
    lion = out.split("lion (from the DSL)")[1].split("optax.adamw")[0].strip().splitlines()[-1].split()
    assert lion[0] == "8" and float(lion[-1]) > 0.5  # Lion's test accuracy after epoch 8
