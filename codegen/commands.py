"""The code generator's subcommands: ``compile`` and ``bench``.

    optdsl compile SRC --target torch|triton|jax [-o OUT.py [--force]]   (stdout without -o)
    optdsl bench [--quick] [--suite cpu|jax|gpu|all] [--case NAME ...] [--out FILE.md [--force]]

``compile`` writes atomically (a temporary file, then a rename): OUT is never half-written; a
symlink is written through; a folder or device at OUT, the program's own file, a name that would
hide a library the module imports (``torch.py``) and (without ``--force``) a file that is not a
module optdsl generated (a user's, or a program ``export`` wrote) or one edited since optdsl wrote it
(its last line, a SHA-256 of the text above, no longer matches) are refused (exit 2).
``bench`` prints each suite as a table; with ``--out`` it also replaces that suite's section of the
file (a plain run leaves the tracked docs/benchmarks.md alone).
"""

from __future__ import annotations

import importlib
import os
import sys

import codegen
from codegen import TARGETS
from optdsl.source import file_and_name, load

SUITES = {"cpu": "codegen.bench", "jax": "codegen.bench_jax", "gpu": "codegen.bench_gpu"}


def cmd_compile(args) -> int:
    """``optdsl compile``: the generated module of ``args.src`` for ``args.target``, on stdout or
    written atomically to ``args.out`` (refused, DslError, where the module docstring says). Returns 0.

    Example (what ``optdsl compile sgd --target torch -o sgd.py`` runs):
        >>> import argparse, tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = os.path.join(d, "sgd.py")
        ...     code = cmd_compile(argparse.Namespace(src="sgd", target="torch", out=out, force=False))
        ...     with open(out) as f:
        ...         classes = [line for line in f if line.startswith("class SGD")]
        >>> code, classes
        (0, ['class SGD(_Optimizer):\\n'])
    """
    from optdsl.errors import DslError

    from .generated import replaceable_path, stamped, write_atomic

    if args.out == "":
        raise DslError("-o: an empty file name", hint="name the file to write, or leave -o out for stdout")
    if args.out == "-":  # as for the input: stdout, not a file named "-"
        args.out = None
    if args.out:
        source, _ = file_and_name(args.src)
        if os.path.isfile(source) and os.path.isfile(args.out) and os.path.samefile(source, args.out):
            raise DslError("is the program being compiled; refusing to replace it", args.out,
                           hint="write the generated module to another file")
        # a folder, a device, a missing folder, a file of the user's: refused before any work
        replaceable_path(args.out, force=args.force, module=True,
                         hint="move it away, write to another file, or pass --force")
    text = stamped(codegen.emit(load(args.src), args.target))  # (stdout too: a redirect is a file)
    if args.out:
        _check_not_shadowing(args.out, text)
        write_atomic(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _check_not_shadowing(path: str, text: str) -> None:
    """DslError where the module written to ``path`` would be imported in place of a library it
    imports itself (``-o torch.py``: ``import torch`` in that folder finds the file, a circular import)."""
    import ast

    from optdsl.errors import DslError

    from .generated import imported_modules

    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in {name for name, _ in imported_modules(ast.parse(text))}:
        raise DslError(f"would hide the module {stem} that the generated code imports (import {stem} "
                       "there would find this file)", path, hint="give the file another name")


def cmd_bench(args) -> int:
    """``optdsl bench``: run each chosen suite (``args.suite``; ``args.case`` picks cpu cases), print
    its table and, with ``args.out``, replace that suite's section of the file. Returns 0; a suite
    whose module cannot be imported (jax missing) is skipped with a message.

    Shell: ``optdsl bench --quick --suite cpu --out bench.md`` (the tracked docs/benchmarks.md has
    notes in its sections: ``--force`` replaces them). The arguments are checked before any timing.

    Example:
        >>> import argparse
        >>> args = argparse.Namespace(suite="jax", case=["16x1M"], quick=True, out=None)
        >>> cmd_bench(args)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        optdsl.errors.DslError: --case picks cases of the cpu suite, not of --suite jax; drop --case, ...
    """
    import torch

    from optdsl.errors import DslError

    from .bench import CASES, check_section, markdown, print_table, write_section
    from .generated import output_path

    suites = list(SUITES) if args.suite == "all" else [args.suite]
    if args.case and suites != ["cpu"]:
        raise DslError(f"--case picks cases of the cpu suite, not of --suite {args.suite}",
                       hint="drop --case, or use --suite cpu")
    if args.case and args.quick:
        raise DslError("--quick runs its own small case (16x256K), not the cases --case names",
                       hint="drop --quick to time the named cases, or --case for the quick run")
    unknown = [c for c in args.case or [] if not c or not any(known.startswith(c) for known in CASES)]
    if unknown:  # ("" starts every name: an empty --case from a script's unset variable is no choice)
        raise DslError(f"--case {unknown[0] or repr('')}: no such case",
                       hint=f"the cpu suite's cases: {', '.join(CASES)}")
    if suites == ["gpu"] and not torch.cuda.is_available():
        raise DslError("--suite gpu: no CUDA GPU on this machine",
                       hint="run it where torch.cuda.is_available()")
    if args.out is not None:
        output_path(args.out)  # a folder, a device, a missing folder: refused before minutes of timing
        for suite in suites:
            check_section(args.out, suite, args.force)
    for suite in suites:
        try:
            module = importlib.import_module(SUITES[suite])
        except ModuleNotFoundError as e:
            if e.name != SUITES[suite]:
                raise
            print(f"suite {suite}: {SUITES[suite]} is not available", file=sys.stderr)
            continue
        rows = module.run(quick=args.quick, **({"only": args.case} if args.case else {}))
        if not rows:
            print(f"suite {suite}: nothing to run here", file=sys.stderr)
            continue
        title = f"{suite}{' (quick)' if args.quick else ''}: {module.machine()}"
        print_table(rows, title)
        if args.out is not None:
            note = getattr(module, "NOTE", "")
            text = markdown(rows, title) + (f"\n\n{note}" if note else "")
            write_section(args.out, suite, text, args.force)
    return 0


def register(subparsers) -> None:
    """Add the ``compile`` and ``bench`` subcommands to ``subparsers`` (``args.func`` runs one).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="optdsl")
        >>> register(parser.add_subparsers())
        >>> args = parser.parse_args(["compile", "lion", "--target", "jax"])
        >>> args.func is cmd_compile, args.target, args.out
        (True, 'jax', None)
    """
    p = subparsers.add_parser("compile", help="generate a standalone optimizer module",
                              description="Generate a standalone optimizer module.")
    p.add_argument("src", help="zoo name, file, FILE:NAME or -")
    p.add_argument("--target", choices=sorted(TARGETS), default="torch",
                   help="torch: a torch.optim.Optimizer module (default); jax: an optax transformation; "
                        "triton: the torch module with a fused Triton kernel for GPUs")
    p.add_argument("-o", "--out", help="output file (default, or -: stdout)")
    p.add_argument("--force", action="store_true", help="replace OUT even when optdsl did not write it")
    p.set_defaults(func=cmd_compile)
    b = subparsers.add_parser("bench", help="time generated optimizers against the anchors",
                              description="Time generated optimizers against the anchors.")
    b.add_argument("--quick", action="store_true", help="smaller cases, fewer repeats")
    b.add_argument("--suite", choices=[*SUITES, "all"], default="cpu",
                   help="cpu (default), gpu (needs CUDA), jax (needs the jax extra) or all")
    b.add_argument("--case", action="append",
                   help="cpu suite: run only the cases whose name starts so (16x1M, BERT, MLP, bf16); "
                        "repeatable")
    b.add_argument("--out", default=None,
                   help="markdown file whose section of each suite is replaced, or appended (default: none)")
    b.add_argument("--force", action="store_true",
                   help="replace a section even where it holds text the bench did not write there")
    b.set_defaults(func=cmd_bench)
