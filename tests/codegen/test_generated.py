"""Shared emission helpers, the benchmark's section writer and the `compile` command."""

from __future__ import annotations

import math
import os

import pytest
import torch

from codegen.bench import markdown, time_ms, write_section
from codegen.generated import check_identifier, load_module, number, write_atomic
from optdsl import DslError
from optdsl.cli import main


@pytest.mark.parametrize("name", ["beta1", "m_hat", "w2"])
def test_check_identifier_accepts_plain_names(name):
    assert check_identifier(name) == name


@pytest.mark.parametrize("name", ["1x", "a-b", "a b", "ünï", "class", "match", "__x__", "_private", "print",
                                  "torch", "Tensor", "x;y", ""])
def test_check_identifier_rejects(name):
    with pytest.raises(DslError):
        check_identifier(name)


def test_number_prints_round_trip_and_rejects_non_numbers():
    assert number(2.0) == "2" and float(number(1e-8)) == 1e-8 and float(number(-0.1)) == -0.1
    # inf and nan (what folding 1 / 0 or 0 / 0 gives) as expressions Python evaluates without imports
    assert eval(number(math.inf)) == math.inf and eval(number(-math.inf)) == -math.inf
    assert math.isnan(eval(number(math.nan)))
    for bad in ("1", True):
        with pytest.raises(DslError):
            number(bad)


def test_load_module():
    assert load_module("def f(x):\n    return x + 1\n", "optdsl_test_emit_module").f(1) == 2


def test_write_atomic_leaves_no_temporary_and_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.py"
    write_atomic(str(path), "first\n")
    assert path.read_text() == "first\n"

    with pytest.raises(TypeError):
        write_atomic(str(path), object())  # not text: the write fails midway
    assert path.read_text() == "first\n"
    assert sorted(os.listdir(tmp_path)) == ["out.py"]


def test_write_section_replaces_only_its_own_section(tmp_path):
    doc = tmp_path / "benchmarks.md"
    write_section(str(doc), "cpu", "cpu v1")
    write_section(str(doc), "gpu", "gpu v1")
    write_section(str(doc), "cpu", "cpu v2")
    text = doc.read_text()
    assert "cpu v2" in text and "cpu v1" not in text and "gpu v1" in text
    assert text.count("<!-- bench:cpu sha256=") == 1 and text.index("cpu v2") < text.index("gpu v1")


def test_a_section_a_person_edited_is_refused_unless_forced(tmp_path):
    """``bench --out docs/benchmarks.md`` (its own help's example) replaced ~650 lines of notes
    kept inside the cpu section with one quick table: a section whose text is not what the bench
    wrote there (its digest) is refused now, and --force replaces it."""
    doc = tmp_path / "benchmarks.md"
    write_section(str(doc), "cpu", "table v1")
    doc.write_text(doc.read_text().replace("table v1", "table v1\n\nA note on the figures."))
    with pytest.raises(DslError, match="holds text optdsl did not write there"):
        write_section(str(doc), "cpu", "table v2")
    assert "A note on the figures." in doc.read_text()
    write_section(str(doc), "cpu", "table v2", force=True)
    assert "table v2" in doc.read_text() and "A note" not in doc.read_text()
    write_section(str(doc), "cpu", "table v3")  # its own text again: replaced without --force
    assert "table v3" in doc.read_text()


def test_an_empty_section_is_filled_and_a_files_line_ends_kept(tmp_path):
    # an empty marker pair was refused as "markers do not pair up (1 opening, 1 closing)", and a
    # CRLF file came back with LF line ends, the text outside the section too
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(b"# Notes\r\nkept\r\n<!-- bench:cpu -->\r\n<!-- /bench:cpu -->\r\nafter\r\n")
    write_section(str(doc), "cpu", "| a |\n| b |")
    text = doc.read_bytes()
    assert text.startswith(b"# Notes\r\nkept\r\n<!-- bench:cpu sha256=") and text.endswith(b"\r\nafter\r\n")
    assert b"| a |\r\n| b |\r\n<!-- /bench:cpu -->" in text and b"\n" not in text.replace(b"\r\n", b"")


