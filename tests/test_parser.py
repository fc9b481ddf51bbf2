"""The parser: the paper's listings parse; every misuse is a located DslError."""

import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from optdsl import DslError, Interpreter, load, parse, parse_all, to_source
from optdsl.cli import main
from optdsl.errors import EXCERPT_COLUMNS
from optdsl.extend import lr_schedule
from optdsl.ir import Call, Const, Var
from optdsl.parser import MAX_DEPTH

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("number", [3, 4])
def test_the_paper_programs_check_as_printed(number):
    # Both end with `lr = lr * <c>`: every input may be reassigned.
    path = str(EXAMPLES / f"paper_program{number}.py")
    assert main(["check", path]) == 0
    p = load(path)
    assert p.name == "train" and p.state_names == ("m", "v")
    assert parse(to_source(p)) == p


def _one_step(program, w, g, lr):
    opt = Interpreter(program, lr=lr)
    update, state = opt.updates({"w": w}, {"w": g}, opt.init({"w": w}), 1)
    return update["w"], state["w"]


def test_program3_is_adamw_with_a_rescaled_lr():
    rng = np.random.default_rng(0)
    w, g = rng.normal(size=5), rng.normal(size=5)
    update, state = _one_step(load(str(EXAMPLES / "paper_program3.py")), w, g, 0.5)
    m, v = 0.1 * g, 0.001 * g * g
    assert np.allclose(state["m"], m) and np.allclose(state["v"], v)
    assert np.allclose(update, (m / np.sqrt(v) + 0.01 * w) * (0.5 * 0.001))


def test_program4_reads_the_latest_value_of_each_name():
    rng = np.random.default_rng(1)
    w, g = rng.normal(size=5), rng.normal(size=5)
    update, state = _one_step(load(str(EXAMPLES / "paper_program4.py")), w, g, 0.5)
    g1 = np.arcsin(np.clip(g, -0.5, 0.5))  # g = clip(g, lr); g = arcsin(g)
    m = 0.101 * g1  # interp(g, v, 0.899) with v = 0
    raw = np.sign(m) + 0.4602 * w  # m / sqrt(m * m) + wd
    assert np.allclose(update, raw * (0.5 * 0.0002))  # the rescaled lr
    assert np.allclose(state["v"], -0.109 * g1 + 1.109 * m)
    assert set(state) == {"v"}  # `m = cosh(update)` is never read at the next step: m is dead


def test_every_input_may_be_reassigned():
    p = parse("def f(w, g, m, s: scalar, step, lr, beta=0.9):\n"
              "    w = w * 2\n    g = g + w\n    step = step + 1\n    beta = beta * 0.5\n"
              "    lr = lr / step\n    m = interp(g, m, beta)\n    s = s + 1\n    lr = lr * s\n"
              "    return lr * m, m, s\n")
    assert parse(to_source(p)) == p
    w, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    opt = Interpreter(p, lr=0.3, beta=0.8)
    update, state = opt.updates({"w": w}, {"w": g}, opt.init({"w": w}), 3)
    g2 = g + 2 * w
    m = 0.6 * g2  # interp(g2, 0, 0.4)
    assert np.allclose(state["w"]["m"], m) and np.allclose(state["w"]["s"], 1.0)
    assert np.allclose(update["w"], 0.3 / 4 * 1.0 * m)


def test_nested_expressions_and_operators():
    p = parse("def f(w, g, m, lr, beta1=0.9, weight_decay=0.1):\n"
              "    update = sign(interp(g, m, beta1)) + weight_decay * w\n"
              "    m += g ** 2 - -1\n"
              "    return lr * update, m\n")
    assert p.body[0].expr == Call("add", (Call("sign", (Call("interp", (Var("g"), Var("m"), Var("beta1"))),)),
                                          Call("mul", (Var("weight_decay"), Var("w")))))
    assert p.body[1].expr.args[1] == Call("sub", (Call("power", (Var("g"), Const(2.0))), Const(-1.0)))


