"""CPU benchmark of generated optimizers against torch.optim and the machine's memory bandwidth.

An optimizer step is memory-bound: it must move ``bytes = sum over tensors of (reads + writes)``
(from :func:`optdsl.cost.cost`; AdamW: 28 bytes per fp32 parameter). So

    GB/s = bytes / time,    frac_of_bandwidth = GB/s / (GB/s of a triad, same run)

The triad ``a = b + s * c`` reads b and c and writes a; a store first reads its cache line
(write-allocate), so it moves 16 bytes per fp32 element, which the bandwidth counts.

Row format shared by every suite (``codegen.bench_jax.run`` and ``codegen.bench_gpu.run`` return
the same ``list[dict]``)::

    {"suite": "cpu", "case": "16x1M fp32", "impl": "generated AdamW (compiled)",
     "ms": 15.2, "gb_s": 29.4, "frac_of_bandwidth": 1.05, "ratio": 0.97}

``ratio`` is ms divided by the case's anchor: torch's fused AdamW for AdamW, Lion, Tiger and LAMB (Lion's
target is 0.75x: it moves 20 bytes per parameter to AdamW's 28), torch Adafactor for Adafactor,
torch's ``clip_grad_norm_`` then fused AdamW for the generated ``clip_by_global_norm(adamw)`` (a
global reduction: its eager rows' yardstick is foreach AdamW after ``clip_grad_norm_``).
Where the optional ``deepspeed`` package is installed, its CPU Adam joins the AdamW group; where
``pytorch_optimizer`` is (a dev dependency), its Lion, Tiger and Lamb join theirs: eager peers.
Generated optimizers run on each backend that applies: eager (multi-tensor torch ops), compiled
(torch.compile) and cpp (the C++ kernels, where the program has them); ``gb_s``/``frac_of_bandwidth`` may be None.
:func:`write_section` replaces one marked section of docs/benchmarks.md, so each suite updates
only its own.

Example:
    >>> ms = time_ms(lambda: None, warmup=1, repeats=3)
    >>> ms >= 0
    True
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import re
import statistics
import time
from collections.abc import Callable

import torch

import optdsl
from optdsl.extend import clip_by_global_norm

from . import build


def time_ms(fn: Callable[[], object], warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls:
    ``ms = median over repeats of (t_end - t_start) * 1000``.

    Example:
        >>> calls = []
        >>> ms = time_ms(lambda: calls.append(1), warmup=2, repeats=5)
        >>> len(calls)  # 2 untimed calls, then 5 timed ones
        7
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _begin(key: str) -> str:
    """The regex of a bench section's opening marker, ``<!-- bench:KEY sha256=DIGEST -->`` (the
    digest of the text it holds, as :func:`write_section` wrote it; absent in one a person assembled)."""
    return rf"<!-- bench:{re.escape(key)}(?: sha256=(?P<digest>[0-9a-f]+))? -->"


def _section(key: str) -> re.Pattern:
    """A bench section: its opening marker (:func:`_begin`), the text, ``<!-- /bench:KEY -->``."""
    return re.compile(rf"{_begin(key)}\n(?:(?P<body>.*?)\n)?<!-- /bench:{re.escape(key)} -->", re.DOTALL)


def _digest(body: str) -> str:
    import hashlib

    return hashlib.sha256(body.encode()).hexdigest()[:16]


def check_section(path: str, key: str, force: bool = False) -> None:
    """Refuse (DslError) to write the ``key`` section of ``path`` where that would lose or misplace
    text: a file that is not markdown (``.md``), a section whose markers do not pair up, or a section
    holding text :func:`write_section` did not write (notes, tables a person put together), unless
    ``force``. Run before the timing, so that a refusal costs nothing.

    Example:
        >>> check_section("notes.py", "cpu")
        Traceback (most recent call last):
        optdsl.errors.DslError: notes.py: --out names the markdown file to update (.md), not this one
    """
    from optdsl.errors import DslError

    if not path.lower().endswith(".md"):
        raise DslError("--out names the markdown file to update (.md), not this one", path)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    opened = sum(1 for _ in re.finditer(_begin(key), text))
    closed = text.count(f"<!-- /bench:{key} -->")
    found = list(_section(key).finditer(text))
    if opened != closed or opened > 1 or len(found) != opened:
        raise DslError(f"its bench:{key} section markers do not pair up ({opened} opening, {closed} closing)",
                       path, hint=f"leave one <!-- bench:{key} --> ... <!-- /bench:{key} --> pair, or none")
    body = found[0]["body"] if found else None
    if body and not force and found[0]["digest"] != _digest(body):  # (an empty section holds nothing to lose)
        raise DslError(f"its bench:{key} section holds text optdsl did not write there (notes, edited "
                       "tables); refusing to replace it", path,
                       hint="write the tables to another file, or pass --force to replace the section")


def write_section(path: str, key: str, markdown: str, force: bool = False) -> None:
    """Replace ``<!-- bench:KEY -->...<!-- /bench:KEY -->`` in ``path`` (appended when absent),
    marked with the digest of what it holds (see :func:`check_section`, which refuses first).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "benchmarks.md")
        ...     for key, text in [("cpu", "old"), ("gpu", "| a |"), ("cpu", "new")]:
        ...         write_section(path, key, text)
        ...     with open(path) as f:
        ...         print(f.read().strip())
        # Benchmarks
        <BLANKLINE>
        <!-- bench:cpu sha256=11507a0e2f5e69d5 -->
        new
        <!-- /bench:cpu -->
        <BLANKLINE>
        <!-- bench:gpu sha256=13bb5e1404fed184 -->
        | a |
        <!-- /bench:gpu -->
    """
    from .generated import write_atomic

    check_section(path, key, force)
    body = markdown.strip()
    block = f"<!-- bench:{key} sha256={_digest(body)} -->\n{body}\n<!-- /bench:{key} -->"
    text = "# Benchmarks\n"
    if os.path.exists(path):
        with open(path, encoding="utf-8", newline="") as f:  # its line ends as they are
            text = f.read()
    crlf = "\r\n" in text
    text = text.replace("\r\n", "\n")
    pattern = _section(key)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, text.replace("\n", "\r\n") if crlf else text)


def bert_base_shapes() -> list[tuple[int, ...]]:
    """~200 tensors shaped like BERT-base (110M parameters).

    Example:
        >>> shapes = bert_base_shapes()
        >>> len(shapes), sum(torch.Size(s).numel() for s in shapes), shapes[0]
        (199, 109482240, (30522, 768))
    """
    shapes = [(30522, 768), (512, 768), (2, 768), (768,), (768,)]
    for _ in range(12):
        shapes += [(768, 768), (768,)] * 4 + [(768,), (768,), (3072, 768), (3072,), (768, 3072), (768,),
                                                (768,), (768,)]
    return shapes + [(768, 768), (768,)]


def step_bytes(program: str | optdsl.Program, shapes, dtype: torch.dtype = torch.float32) -> int:
    """Bytes one step of ``program`` (a zoo name or a program) must move for these parameters
    (optdsl.cost's traffic model: bf16 params with float32 states, a reduction's sweep re-reading what
    it needs): ``bytes = sum over shapes of cost(program, shape, dtype).bytes_per_step``.

    Example:
        >>> step_bytes("adamw", [(1024,)]) // 1024  # w, g, m, v read and w, m, v written: 7 x 4 bytes
        28
        >>> step_bytes("adamw", [(1024,)], torch.bfloat16) // 1024  # w, g: 2 bytes; m, v: 4 bytes
        22
    """
    from optdsl.cost import cost

    p = optdsl.load(program) if isinstance(program, str) else program
    return int(sum(cost(p, shape=s, dtype=str(dtype).removeprefix("torch.")).bytes_per_step for s in shapes))


def _model(shapes, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    params = [(torch.randn(s, generator=g) * 0.02).to(dtype) for s in shapes]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * 1e-3).to(dtype)
    return params


class _Triad:
    """The bandwidth reference: ``a = b + 0.5 c`` over as many elements as the parameters; 16 bytes
    each (two reads, one write and the read of the written line that write-allocate makes)."""

    BYTES = 16

    def __init__(self, n: int):
        self.a, self.b, self.c = torch.empty(n), torch.randn(n), torch.randn(n)

    def step(self):
        torch.add(self.b, self.c, alpha=0.5, out=self.a)


class _CompiledTorchAdamW:
    """torch.compile of torch's own foreach AdamW step (torch's recipe for a compiled optimizer)."""

    def __init__(self, params):
        self.opt = torch.optim.AdamW(params, foreach=True)
        self.step = torch.compile(self.opt.step, fullgraph=False)
        # Dynamo notes that it drops the profiler range torch wraps every step in; it is not part
        # of what is timed, and the notice opened every bench run.
        logging.getLogger("torch._dynamo.variables.ctx_manager").addFilter(_not_profiler_notice)


class _ClippedTorchAdamW:
    """torch's recipe for AdamW with gradient clipping: ``clip_grad_norm_(params, 1.0)``, then the
    step (the anchor of the generated ``clip_by_global_norm(adamw)``)."""

    def __init__(self, params, **options):
        self.params, self.opt = params, torch.optim.AdamW(params, **options)

    def step(self):
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()


def _not_profiler_notice(record: logging.LogRecord) -> bool:
    return "Profiler record function" not in record.getMessage()


def interleaved_ms(steps: list[Callable[[], object]], warmup: int, repeats: int) -> list[float]:
    """Median ms of each of ``steps``, timed round-robin so that the load of a shared machine
    falls on all of them alike (ratios stay meaningful when absolute times drift).

    Example:
        >>> order = []
        >>> ms = interleaved_ms([lambda: order.append("a"), lambda: order.append("b")], warmup=2, repeats=2)
        >>> "".join(order), len(ms)  # each one's warm-up, then the timed calls in turn
        ('aabbabab', 2)
    """
    for fn in steps:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for fn, out in zip(steps, times):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def _generated(cls, name: str, program: str) -> list[tuple]:
    """Rows for a generated optimizer class: one per backend it has, cpp (where its program has C++
    kernels: ``cls._program.backends``), compiled, eager."""
    backends = [b for b in ("compiled", "cpp") if b == "compiled" or b in cls._program.backends] + ["eager"]
    return [(f"generated {name} ({b})", lambda ps, b=b: cls(ps, backend=b), program, False) for b in backends]


def _deepspeed() -> list[tuple]:
    """DeepSpeed's CPU Adam (its AVX C++ AdamW, ZeRO-Offload's optimizer) as a row of the AdamW group,
    where the optional ``deepspeed`` package is installed (its op is compiled on first use, in the
    warm-up: 1-3 minutes here)."""
    if importlib.util.find_spec("deepspeed") is None:
        return []

    def make(params):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, adamw_mode=True)

    return [("DeepSpeed CPUAdam (adamw_mode)", make, "adamw", False)]


def _pytorch_optimizer(name: str, program: str) -> list[tuple]:
    """pytorch_optimizer's ``name`` (multi-tensor ops on a CPU too, its default) as a row of the
    group of ``program``, where that package is installed: another eager implementation of the same
    update, beside which a generated eager row shows what the generator adds. Its Lion's sign is
    torch's (0 at a nan, where the language's is nan: two passes fewer); its LAMB clamps ||w|| at 10
    and divides by ||r|| + eps; its Tiger is optdsl's without the nan guard and per-tensor
    learning rate (``optdsl.load("tiger")`` documents the difference)."""
    if importlib.util.find_spec("pytorch_optimizer") is None:
        return []

    def make(params):
        import pytorch_optimizer

        return getattr(pytorch_optimizer, name)(params)

    return [(f"pytorch_optimizer {name} (foreach)", make, program, False)]


def _ran_as(impl: str, opt) -> str:
    """``impl``, or where it names the cpp backend and ``opt``'s kernels failed to build for its
    parameters (no compiler, an unwritable extensions folder: the groups ran eager), that said.

    Example:
        >>> _ran_as("torch.optim.AdamW fused", object())
        'torch.optim.AdamW fused'
    """
    cpp = getattr(getattr(type(opt), "functional", None), "__globals__", {}).get("_CPP")
    if impl.endswith("(cpp)") and cpp is not None and cpp._failed:
        return impl.replace("(cpp)", "(cpp: the kernels did not build, so eager)")
    return impl


_FOREACH = "torch.optim.AdamW foreach"
_EAGER = ("(eager)", "(foreach)")  # the rows measured against the foreach AdamW of their group


def _groups(adamw, lion, tiger, lamb, adafactor, clipped, clip: optdsl.Program):
    """(impl, make optimizer, program for the byte count, is the anchor) per comparison group;
    ``clipped`` is the class generated from ``clip``."""
    fused = ("torch.optim.AdamW fused", lambda ps: torch.optim.AdamW(ps, fused=True), "adamw", True)
    # in every group beside the fused anchor: the eager rows' yardstick (eager target: <= foreach AdamW)
    foreach = (_FOREACH, lambda ps: torch.optim.AdamW(ps, foreach=True), "adamw", False)
    return [
        [fused, foreach, ("torch.compile(torch AdamW foreach step)", _CompiledTorchAdamW, "adamw", False),
         *_deepspeed(), *_generated(adamw, "AdamW", "adamw")],
        [fused, foreach, *_pytorch_optimizer("Lion", "lion"), *_generated(lion, "Lion", "lion")],
        # a group each: BERT-base copies fill memory
        [fused, foreach, *_pytorch_optimizer("Tiger", "tiger"), *_generated(tiger, "Tiger", "tiger")],
        [fused, foreach, *_pytorch_optimizer("Lamb", "lamb"), *_generated(lamb, "LAMB", "lamb")],
        [("torch.optim.Adafactor", lambda ps: torch.optim.Adafactor(ps), "adafactor", True),
         *_generated(adafactor, "Adafactor", "adafactor")],
        # a global reduction: every group's stage, then the norm over all of them, then the step
        # (the norm's sweep reads g once more: 32 bytes a parameter, the pairs of torch's too)
        [(f"{fused[0]} + clip_grad_norm_", lambda ps: _ClippedTorchAdamW(ps, fused=True), clip, True),
         (f"{_FOREACH} + clip_grad_norm_", lambda ps: _ClippedTorchAdamW(ps, foreach=True), clip, False),
         *_generated(clipped, "clip_by_global_norm(AdamW)", clip)],
    ]


# the full run's cases (``only`` picks by their start): memory-bound steps, and a small model's, where
# a step is dispatch and Python (issue 10's per-step overhead)
CASES = ("16x1M fp32", "BERT-base 200 tensors", "MLP 784-64-64-10 (55K)", "bf16 16x1M (AdamW)")
MLP_SHAPES = [(64, 784), (64,), (64, 64), (64,), (10, 64), (10,)]


def _repeats(case: str, quick: bool) -> tuple[int, int]:
    """(warm-up, timed) calls per step for ``case``: each case's own, whichever cases run with it."""
    if quick:
        return 2, 3
    if case.startswith("BERT"):  # 110M parameters: fewer repeats keep the run within minutes
        return 2, 9  # (5 left the median of a loaded 2-core machine swinging by 30%)
    if case.startswith("MLP"):  # steps of ~0.1-1 ms: many repeats, in well under a second per row
        return 20, 400
    return 3, 10


