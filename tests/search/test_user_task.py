"""The user's own model as a search task: the adapter, references, the checks that refuse a
broken task before any work, devices, and the search on user tasks (local and Ray)."""

import importlib.util
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optdsl import load
from optdsl.cli import main
from optdsl.errors import DslError
from search import task_from_module
from search.devices import on_device
from search.evaluate import baseline, train_copies
from search.selection import winner
from search.store import Store
from search.tasks import FACTORIES, get_task
from search.user_task import check_task, load_task

HERE = Path(__file__).resolve()
EXAMPLE = HERE.parents[2] / "examples" / "custom_task.py"
BENCH = HERE.parents[2] / "benchmarks" / "user_task_overhead.py"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _module(path):
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(path.stem, path))
    module.__spec__.loader.exec_module(module)
    return module


# The built-in ``mlp`` proxy's model as an ordinary nn.Module (same weights for the same seed).
DigitsMLP = _module(BENCH).DigitsMLP


class Gated(DigitsMLP):
    """The same model behind a Python branch on a tensor's value, which vmap cannot trace."""

    def forward(self, x):
        out = super().forward(x)
        return out if out.abs().sum() >= 0 else -out


def _like_mlp(name, model):
    ref = get_task("mlp")
    return task_from_module(name, model, ref.batch, F.cross_entropy, ref.steps, ref.eval_batch)


def mlp_as_module():
    return _like_mlp("mlp_module", DigitsMLP)


def gated_mlp():
    return _like_mlp("gated", Gated)


def _ref(function, path=HERE):
    return f"{path}:{function}"


def test_adapter_matches_the_hand_batched_builtin_task():
    user = load_task(_ref("mlp_as_module"))
    builtin = get_task("mlp")
    assert user.shapes == builtin.shapes
    assert torch.equal(user.init_copies([0, 1], 2), builtin.init_copies([0, 1], 2))
    lrs = [1e-3, 1e-2]
    a, _ = train_copies([load("adamw")], "mlp", lrs)
    b, _ = train_copies([load("adamw")], _ref("mlp_as_module"), lrs)
    assert np.all(np.isfinite(a)) and np.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_copies_run_one_by_one_where_vmap_cannot_and_agree():
    task = load_task(_ref("gated_mlp"))
    lrs = [1e-2]
    a, _ = train_copies([load("adamw")], _ref("mlp_as_module"), lrs)
    b, _ = train_copies([load("adamw")], _ref("gated_mlp"), lrs)
    assert "one by one" in task.description and "vmap cannot" in task.description
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6)


def _train(task, lrs, steps, loop=False):
    """SGD on the task's K copies (copy k at lrs[k]); the held-out losses."""
    if loop:
        task.loss.__self__.vectorized = False
    w = task.init_params(len(lrs))
    lr = torch.tensor(lrs)[:, None]
    for t in range(1, steps + 1):
        w.requires_grad_()
        (g,) = torch.autograd.grad(task.train_loss(task.unflatten(w), t).sum(), w)
        w = (w - lr * g).detach()
    with torch.no_grad():
        return task.eval_loss(task.unflatten(w)), task.loss.__self__.state[2]


def test_each_copy_keeps_its_own_batch_norm_statistics():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 32, 5, generator=gen), torch.randint(0, 3, (8, 32), generator=gen)

    def make():
        model = lambda: nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2),
                                      nn.Linear(8, 3))
        return task_from_module("bn", model, lambda t: (x[t - 1], y[t - 1]), F.cross_entropy, 8, (x[0], y[0]))

    vec, stats = _train(make(), [0.01, 0.5], 8)
    loop, loop_stats = _train(make(), [0.01, 0.5], 8, loop=True)
    assert not torch.allclose(stats["1.running_mean"][0], stats["1.running_mean"][1])  # one per copy
    assert torch.allclose(vec, loop, atol=1e-5) and vec[0] != vec[1]
    assert torch.equal(stats["1.num_batches_tracked"], torch.tensor([8, 8]))
    assert torch.allclose(stats["1.running_var"], loop_stats["1.running_var"], atol=1e-5)


