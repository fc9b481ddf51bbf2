"""Thousands of random and mutated sources: the language answers each with a program or a DslError.

Whatever parses must also print back to the same program, specialise and run one step of the
reference interpreter without any exception other than DslError (NaN is a value, not a crash).
"""

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import scaled_examples

from optdsl import DslError, Interpreter, parse_all, to_source, zoo_names
from optdsl.source import zoo_source

SEEDS = [zoo_source(n) for n in zoo_names()] + [
    (
    "def f(w, g, m, r: row, c: col, step, lr=0.1, k=2):\n"
    "    if ndim(w) >= 2:\n        r = interp(rowmean(g * g), r, 0.9)\n        c = interp(colmean(g * g), c, 0.9)\n"
    "        v = r * c / mean(r)\n    else:\n        v = g * g\n"
    "    m = where(step % k == 0, interp(g, m, 0.9), m)\n"
    "    u = m / sqrt(v + 1e-8) / max(1, global_norm(g))\n"
    "    return lr * u, m, r, c\n"
    ),
]
TOKENS = ["w", "g", "m", "v", "lr", "step", "x", "__x", "torch", "(", ")", "[", "]", ",", ":", ".", "=",
          "+", "-", "*", "/", "**", "%", "@", "==", "<", "not ", " and ", " if ", " else ", "lambda x: x",
          "import os", "for i in g:", "while 1:", "return", "def ", "0.5", "-3", "1e309", "1e-8", "True",
          "'s'", "\n", "\n    ", "    ", "\t", "#", '"""', "sign", "interp", "sqrt", "norm", "rowmean",
          "colmean", "global_norm", "ndim", "dim", "where", "clip", ": row", ": col", ": scalar",
          ": full(init=w)", "=0.9", "yield", "async ", "await ", "*", "**k", "\x00", "é"]


@st.composite
def mutated_sources(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "dup_line", "swap_lines"]))
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 12)))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[j:]
        else:
            lines = text.split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if kind == "dup_line":
                lines.insert(b, lines[a])
            else:
                lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


def exercise(text: str) -> None:
    try:
        programs = parse_all(text, "fuzz.py")
    except DslError as e:
        assert str(e).startswith("fuzz.py")
        return
    rng = np.random.default_rng(0)
    for p in programs.values():
        assert parse_all(to_source(p))[p.name] == p
        try:
            opt = Interpreter(p, lr=0.1)
        except DslError:
            continue  # e.g. no default lr
        params = {"a": rng.normal(size=(3,)), "b": rng.normal(size=(2, 3))}
        try:
            state = opt.init(params)
            opt.step(params, {k: rng.normal(size=v.shape) for k, v in params.items()}, state, 1)
        except DslError:
            pass


@settings(max_examples=scaled_examples(2000), deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_sources())
def test_mutated_sources_never_crash(text):
    exercise(text)


@settings(max_examples=scaled_examples(500), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(TOKENS + list("abcdefgw(),:=+-*/ \n0123456789.")), max_size=40).map("".join))
def test_random_sources_never_crash(text):
    exercise("def f(w, g, m, lr=0.1):\n    " + text + "\n    return g, m\n")
    exercise(text)


def test_ci_runs_the_same_examples_every_time():
    # tests/conftest.py loads the derandomized `ci` profile unless HYPOTHESIS_PROFILE names another.
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        assert settings.default.derandomize and settings.default.database is None
    else:
        assert settings.default.derandomize is False
