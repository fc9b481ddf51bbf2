"""The ``optdsl`` command. Each area registers its subcommands; errors become exit code 2.

Subcommands come from ``optdsl.commands`` (check, show, simplify, equiv, cost, zoo, ops),
``codegen.commands`` (compile, bench) and ``search.commands`` (search, report, export). Each
module exposes ``register(subparsers)`` and sets ``func`` on its parsers; ``func(args)``
returns the exit code.

Exit status: 0 done; 1 a negative answer (``equiv``: not equivalent); 2 bad input, a bad
command line or a file the command cannot use (one ``error:`` line on stderr, never a
traceback); 130 stopped by Ctrl-C or SIGTERM, which are handled alike (SIGTERM is turned into
Ctrl-C's KeyboardInterrupt); 141 when stdout's reader has gone (``| head``). A search stops on
Ctrl-C or SIGTERM as at the end of its budget: finished evaluations are kept and
``best_optimizer.py`` is written; the exit status is 130 all the same.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading

from .errors import DslError

COMMAND_MODULES = ("optdsl.commands", "codegen.commands", "search.commands")
DESCRIPTION = ("Optimizers as small symbolic programs: check, simplify and compare them, compile them to "
               "torch, Triton or optax, and discover new ones by evolutionary search. Exit status: 0 "
               "done, 1 a negative answer (equiv), 2 bad input, 130 interrupted.")


def make_parser() -> argparse.ArgumentParser:
    """The ``optdsl`` argument parser, with the subcommands of every module of ``COMMAND_MODULES``
    (all three ship in this package, so each is imported unconditionally).

    Example:
        >>> args = make_parser().parse_args(["equiv", "adam", "adamw", "--set", "weight_decay=0"])
        >>> args.func.__name__, args.a, args.b, args.set
        ('cmd_equiv', 'adam', 'adamw', ['weight_decay=0'])
    """
    parser = argparse.ArgumentParser(prog="optdsl", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """While active, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so ``kill PID`` (or a job
    scheduler's stop) unwinds the same cleanup: workers stopped, results kept, files closed. The
    previous handler is restored after (``main`` may run inside a test or another program).
    Only the main thread can set handlers; elsewhere this does nothing.

    Example:
        >>> with sigterm_as_ctrl_c():
        ...     try:
        ...         signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # what `kill PID` runs
        ...     except KeyboardInterrupt:
        ...         print("KeyboardInterrupt, as from Ctrl-C")
        KeyboardInterrupt, as from Ctrl-C
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run ``optdsl ARGV``; returns the exit status (see the module docstring).

    Example:
        >>> main(["check", "lion"])
        ok: lion (3 statements, states: m)
        0
    """
    with sigterm_as_ctrl_c():
        try:  # the parser imports torch and the search (~2 s): a Ctrl-C then is an interruption too
            args = make_parser().parse_args(argv)
            return int(args.func(args) or 0)
        except DslError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # `optdsl ops | head -1`: the reader left; exit as tools killed by SIGPIPE
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return 141
        except SystemExit as e:
            # rich's console meets a broken pipe (`optdsl zoo | true`) with SystemExit(1), its stdout
            # already on devnull; 1 means "not equivalent" in this CLI
            if e.code == 1 and isinstance(e.__context__, BrokenPipeError):
                return 141
            raise
        except OSError as e:  # the system refused a file operation: the user's to fix, not a bug
            # a full disk with no file named: a write to an open stream, standard output (`> /dev/full`)
            full = not e.filename and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            where = f"{e.filename}: " if e.filename else "writing the output: " * full
            print(f"error: {where}{e.strerror or e}" + "; free some space or write elsewhere" * full,
                  file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