def test_state_declarations():
    p = parse("def f(w, g, m, r: row, c: col, s: scalar, slow: full(init=w), u: full(1), "
              "ema: full(init=w, keep=True), lr):\n    return g, m, r, c, s, slow, u, ema\n")
    kinds = [(s.name, s.kind, s.init, s.keep) for s in p.states]
    assert kinds == [("m", "full", "zeros", False), ("r", "row", "zeros", False), ("c", "col", "zeros", False),
                     ("s", "scalar", "zeros", False), ("slow", "full", "w", False),
                     ("u", "full", "ones", False), ("ema", "full", "w", True)]
    assert parse(to_source(p)) == p


def test_if_lowers_to_where():
    p = parse("def f(w, g, m, step, lr, k=4):\n"
              "    if step % k == 0:\n        m = g\n        u = m\n    else:\n        u = 0 * g\n"
              "    return lr * u, m\n")
    assert [a.target for a in p.body] == ["m", "u", "u"]
    assert p.body[0].expr.op == "where" and p.body[2].expr.op == "where"


def test_branch_local_name_is_undefined_after_if():
    with pytest.raises(DslError, match="undefined name 'x'"):
        parse("def f(w, g, lr):\n    if ndim(w) >= 2:\n        x = g\n    return lr * x\n")


def test_several_programs_in_one_file():
    text = "def a(w, g, lr):\n    return g\n\ndef b(w, g, lr):\n    return -g\n"
    assert list(parse_all(text)) == ["a", "b"]
    assert parse(text, name="b").update == Call("neg", (Var("g"),))
    with pytest.raises(DslError, match="pick one as FILE:NAME"):
        parse(text)


@pytest.mark.parametrize("body, message, line, col", [
    ("    return foo(g)", "unknown function 'foo'", 2, 12),
    ("    return sign(g, g)", r"sign\(\) takes 1 argument", 2, 12),
    ("    return h", "undefined name 'h'", 2, 12),
    ("    import os\n    return g", "imports are not allowed", 2, 5),
    ("    return w.T", "attribute access is not allowed", 2, 12),
    ("    for i in g:\n        pass\n    return g", "loops are not allowed", 2, 5),
    ("    while 1:\n        pass\n    return g", "loops are not allowed", 2, 5),
    ("    f = lambda x: x\n    return g", "lambdas are not allowed", 2, 9),
    ("    return __import__(g)", "unknown function", 2, 12),
    ("    return g[0]", "indexing is not allowed", 2, 12),
    ("    return g, g", r"return gives 2 value\(s\); this program returns 1: the update", 2, 5),
    ("    sign(g)\n    return g", "has no effect", 2, 5),
    ("    return 'g'", "str constants are not values", 2, 12),
    ("    x = rowmean(g)\n    return rowmean(x)", r"rowmean\(\) reduces a full tensor", 3, 5),
    ("    torch = g\n    return g", "used by the generated code", 2, 5),
    ("    return g @ g", "operator is not in the language", 2, 12),
    ("    return sign(x=g)", "positional arguments only", 2, 19),
    ("    return g\n    return g", "`return` may only be the last statement", 2, 5),
])
def test_errors_are_located(body, message, line, col):
    text = f"def f(w, g, lr):\n{body}\n"
    with pytest.raises(DslError, match=message) as info:
        parse(text, "prog.py")
    e = info.value
    assert (e.filename, e.line, e.col + 1) == ("prog.py", line, col), str(e)
    rendered = str(e).splitlines()
    assert rendered[0].startswith(f"prog.py:{line}:{col}: ")
    assert rendered[-1].strip() == "^" and len(rendered) == 3


def test_row_state_getting_a_full_value_points_at_the_assignment():
    with pytest.raises(DslError, match="state 'r' is row-shaped but gets a full-shaped value") as info:
        parse("def f(w, g, r: row, lr):\n    r = g * 2\n    return lr * g, r\n")
    assert info.value.line == 2


