"""Start-up of the generated optimizer with its default backend, in a fresh process: the time to build
the class (parse, print, load) and to take the first and second step on a small MLP.

    python benchmarks/first_step.py          # prints one line of seconds

Target (issue 10): first step <= 1 s on a small model with the default backend.
"""

import time

t0 = time.perf_counter()
import torch

import codegen
import optdsl

t_import = time.perf_counter()
AdamW = codegen.build(optdsl.load("adamw"), "torch")
t_build = time.perf_counter()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
opt = AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
times = []
for _ in range(2):
    torch.nn.functional.cross_entropy(model(x), y).backward()
    t = time.perf_counter()
    opt.step()
    times.append(time.perf_counter() - t)
    opt.zero_grad()
print(f"imports {t_import - t0:.2f} s, build {t_build - t_import:.2f} s, first step {times[0]:.3f} s, "
      f"second step {times[1] * 1e3:.1f} ms ({sum(p.numel() for p in model.parameters())} parameters)")