def test_frozen_parameters_are_not_trained():
    def model():
        m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
        m[0].requires_grad_(False)
        return m

    x = torch.ones(2, 3)
    task = task_from_module("frozen", model, lambda t: (x, x[:, :1]), F.mse_loss, 1, (x, x[:, :1]))
    assert task.shapes == {"1.weight": (1, 4), "1.bias": (1,)}


# --- broken tasks are refused once, before any work -------------------------------------------------
GOOD = """
import torch
import torch.nn.functional as F
from torch import nn
from search import task_from_module

x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(16, 1)

def make(model=lambda: nn.Linear(3, 1), loss=F.mse_loss, steps=4):
    return task_from_module("t", model, lambda t: (x, y), loss, steps, (x, y))
"""
BROKEN = {
    "import": ("import no_such_module_here\n", "make", "cannot import the task file: ModuleNotFoundError"),
    "syntax": ("def make(:\n", "make", "cannot import the task file"),
    "missing": ("", "make_task", "defines no function 'make_task'"),
    "return type": ("def bad():\n    return 3\n", "bad", "bad() returned int, expected a search Task"),
    "raises": ("def bad():\n    return make(steps=0)\n", "bad", "steps must be a positive int"),
    "shape": ("def bad():\n    return make(loss=lambda o, t: (o - t) ** 2)\n", "bad",
              "the loss of 80 copies has shape (80, 16, 1), expected (80,)"),
    "non-finite": ("def bad():\n    return make(loss=lambda o, t: F.mse_loss(o, t) / 0)\n", "bad",
                   "the loss at the first step is not finite"),
    # the message printed copy 0's loss, a finite number, where another copy's was nan
    "non-finite in some copies": (("def bad():\n    return make(loss=lambda o, t: F.mse_loss(o, t) + "
                                   "torch.log(o.abs().mean() - 0.5))\n"), "bad",
                                  "is not finite (nan for model copy"),
    "no gradient": ("def bad():\n    return make(loss=lambda o, t: F.mse_loss(o.detach(), t))\n", "bad",
                    "does not depend on the trained parameters"),
    # a gradient of exactly 0 everywhere (rounded outputs): the search had "found" weight decay tuned
    # to the task and called it a winner over AdamW (an audit)
    "zero gradient": ("def bad():\n    return make(loss=lambda o, t: F.mse_loss(o.round(), t))\n", "bad",
                      "the loss's gradient is exactly 0 for every parameter"),
    # sys.exit() in the user's code had ended the CLI with exit status 1 and no place
    "exit at import": ("import sys\nsys.exit(3)\n", "make", "cannot import the task file: SystemExit: 3"),
    "exit in the factory": ("def bad():\n    raise SystemExit('bye')\n", "bad",
                            "bad() failed: SystemExit: bye"),
    "exit in the loss": ("import sys\ndef bad():\n    return make(loss=lambda o, t: sys.exit(0))\n", "bad",
                         "the first training steps failed: SystemExit"),
    "held-out batch": (("def bad():\n    return task_from_module('t', lambda: nn.Linear(3, 1), "
                        "lambda t: (x, y), F.mse_loss, 4, (x[:, :2], y))\n"), "bad",
                       "bad(): the held-out loss (eval_batch) failed"),
    # these reached the search: tuned AdamW's sweep failed later, unlocated ("inf" for a nan), and a
    # float loss was "expected Tensor as element 0 in argument 0, but got float"
    "non-finite held out": (("def bad():\n    return task_from_module('t', lambda: nn.Linear(3, 1), "
                             "lambda t: (x, y), F.mse_loss, 4, (x, y * float('nan')))\n"), "bad",
                            "bad(): the held-out loss (eval_batch) is not finite (nan for model copy 0"),
    "a float loss": ("def bad():\n    return make(loss=lambda o, t: F.mse_loss(o, t).item())\n", "bad",
                     "the loss returned a float, not a tensor"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_task_is_refused_with_its_reason(tmp_path, case):
    extra, function, message = BROKEN[case]
    path = tmp_path / f"broken_{case.replace(' ', '_').replace('-', '_')}.py"
    path.write_text(GOOD + extra if case != "syntax" else extra)
    with pytest.raises(DslError) as e:
        check_task(f"{path}:{function}", copies=80, limit=300.0)
    assert message in str(e.value) and str(path) in str(e.value)
    if case in ("import", "syntax"):
        assert e.value.line == (len(GOOD.splitlines()) + 1 if case == "import" else 1)
    if case == "exit in the factory":  # the caret at the statement
        assert (e.value.line, e.value.col) == (len(GOOD.splitlines()) + 2, 4)


def test_a_task_slower_than_the_job_limit_is_refused(tmp_path):
    path = tmp_path / "slow.py"
    path.write_text(GOOD + textwrap.dedent("""
        import time

        class Slow(nn.Linear):
            def forward(self, x):
                time.sleep(0.05)  # every step takes at least 0.05 s: 100 steps, 5 s
                return super().forward(x)

        def slow():
            return make(model=lambda: Slow(3, 1), steps=100)
        """))
    with pytest.raises(DslError, match=r"one evaluation would take about \d+ s .* more than the limit of 1 s"):
        check_task(f"{path}:slow", copies=4, limit=1.0)
    assert check_task(f"{path}:make", copies=4, limit=1.0).name == "t"
    # a job trains up to PASSES_PER_JOB passes (AdamW's sweep and its extensions, a re-measurement):
    # one pass of 5 s passed a limit of 10 s, and the job was killed later
    with pytest.raises(DslError, match=r"a job on it would take about \d+ s \(4 passes of 100 steps .* 10 s"):
        check_task(f"{path}:slow", copies=4, limit=10.0, passes=4)
    assert check_task(f"{path}:slow", copies=4, limit=10.0).name == "t"


def test_cli_refuses_a_broken_task_before_creating_the_database(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text(GOOD)
    db = tmp_path / "s.sqlite"
    assert main(["search", "--db", str(db), "--task", f"{path}:nope", "--evals", "1"]) == 2
    assert "defines no function 'nope'" in capsys.readouterr().err and not db.exists()
    assert main(["search", "--db", str(db), "--task", "no/such/file.py:make", "--evals", "1"]) == 2
    assert main(["search", "--db", str(db), "--meta-task", "not_a_reference", "--evals", "1"]) == 2
    assert not db.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    assert main(["search", "--db", str(tmp_path / "s.sqlite"), "--device", "cuda", "--evals", "1"]) == 2
    assert "--device cuda: no CUDA GPU on this machine" in capsys.readouterr().err


# --- devices -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*FACTORIES, "user"])
def test_every_tensor_a_task_uses_moves_to_the_device(name):
    """On the meta device any tensor left on the CPU raises, so this checks placement on a CPU."""
    task = on_device(load_task(_ref("mlp_as_module")) if name == "user" else get_task(name), "meta")
    w = task.init_params(2).to("meta")
    assert task.train_loss(task.unflatten(w), 1).device.type == "meta"
    assert task.eval_loss(task.unflatten(w)).device.type == "meta"


@CUDA
@pytest.mark.gpu
def test_cuda_and_cpu_agree_for_builtin_and_user_tasks():
    for name in ("mlp", "transformer", _ref("mlp_as_module"), f"{EXAMPLE}:make_task"):
        cpu, cuda = baseline(name, device="cpu"), baseline(name, device="cuda")
        assert cpu["lr"] == cuda["lr"] and cuda["loss"] == pytest.approx(cpu["loss"], rel=1e-3), name


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[CUDA, pytest.mark.gpu])])
def test_a_user_file_may_return_a_built_in_task_on_any_device(tmp_path, device):
    """A task built with search.tasks (its data made on the CPU) passes the check on a GPU too:
    the check moves it as the evaluation does (it failed with "Expected all tensors to be on the
    same device" on an H200)."""
    path = tmp_path / "builtin_task.py"
    path.write_text("from search import tasks\n\n\ndef make():\n    return tasks.quadratic('mine', steps=5)\n")
    assert check_task(f"{path}:make", copies=4, limit=60.0, device=device).name == "mine"


