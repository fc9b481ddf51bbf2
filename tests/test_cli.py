"""The CLI contract: names, exit codes (0 ok, 1 not equivalent, 2 bad input), stdin and FILE:NAME."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from optdsl.cli import main


def run(*args, stdin=None):
    proc = subprocess.run([sys.executable, "-m", "optdsl.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_check_ok_and_error_exit_codes(tmp_path):
    assert main(["check", "lion"]) == 0
    bad = tmp_path / "bad.py"
    bad.write_text("def f(w, g, lr):\n    return foo(g)\n")
    code, _, err = run("check", str(bad))
    assert code == 2
    assert f"{bad}:2:12: unknown function 'foo'" in err and "^" in err and "Traceback" not in err


def test_stdin_and_file_with_several_programs(tmp_path, capsys):
    code, out, _ = run("show", "-", stdin="def s(w, g, lr=0.1):\n    return lr*g\n")
    assert code == 0 and "return lr * g" in out
    both = tmp_path / "two.py"
    both.write_text("def a(w, g, lr=1.0):\n    return g\n\ndef b(w, g, lr=1.0):\n    return -g\n")
    assert main(["show", f"{both}:b"]) == 0
    assert "return -g" in capsys.readouterr().out
    assert main(["show", str(both)]) == 2
    code, out, _ = run("show", "--", "-:b", stdin=both.read_text())  # one program of stdin's
    assert code == 0 and "return -g" in out
    # two of stdin's programs in one command: stdin was read once for each, the second time empty
    code, out, err = run("equiv", "--", "-:a", "-:b", stdin=both.read_text())
    assert (code, out.splitlines()[0], err) == (1, "different", "")


@pytest.mark.parametrize("args", [["show", "nonexistent_zoo_name"], ["show", "missing/file.py"],
                                  ["cost", "lion", "--shape", "4x-1"], ["cost", "lion", "--shape", "1" + "0" * 5000],
                                  ["cost", "lion", "--shape", "0" * 5000 + "7x" + "9" * 20]])
def test_bad_input_exits_2(args):
    assert main(args) == 2


def test_ctrl_c_while_the_commands_are_imported_is_an_interruption(monkeypatch, capsys):
    # the parser imports torch and the search (~2 s); a Ctrl-C then printed a traceback
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("optdsl.cli.make_parser", interrupted)
    assert main(["zoo"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("columns", ["30", "50"])
def test_a_narrow_terminal_cuts_no_number_from_a_table(columns, capsys, monkeypatch):
    # rich fitted tables to the terminal by cutting cells: 469,762,048 bytes printed as 469,762,0…
    monkeypatch.setenv("COLUMNS", columns)
    assert main(["cost", "adamw"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "469,762,048" in out and "134,217,728" in out


def test_zoo_and_ops_list(capsys):
    assert main(["zoo"]) == 0
    assert "adamw" in capsys.readouterr().out
    assert main(["ops"]) == 0
    assert "| `interp` | 3 |" in capsys.readouterr().out


def test_equiv_names_the_kind_and_refuses_nan_values(tmp_path, capsys):
    assert main(["equiv", "sgd", "adamw", "--set", "lr=nan"]) == 2
    assert "not nan" in capsys.readouterr().err
    # inf is a threshold's "off", a legal default: --set took it as "every update is inf" (exit 2)
    clip = tmp_path / "clip.py"
    clip.write_text("def c(w, g, lr=0.1, max_norm=inf):\n    return lr * where(norm(g) < max_norm, g, g)\n")
    assert main(["equiv", str(clip), "sgd", "--set", "max_norm=inf", "--set", "lr=0.1"]) in (0, 1)
    assert main(["simplify", str(clip), "--set", "max_norm=inf"]) == 0
    capsys.readouterr()
    assert main(["equiv", "adam", "adamw", "--set", "weight_decay=0", "--set", "weight_decay=1"]) == 2
    assert "weight_decay is already set" in capsys.readouterr().err  # (the last one had won silently)
    assert main(["equiv", "lion", "adafactor"]) == 1
    assert capsys.readouterr().out.startswith("different")
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f(w, g, lr=0.1):\n    return lr * g / g\n")
    b.write_text("def f(w, g, lr=0.1):\n    return lr + 0 * g\n")
    assert main(["equiv", str(a), str(b)]) == 0
    assert capsys.readouterr().out.startswith("equal (generic: ")
    assert main(["equiv", str(a), str(b), "--strict"]) == 1
    assert "--strict" in capsys.readouterr().out
    assert main(["equiv", "adamw", "adamw", "--strict"]) == 0
    assert capsys.readouterr().out.startswith("equal (exact)")


def test_simplify_says_when_its_result_is_less_than_exactly_the_input(tmp_path, capsys):
    """``m / m -> 1`` holds over the reals; at a zero gradient the input's step is nan, the
    simplified one's 0: stdout stays the program, stderr says so."""
    src = tmp_path / "zero.py"
    src.write_text("def f(w, g, m, lr=0.1):\n    m = interp(g, m, 0.9)\n    return lr * (m / m) * g, m\n")
    assert main(["simplify", str(src)]) == 0
    out, err = capsys.readouterr()
    assert out == "def f(w, g, lr=0.1):\n    return g * lr\n"
    assert err.startswith("note: the simplified program and the input are different")
    assert "a's update is nan" in err
    assert main(["simplify", "lion", "--set", "weight_decay=0"]) == 0
    assert capsys.readouterr().err == ""



