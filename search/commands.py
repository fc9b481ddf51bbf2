"""The search's subcommands: ``optdsl search``, ``optdsl report``, ``optdsl export``.

    optdsl search [--init adamw|SRC] [--budget 10m|--evals N] [--db PATH] [--seed N]
                  [--population N] [--tournament N] [--workers N] [--executor local|ray]
                  [--ray-address ADDR] [--tasks NAMES] [--task FILE.py:FUNCTION ...]
                  [--meta-task FILE.py:FUNCTION ...] [--device auto|cpu|cuda]
    optdsl search --resume PATH [--budget ...]
    optdsl report PATH [-o DIR]             (or --db PATH, as search names it)
    optdsl export PATH --top K -o DIR       (the same)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import sys
import uuid
from dataclasses import asdict

from rich.console import Console

from codegen.generated import output_path
from optdsl.errors import DslError
from optdsl.latex import to_latex
from optdsl.printer import to_source
from optdsl.tables import print_table

from .ablation import PROXY_TOLERANCE, steps
from .evaluate import BASELINE_LRS, CANDIDATE_LRS, PASSES_PER_JOB, SCHEDULES, SEEDS, refusal
from .evolution import Search, SearchConfig
from .executors import gpu_count, make_executor
from .export import export_top, replaceable_winner, search_id, write_best
from .progress import LiveProgress, SearchConsole, summary_table
from .report import report, winner_table
from .selection import META_TOLERANCE, no_winner, verdict
from .store import Store, remove_database, schema_version
from .tasks import FACTORIES, MAX_BATCH_FACTOR, PROXY_TASKS, get_task, is_task, meta_tasks_for
from .user_task import (
    absolute_reference,
    changes,
    check_task,
    fingerprint,
    is_reference,
    located,
    split_reference,
)
from .vectorized import check_supported
from .warm_start import absolute_init, initial_program

JOB_TIMEOUT = 300.0  # seconds one job may run before its worker is killed (meta-validation is the long one)


#: The longest --budget (a search of 99999h had shown an end 11 years away; --resume goes on).
MAX_BUDGET_DAYS = 366


def parse_budget(text: str) -> float:
    """``"90s"``, ``"10m"``, ``"1h"``, ``"1h30m"`` or plain seconds -> seconds.

    Example:
        >>> parse_budget("2m"), parse_budget("1h30m"), parse_budget("45")
        (120.0, 5400.0, 45.0)
    """
    text = text.strip().lower()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    # each unit at most once, in the order h, m, s ('1m1m' is no budget); ASCII digits only
    number = r"([0-9]+(?:\.[0-9]+)?)"
    parts = re.fullmatch(f"(?:{number}h)?(?:{number}m)?(?:{number}s)?", text)
    if not text or not parts:
        raise DslError(f"--budget {text!r}: expected e.g. 90s, 10m, 1h30m", "optdsl search")
    return sum(float(v or 0) * unit for v, unit in zip(parts.groups(), (3600, 60, 1)))


def _tasks(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    names = tuple(absolute_reference(n) if is_reference(n) else n for n in names)  # a user task, by reference
    unknown = [n for n in names if not is_task(n) and not is_reference(n)]
    if unknown or not names:
        raise DslError(f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}", "optdsl search",
                       hint=f"choose from {', '.join(FACTORIES)}; NAME@F is NAME with F "
                            f"(1-{MAX_BATCH_FACTOR}) times its batch")
    return names


def _inits(text: str) -> str:
    """``--init adamw,lion,my_rule.py``: every warm start must load, be searchable and pass the
    guards (a refused one would never be trained; exit 2 otherwise, before any work); returns the
    normalised comma-separated list, each program once, a file by its absolute path.

    Example:
        >>> _inits(" lion, adamw,lion ")
        'lion,adamw'
    """
    names = list(dict.fromkeys(absolute_init(n.strip()) for n in text.split(",") if n.strip()))
    if not names:
        raise DslError("--init: no program given", "optdsl search", hint="e.g. --init adamw or --init adamw,lion")
    kept: dict[str, str] = {}  # source -> name
    for name in names:
        program = initial_program(name)
        check_supported(program)
        refused = refusal(program)
        if refused is not None:
            raise DslError(f"--init {name}: the search's guards refuse it ({refused[1]}), so it would never be "
                           "trained", "optdsl search", hint="start from a rule they accept, e.g. torch_adamw or lion")
        # each once: a repeat (lion,lion; ./rule.py,rule.py) would seed the population with copies
        kept.setdefault(to_source(program), name)
    return ",".join(kept.values())


# The whole numbers each count may be: below, nothing would run; above, the machine could not
# (a million worker processes) or SQLite could not count that far (LIMIT takes 64-bit integers).
LIMITS = {"workers": (1, 4096), "evals": (1, 2**62), "population": (1, 10**6), "tournament": (1, 10**6),
          "seed": (0, 2**63 - 1), "top": (1, 10**6), "batch": (1, 10**4)}


def _check_count(name: str, value, where: str) -> None:
    """DslError unless ``value`` is None (not given) or a whole number within ``LIMITS[name]``."""
    low, high = LIMITS[name]
    if value is not None and (type(value) is not int or not low <= value <= high):
        flag = f"--{name}" if where.startswith("optdsl") else name
        raise DslError(f"{flag} {value!r}: must be a whole number from {low} to {high}", where)


# A new search's settings from the command line (their defaults); a resumed one has them from its
# database.
_STORED = {"db": "search.sqlite", "init": SearchConfig.init, "seed": 0, "population": 32, "tournament": 4,
           "batch": SearchConfig.batch, "tasks": None, "task": None, "meta_task": None,
           "schedule": SearchConfig.schedule}


class _Given(argparse.Action):
    """Store the value (appended, for a repeatable flag) and note that the flag was given, in
    ``args.given``: ``--resume`` refuses a stored setting given at all, at its default value too
    (``--seed 0`` was silently dropped for a stored seed 5)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.const == "append":
            values = [*(getattr(namespace, self.dest) or ()), values]
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def _validate_args(args) -> None:
    """Refuse, with exit 2 and before any work, the values a command cannot run with: no
    workers, an empty population, a tournament larger than it, a non-positive budget or
    evaluation count, ``--top`` below 1, an empty ``-o``, ``report -o`` naming a file that is not a
    folder."""
    command = args.command
    _check_count("top", getattr(args, "top", None), f"optdsl {command}")
    if getattr(args, "output", None) is not None and not args.output.strip():  # an unset shell variable
        raise DslError("-o: empty path", f"optdsl {command}", hint="name the folder to write into: -o out")
    if command == "report" and args.output and os.path.exists(args.output) and not os.path.isdir(args.output):
        raise DslError("-o: exists and is not a folder; the plots are written into a folder", args.output)
    if command != "search":
        return
    for name in ("workers", "evals", "population", "tournament", "seed", "batch"):
        _check_count(name, getattr(args, name), "optdsl search")
    if args.ray_address is not None and args.executor != "ray":  # it would be ignored
        raise DslError(f"--ray-address {args.ray_address} goes with --executor ray", "optdsl search",
                       hint="add --executor ray, or drop --ray-address")
    if args.resume:  # the database's stored settings decide these: a value given here would be ignored
        given = [f"--{name.replace('_', '-')}" for name, default in _STORED.items()
                 if name in getattr(args, "given", ()) or getattr(args, name) != default]
        if given:
            raise DslError(f"--resume continues the search stored in {args.resume}, with its own settings; "
                           f"{', '.join(given)} cannot change them", "optdsl search",
                           hint="drop them, or start a new search with --db")
    if not args.resume and args.tournament > args.population:
        raise DslError(f"--tournament {args.tournament} is larger than --population {args.population}",
                       "optdsl search", hint="a tournament samples that many members of the population")
    if args.evals is None and not 0 < parse_budget(args.budget) <= MAX_BUDGET_DAYS * 86400:
        raise DslError(f"--budget {args.budget!r}: must be a time of more than 0 seconds and at most "
                       f"{MAX_BUDGET_DAYS} days", "optdsl search", hint="a longer search: --resume it")