def run(quick: bool = False, only: list[str] | None = None) -> list[dict]:
    """The CPU suite (see the module docstring); ``quick`` uses a smaller case and fewer repeats;
    ``only`` keeps the cases whose name starts with one of them (``["16x1M"]``).

    Each group (the AdamWs, Lion, Tiger, LAMB, the Adafactors) is timed interleaved with a triad over
    the same number of elements, so that each group's load falls on a triad too; the case's bandwidth
    is the fastest of its groups' triads (one figure per case, the one its table prints), and
    ``ratio`` compares with the group's torch anchor (fused AdamW for Lion/Tiger/LAMB too, timed in
    the same group)::

        gb_s = step_bytes / ms / 1e6,   frac_of_bandwidth = gb_s / max over groups of triad GB/s,
        ratio = ms / anchor ms

    Example (slow: it builds, compiles and times every group)::

        rows = run(only=["16x1M"])
        print(markdown(rows, machine()))
    """
    if quick:
        cases = [("16x256K fp32", [(1 << 18,)] * 16)]
    else:
        chosen = list(zip(CASES, ([(1 << 20,)] * 16, bert_base_shapes(), MLP_SHAPES, [(1 << 20,)] * 16)))
        cases = [c for c in chosen if not only or any(c[0].startswith(k) for k in only)]
    names = ("adamw", "lion", "tiger", "lamb", "adafactor")
    clip = clip_by_global_norm(optdsl.load("adamw"))
    groups = _groups(*(build(optdsl.load(n), "torch") for n in names), build(clip, "torch"), clip)
    rows: list[dict] = []
    for case, shapes in cases:
        warmup, repeats = _repeats(case, quick)
        memory_bound = not case.startswith("MLP")  # 55K parameters stay in cache: GB/s would mislead
        dtype = torch.bfloat16 if case.startswith("bf16") else torch.float32
        n = sum(torch.Size(s).numel() for s in shapes)
        timed = []
        for group in groups if dtype == torch.float32 else groups[:1]:  # bf16: the AdamWs
            opts = [_Triad(n)] + [make(_model(shapes, dtype=dtype)) for _, make, _, _ in group]
            times = interleaved_ms([o.step for o in opts], warmup, repeats)
            # a row whose kernels did not build ran eager (after a RuntimeWarning): say so, not "(cpp)"
            timed.append(([(_ran_as(row[0], o), *row[1:]) for row, o in zip(group, opts[1:])], times))
            del opts
        triad_ms = min(times[0] for _, times in timed)
        bw = _Triad.BYTES * n / triad_ms / 1e6
        if memory_bound:
            rows.append({"suite": "cpu", "case": case, "impl": "triad a = b + s c (bandwidth, 16 B/elem)",
                         "ms": triad_ms, "gb_s": bw, "frac_of_bandwidth": 1.0, "ratio": None})
        for group, times in timed:
            anchor = next(ms for (_, _, _, is_anchor), ms in zip(group, times[1:]) if is_anchor)
            foreach = next((ms for (impl, _, _, _), ms in zip(group, times[1:])
                            if impl.startswith(_FOREACH)), None)
            for (impl, _, program, _), ms in zip(group, times[1:]):
                gb = step_bytes(program, shapes, dtype) / ms / 1e6 if memory_bound else None
                rows.append({"suite": "cpu", "case": case, "impl": impl, "ms": ms, "gb_s": gb,
                             "frac_of_bandwidth": gb and gb / bw, "ratio": ms / anchor,
                             "to_foreach": ms / foreach if foreach and impl.endswith(_EAGER) else None})
    return rows


