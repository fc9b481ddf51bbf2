"""The benchmark scripts: the discovery benchmark's real tasks (an optimum past the grid's edge is found;
a schedule is followed) and its flags; the weight decay benchmark's table and flags."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "discovery.py"


def _module(path):
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(path.stem, path))
    module.__spec__.loader.exec_module(module)
    return module


discovery = _module(BENCH)


def _regression():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    y = x @ torch.randn(8, 1, generator=gen)
    return ("regression", lambda: torch.nn.Linear(8, 1), x[:192], y[:192], x[192:], y[192:],
            torch.nn.functional.mse_loss, 30)


class ScaledSGD(torch.optim.SGD):
    """SGD whose lr is scaled inside, as a found program's ``lr * 0.007 * ...`` is."""

    def __init__(self, params, lr, scale=1.0):
        super().__init__(params, lr=lr * scale)


def test_tuning_follows_an_optimum_past_the_grids_edge():
    task, grid = _regression(), discovery.REAL_LRS
    inside = lambda params, lr: ScaledSGD(params, lr, scale=10.0)
    outside = lambda params, lr: ScaledSGD(params, lr, scale=0.1)
    assert grid[0] < discovery.tuned(inside, task)[1] < grid[-1]
    loss, lr = discovery.tuned(outside, task)
    assert lr > grid[-1]  # past the edge, where the grid alone would stop
    at_edge = sum(discovery.train_real(outside, grid[-1], task, s) for s in discovery.REAL_SEEDS) / 2
    assert loss < at_edge


def test_a_cosine_schedule_trains_the_real_tasks_with_the_lr_decayed_to_zero():
    """A weight fitting 1 from input 1 (loss (w - 1)^2 / 2): SGD at lr multiplies its error by
    (1 - lr f_t) at step t, f_t = 1 held and torch's cosine factor (1 + cos(pi t / T)) / 2 decayed."""
    one = torch.ones(64, 1)
    task = ("fit one", lambda: torch.nn.Linear(1, 1, bias=False), one, one, one, one,
            lambda out, y: ((out - y) ** 2).mean() / 2, 30)

    def error_ratio(schedule):
        torch.manual_seed(0)
        start = 1.0 - torch.nn.Linear(1, 1, bias=False).weight.item()
        return math.sqrt(2 * discovery.train_real(torch.optim.SGD, 0.01, task, 0, schedule)) / abs(start)

    decayed = math.prod(1 - 0.01 * (1 + math.cos(math.pi * t / 30)) / 2 for t in range(30))
    assert error_ratio("constant") == pytest.approx(0.99 ** 30, rel=1e-5)
    assert error_ratio("cosine") == pytest.approx(decayed, rel=1e-5)


def test_lion_family_programs_are_counted_in_their_simplified_form():
    """A sign of a momentum counts once simplified (a positive factor inside ``sign`` goes); the sign
    of the raw gradient, a rule with no sign and a program the guards refused do not."""
    head = "def train(w, g, m, lr):\n    m = interp(g, m, 0.3)\n"
    sources = {1: head + "    return lr * sign(m), m\n",
               2: head + "    return lr * (sign(m / (abs(g) + 1)) + 0.01 * w), m\n",
               3: "def train(w, g, lr):\n    return lr * sign(g)\n",
               4: head + "    return lr * m, m\n",
               5: head + "    return lr * sign(m), m\n"}
    fitness = {1: 0.1, 2: 0.2, 3: 0.5, 4: 0.9, 5: 0.95}
    rows = [{"id": i, "status": "guard" if i == 5 else "ok", "fitness": fitness[i], "source": text,
             "live_source": text, "task_lr": {"mlp": 0.01}} for i, text in sources.items()]
    count, best = discovery.lion_family_scored(rows)
    assert count == 2 and best["id"] == 2