def test_simplify_of_a_program_no_test_shape_runs_says_where_it_fails(tmp_path, capsys):
    # check accepts `dim(w, 99)` (a 100-d parameter has that axis); simplify printed the program,
    # then exit 2 with "neither program runs on any test shape" and no place
    src = tmp_path / "dims.py"
    src.write_text("def train(w, g, lr=0.001):\n    return lr * g * dim(w, 99)\n")
    assert main(["simplify", str(src)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("def train(w, g, lr=0.001):")
    assert err.startswith(f"note: the simplified program is not compared with the input: {src}:2:5: no test shape "
                          "runs it: dim(w, 99) asks for an axis")
    assert main(["equiv", str(src), str(src)]) == 2
    assert f"{src}:2:5: no test shape runs it: dim(w, 99)" in capsys.readouterr().err

def test_simplify_readable_folds_the_tuned_lr(capsys):
    program4 = Path(__file__).resolve().parents[1] / "examples" / "paper_program4.py"
    assert main(["simplify", str(program4), "--readable", "--lr", "18.9", "--latex"]) == 0
    out = capsys.readouterr().out
    assert "def train(w, g, m, lr=0.00378):" in out and "sign(interp(g, m, 0.899))" in out
    assert "# equal to the input: generic" in out and r"\begin{aligned}" in out
    assert main(["simplify", "lion", "--readable", "--lr", "inf"]) == 2
    for flags, message in ((["--readable", "--lr", "-1"], "must be a positive number"),
                           (["--lr", "0.1"], "--lr goes with --readable"), (["--latex"], "--latex goes with --readable")):
        capsys.readouterr()
        assert main(["simplify", "lion", *flags]) == 2  # not silently ignored
        assert message in capsys.readouterr().err


def test_search_help_wraps_the_task_list_between_names():
    """argparse wraps help at spaces (and after hyphens): a comma-joined list was cut inside names."""
    from search.tasks import FACTORIES

    proc = subprocess.run([sys.executable, "-m", "optdsl.cli", "search", "--help"], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, "COLUMNS": "80"})
    words = {w.strip(",;()") for w in proc.stdout.split()}
    assert proc.returncode == 0 and set(FACTORIES) <= words


@pytest.mark.parametrize("args", [["zoo"], ["cost", "lion"], ["ops"]])
def test_a_reader_that_leaves_gets_141_from_tables_too(args):
    """``optdsl zoo | true`` exited 1 ("not equivalent" in this CLI), silently: rich's console ends
    the process with SystemExit(1) on a broken pipe, past the handler that returns 141."""
    proc = subprocess.Popen([sys.executable, "-m", "optdsl.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader gone before the command writes (its imports take a second)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err


@pytest.mark.parametrize("value, message", [
    ("1e999", "the number does not fit in a float64"),  # was inf, where a program refuses the literal
    ("\u0661", "expected NAME=NUMBER"), ("1_0", "expected NAME=NUMBER"),  # float() reads both
    ("1e-400", "too small for a float64"),  # was 0, where a program refuses the literal
])
def test_set_takes_numbers_as_a_program_writes_them(value, message, capsys):
    assert main(["simplify", "lion", "--set", f"beta1={value}"]) == 2
    assert message in capsys.readouterr().err


def test_the_hint_for_a_huge_whole_number_can_be_followed(tmp_path, capsys):
    """It said 'write it with an exponent (9.9e4999)', which is refused in turn (beyond float64)."""
    path = tmp_path / "huge.py"
    path.write_text(f"def f(w, g, lr=0.1):\n    return lr * g * {'9' * 5000}\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "9.9e4999" not in err and "`inf` for infinity" in err


def test_the_cli_module_loads_before_sympy_so_an_early_ctrl_c_is_handled():
    """A Ctrl-C in the first ~0.3 s of any command printed a traceback from `import sympy`: the
    console script imports optdsl.cli, which imported the whole package before main() set up its
    handling. The package's names now load when first used."""
    code = "import sys, optdsl.cli; print(sorted({'sympy', 'numpy', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_output_says_it_was_the_output(tmp_path):
    """``optdsl ops > /dev/full`` said only 'error: No space left on device'."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "optdsl.cli", "ops"], stdout=full,
                              stderr=subprocess.PIPE, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: writing the output: No space left on device; free some space "
                                   "or write elsewhere")