def visible_gpu(job):
    import os

    return {"id": job["id"], "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}


@pytest.mark.slow  # spawns two workers
def test_local_workers_get_a_gpu_each_round_robin():
    from search.executors import LocalExecutor

    ex = LocalExecutor(workers=2, timeout=60, target=visible_gpu, gpus=["4", "7", "9"])
    try:
        for i in range(2):
            ex.submit({"id": i})
        out = []
        while len(out) < 2:
            out += ex.poll(1.0)
        assert sorted(r["gpu"] for r in out) == ["4", "7"]
    finally:
        ex.close()


def test_resuming_after_the_task_changed_is_refused(tmp_path, capsys):
    """An audit resumed a search after doubling its task's steps: the new children were scored
    against the old task's tuned AdamW, and the cache served the old scores."""
    task = tmp_path / "t.py"
    task.write_text(GOOD)
    db = str(tmp_path / "s.sqlite")
    common = ["--evals", "1", "--workers", "1", "--population", "2", "--tournament", "2", "--batch", "1"]
    assert main(["search", "--db", db, "--task", f"{task}:make", *common]) == 0
    capsys.readouterr()
    assert main(["search", "--resume", db, "--evals", "2", "--workers", "1"]) == 0  # unchanged: goes on
    task.write_text(GOOD.replace("steps=4", "steps=8"))
    load_task.cache_clear()  # (one process here; each command is one of its own)
    assert main(["search", "--resume", db, "--evals", "3", "--workers", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"task {task}:make changed since this search was stored (steps 4 -> 8)" in err
    task.write_text(GOOD.replace("torch.zeros(16, 1)", "torch.ones(16, 1)"))  # other data, same shapes
    load_task.cache_clear()
    assert main(["search", "--resume", db, "--evals", "3", "--workers", "1"]) == 2
    assert "first loss" in capsys.readouterr().err
    # the batches of later steps only: the first step's loss did not see them
    task.write_text(GOOD.replace("lambda t: (x, y)", "lambda t: (x * (1 if t == 1 else 2), y)"))
    load_task.cache_clear()
    assert main(["search", "--resume", db, "--evals", "3", "--workers", "1"]) == 2
    assert "later losses" in capsys.readouterr().err


def test_a_search_needs_its_task_files_where_they_were(tmp_path, capsys):
    task = tmp_path / "t.py"
    task.write_text(GOOD)
    db = str(tmp_path / "s.sqlite")
    common = ["--evals", "1", "--workers", "1", "--population", "2", "--tournament", "2", "--batch", "1"]
    # one task as both proxy and held-out: its held-out score would be measured on what is searched on
    assert main(["search", "--db", db, "--task", f"{task}:make", "--meta-task", f"{task}:make", *common]) == 2
    assert "is a proxy task (--task) and a held-out task (--meta-task) at once" in capsys.readouterr().err
    assert main(["search", "--db", db, "--task", f"{task}:make", *common]) == 0
    task.rename(tmp_path / "moved.py")
    capsys.readouterr()
    assert main(["search", "--resume", db, "--evals", "2", "--workers", "1"]) == 2  # ("settings unusable")
    assert f"the task file {task} of this search is gone; put it back" in capsys.readouterr().err


def test_a_task_tuned_adamw_cannot_train_is_refused(tmp_path, capsys):
    """The data turn nan after a few steps: tuned AdamW's loss was stored as inf and the budget spent."""
    task = tmp_path / "t.py"
    task.write_text(GOOD + "\ndef nan_later():\n    return task_from_module('n', lambda: nn.Linear(3, 1), "
                    "lambda t: (x * (float('nan') if t > 3 else 1.0), y), F.mse_loss, 4, (x, y))\n")
    command = ["search", "--db", str(tmp_path / "s.sqlite"), "--task", f"{task}:nan_later", "--evals", "1",
               "--workers", "1"]
    assert main(command) == 2
    assert "tuned AdamW's loss on task" in capsys.readouterr().err
    # nothing scored, nothing kept: the same command ran again said "s.sqlite already exists"
    assert sorted(os.listdir(tmp_path)) == ["t.py"]
    assert main(command) == 2 and "already exists" not in capsys.readouterr().err


def test_a_task_failing_after_the_checked_steps_is_located_in_its_file(tmp_path, capsys):
    """check_task runs three steps; a task whose data run out at step 4 failed in AdamW's tuning with
    "tuning AdamW on task ... failed: IndexError: ..." and no place: now file:line:col, exit 2 (before
    any work where the resume check's fingerprint reads the last step's batch; in the tuning where
    only an untouched step fails)."""
    task = tmp_path / "t.py"
    task.write_text(GOOD + "\ndef batch(t):\n    if t > 3:\n        raise IndexError(f'no batch {t}')\n"
                    "    return x, y\n\ndef short():\n"
                    "    return task_from_module('s', lambda: nn.Linear(3, 1), batch, F.mse_loss, 6, "
                    "(x, y))\n")
    command = ["search", "--db", str(tmp_path / "s.sqlite"), "--task", f"{task}:short", "--evals", "1",
               "--workers", "1"]
    assert main(command) == 2
    err = capsys.readouterr().err
    line = len(GOOD.splitlines()) + 4  # the raise
    assert f"{task}:{line}:9: short(): the training loss at a later step failed: IndexError: no batch 6" \
        in err
    assert sorted(os.listdir(tmp_path)) == ["t.py"]
    task.write_text(task.read_text().replace("if t > 3:", "if 3 < t < 6:"))  # steps 4 and 5 only
    load_task.cache_clear()
    assert main(command) == 2
    err = capsys.readouterr().err
    assert f"{task}:{line}:9: short(): tuning AdamW on it failed: IndexError: no batch 4" in err


# --- the search on user tasks ----------------------------------------------------------------------
@pytest.mark.slow
def test_search_on_the_example_task_end_to_end(tmp_path, monkeypatch):
    """The README's command with a held-out user task: baselines stored under the references,
    the winner meta-validated, exported, and its generated optimizer trains the example's model."""
    held_out = tmp_path / "held_out.py"
    held_out.write_text(GOOD)
    monkeypatch.chdir(EXAMPLE.parents[1])  # the README's command, from the repository root
    db = tmp_path / "s.sqlite"
    assert main(["search", "--db", str(db), "--task", "examples/custom_task.py:make_task", "--evals", "4",
                 "--meta-task", f"{held_out}:make", "--workers", "1", "--population", "4", "--batch", "2",
                 "--device", "auto"]) == 0
    ref, meta = f"{EXAMPLE}:make_task", f"{held_out}:make"
    store = Store(str(db))
    assert set(store.baselines()) == {ref, meta}
    config = store.get_meta("config")
    assert config["device"] == ("cuda" if torch.cuda.is_available() else "cpu") and config["batch"] == 2
    scored = [r for r in store.all() if r["status"] == "ok"]
    assert scored and all(set(r["task_score"]) == {ref} for r in scored)
    assert winner(store)["meta_fitness"] is not None  # meta-validated on the held-out user task
    assert main(["export", str(db), "--top", "1", "-o", str(tmp_path / "out")]) == 0
    path = next((tmp_path / "out").glob("*_torch.py"))
    (cls,) = [v for n, v in vars(_module(path)).items() if not n.startswith("_") and isinstance(v, type)
              and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer]
    torch.manual_seed(0)
    model = _module(EXAMPLE).model()
    x, y = load_task(ref).batch(1)[2]
    opt = cls(model.parameters())  # the learning rate the search tuned is its default
    before = F.cross_entropy(model(x), y).item()
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < before


@pytest.mark.slow
def test_data_drawn_from_the_global_generators_is_the_same_in_every_process(tmp_path):
    """Each process starts torch and numpy elsewhere, and the driver and every worker build the task
    themselves: data drawn at import or in the function differed between them (the AdamW warm start
    scored -0.07 and -0.30 against tuned AdamW in two runs; --resume refused the unchanged file)."""
    import random

    from search.user_task import fingerprint

    path = tmp_path / "drawn.py"
    path.write_text(textwrap.dedent("""
        import random
        import numpy as np
        import torch
        from torch import nn
        from search import task_from_module

        X = torch.randn(64, 4) + torch.tensor(np.random.randn(64, 4), dtype=torch.float32) + random.random()

        def make():
            y = X @ torch.randn(4, 1)
            return task_from_module("drawn", lambda: nn.Linear(4, 1), lambda t: (X, y),
                                    lambda o, t: ((o - t) ** 2).mean(), steps=3, eval_batch=(X, y))
        """))
    prints = []
    for seed in (1, 2):
        torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
        load_task.cache_clear()
        prints.append(fingerprint(load_task(f"{path}:make")))
    assert prints[0] == prints[1]
    # the caller's generators go on as if the task had not been built
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_task.cache_clear()
    load_task(f"{path}:make")
    assert torch.equal(torch.rand(3), expected)


def test_a_task_imports_its_neighbours_in_its_function_and_never_another_folders(tmp_path):
    for folder, which in (("proxy", "proxy data"), ("heldout", "held-out data")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "data.py").write_text(f"WHICH = {which!r}\n")
        (tmp_path / folder / "task.py").write_text(
            "from search.tasks import quadratic\n\n\ndef make():\n    from data import WHICH\n"
            "    return quadratic(WHICH, steps=5)\n")
    try:
        # an import inside the function failed (the folder was on sys.path only while the file was read)
        assert load_task(f"{tmp_path / 'proxy' / 'task.py'}:make").name == "proxy data"
        # and a neighbour of the same name in another task's folder was the first one's, silently
        with pytest.raises(DslError, match=r"task.py:5:5: imports data, which its folder holds, but this "
                                           r"process has already imported a module data from .*proxy"):
            load_task(f"{tmp_path / 'heldout' / 'task.py'}:make")
    finally:
        import sys

        sys.modules.pop("data", None)


def test_ray_refuses_two_task_files_of_one_name(tmp_path, capsys):
    # Ray ships each as a module named after it: a worker without the paths ran a's task for both
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "task.py").write_text(GOOD)
    refs = [f"{tmp_path / folder / 'task.py'}:make" for folder in ("a", "b")]
    db = tmp_path / "s.sqlite"
    argv = ["search", "--task", refs[0], "--meta-task", refs[1], "--evals", "1", "--db", str(db)]
    assert main([*argv, "--executor", "ray"]) == 2
    assert "two task files are called task.py" in capsys.readouterr().err and not db.exists()


def test_search_on_a_local_ray_cluster_ships_the_task_file(tmp_path):
    """The task file reaches the Ray workers through the runtime environment (``py_modules``):
    the reference names a path that no worker has, so only the shipped copy can serve it."""
    ray = pytest.importorskip("ray")
    from search.evolution import Search, SearchConfig
    from search.executors import RayExecutor

    shipped = tmp_path / "optdsl_shipped_task.py"
    shipped.write_text(GOOD)
    ref = "/nonexistent/elsewhere/optdsl_shipped_task.py:make"
    ex = RayExecutor(workers=2, timeout=120, num_cpus=2, files=(str(shipped),))
    try:
        store = Store(str(tmp_path / "r.sqlite"))
        search = Search(store, SearchConfig(tasks=(ref,), population=4, seed=1), ex, simplify_grace=None)
        assert search.run(evals=4) is not None
        rows = [r for r in store.all() if r["status"] != "cached"]
        assert len(rows) == 4 and rows[0]["status"] == "ok"  # the warm start scored on the workers
        assert store.baselines()[ref]["loss"] > 0
    finally:
        ex.close()
        ray.shutdown()
