"""The language's subcommands: check, show, simplify, equiv, cost, zoo, ops.

``SRC`` is a zoo name (``lion``), a path, ``FILE:NAME`` for a file holding several programs, or
``-`` for standard input. Problems with a program exit 2 with ``file:line:col: message``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys

from rich.console import Console
from rich.table import Table

from .errors import DslError
from .parser import rounds_to_zero
from .printer import to_source
from .source import load, summary, zoo_names
from .tables import print_table

# a number as a program writes one (float() also takes '1_0', Arabic-Indic digits, 'nan' and spaces)
_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|inf(?:inity)?|nan)",
                     re.IGNORECASE)


def _assignments(pairs: list[str]) -> dict[str, float]:
    """``["beta1=0.95"]`` -> ``{"beta1": 0.95}`` (parsed as numbers, never evaluated)."""
    out = {}
    for pair in pairs or []:
        name, eq, value = pair.partition("=")
        if name.strip() in out:
            raise DslError(f"--set {pair!r}: {name.strip()} is already set", hint="give each name once")
        if not eq or not name.strip().isidentifier() or not _NUMBER.fullmatch(value.strip()):
            raise DslError(f"--set {pair!r}: expected NAME=NUMBER",
                           hint="a number of ASCII digits, a point and an exponent, or inf")
        out[name.strip()] = float(value)
        if math.isinf(out[name.strip()]) and "inf" not in value.lower():
            raise DslError(f"--set {pair!r}: the number does not fit in a float64 (|x| < 1.8e308)",
                           hint="write inf for infinity")
        if rounds_to_zero(value, out[name.strip()]):  # 1e-400, which a program's literal may not be
            raise DslError(f"--set {pair!r}: the number is too small for a float64: it would be 0 "
                           "(|x| >= 4.9e-324)", hint="write 0 if 0 is meant")
        if math.isnan(out[name.strip()]):  # (inf is a threshold's "off", as a default may say)
            raise DslError(f"--set {pair!r}: the value must be a number, not nan",
                           hint="with nan no two updates compare equal, so nothing can be shown")
    return out


def _shape(text: str) -> tuple[int, ...]:
    """``--shape``: sizes joined by x (``4096x4096``, ``7``, ``3x0x5``), or ``''`` for a 0-d
    parameter; ASCII digits only (``int`` also takes ``1_000`` and other scripts' digits).

    Example:
        >>> _shape("4096x4096"), _shape(""), _shape("3x0x5")
        ((4096, 4096), (), (3, 0, 5))
    """
    sizes = text.strip().lower().split("x") if text.strip() else []
    if not all(re.fullmatch(r"[0-9]+", s) for s in sizes):
        raise DslError(f"--shape {text!r}: expected whole sizes joined by x, e.g. 4096x4096 (or '' for 0-d)")
    # (a size past 19 digits is past 2^63, and int() refuses one of 4,300 digits with a traceback)
    digits = [s.lstrip("0") or "0" for s in sizes]
    shape = tuple(int(d) if len(d) <= 19 else 2 ** 63 for d in digits)
    if math.prod(shape) > 2 ** 63 - 1:
        raise DslError(f"--shape {text!r}: more elements than a tensor can hold (2^63 - 1)")
    return shape


def cmd_check(args) -> int:
    """``optdsl check SRC``: parse and validate ``SRC``, then print one ``ok:`` line.

    Example:
        >>> cmd_check(argparse.Namespace(src="adafactor"))
        ok: adafactor (11 statements, states: r, c, v)
        0
    """
    program = load(args.src)
    n = len(program.body)
    print(f"ok: {program.name} ({n} statement{'s' * (n != 1)}, states: "
          f"{', '.join(program.state_names) or 'none'})")
    return 0


def cmd_show(args) -> int:
    """``optdsl show SRC [--latex]``: print the program's source as the printer writes it (names
    kept), or its update rule as LaTeX equations.

    Example:
        >>> cmd_show(argparse.Namespace(src="sgd", latex=False))
        def sgd(w, g, lr=0.01):
            \"\"\"Plain stochastic gradient descent: w <- w - lr g (torch.optim.SGD, momentum 0).
        <BLANKLINE>
            torch.optim.SGD checkpoints: ; requires momentum=0, weight_decay=0, nesterov=False
            \"\"\"
            update = lr * g
            return update
        0
    """
    program = load(args.src)
    if args.latex:
        from .latex import to_latex

        print(to_latex(program))
    else:
        print(to_source(program), end="")
    return 0


def cmd_simplify(args) -> int:
    """``optdsl simplify SRC [--set NAME=VALUE]... [--readable [--lr LR] [--latex]]``: print the
    simplified program (hyperparameters given by ``--set`` bound first), or its readable form and
    how it equals the input.

    Example:
        >>> args = argparse.Namespace(src="lion", set=["weight_decay=0"], readable=False, lr=None,
        ...                           latex=False)
        >>> cmd_simplify(args)  # doctest: +ELLIPSIS
        def lion(w, g, m, lr=0.0001, beta1=0.9, beta2=0.99):
        ...
            update = sign(interp(g, m, beta1))
            m = interp(g, m, beta2)
            return update * lr, m
        0
    """
    from .equiv import equivalent
    from .simplify import bind, simplify

    if not args.readable and (args.lr is not None or args.latex):
        raise DslError(f"{'--lr' if args.lr is not None else '--latex'} goes with --readable",
                       hint="add --readable, or drop it")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise DslError(f"--lr {args.lr}: the learning rate must be a positive number")
    program, values = load(args.src), _assignments(args.set)
    if not args.readable:
        simplified = simplify(program, values)
        # sympy's rewrites hold over the reals (m / m -> 1): say where the result is less than exact
        try:
            verdict = equivalent(bind(program, values), simplified)
            said = [str(verdict), verdict.detail if verdict.kind != "tested" else "", verdict.counterexample]
            note = None if verdict.kind == "exact" else "the simplified program and the input are " + "\n".join(
                filter(None, said))
        except DslError as e:  # (an unguarded dim(w, 99): check accepts it, no test shape runs it)
            note = f"the simplified program is not compared with the input: {e}"
        print(to_source(simplified), end="")
        if note:
            print(f"note: {note}", file=sys.stderr)
        return 0
    from .readable import readable_within

    result = readable_within(bind(program, values), args.lr)
    print(result.source, end="")
    print(f"# equal to the input: {result.equality}")
    if args.latex:
        print(result.latex)
    return 0


def cmd_equiv(args) -> int:
    """``optdsl equiv SRC_A SRC_B [--set NAME=VALUE]... [--strict]``: decide whether the two
    programs produce the same updates and print the verdict; 0 if equal, else 1 (with ``--strict``,
    1 unless proved exactly equal).

    Example:
        >>> args = argparse.Namespace(a="adam", b="adamw", set=["weight_decay=0"], strict=False)
        >>> cmd_equiv(args)  # doctest: +ELLIPSIS
        equal (exact)
        sympy proves the update and new states equal ...
        0
    """
    from .equiv import equivalent

    result = equivalent(load(args.a), load(args.b), _assignments(args.set))
    print(result)
    if result.kind != "tested" and result.detail:  # a tested verdict already says what was run
        print(result.detail)
    if result.counterexample:
        print(result.counterexample)
    if args.strict and result.kind != "exact":
        print("--strict: not proved exactly equal")
        return 1
    return 0 if result.equal else 1


def cmd_cost(args) -> int:
    """``optdsl cost SRC [--shape RxC] [--dtype DTYPE]``: print one step's state memory, bytes moved
    and flops for a parameter of that shape (:func:`optdsl.cost.cost`) as a table.

    Example::

        optdsl cost adamw --shape 4096x4096 --dtype bfloat16
    """
    shape, program = _shape(args.shape), load(args.src)
    from .cost import cost

    report = cost(program, shape, args.dtype)
    print_table(Console(), report.table())
    return 0


def cmd_zoo(args) -> int:
    """``optdsl zoo``: print a table of the zoo's programs: states, hyperparameters with their
    defaults, and the first sentence of each docstring.

    Example::

        optdsl zoo
    """
    table = Table(title="optdsl zoo")
    for col in ("name", "states", "hyperparameters", "source"):
        table.add_column(col)
    for name in zoo_names():
        p = load(name)
        states = ", ".join(f"{s.name}:{s.kind}" if s.kind != "full" else s.name for s in p.states)
        hypers = ", ".join(f"{h.name}={h.default:g}" for h in p.hypers)
        table.add_row(name, states, hypers, summary(p.doc))
    print_table(Console(width=160), table)
    return 0


def cmd_ops(args) -> int:
    """``optdsl ops``: print the op reference (:func:`optdsl.ops.reference_table`), one op a row.

    Example:
        >>> cmd_ops(argparse.Namespace())  # doctest: +ELLIPSIS
        | function | args | shape rule | meaning |
        |---|---|---|---|
        | `x + y` | 2 | elementwise | x + y |
        ...
        0
    """
    from .ops import reference_table

    print(reference_table())
    return 0


#: What a SRC argument may be (optdsl.source).
SRC_HELP = ("a zoo name (optdsl zoo), a file, FILE:NAME for one of its programs, or - for stdin "
            "(-- -:NAME for one of its programs)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to ``sub``; each parser's ``func`` is its ``cmd_*`` handler.

    Example:
        >>> parser = argparse.ArgumentParser(prog="optdsl")
        >>> register(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["cost", "adamw", "--shape", "1024x1024"])
        >>> args.func.__name__, args.src, args.shape, args.dtype
        ('cmd_cost', 'adamw', '1024x1024', 'float32')
    """
    def add(name, func, help_):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("check", cmd_check, "validate a program (exit 0, or 2 with the error)")
    p.add_argument("src", help=SRC_HELP)
    p = add("show", cmd_show, "print a program's source as the printer writes it (or LaTeX)")
    p.add_argument("src", help=SRC_HELP)
    p.add_argument("--latex", action="store_true", help="print the update rule as LaTeX equations")
    p = add("simplify", cmd_simplify, "print the simplified program as DSL source")
    p.add_argument("src", help=SRC_HELP)
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="bind a hyperparameter")
    p.add_argument("--readable", action="store_true",
                   help="the readable form (states named m or v by role, the lr scaling folded) "
                        "and how it equals the input")
    p.add_argument("--lr", type=float, help="with --readable: the tuned learning rate to fold into lr's default")
    p.add_argument("--latex", action="store_true", help="with --readable: also print LaTeX")
    p = add("equiv", cmd_equiv, "decide whether two programs produce the same updates, and how (exit 0/1)")
    p.add_argument("a", metavar="SRC_A", help=SRC_HELP)
    p.add_argument("b", metavar="SRC_B", help="the program to compare with, the same kinds as SRC_A")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="bind a hyperparameter in both programs (default: their defaults)")
    p.add_argument("--strict", action="store_true",
                   help="exit 0 only for exact equality (not 'generic' or 'tested')")
    p = add("cost", cmd_cost, "memory, traffic and flops of one step, as a table")
    p.add_argument("src", help=SRC_HELP)
    p.add_argument("--shape", default="4096x4096",
                   help="parameter shape: sizes joined by x (default 4096x4096; 7, 3x0x5; '' for 0-d)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"],
                   help="element type of the parameter (default float32); states are kept in float32, or "
                        "float64 for float64 parameters, as the generated code keeps them")
    add("zoo", cmd_zoo, "list the zoo's programs")
    add("ops", cmd_ops, "print the op reference (the op table)")