def test_each_case_is_timed_with_its_own_repeats_and_one_bandwidth(monkeypatch):
    """The repeats of BERT (2/9) and the MLP (20/400) carried over to the cases after them (a full
    run timed bf16 400 times), and each group's fraction of the bandwidth was of its own triad while
    the table printed the first group's: 89% beside a row of the printed triad's GB/s."""
    from codegen import bench

    assert bench._repeats("bf16 16x1M (AdamW)", False) == bench._repeats("16x1M fp32", False) == (3, 10)
    assert bench._repeats("BERT-base 200 tensors", False) == (2, 9)
    triads = iter([4.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # the case's groups' triads: the second is fastest
    monkeypatch.setattr(bench, "interleaved_ms", lambda steps, warmup, repeats: [next(triads)] + [8.0] * (
        len(steps) - 1))
    rows = bench.run(quick=True)
    [triad] = [r for r in rows if r["impl"].startswith("triad")]
    assert triad["ms"] == 2.0
    for r in rows:
        if r["gb_s"] is not None:
            assert r["frac_of_bandwidth"] == pytest.approx(r["gb_s"] / triad["gb_s"])
    # the rows with a global norm count its sweep (32 bytes a parameter; they counted AdamW's 28)
    clipped = [r["gb_s"] * r["ms"] * 1e6 / (16 << 18) for r in rows if "clip" in r["impl"]]
    assert clipped and all(b == pytest.approx(32) for b in clipped)


@pytest.mark.parametrize("name, text, message", [
    ("notes.py", "x = 1\n", "--out names the markdown file to update (.md)"),
    ("broken.md", "# x\n<!-- bench:cpu -->\nold\n", "section markers do not pair up (1 opening, 0 closing)"),
    ("hand.md", "# x\n<!-- bench:cpu -->\nnotes\n<!-- /bench:cpu -->\n", "holds text optdsl did not write"),
])
def test_bench_refuses_an_out_file_it_would_damage_before_timing(name, text, message, tmp_path, capsys):
    """A .py file got markdown appended, a lone opening marker a second section, a person's section
    was replaced: each is exit 2 before any timing, the file as it was."""
    out = tmp_path / name
    out.write_text(text)
    assert main(["bench", "--case", "16x1M", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and out.read_text() == text


def test_bench_gpu_suite_without_a_gpu_is_an_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    assert main(["bench", "--suite", "gpu", "--quick"]) == 2  # (it said "nothing to run here", exit 0)
    assert "no CUDA GPU on this machine" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["folder.md", "missing/gpu.md"])
def test_the_gpu_bench_refuses_an_out_path_before_timing(out, tmp_path, capsys):
    # a folder named .md was an IsADirectoryError traceback; a missing folder failed after the timing
    from codegen import bench_gpu

    (tmp_path / "folder.md").mkdir()
    assert bench_gpu.main(["--quick", "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_the_gpu_bench_title_names_the_gpu(monkeypatch):
    # renaming device_name to machine had rewritten torch.cuda.get_device_name() to a function torch
    # does not have: every GPU run would have failed at its title
    pytest.importorskip("triton")
    from codegen import bench_gpu

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    assert bench_gpu.machine().startswith("NVIDIA H200, torch ")


def test_time_ms_and_markdown():
    assert time_ms(lambda: sum(range(100)), warmup=1, repeats=3) >= 0
    row = {"suite": "cpu", "case": "c", "impl": "i", "ms": 1.5, "gb_s": 2.0, "frac_of_bandwidth": 0.5,
           "ratio": None}
    assert "| c | i | 1.50 | 2.0 | 50% |  |" in markdown([row], "t")
    eager = {**row, "impl": "generated AdamW (eager)", "ms": 0.3125, "gb_s": None, "frac_of_bandwidth": None,
             "ratio": 1.25, "to_foreach": 0.96}
    text = markdown([row, eager], "t")
    assert "| case | impl | ms/step | GB/s | of bandwidth | ratio | to foreach AdamW |" in text
    assert "| c | i | 1.50 | 2.0 | 50% |  |  |" in text and "| 0.312 |  |  | 1.25x | 0.96x |" in text


def test_compile_command_writes_file_and_stdout(tmp_path, capsys):
    out = tmp_path / "lion_torch.py"
    assert main(["compile", "lion", "--target", "torch", "-o", str(out)]) == 0
    text = out.read_text()
    assert "class Lion(_Optimizer)" in text
    assert main(["compile", "lion", "--target", "torch"]) == 0
    assert capsys.readouterr().out == text


def test_compile_command_reports_bad_programs(tmp_path, capsys):
    src = tmp_path / "bad.py"
    src.write_text("def bad(w, g, lr):\n    return foo(g)\n")
    out = tmp_path / "never.py"
    assert main(["compile", str(src), "-o", str(out)]) == 2
    assert "unknown function 'foo'" in capsys.readouterr().err
    assert not out.exists()


def test_bench_writes_its_markdown_only_when_asked():
    from optdsl.cli import make_parser

    assert make_parser().parse_args(["bench"]).out is None
    assert make_parser().parse_args(["bench", "--out", "docs/benchmarks.md"]).out == "docs/benchmarks.md"


@pytest.mark.parametrize("argv, message", [
    (["--suite", "jax", "--case", "BERT"], "--case picks cases of the cpu suite, not of --suite jax"),
    (["--case", "nosuch"], "--case nosuch: no such case"),
    (["--case", ""], "--case '': no such case"),
    (["--suite", "jax", "--out", ""], "'': an empty file name"),
    (["--quick", "--case", "BERT"], "--quick runs its own small case (16x256K), not the cases --case names"),
    (["--case", "16x1M", "--out", "{tmp}"], "is not a regular file (a directory)"),
])
def test_bench_refuses_bad_flags_before_timing_anything(argv, message, tmp_path, capsys):
    from optdsl.cli import main

    assert main(["bench", *(a.format(tmp=tmp_path) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_deepspeed_cpu_adam_joins_the_adamw_group_only_where_installed(monkeypatch):
    """The bench's optional anchor: no row without the deepspeed package, one AdamW-group row with it
    (its module is only imported when the row's optimizer is made)."""
    import importlib.util

    from codegen import bench

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert bench._deepspeed() == []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "deepspeed" else None)
    [(impl, make, program, is_anchor)] = bench._deepspeed()
    assert "DeepSpeed" in impl and program == "adamw" and not is_anchor and callable(make)


def test_pytorch_optimizer_peers_join_their_groups_only_where_installed(monkeypatch):
    """Another eager implementation of Lion, Tiger and LAMB beside the generated ones (measured
    against their group's foreach AdamW, as the eager rows are), only where the package is."""
    import importlib.util

    import torch

    from codegen import bench

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert bench._pytorch_optimizer("Lion", "lion") == []
    monkeypatch.undo()
    [(impl, make, program, is_anchor)] = bench._pytorch_optimizer("Lamb", "lamb")
    assert impl.endswith(bench._EAGER) and program == "lamb" and not is_anchor
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    make([p]).step()
    assert p.detach().lt(1).all()  # a real step of pytorch_optimizer's LAMB


def test_a_cpp_row_whose_kernels_did_not_build_says_it_ran_eager(monkeypatch):
    """With no working compiler (an unwritable extensions folder) the cpp rows ran eager after a
    warning and the table still named them "(cpp)"."""
    import torch

    import optdsl
    from codegen import build
    from codegen.bench import _ran_as

    cls = build(optdsl.load("lion"), "torch")
    cpp = cls.functional.__globals__["_CPP"]

    def no_build(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setitem(cls.functional.__globals__, "_cpp_build", no_build)
    monkeypatch.setattr(cpp, "_libs", {})
    monkeypatch.setattr(cpp, "_failed", {})
    w = torch.nn.Parameter(torch.ones(4))
    w.grad = torch.ones(4)
    opt = cls([w], backend="cpp")
    with pytest.warns(RuntimeWarning, match="runs eager"):
        opt.step()
    assert _ran_as("generated Lion (cpp)", opt) == "generated Lion (cpp: the kernels did not build, so eager)"
    assert _ran_as("generated Lion (eager)", opt) == "generated Lion (eager)"