def test_the_benchmarks_settings_reach_the_search_as_its_own_arguments():
    from optdsl.cli import make_parser
    from search.commands import _task_lists

    settings = discovery.search_settings("adamw,lion", "quadratic@2,mlp@2", "constant")
    args = make_parser().parse_args(["search", "--budget", "1m", *settings])
    assert (args.init, args.schedule) == ("adamw,lion", "constant")
    # the held-out tasks follow the proxies' batch
    assert _task_lists(args) == (("quadratic@2", "mlp@2"), ("quadratic_large@2", "mlp_large@2"))
    assert discovery.search_settings(None, None, "cosine") == ()


def test_each_seed_searches_in_a_folder_of_its_own(tmp_path):
    """A search refuses to replace another search's best_optimizer.py: the benchmark's seeds, run
    one after another into one --dir, each keep a folder (and a winner) of their own."""
    for seed in (0, 1):
        s = discovery.run_search(seed, "1s", 1, str(tmp_path), settings=("--tasks", "quadratic"))
        assert s["winner_id"] is not None
    for seed in (0, 1):
        written = " ".join((tmp_path / f"seed{seed}" / "best_optimizer.py").read_text().split())
        assert f"search of seed{seed}.sqlite" in written
    # read again (--reuse) by a command of other settings: the table says how the search was run
    kept = discovery.run_search(0, "10m", 2, str(tmp_path), reuse=True)
    assert kept["run_as"].endswith("Budget 1s per seed, with `--tasks quadratic`.")
    if discovery.code_version() is not None:  # (a git checkout: the commit that ran the search)
        assert f", optdsl at {discovery.code_version()}. Budget" in kept["run_as"]
    assert discovery.markdown([kept], {}).startswith(kept["run_as"] + "\n")


def test_a_search_kept_before_its_settings_were_recorded_says_so():
    not_recorded = "Machine, budget and settings: not recorded with this search."
    assert discovery._run_as({"wall_s": 61.0}) == not_recorded
    # kept before the code version was: the rest is said, the version not
    kept = {"wall_s": 61.0, "budget": "10m", "settings": [], "machine": "M"}
    assert discovery._run_as(kept) == ("Machine: M. Budget 10m per seed, from AdamW, the README's default "
                                       "settings.")
    with_code = discovery._run_as({**kept, "code": "772e171+edits"})
    assert with_code.startswith("Machine: M, optdsl at 772e171+edits. ")


@pytest.mark.parametrize("argv, message", [
    (["--out", "{tmp}"], "is not a regular file (a directory)"),
    (["--out", "{tmp}/half.md"], "markers do not pair up"),
    (["--json", "{tmp}/missing/x.json"], "cannot write: no such folder"),
])
def test_the_output_files_are_refused_before_any_search(argv, message, tmp_path, capsys):
    # they were first opened after the searches and the real tasks (an hour): a traceback then
    (tmp_path / "half.md").write_text("notes\n<!-- discovery:begin -->\n")
    assert discovery.main(["--dir", str(tmp_path / "runs"), *(a.format(tmp=tmp_path) for a in argv)]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv", [["--seeds", "x"], ["--seeds", "-1"], ["--reuse"]])
def test_bad_flags_exit_2_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        discovery.main(argv)
    assert stop.value.code == 2 and "error:" in capsys.readouterr().err


def test_the_weight_decay_benchmark_prints_each_decays_gain_and_refuses_bad_input(capsys, monkeypatch):
    bench = _module(BENCH.parent / "adamw_weight_decay.py")
    monkeypatch.setenv("COLUMNS", "200")
    assert bench.main(["--tasks", "logreg", "--decays", "0.1"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "logreg" in line)
    assert "+0.000" in row and "(wd 0.1)" in row  # wd 0.01's own column, and the pair tuned on seeds 0 and 1
    for bad in (["--decays", "-1"], ["--decays", "x"], ["--tasks", "nope"]):
        with pytest.raises(SystemExit) as stop:
            bench.main(bad)
        assert stop.value.code == 2 and "error:" in capsys.readouterr().err
