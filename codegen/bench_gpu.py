"""GPU benchmark: generated optimizers (Triton kernels, torch.compile) against torch's fused AdamW,
lion-pytorch's Triton kernel and the device's memory bandwidth.

An optimizer step is memory-bound: it must move ``bytes = sum over tensors of (reads + writes)``
(:func:`codegen.bench.step_bytes`; AdamW: 28 bytes per fp32 parameter, Lion: 20). So

    GB/s = bytes / time,    frac_of_bandwidth = GB/s / GB/s of a device-to-device copy (same run),

the copy counting the bytes it reads plus those it writes. Times are medians of
``triton.testing.do_bench`` (CUDA events; the L2 cache is cleared before each call) over whole
``opt.step()`` calls, Python overhead included. ``ratio`` = ms / the anchor's ms: torch
``AdamW(fused=True)`` for AdamW rows, lion-pytorch's Triton kernel for Lion rows (the copy when
lion-pytorch is not installed); Tiger, Adafactor and LAMB rows have no anchor (their fraction of
bandwidth says how close they come to moving only the bytes they must). Rows follow
:mod:`codegen.bench`'s format.

Run it on a CUDA machine: ``python -m codegen.bench_gpu [--quick] [--out FILE.md]`` (prints the
table; with ``--out``, replaces the ``gpu`` section of that file), or ``optdsl bench --suite gpu``.

Example:
    >>> rows = run(quick=True)  # doctest: +SKIP
    >>> rows[0]["impl"]  # doctest: +SKIP
    'device-to-device copy (bandwidth)'
"""

from __future__ import annotations

import argparse
import gc
import sys

import torch

import optdsl
from optdsl.errors import DslError

from . import build
from .bench import bert_base_shapes, check_section, markdown, step_bytes, write_section
from .generated import output_path

# the note under the table (``--out``, and ``optdsl bench --suite gpu --out FILE.md``)
NOTE = ("ms = median `opt.step()` time (CUDA events, L2 flushed); of bandwidth = (bytes the step must "
        "move / time) / device-to-device copy GB/s; ratio = ms / torch fused AdamW (AdamW rows) or, for Lion "
        "rows, lion-pytorch's Triton kernel when it is installed (a lion-pytorch row is then in the table), "
        "else the time a device copy takes to move Lion's 20 bytes per parameter.")