@pytest.mark.parametrize("signature, message", [
    ("def f(w, lr):", "the signature needs 'g'"),
    ("def f(w, g, lr, *rest):", r"\*args"),
    ("def f(w, g, m: banana, lr):", "unknown state kind"),
    ("def f(w, g, m: row(init=w), lr):", "only a full state can start as a copy of w"),
    ("def f(w, g, lr, beta=x):", "default must be a number"),
    ("def f(w, g, lr, beta=nan):", "nan would make every step nan"),
    ("def f(w, g, g, lr):", "duplicate argument|appears twice"),
    ("def f(w, g, lr, step=3):", "'step' is an input"),
])
def test_signature_errors(signature, message):
    with pytest.raises(DslError, match=message):
        parse(f"{signature}\n    return g\n")


def test_a_default_may_be_inf_as_an_expression_may_say_it():
    """``clip=inf`` (no clipping unless asked), as the 1e400 error suggests writing it; it prints
    back as written and every target steps with it as the interpreter does."""
    import torch

    import codegen

    p = parse("def f(w, g, lr=0.1, c=inf, d=-inf):\n    return lr * clip(g, max(c, d))\n")
    assert [h.default for h in p.hypers] == [0.1, math.inf, -math.inf] and parse(to_source(p)) == p
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w.grad = torch.tensor([0.5, -5.0, 100.0])
    codegen.build(p, "torch")([w], backend="eager").step()
    interp = Interpreter(p, dtype=np.float32)
    params = {"w": np.array([1.0, -2.0, 3.0], np.float32)}
    expected = interp.step(params, {"w": w.grad.numpy()}, interp.init(params), 1)[0]["w"]
    np.testing.assert_array_equal(w.detach().numpy(), expected)


def test_top_level_must_be_functions():
    with pytest.raises(DslError, match="imports are not allowed"):
        parse("import os\ndef f(w, g, lr):\n    return g\n")
    with pytest.raises(DslError, match="no program found"):
        parse('"""just a docstring"""\n')


def test_zoo_round_trips():
    for name in ["sgd", "adamw", "lion"]:
        p = load(name)
        assert parse(to_source(p)) == p


def test_w_lr_and_step_reassigned_become_fresh_locals():
    p = load(str(EXAMPLES / "paper_program3.py"))
    assert "    lr_1 = lr * 0.001\n    update = update * lr_1\n" in to_source(p)
    # An extension renames every read of lr: exact only because the body never assigns lr.
    scheduled = lr_schedule(p, [(0, 0.5), (100, 0.5)])  # lr * 0.5 throughout
    w, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    np.testing.assert_allclose(_one_step(scheduled, w, g, 1.0)[0], _one_step(p, w, g, 0.5)[0])
    # `w` stays the parameter: a narrower value assigned to it does not change the update's shape.
    narrow = parse("def f(w, g, lr):\n    w = mean(w)\n    return lr * (g + w)\n")
    np.testing.assert_allclose(_one_step(narrow, w, g, 1.0)[0], g + w.mean())


def test_an_input_assigned_in_one_branch_keeps_its_value_in_the_other():
    p = parse("def f(w, g, step, lr):\n    if step > 1:\n        lr = lr * 2\n    else:\n"
              "        g = g * 3\n    return lr * g\n")
    assert [a.target for a in p.body] == ["lr_1", "g"]
    for step, factor in ((1, 3.0), (2, 2.0)):
        opt = Interpreter(p, lr=0.5)
        update, _ = opt.updates({"w": np.ones(1)}, {"w": np.ones(1)}, opt.init({"w": np.ones(1)}), step)
        assert update["w"][0] == 0.5 * factor

@pytest.mark.parametrize("doc", ["\\ud800", "\\x00", "\\x1b[2J"])
def test_a_docstring_generated_files_cannot_carry_is_refused(doc):
    # A lone surrogate passed `check`, then crashed `show`/`compile`; a NUL broke the jax module.
    with pytest.raises(DslError, match="the docstring holds") as info:
        parse(f'def f(w, g, lr):\n    """bad {doc} here"""\n    return lr * g\n', "p.py")
    assert (info.value.line, info.value.col) == (2, 4)
    assert parse('def f(w, g, lr):\n    """caf\u00e9 is fine"""\n    return lr * g\n').doc == "caf\u00e9 is fine"


