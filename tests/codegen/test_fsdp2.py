"""Generated optimizers under FSDP2 (issue 10, item 8): ``fully_shard`` makes every parameter a DTensor
sharded on dim 0 over 2 CPU processes (gloo). The optimizer keeps its states as DTensors sharded
as the params, takes per-tensor reductions (LAMB's norms, Adafactor's row/col means) over the whole
tensor, and round-trips through torch.distributed.checkpoint; each rank's params must equal those of
the same optimizer stepping the unsharded model in one process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import traceback

import pytest
import torch

import codegen
import optdsl

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch build has no torch.distributed with gloo", allow_module_level=True)

pytestmark = pytest.mark.slow

WORLD = 2
STEPS = 4
# a global reduction over all tensors (summed across ranks) and a scalar state (replicated)
CLIPPED = """
def clipped(w, g, s: scalar, m, lr=0.01, beta=0.9):
    g = g / max(1, global_norm(g))
    m = interp(g, m, beta)
    s = s + mean(m * m)
    return lr * m / sqrt(s + 1e-8), s, m
"""
# (program, constructor keywords, backend): elementwise AdamW steps the local shards on either backend;
# LAMB (norms), Adafactor (row/col states, 1-d bias on its full path), Tiger (a where on each tensor's
# nan test) and CLIPPED step whole DTensors
CASES = [
    ("adamw", {"lr": 1e-2, "weight_decay": 0.1}, "eager"),
    ("adamw", {"lr": 1e-2, "weight_decay": 0.1}, "compiled"),
    ("lamb", {"lr": 1e-2, "weight_decay": 0.01}, None),
    ("lamb", {"lr": 1e-2, "weight_decay": 0.01}, "compiled"),  # DTensors that need whole tensors: eager
    ("adafactor", {"lr": 1e-2}, None),
    ("tiger", {"lr": 1e-3}, None),
    ("clipped", {"lr": 1e-2}, None),
]


DCP = ("lamb", "adamw")


def _optimizer(name):
    return codegen.build(optdsl.parse(CLIPPED) if name == "clipped" else optdsl.load(name), "torch")


def _model():
    torch.manual_seed(0)  # odd sizes: uneven shards (7 rows over 2 ranks)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _batch(t):
    gen = torch.Generator().manual_seed(10 + t)
    return torch.randn(8, 5, generator=gen), torch.randn(8, 3, generator=gen)


def _train(model, opt, steps, rank=0, world=1):
    """``steps`` steps; with world > 1 each rank takes its slice of the batch (FSDP2 averages grads)."""
    for t in steps:
        x, y = _batch(t)
        x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _full(model):
    return [p.full_tensor() if hasattr(p, "full_tensor") else p.detach().clone() for p in model.parameters()]


def _worker(rank, port, out):
    """Runs in each process: every case under fully_shard, then a DCP save/load round trip."""
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import DTensor

        results = {}
        for name, kwargs, backend in CASES:
            Opt = _optimizer(name)
            model = _model()
            for layer in (model[0], model[2], model):
                fully_shard(layer)
            opt = Opt(model.parameters(), backend=backend, **kwargs)
            _train(model, opt, range(STEPS), rank, WORLD)
            for p in model.parameters():
                for key, s in opt.state[p].items():
                    if key != "step":
                        assert isinstance(s, DTensor) and s.device_mesh == p.device_mesh, (name, key)
            results[(name, backend)] = _full(model)

        # DCP: save after 2 steps, keep training; a fresh model and optimizer load the checkpoint
        # and must continue identically (LAMB steps DTensors, AdamW local shards)
        for name in DCP:
            Opt = _optimizer(name)
            models, opts = [], []
            for _ in range(2):
                model = _model()
                for layer in (model[0], model[2], model):
                    fully_shard(layer)
                models.append(model)
                opts.append(Opt(model.parameters(), lr=1e-2))
            _train(models[0], opts[0], range(2), rank, WORLD)
            path = f"{out}/{name}"
            model_sd, optim_sd = get_state_dict(models[0], opts[0])
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
            _train(models[0], opts[0], range(2, STEPS), rank, WORLD)
            model_sd, optim_sd = get_state_dict(models[1], opts[1])
            loaded = {"model": model_sd, "optim": optim_sd}
            dcp.load(loaded, checkpoint_id=path)
            set_state_dict(
                models[1], opts[1], model_state_dict=loaded["model"], optim_state_dict=loaded["optim"]
            )
            _train(models[1], opts[1], range(2, STEPS), rank, WORLD)
            results[("dcp", name)] = (_full(models[0]), _full(models[1]))
        if rank == 0:
            torch.save(results, out + "/results.pt")
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - reported to the parent; exit at once, so no peer waits
        with open(f"{out}/error{rank}.txt", "w") as f:
            f.write(traceback.format_exc())
        os._exit(1)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The worker's results, run once in WORLD fresh processes (a timeout: a hung collective fails
    the test instead of hanging CI)."""
    tmp = tmp_path_factory.mktemp("fsdp2")
    out = str(tmp)
    code = (
        "import sys, torch.multiprocessing as mp; sys.path.insert(0, sys.argv[3]); import test_fsdp2 as t; "
        "mp.spawn(t._worker, args=(int(sys.argv[1]), sys.argv[2]), nprocs=t.WORLD)"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a session of its own, so that a timeout kills the spawned workers too, not only their parent
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(_free_port()), out, here],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the FSDP2 processes did not finish in 240 s")
    errors = [(tmp / f).read_text() for f in sorted(os.listdir(out)) if f.startswith("error")]
    assert proc.returncode == 0 and not errors, "\n".join(errors) or stderr[-4000:]
    return torch.load(out + "/results.pt")


@pytest.mark.parametrize("name, kwargs, backend", CASES)
def test_sharded_training_equals_unsharded(sharded, name, kwargs, backend):
    Opt = _optimizer(name)
    model = _model()
    opt = Opt(model.parameters(), backend="eager", **kwargs)
    _train(model, opt, range(STEPS))
    for a, b in zip(sharded[(name, backend)], model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_sharded_adamw_equals_torch_adamw(sharded):
    model = _model()
    _train(model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1), range(STEPS))
    for a, b in zip(sharded[("adamw", "eager")], model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", DCP)
def test_distributed_checkpoint_round_trip_continues_identically(sharded, name):
    original, restored = sharded[("dcp", name)]
    model = _model()
    _train(model, _optimizer(name)(model.parameters(), lr=1e-2), range(STEPS))
    for a, b, c in zip(original, restored, model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c.detach(), rtol=1e-5, atol=1e-6)