def _stored_config(store: Store) -> SearchConfig:
    """The settings ``--resume`` continues with, checked as the command line's are (a damaged or
    hand-edited database is a DslError, not a crash halfway through)."""
    stored = store.get_meta("config")
    if stored is None:
        raise DslError("holds no search to resume: it was stopped before its search began", store.path,
                       hint="delete it and start the search again")
    try:
        config = SearchConfig.from_dict(stored)
        gone = [split_reference(r)[0] for r in (*config.tasks, *config.meta_tasks) if is_reference(r)
                and not os.path.isfile(split_reference(r)[0])]
        if gone:  # (a moved file: its scores and baseline belong to the search, so it goes back)
            raise FileNotFoundError(gone[0])
        _tasks(",".join(config.tasks))
        for name in ("population", "tournament", "seed", "batch"):
            _check_count(name, getattr(config, name), "stored")
        if config.tournament > config.population or not config.inits:
            raise ValueError("tournament larger than population, or no warm start")
        for name in ("held_out_seeds", "confirm_seeds"):
            if not all(type(s) is int and s >= 0 for s in getattr(config, name)):
                raise ValueError(f"{name} {getattr(config, name)!r} are not seeds (integers >= 0)")
        if config.schedule not in SCHEDULES:
            raise ValueError(f"schedule {config.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if type(config.loss_averse) is not bool:
            raise ValueError(f"loss_averse {config.loss_averse!r} is not true or false")
        if not set(config.hurdle_only) < set(config.tasks):  # (a fitness needs one task it counts)
            raise ValueError(f"hurdle_only {config.hurdle_only!r} are not some of its tasks")
    except FileNotFoundError as e:
        raise DslError(f"the task file {e.args[0]} of this search is gone", store.path,
                       hint="put it back at that path to resume: the search's scores are of it") from None
    except (DslError, TypeError, ValueError, KeyError, AttributeError) as e:
        reason = e.message if isinstance(e, DslError) else f"{type(e).__name__}: {e}"
        raise DslError(f"its stored search settings are unusable ({reason})", store.path) from None
    return config


def _task_lists(args) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(tasks, meta_tasks)`` from ``--tasks``, ``--task`` and ``--meta-task``: user tasks become
    absolute references (workers may start in another folder); ``--task`` without ``--tasks``
    searches on the user's tasks alone; the held-out tasks are those of the built-in proxies
    (see :func:`search.tasks.meta_tasks_for`) plus every ``--meta-task``."""
    user = tuple(absolute_reference(r) for r in args.task or ())
    builtin = _tasks(args.tasks) if args.tasks is not None else () if user else PROXY_TASKS
    held_out = tuple(absolute_reference(r, "--meta-task") for r in args.meta_task or ())
    both = sorted(set(user) & set(held_out))
    if both:  # (its held-out score would be measured on what the search trains on)
        raise DslError(f"{both[0]} is a proxy task (--task) and a held-out task (--meta-task) at once",
                       "optdsl search", hint="held out means never searched on: give --meta-task another")
    return tuple(dict.fromkeys(builtin + user)), tuple(dict.fromkeys(meta_tasks_for(builtin) + held_out))


def _device(args, files: tuple[str, ...]) -> str:
    """``--device``: ``auto`` is ``cuda`` when the executor's machines have a GPU (this machine,
    or the Ray cluster, joined here with the task ``files`` to ship), else ``cpu``; ``cuda``
    without one is refused."""
    if args.device == "cpu":
        return "cpu"
    if gpu_count(args.executor, args.ray_address, files) > 0:
        return "cuda"
    if args.device == "cuda":
        where = "in the Ray cluster" if args.executor == "ray" else "on this machine"
        raise DslError(f"--device cuda: no CUDA GPU {where}", "optdsl search", hint="use --device cpu or auto")
    return "cpu"


def _task_files(config: SearchConfig, executor: str = "local") -> tuple[str, ...]:
    """The files of the user tasks. Ray ships them to its workers as modules named after the files,
    so with ``executor`` ray two of one name in different folders are refused (DslError): a worker
    would import one for both."""
    refs = dict.fromkeys(config.tasks + config.meta_tasks)
    files = tuple(dict.fromkeys(split_reference(r)[0] for r in refs if is_reference(r)))
    names = [os.path.basename(f) for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if executor == "ray" and twice:
        named = ", ".join(f for f in files if os.path.basename(f) == twice[0])
        raise DslError(f"--executor ray ships each task file as a module named after it, and two task "
                       f"files are called {twice[0]}: {named}", hint="give the files different names")
    return files


def _check_user_tasks(config: SearchConfig, console: Console) -> dict[str, dict]:
    """Load every user task and run its first steps as the search will (exit 2 with the reason
    if one is broken: :func:`search.user_task.check_task`), before any work. Returns each one's
    :func:`~search.user_task.fingerprint`, which ``--resume`` compares with the stored one."""
    import torch

    # The time limit is checked where the jobs will run; a driver without the search's GPU
    # checks on its CPU, which says nothing about their time.
    device = config.device if config.device == "cpu" or torch.cuda.is_available() else "cpu"
    limit = JOB_TIMEOUT if device == config.device else math.inf
    copies = max(config.batch * len(SEEDS) * len(CANDIDATE_LRS), len(SEEDS) * len(BASELINE_LRS))
    prints = {}
    for ref in dict.fromkeys(config.tasks + config.meta_tasks):
        if is_reference(ref):
            console.print(f"[dim]building task {ref} ...[/dim]")  # the user's code may take a while
            task = check_task(ref, copies, limit, device, PASSES_PER_JOB)
            try:  # (it reads the batches of the middle and last steps, which the check did not)
                prints[ref] = fingerprint(task)
            except (Exception, SystemExit) as e:
                path, function = split_reference(ref)
                raise located(e, path, f"{function}(): the training loss at a later step failed") from e
            console.print(f"task {task.name}: {task.description} [dim]({ref})[/dim]")
    if not config.meta_tasks:
        console.print("no held-out tasks (--meta-task): the winner is chosen on its proxy scores alone")
    return prints


def _check_unchanged(store: Store, prints: dict[str, dict]) -> list[str]:
    """Refuse to resume a search whose task changed since it was stored (DslError): its scores and
    tuned AdamW's losses are of the task as it was. ``prints``: the user tasks' fingerprints now; a
    built-in task's is taken here, as a newer optdsl can change one. Returns the built-in tasks
    with a baseline but no stored fingerprint (an optdsl before b8f06ea kept none), which
    cannot be checked."""
    stored = store.get_meta("task_prints", {})
    if not isinstance(stored, dict) or not all(isinstance(p, dict) for p in stored.values()):
        raise DslError("setting 'task_prints' is unreadable (not a table of task fingerprints)", store.path,
                       hint="it was altered; start a new search with another --db")
    for ref, was in stored.items():
        built_in = not is_reference(ref) and is_task(ref)
        now = prints.get(ref) or (fingerprint(get_task(ref)) if built_in else None)
        if now is not None and (what := changes(was, now)):
            undo = "resume with the optdsl that began the search" if built_in else "restore the task"
            hint = f"{undo}, or start a new search with another --db"
            raise DslError(f"task {ref} changed since this search was stored ({'; '.join(what)}): its scores "
                           "and tuned AdamW's baseline are of the task as it was", store.path, hint=hint)
    return sorted(t for t in store.baselines() if t not in stored and not is_reference(t))


def cmd_search(args) -> int:
    """``optdsl search``: check the arguments (exit 2 before any work), create or ``--resume`` the
    database, run regularized evolution within the budget with live progress, then print the
    winner (scores, verdict, ablation steps, source, LaTeX) and write ``best_optimizer.py`` beside
    the database. Returns the exit code: 0, or 130 where Ctrl-C or SIGTERM stopped it (the
    winner so far is written all the same).

    Example::

        optdsl search --init adamw --budget 10m --db search.sqlite   # cmd_search(args) runs it
        optdsl search --resume search.sqlite --budget 5m
    """
    _validate_args(args)
    console = SearchConsole()
    seconds = None if args.evals else parse_budget(args.budget)
    if args.resume is not None:
        if not args.resume.strip():
            raise DslError("--resume: empty path", hint="name the search database to go on with")
        if not os.path.exists(args.resume):
            raise DslError(f"--resume: no such search database: {args.resume}")
        db = args.resume
        schema_version(db)  # a damaged or foreign file is named as such before its folder's winner is
        store = Store(db, exclusive=True)  # one search per database
        try:
            _check_best_path(db, search_id(store))  # refused now, not after the search
            config = _stored_config(store)
        except DslError:
            store.close()
            raise
        n = store.count()
        console.print(f"resuming {db}: {n} program{'s' * (n != 1)} scored so far")
        try:
            config.device = _device(args, _task_files(config, args.executor))  # scores agree across devices
            unchecked = _check_unchanged(store, _check_user_tasks(config, console))
            if unchecked:
                console.print(f"[yellow]stored by an optdsl before b8f06ea, which kept no fingerprint of "
                              f"task(s) {', '.join(unchecked)}: a task changed since (`embedding` did in "
                              "c0c9b17) would score the new programs on another task than the stored ones; "
                              "start a new search with another --db to be sure[/yellow]")
        except DslError:
            store.close()
            raise
    else:
        db = args.db
        if not db.strip():
            raise DslError("--db: empty path", hint="e.g. --db search.sqlite")
        if os.path.isdir(db):
            raise DslError("is a folder; --db names the search's database file", db,
                           hint="e.g. --db search.sqlite")
        if os.path.exists(db):
            try:
                schema_version(db)  # reads only
            except DslError as e:  # (one a newer optdsl wrote is a search database, not this one's)
                newer = "newer optdsl" in e.message
                what = "this optdsl cannot read" if newer else "is not a search database"
                raise DslError(f"already exists and {what} ({e.message})", db,
                               hint="pick another --db") from None
            with Store(db, readonly=True) as old:
                began = old.get_meta("config") is not None
            if not began:  # (a database made before its settings were written with it)
                raise DslError("already exists, stopped before its search began", db,
                               hint="delete it and run the command again")
            raise DslError(f"{db} already exists", hint=f"continue it with `optdsl search --resume {db}`, "
                           "or pick another --db")
        output_path(db)  # its folder first (a missing one is named as the database's), before any work
        config_init = _inits(args.init)
        tasks, meta_tasks = _task_lists(args)
        _check_best_path(db)  # (after the arguments' own errors: a winner left there hid them)
        config = SearchConfig(init=config_init, population=args.population, tournament=args.tournament,
                              seed=args.seed, tasks=tasks, meta_tasks=meta_tasks, schedule=args.schedule,
                              batch=args.batch)
        config.device = _device(args, _task_files(config, args.executor))
        prints = _check_user_tasks(config, console)
        # its winners name it by search_id (search.export.search_id)
        meta = {"task_prints": prints, "search_id": uuid.uuid4().hex[:8], "config": asdict(config)}
        store = Store(db, exclusive=True, meta=meta)
    try:
        executor = make_executor(args.executor, args.workers, JOB_TIMEOUT, args.ray_address, config.device,
                                 _task_files(config))
        try:
            with LiveProgress(budget_seconds=seconds, budget_evals=args.evals, console=console) as show:
                search = Search(store, config, executor, progress=show)
                search.run(evals=args.evals, seconds=seconds)
                show.live.update(summary_table(search, seconds, args.evals))
            interrupted = search.interrupted
        except KeyboardInterrupt:
            interrupted = True
        finally:
            executor.close()
    except DslError:
        # a new search that fails before it scores a program (tuning AdamW on a task that breaks at
        # step 20, an unreachable Ray cluster) leaves no database that the same command would then
        # call existing
        if args.resume is None and store.count() == 0:
            store.close()
            remove_database(db)
        raise
    if interrupted:
        console.print(f"interrupted: every finished evaluation is in the database; go on with "
                      f"optdsl search --resume {shlex.quote(db)}")
    path = _best_path(db)
    try:
        replaceable_winner(path, db, search_id(store))
    except DslError as e:  # written there while this search ran (two started in one folder at once)
        own = os.path.join(os.path.dirname(path), f"best_optimizer_{search_id(store)}.py")
        console.print(f"{path}: {e.message.split(';')[0]} now; this search's winner goes to {own}")
        path = own
    try:
        best = write_best(store, path)
    except KeyboardInterrupt:  # again, while the winner was simplified (up to a minute): not lost for that
        console.print(f"interrupted{' again' * interrupted}: the winner is written as the search found it, "
                      "not simplified")
        interrupted = True
        best = write_best(store, path, simplify=False)
    # a script tells a stopped search from one that ran its budget, and one whose reader left
    status = 141 if console.reader_gone else 130 if interrupted else 0
    if best is None:
        console.print(no_winner(store))
        store.close()
        return status
    row, program, path = best
    print_table(console, winner_table(row, next(iter(store.meta_validated()), None)))
    console.print(verdict(row, config.loss_averse))
    origin, removed = steps(store, row)
    if removed:
        console.print(f"Simplified by ablation from program #{origin['id']} (held-out {origin['meta_fitness']:+.3f}), "
                      f"each step scoring no worse than {PROXY_TOLERANCE} below its parent on the proxies "
                      f"and {META_TOLERANCE} held out (better is kept too): "
                      + "; ".join(removed))
    print(to_source(program), end="")  # plain print: source must not be re-wrapped to the terminal width
    print(f"LaTeX:\n{to_latex(program)}")
    print(f"generated optimizer: {path}")
    store.close()
    return status


def _best_path(db: str) -> str:
    """Where a search writes its winner: ``best_optimizer.py`` beside its database."""
    return os.path.join(os.path.dirname(os.path.abspath(db)), "best_optimizer.py")


def _check_best_path(db: str, search: str | None = None) -> None:
    """Refuse, before any work, a search whose winner could not be written: ``best_optimizer.py``
    is the database itself, a file optdsl did not write or another search's winner (DslError;
    ``search``: the resumed search's id, None for a new one)."""
    if os.path.abspath(db) == _best_path(db):
        raise DslError("is where the search writes its winner (best_optimizer.py beside the database)", db,
                       hint="name the database otherwise, e.g. --db search.sqlite")
    replaceable_winner(_best_path(db), db, search)


