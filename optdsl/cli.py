"""The ``optdsl`` command. Each area registers its subcommands; errors become exit code 2.

Subcommands come from ``optdsl.commands`` (check, show, simplify, equiv, cost, zoo, ops),
``codegen.commands`` (compile, bench) and ``search.commands`` (search, report, export). Each
module exposes ``register(subparsers)`` and sets ``func`` on its parsers; ``func(args)``
returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DslError

COMMAND_MODULES = ("optdsl.commands", "codegen.commands", "search.commands")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optdsl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DslError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