NOTE = ("GB/s counts the bytes a step must move (optdsl.cost: AdamW 28 per fp32 parameter, Lion 20, "
        "LAMB 40 and AdamW with clip_by_global_norm 32: a norm takes a sweep of its own). The "
        "triad counts 16 bytes per element: its store reads the line first (write-allocate); each group is "
        "timed beside a triad, and the case's row is the fastest of them. Ratios are to "
        "torch's fused AdamW (Lion/Tiger/LAMB too; targets AdamW <= 0.95x, Lion <= 0.75x) or torch's Adafactor; "
        "an eager row's yardstick is the foreach AdamW row of its group. "
        "Groups are timed interleaved (round-robin repeats) so that a shared machine's load hits all alike.")


def cpu_name() -> str:
    """The processor's model name where Linux tells it ("AMD EPYC"), else the architecture: the
    same 2-core machine kind has come as a Xeon one day and an EPYC the next.

    Example (the value is the machine's)::

        cpu_name()  # 'AMD EPYC' on a 2-core CI machine; 'x86_64' where Linux names no model
    """
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def machine() -> str:
    """The CPU, its cores, the threads torch (and the C++ kernels) use, torch's version and the load
    average when the run started (a shared machine's other jobs take bandwidth from the benchmark).

    Example (the value is the machine's)::

        machine()  # e.g. 'AMD EPYC, 2 cores, 2 threads, torch 2.13.0+cpu, load avg 1.8'
    """
    threads = f"{torch.get_num_threads()} thread{'s' * (torch.get_num_threads() != 1)}"
    return host(f"{threads}, torch {torch.__version__}")