def cmd_report(args) -> int:
    """``optdsl report``: print a search's totals and best programs, read-only
    (:func:`search.report.report`); with ``-o DIR``, also write its plots there. Returns 0.

    Example::

        optdsl report search.sqlite -o report    # prints, and writes report/*.png
    """
    _validate_args(args)
    with Store(_database(args), readonly=True) as store:  # report only reads: the file is never written
        report(store, args.output, top=args.top)
    return 0


def cmd_export(args) -> int:
    """``optdsl export``: write the ``--top`` K best programs of a search as DSL files and
    generated torch/jax modules into ``-o DIR`` (:func:`search.export.export_top`), printing
    each path. Returns 0.

    Example::

        optdsl export search.sqlite --top 3 -o winners   # winners/found_<id>.py, ..._torch.py, ..._jax.py,
                                                         # winners/ranking.md
    """
    _validate_args(args)
    with Store(_database(args), readonly=True) as store:
        paths = export_top(store, args.top, args.output)
    for p in paths:
        print(p)
    found = sum(not p.endswith(("_torch.py", "_jax.py", ".md")) for p in paths)  # one DSL file per program
    if found < args.top:
        print(f"note: the search holds {found} distinct scored program{'s' * (found != 1)}, fewer than "
              f"--top {args.top}", file=sys.stderr)
    return 0