@pytest.mark.parametrize("char", ["\x00", "\ud800", "\u202e", "\u2066", "\u200f"])
def test_a_nul_lone_surrogate_or_bidi_control_in_the_text_is_located(char):
    # A bidi control reorders how a line displays (Trojan Source); one in a docstring had been
    # copied into every generated file.
    with pytest.raises(DslError, match="may not appear in a program") as info:
        parse(f"def f(w, g, lr):\n    return lr * g  # {char}\n", "p.py")
    assert (info.value.line, info.value.col) == (2, 21)
    str(info.value).encode("utf-8")  # the message itself prints on any UTF-8 stream


@pytest.mark.parametrize("expr", [" + ".join(["g"] * 5000), "-" * 3000 + "g"], ids=["sum", "negations"])
def test_nesting_beyond_pythons_own_parser_is_located(expr):
    old = sys.getrecursionlimit()  # Python's default: a library imported earlier may have raised it
    sys.setrecursionlimit(1000)
    try:
        with pytest.raises(DslError, match="nested too deeply for Python's parser") as info:
            parse(f"def f(w, g, lr):\n    x = g\n    return lr * ({expr})\n")
    finally:
        sys.setrecursionlimit(old)
    assert (info.value.line, info.value.col) == (3, 4)


@pytest.mark.parametrize("expr, line_col", [
    (" + ".join(["g"] * 400), (2, 8)),  # passed `check`, then RecursionError in show/compile
    ("sign(" * 150 + "g" + ")" * 150, (2, 8 + 5 * MAX_DEPTH)),  # the first call too deep
    (" and ".join(["g"] * 100), (2, 4)),  # shallow in the source, deep in the IR
], ids=["sum", "calls", "and"])
def test_expressions_nest_at_most_max_depth_levels(expr, line_col):
    with pytest.raises(DslError, match=f"nested more than {MAX_DEPTH} levels") as info:
        parse(f"def f(w, g, lr):\n    u = {expr}\n    return lr * u\n")
    assert (info.value.line, info.value.col) == line_col
    assert parse("def f(w, g, lr):\n    return " + " + ".join(["g"] * MAX_DEPTH) + "\n")


@pytest.mark.parametrize("text", ["1e-400", "2.5E-330", "0.000001e-320"])
def test_a_literal_that_float64_rounds_to_zero_is_refused(text):
    with pytest.raises(DslError, match="too small for a float64") as info:
        parse(f"def f(w, g, lr):\n    return lr * g * {text}\n")
    assert (info.value.line, info.value.col) == (2, 20)
    assert parse("def f(w, g, lr=0e-400):\n    return lr * g * 0.0 * 5e-324\n")  # 0 meant; the smallest float
    # the literal's text is read from its line: lines ended by \r\n or \r, wide characters before it
    with pytest.raises(DslError, match="too small for a float64") as info:
        parse(f"def f(w, g, lr):\r\n    \"\"\"\u00e9\u00e9\"\"\"  # \u00e9\r    x = g * 0.5\r"
              f"    return lr * x * {text}\n")
    assert info.value.line == 4
    assert parse("def f(w, g, lr=0.5):  # \u00e9\n    \"\"\"\u00e9\"\"\"\n"
                 "    return lr * g * 0e5  # \u00e9\n")


def test_a_file_of_many_literals_checks_in_linear_time():
    """Each literal's text was found by ``ast.get_source_segment``, which splits the whole source:
    6,000 lines of one literal each took 88 s to check, 30,000 never finished."""
    body = "".join(f"    x{i} = g * {i + 1}.5\n" for i in range(20000))
    start = time.perf_counter()
    program = parse(f"def f(w, g, lr):\n{body}    return lr * x19999\n")
    assert len(program.body) == 20000 and time.perf_counter() - start < 60  # seconds; quadratic took hours


