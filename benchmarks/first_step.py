"""Start-up of the generated optimizer with its default backend, in a fresh process: the time to build
the class (parse, print, load), to take the first and second step on a small MLP, and, with
``--steps``, the step where a small CPU model's default moves from eager to the C++ kernels
(``_KERNELS_AFTER`` in codegen/runtime/torch_optimizer.py; it builds them unless cached) and the
optimizer's median step before and after it.

    python benchmarks/first_step.py                                   # one line of seconds
    python benchmarks/first_step.py --program tiger --steps 1200      # and the move to the kernels

Target (issue 10): first step <= 1 s on a small model with the default backend.
"""

import argparse
import statistics
import time

t0 = time.perf_counter()
import torch

import codegen
import optdsl

t_import = time.perf_counter()
ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--program", default="adamw", help="zoo name")
ap.add_argument("--steps", type=int, default=2, help="steps to take, at least 2 (default 2)")
args = ap.parse_args()
if args.program not in optdsl.zoo_names():
    ap.error(f"--program {args.program}: not a zoo program (`optdsl zoo` lists them)")
if args.steps < 2:
    ap.error(f"--steps {args.steps}: the first and second steps are what is timed; give 2 or more")
t_build0 = time.perf_counter()
Optimizer = codegen.build(optdsl.load(args.program), "torch")
t_build = time.perf_counter()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
opt = Optimizer(model.parameters(), lr=1e-3)
x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
times = []
for _ in range(args.steps):
    torch.nn.functional.cross_entropy(model(x), y).backward()
    t = time.perf_counter()
    opt.step()
    times.append(time.perf_counter() - t)
    opt.zero_grad()
print(f"{args.program}: imports {t_import - t0:.2f} s, build {t_build - t_build0:.2f} s, first step "
      f"{times[0]:.3f} s, second step {times[1] * 1e3:.1f} ms ({sum(p.numel() for p in model.parameters())} "
      "parameters)")
moved = next((k for k in range(len(times)) if opt._backend_for(torch.device("cpu"), 1, k + 1) != "eager"), None)
if moved is not None and moved > 2 and len(times) > moved + 2:
    print(f"step {moved + 1} (the first on {opt._backend_for(torch.device('cpu'), 1, moved + 1)}): "
          f"{times[moved]:.3f} s; median step before {statistics.median(times[2:moved]) * 1e3:.3f} ms, "
          f"after {statistics.median(times[moved + 1:]) * 1e3:.3f} ms")