def _database_argument(parser) -> None:
    """A search's database as ``PATH`` or, as ``search`` names it, ``--db PATH`` (exactly one);
    :func:`_database` reads it."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("path", nargs="?", metavar="PATH", help="the search's SQLite file")
    which.add_argument("--db", metavar="PATH", help="the same, named as `optdsl search` names it")


def _database(args) -> str:
    return args.path if args.path is not None else args.db


def register(subparsers) -> None:
    """Add the ``search``, ``report`` and ``export`` subcommands to ``subparsers``; each parser's
    ``func`` is its handler (:func:`cmd_search`, :func:`cmd_report`, :func:`cmd_export`).

    Example:
        >>> parser = argparse.ArgumentParser(prog="optdsl")
        >>> register(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["search", "--evals", "50"])
        >>> args.func is cmd_search, args.evals, args.population, args.tournament, args.db
        (True, 50, 32, 4, 'search.sqlite')
        >>> parser.parse_args(["export", "search.sqlite", "-o", "winners"]).top
        3
    """
    p = subparsers.add_parser("search", help="evolutionary search for new update rules",
                              description="Regularized evolution from a warm start (AdamW by default), "
                                          "scored on small proxy training tasks against tuned AdamW.")
    p.add_argument("--init", action=_Given, default=_STORED["init"], metavar="NAMES",
                   help="warm start(s), comma-separated: torch_adamw (default: AdamW with bias correction, "
                        "as torch defines it), adamw (the paper's AdamW program, with eps), paper_adamw "
                        "(the paper's listing, no eps), another zoo name, or a DSL file")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget", default="10m",
                        help="wall-clock budget of the evolution, e.g. 90s, 10m, 1h (default 10m), tuning "
                             "AdamW on the tasks first included (it and the warm start's first evaluation "
                             "run to their end however long a slow task of your own makes them); the last "
                             "held-out checks and the winner's ablation run after it (up to 3.5 minutes "
                             "more)")
    budget.add_argument("--evals", type=int, metavar="N",
                        help="stop after N evaluations of the evolution instead (children, the guards' "
                             "refusals included; the winner's held-out checks and ablation come on top)")
    p.add_argument("--db", action=_Given, default=_STORED["db"], metavar="PATH",
                   help="SQLite file (default search.sqlite); the winner's torch optimizer is written "
                        "beside it, best_optimizer.py")
    p.add_argument("--seed", action=_Given, type=int, default=_STORED["seed"], metavar="N",
                   help="seed of the search's random choices (default 0)")
    p.add_argument("--population", action=_Given, type=int, default=_STORED["population"], metavar="N",
                   help="population size (default 32)")
    p.add_argument("--tournament", action=_Given, type=int, default=_STORED["tournament"], metavar="N",
                   help="tournament size (default 4)")
    p.add_argument("--workers", type=int, metavar="N", help="parallel evaluations (default: all cores)")
    p.add_argument("--batch", action=_Given, type=int, default=_STORED["batch"], metavar="N",
                   help="children trained together in one job, one forward and backward pass of each task "
                        "serving them all (default 8)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: worker processes on this machine (default); "
                        "ray: a Ray cluster (the ray extra)")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: start a local one)")
    p.add_argument("--tasks", action=_Given, metavar="NAMES",
                   # the lists spaced so that --help wraps them between names, not inside one
                   help=f"comma-separated proxy tasks (default {','.join(PROXY_TASKS)}; "
                        f"all: {', '.join(FACTORIES)}; NAME@F: F times NAME's batch, e.g. mlp@64)")
    p.add_argument("--task", action=_Given, const="append", metavar="FILE.py:FUNCTION",
                   help="your own task: FUNCTION() returns a search Task (search.task_from_module); repeatable; "
                        "alone, the search runs on your tasks only, with --tasks on both")
    p.add_argument("--meta-task", action=_Given, const="append", metavar="FILE.py:FUNCTION",
                   help="your own held-out task for meta-validation (repeatable)")
    p.add_argument("--schedule", action=_Given, choices=SCHEDULES, default=_STORED["schedule"],
                   help="the learning rate over each task's steps, for every candidate and tuned AdamW "
                        "alike: cosine (default: a decay to 0, as real training mostly runs) or constant")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where evaluations and AdamW baselines run (default auto: cuda when there is a GPU)")
    p.add_argument("--resume", metavar="PATH", help="continue the search stored in PATH")
    p.set_defaults(func=cmd_search)

    r = subparsers.add_parser("report", help="print a search's best programs and plot its progress",
                              description="Print a search's best programs and plot its progress.")
    _database_argument(r)
    r.add_argument("-o", "--output", metavar="DIR", help="write PNG plots here")
    r.add_argument("--top", type=int, default=5, help=argparse.SUPPRESS)
    r.set_defaults(func=cmd_report)

    e = subparsers.add_parser("export", help="write a search's winners as DSL files and torch/jax modules",
                              description="Write a search's winners as DSL files and torch/jax modules.")
    _database_argument(e)
    e.add_argument("--top", type=int, default=3, metavar="K",
                   help="how many programs, best first as `report` ranks them (default 3)")
    e.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="folder to write into (created if missing)")
    e.set_defaults(func=cmd_export)