def host(software: str) -> str:
    """``CPU, cores, software, load average``: a CPU table's title (:func:`machine`).

    Example (the value is the machine's)::

        host("jax 0.10.2")  # e.g. 'AMD EPYC, 2 cores, jax 0.10.2, load avg 1.8'
    """
    load = f", load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{cpu_name()}, {os.cpu_count()} cores, {software}{load}"


def _cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Column names and each row's cells (ms to 3 decimals below 1 ms, where a small model's steps
    differ; the eager rows' ratio to foreach AdamW where a run has one)."""
    head = ["case", "impl", "ms/step", "GB/s", "of bandwidth", "ratio"]
    extra = any(r.get("to_foreach") is not None for r in rows)
    cells = []
    for r in rows:
        row = [r["case"], r["impl"], f"{r['ms']:.{3 if r['ms'] < 1 else 2}f}",
               "" if r["gb_s"] is None else f"{r['gb_s']:.1f}",
               "" if r["frac_of_bandwidth"] is None else f"{100 * r['frac_of_bandwidth']:.0f}%",
               "" if r["ratio"] is None else f"{r['ratio']:.2f}x"]
        cells.append(row + (["" if r.get("to_foreach") is None else f"{r['to_foreach']:.2f}x"] if extra else []))
    return head + (["to foreach AdamW"] if extra else []), cells