def machine() -> str:
    """The GPU and the software measured, for the table's title.

    Example (needs CUDA and triton)::

        machine()  # '<the GPU's name>, torch <its version>, triton <its version>'
    """
    import triton

    return (f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")


def time_ms(fn, quick: bool) -> float:
    """Median milliseconds per call of ``fn`` (CUDA events, L2 flushed between calls):
    ``triton.testing.do_bench(fn, return_mode="median")``, fewer warm-up and timed calls when ``quick``.

    Example (needs CUDA and triton)::

        x = torch.randn(1 << 20, device="cuda")
        ms = time_ms(lambda: x.mul_(1.0), quick=True)
    """
    from triton.testing import do_bench

    return do_bench(fn, warmup=10 if quick else 25, rep=40 if quick else 200, return_mode="median")


def copy_gb_s(n: int, quick: bool) -> float:
    """Device-to-device copy bandwidth over ``n`` float32 elements, bytes read plus written:
    ``GB/s = 2 * 4 * n / ms / 1e6``.

    Example (needs CUDA and triton)::

        bw = copy_gb_s(1 << 26, quick=True)  # the bandwidth rows' yardstick
    """
    src, dst = torch.randn(n, device="cuda"), torch.empty(n, device="cuda")
    ms = time_ms(lambda: dst.copy_(src), quick)
    return 2 * 4 * n / ms / 1e6


def _model(shapes, dtype=torch.float32, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    params = [torch.nn.Parameter((torch.randn(s, device="cuda", generator=g) * 0.02).to(dtype)) for s in shapes]
    for p in params:
        p.grad = (torch.randn(p.shape, device="cuda", generator=g) * 1e-3).to(dtype)
    return params


def _lion_pytorch():
    try:
        from lion_pytorch import Lion
    except ImportError:
        return None
    return lambda ps: Lion(ps, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, use_triton=True)


def kernel_only(module, params):
    """A step of the generated Triton kernels alone, without the Optimizer class's bookkeeping: a
    zero-argument function running ``_triton_group_step`` on path 0 with ``lr = 1e-4``, the step
    count going up by one per call.

    Example (needs CUDA and triton)::

        module = sys.modules[build(optdsl.load("adamw"), "triton").__module__]
        once = kernel_only(module, _model([(1 << 20,)] * 16))
        ms = time_ms(once, quick=True)
    """
    states = module.init_states(params)
    grads = [p.grad for p in params]
    hyper = {k: v for k, v in module.HYPER_DEFAULTS.items() if k != "lr"}
    step = [0]

    def once():
        step[0] += 1
        module._triton_group_step(0, params, grads, states, lr=1e-4, step=step[0], **hyper)

    return once


def cases(quick: bool) -> list[tuple[str, list[tuple[int, ...]]]]:
    """The suite's cases: ``(name, parameter shapes)``; ``quick`` uses smaller ones.

    Example:
        >>> [name for name, _ in cases(quick=True)]
        ['16x256K fp32', '1x64M fp32']
        >>> [(name, len(shapes)) for name, shapes in cases(quick=False)]
        [('16x1M fp32', 16), ('1x256M fp32', 1), ('BERT-base 200 tensors fp32', 199)]
    """
    if quick:
        return [("16x256K fp32", [(1 << 18,)] * 16), ("1x64M fp32", [(1 << 26,)])]
    return [("16x1M fp32", [(1 << 20,)] * 16), ("1x256M fp32", [(1 << 28,)]),
            ("BERT-base 200 tensors fp32", bert_base_shapes())]


def run(quick: bool = False) -> list[dict]:
    """The GPU suite (see the module docstring); [] without CUDA. Per row::

        gb_s = step_bytes / ms / 1e6,   frac_of_bandwidth = gb_s / copy GB/s,   ratio = ms / anchor ms

    Example (times every implementation on a CUDA device)::

        rows = run(quick=True)
        print(markdown(rows, machine()))
    """
    if not torch.cuda.is_available():
        return []
    programs = {n: optdsl.load(n) for n in ("adamw", "lion", *_BANDWIDTH_ONLY)}
    classes = {n: build(p, "triton") for n, p in programs.items()}
    modules = {n: _module_of(c) for n, c in classes.items()}
    lion_pt = _lion_pytorch()
    rows: list[dict] = []
    for case, shapes in cases(quick):
        n = sum(torch.Size(s).numel() for s in shapes)
        bw = copy_gb_s(max(n, 1 << 26), quick)
        copy_ms = 8 * n / bw / 1e6
        rows.append({"suite": "gpu", "case": case, "impl": "device-to-device copy (bandwidth)", "ms": copy_ms,
                     "gb_s": bw, "frac_of_bandwidth": 1.0, "ratio": None})
        bench = _Bench(rows, case, shapes, bw, quick)
        fused = bench("torch.optim.AdamW(fused=True)", lambda ps: torch.optim.AdamW(ps, fused=True), "adamw")
        rows[-1]["ratio"] = 1.0
        bench("torch.optim.AdamW(foreach=True)", lambda ps: torch.optim.AdamW(ps, foreach=True), "adamw", fused)
        bench("generated AdamW (triton)", lambda ps: classes["adamw"](ps, backend="triton"), "adamw", fused)
        bench("generated AdamW (triton kernel alone)", lambda ps: kernel_only(modules["adamw"], ps), "adamw", fused)
        bench("generated AdamW (compiled)", lambda ps: classes["adamw"](ps, backend="compiled"), "adamw", fused)
        anchor = copy_ms * 20 / 8  # Lion moves 20 bytes per parameter
        if lion_pt is not None:
            anchor = bench("lion-pytorch (triton)", lion_pt, "lion")
            rows[-1]["ratio"] = 1.0
        bench("generated Lion (triton)", lambda ps: classes["lion"](ps, backend="triton"), "lion", anchor)
        bench("generated Lion (triton kernel alone)", lambda ps: kernel_only(modules["lion"], ps), "lion", anchor)
        bench("generated Lion (compiled)", lambda ps: classes["lion"](ps, backend="compiled"), "lion", anchor)
        for name, label in _BANDWIDTH_ONLY.items():
            make = lambda ps, name=name: classes[name](ps, backend="triton")
            bench(f"generated {label} (triton)", make, name)
    return rows


# programs with no torch twin to time against: their rows give the fraction of bandwidth alone
_BANDWIDTH_ONLY = {"tiger": "Tiger", "adafactor": "Adafactor", "lamb": "LAMB"}


class _Bench:
    """Times one implementation on fresh parameters of one case and appends its row."""

    def __init__(self, rows, case, shapes, bw, quick):
        self.rows, self.case, self.shapes, self.bw, self.quick = rows, case, shapes, bw, quick

    def __call__(self, impl, make, program, anchor=None) -> float:
        params = _model(self.shapes)
        step = make(params)
        ms = time_ms(getattr(step, "step", step), self.quick)
        gb = step_bytes(program, self.shapes) / ms / 1e6
        self.rows.append({"suite": "gpu", "case": self.case, "impl": impl, "ms": ms, "gb_s": gb,
                          "frac_of_bandwidth": gb / self.bw, "ratio": None if anchor is None else ms / anchor})
        del step, params
        gc.collect()
        torch.cuda.empty_cache()
        return ms


def _module_of(cls):
    return sys.modules[cls.__module__]


def sweep(quick: bool = False) -> list[str]:
    """AdamW kernel alone at several (block, num_warps): lines of text, for choosing the default
    (``GB/s = step_bytes / ms / 1e6``). Leaves the module's config at block 2048, 8 warps.

    Example (times the kernel on a CUDA device)::

        print("\\n".join(sweep(quick=True)))  # 'sweep 1x64M fp32: block=1024 warps=4: ... ms ... GB/s'
    """
    module = _module_of(build(optdsl.load("adamw"), "triton"))
    lines = []
    for case, shapes in cases(quick)[1:]:
        for block, warps in [(1024, 4), (2048, 4), (2048, 8), (4096, 8), (8192, 16)]:
            module._TRITON.config.update(block=block, num_warps=warps)
            module._TRITON.runners.clear()
            params = _model(shapes)
            ms = time_ms(kernel_only(module, params), quick)
            gb = step_bytes("adamw", shapes) / ms / 1e6
            lines.append(f"sweep {case}: block={block} warps={warps}: {ms:.3f} ms {gb:.0f} GB/s")
            del params
    module._TRITON.config.update(block=2048, num_warps=8)
    module._TRITON.runners.clear()  # runners cached for the last swept config must not outlive it
    return lines


def main(argv=None) -> int:
    """The command line: run the suite, print its Markdown table (with ``--sweep``, the kernel's
    block sizes too) and, with ``--out FILE.md``, replace the ``gpu`` section of that file (refused
    first, exit 2, where :func:`codegen.bench.check_section` refuses); 0 also without CUDA (nothing
    run).

    Example (a shell line)::

        python -m codegen.bench_gpu --quick --sweep
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="also time the kernel's block sizes")
    ap.add_argument("--out", default=None, help="markdown file whose gpu section is replaced (default: none)")
    ap.add_argument("--force", action="store_true",
                    help="replace a section holding text the bench did not write")
    args = ap.parse_args(argv)
    if args.out is not None:
        try:  # a folder, a missing folder, an edited section: refused before the timing
            output_path(args.out)
            check_section(args.out, "gpu", args.force)
        except DslError as e:
            print(f"error: {e.render()}", file=sys.stderr)
            return 2
    rows = run(args.quick)
    if not rows:
        print("no CUDA device: nothing to run")
        return 0
    title = f"GPU: {machine()}{' (quick)' if args.quick else ''}"
    text = markdown(rows, title)
    print(text)
    if args.sweep:
        print("\n".join(sweep(args.quick)))
    if args.out is not None:
        write_section(args.out, "gpu", f"{text}\n\n{NOTE}", args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
