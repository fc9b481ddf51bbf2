"""The wall-clock limit on symbolic work, and the cheaper answers it falls back on: a form left
out (readable), testing instead of a proof (compare), the dead-code-free program (a winner's
display). The limits are lowered here so that real programs run past them."""

import signal
import threading
import time

import pytest

from optdsl import equiv, parse, simplify
from optdsl import readable as readable_module
from optdsl.cli import main
from optdsl.equiv import compare
from optdsl.printer import to_source
from optdsl.readable import readable
from optdsl.time_limit import SymbolicTimeout, time_limit
from search import export


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_block_past_its_time_is_stopped_even_when_it_catches_the_first_alarm():
    start = time.monotonic()
    with pytest.raises(SymbolicTimeout, match="took more than 0.05 s"), time_limit(0.05) as limit:
        try:
            _spin(10)
        except SymbolicTimeout:
            _spin(10)  # a fallback that would run on for good
    assert time.monotonic() - start < 2 and limit.expired
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_limits_nest_and_an_outer_one_due_inside_an_inner_one_fires_after_it():
    start = time.monotonic()
    # the inner limit is longer than what is left of the outer one: the outer one decides
    with pytest.raises(SymbolicTimeout, match="0.1 s"), time_limit(0.1), time_limit(5):
        _spin(10)
    assert time.monotonic() - start < 2
    start = time.monotonic()
    with pytest.raises(SymbolicTimeout, match="0.3 s"), time_limit(0.3):
        try:
            with time_limit(0.05):
                _spin(10)
        except SymbolicTimeout as e:
            assert "0.05 s" in str(e)
        _spin(10)
    assert 0.25 < time.monotonic() - start < 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_another_timer_is_left_armed_with_what_is_left_of_it():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(time.monotonic()))
    try:
        start = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with time_limit(0.05):
            time.sleep(0.01)
        assert signal.getsignal(signal.SIGALRM) is not None and not fired
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0.3 < left < 0.5
        while not fired and time.monotonic() - start < 5:
            time.sleep(0.01)
        assert fired and 0.4 < fired[0] - start < 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_outside_the_main_thread_a_block_runs_without_a_limit():
    done = []

    def work():
        with time_limit(0.01):
            time.sleep(0.05)
        done.append(True)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert done == [True]


SIGN_MOMENTUM = parse("def train(w, g, m, lr):\n    m = interp(g, m, 0.5735)\n"
                      "    t = m / sqrt(rms(g * g))\n    return sign(t) * (lr * 0.001), m\n")


def test_a_readable_form_past_its_time_gives_way_to_the_plain_program(monkeypatch):
    assert "update = lr * sign(m)" in readable(SIGN_MOMENTUM, lr=18.9).source
    monkeypatch.setattr(simplify, "FORM_SECONDS", 1e-4)
    slow = readable(SIGN_MOMENTUM, lr=18.9)
    # the statement form (square(g)) or, where it too runs out of time, the program as it is (g * g)
    assert "sqrt(rms(" in slow.source and "sign(m)\n" not in slow.source and slow.equality == "exact"


def test_a_proof_past_its_time_gives_way_to_testing(monkeypatch):
    a = parse("def f(w, g, m, lr=0.1):\n    m = interp(g, m, 0.9)\n    return lr * (m + m), m\n")
    b = parse("def f(w, g, m, lr=0.1):\n    m = 0.9 * m + 0.1 * g\n    return 2 * lr * m, m\n")
    assert compare(a, b).kind == "exact"
    monkeypatch.setattr(equiv, "PROVE_SECONDS", 1e-4)
    assert compare(a, b).kind == "tested"


def test_a_winner_whose_readable_form_runs_past_its_time_is_shown_without_it(monkeypatch):
    row = {"source": to_source(SIGN_MOMENTUM), "task_lr": {"mlp": 18.9}}
    monkeypatch.setattr(readable_module, "READABLE_SECONDS", 1e-4)
    form = export.simplest(row)
    assert form.equality == "exact (not simplified: took more than 0.0001 s)"
    assert "lr=18.9" in form.source and "sign(t)" in form.source


def test_simplify_readable_ends_where_inlining_doubles_per_line(tmp_path, capsys, monkeypatch):
    # Each `u = u * u + u` doubles the inlined expression: 40 lines never finished in sympy.
    src = tmp_path / "doubling.py"
    src.write_text("def f(w, g, m, lr=1e-3):\n    m = interp(g, m, 0.9)\n    u = m + g\n"
                   + "    u = u * u + u\n" * 40 + "    return lr * sign(u), m\n")
    monkeypatch.setattr(readable_module, "READABLE_SECONDS", 2)
    start = time.monotonic()
    assert main(["simplify", str(src), "--readable"]) == 0
    out = capsys.readouterr().out
    assert time.monotonic() - start < 30  # the limit, not sympy, ends it
    # shown as is, and said so: the steps inside that catch every error to fall back on a cheaper
    # answer swallowed the timeout, and their answer had read as a plain "exact"
    assert out.count("u = u * u + u") == 40
    assert "# equal to the input: exact (not simplified: took more than 2 s)" in out