def markdown(rows: list[dict], title: str) -> str:
    """Rows as a Markdown table under ``title`` (ms to 2 decimals, 3 below 1 ms).

    Example:
        >>> row = {"suite": "cpu", "case": "16x1M fp32", "impl": "torch AdamW", "ms": 15.2, "gb_s": 29.4,
        ...        "frac_of_bandwidth": 1.05, "ratio": 0.97}
        >>> print(markdown([row], "cpu"))
        ### cpu
        <BLANKLINE>
        | case | impl | ms/step | GB/s | of bandwidth | ratio |
        |---|---|---|---|---|---|
        | 16x1M fp32 | torch AdamW | 15.20 | 29.4 | 105% | 0.97x |
    """
    head, cells = _cells(rows)
    lines = [f"### {title}", "", f"| {' | '.join(head)} |", "|---" * len(head) + "|"]
    return "\n".join(lines + [f"| {' | '.join(row)} |" for row in cells])


def print_table(rows: list[dict], title: str) -> None:
    """Rows as a rich table on the terminal (the cells of :func:`markdown`).

    Example:
        >>> import contextlib, io
        >>> row = {"suite": "cpu", "case": "16x1M fp32", "impl": "torch AdamW", "ms": 15.2, "gb_s": 29.4,
        ...        "frac_of_bandwidth": 1.05, "ratio": 0.97}
        >>> with contextlib.redirect_stdout(io.StringIO()) as out:
        ...     print_table([row], "cpu")
        >>> print(next(line for line in out.getvalue().splitlines() if "16x1M" in line))
        │ 16x1M fp32 │ torch AdamW │   15.20 │ 29.4 │         105% │ 0.97x │
    """
    from rich.console import Console
    from rich.table import Table

    from optdsl import tables

    table = Table(title=title)
    head, cells = _cells(rows)
    for col in head:
        table.add_column(col, justify="left" if col in ("case", "impl") else "right",
                         no_wrap=col not in ("case", "impl"))
    for row in cells:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # a pipe's 80 columns would cut the implementations' names short
        console = Console(width=150)
    tables.print_table(console, table)