def test_return_names_what_it_must_give():
    with pytest.raises(DslError, match=r"return gives 1 value\(s\); this program returns 2: the update, then "):
        parse("def f(w, g, m, lr):\n    return m\n")


@pytest.mark.parametrize("col", [5, 60, 3000, 5990])
def test_a_long_lines_error_shows_the_part_around_it(col):
    # A 6,000-column line was printed whole under its error, hundreds of terminal lines.
    line = "g" * col + "?" + "g" * (6000 - col)
    shown = str(DslError("bad", "p.py", 1, col, line)).splitlines()[1:]
    text, caret = shown[0][4:], shown[1].index("^") - 4
    assert text[caret] == "?" and len(text) <= EXCERPT_COLUMNS + 6
    assert text.startswith("...") == (col > EXCERPT_COLUMNS // 3) and text.endswith("...") == (col < 5000)


@pytest.mark.parametrize("source, message", [
    # the paper's Program 1 (Lion) as printed: weight, gradient and Greek hyperparameters
    ("def train(weight, gradient, momentum, lr):\n    return lr * gradient, momentum\n",
     "the signature needs 'w'; rename 'weight' to 'w'"),
    ("def train(w, g, m, lr):\n    m = interp(g, m, β1)\n    return lr * m, m\n",
     "name 'β1' is not ASCII (generated files are); rename it, e.g. 'beta1'"),
    ("def f(w, g, lr):\n    return lr * g * (step > 1)\n",
     "undefined name 'step'; add the input 'step' to the signature"),
])
def test_the_papers_spelling_gets_a_hint_that_fits(source, message):
    with pytest.raises(DslError) as e:
        parse(source)
    assert message in str(e.value)


def test_a_name_python_reads_as_another_is_refused_as_written():
    """Python reads names in NFKC form: a fullwidth ``ｍ`` in the signature and return was ``m``
    to the parser and passed the ASCII rule, while the file shows two different letters."""
    source = ("def f(w, g, ｍ, lr):\n    m = interp(g, m, 0.9)  # β: comments and docstrings may\n"
              "    return lr * m, ｍ\n")
    with pytest.raises(DslError, match="name 'ｍ' is not ASCII .*rename it, e.g. 'm'") as info:
        parse(source, "p.py")
    assert (info.value.line, info.value.col) == (1, 12)
    parse('def f(w, g, lr):\n    """β, √"""\n    return lr * g  # ｍ\n')


def test_a_whole_number_longer_than_python_reads_is_located():
    """Python's SyntaxError named column 1 and told the user to call sys.set_int_max_str_digits()."""
    with pytest.raises(DslError, match="a whole number of 5000 digits") as info:
        parse("def f(w, g, lr):\n    return lr * g * " + "9" * 5000 + "\n", "p.py")
    assert (info.value.line, info.value.col) == (2, 20)
    assert "set_int_max_str_digits" not in str(info.value) and "exponent" in str(info.value)


def test_a_negative_zero_survives_printing_and_reading_back():
    """1 / -0.0 is -inf: a folded -0.0 printed as 0 changed the update of the program read back."""
    from optdsl.passes import fold
    from optdsl.printer import format_number

    assert format_number(-0.0) == "-0.0" and format_number(0.0) != "-0.0"
    p = fold(parse("def f(w, g, m, lr):\n    m = g + 0.0 * -1.0\n    return lr * sign(1 / m), m\n"))
    again = parse(to_source(p))
    assert again == p
    w, g = {"w": np.zeros(1)}, {"w": np.array([-0.0])}
    for prog in (p, again):
        opt = Interpreter(prog, lr=1.0)
        assert opt.updates(w, g, opt.init(w), 1)[0]["w"][0] == -1.0


def test_a_syntax_errors_column_is_where_python_points():
    import ast

    source = "def f(w, g, lr):\n    return lr * * g\n"
    with pytest.raises(SyntaxError) as python:
        ast.parse(source)
    with pytest.raises(DslError) as ours:
        parse(source)
    assert (ours.value.line, ours.value.col) == (python.value.lineno, python.value.offset - 1)  # (0-based)
