"""The IR: a program is an immutable tree of small dataclasses.

Invariants (established by :func:`optdsl.parse` and kept by every pass):
  - ``Program.body`` is straight-line: a tuple of :class:`Assign`; a name may be reassigned and a
    read sees the latest assignment above it, or the input of that name.
  - Inputs are ``w``, ``g``, ``lr``, ``step`` (1-based), the states and the hyperparameters;
    every :class:`Var` refers to an input or to an earlier assignment.
  - Every :class:`Call` names an op of :mod:`optdsl.ops` with its arity.
  - ``update`` is the value subtracted from ``w``; ``new_states[i]`` is the value of
    ``states[i]`` at the next step (the paper's ``return update, m, v``).
  - Locations (``loc``) only serve error messages and never take part in equality or hashing.

Example:
    >>> from optdsl import parse
    >>> p = parse("def sgd(w, g, lr):\\n    return lr * g\\n")
    >>> p.update
    Call(op='mul', args=(Var(name='lr'), Var(name='g')))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

INPUTS = ("w", "g", "lr", "step")
STATE_KINDS = ("full", "row", "col", "scalar")
STATE_INITS = ("zeros", "ones", "w")
START_VALUES = {"zeros": 0.0, "ones": 1.0}  # the inits that are one number (not a copy of w)


@dataclass(frozen=True, eq=False)
class Const:
    """A number. Two constants are equal when they are the same float, the sign of a zero
    included (``1 / -0.0`` is -inf), and every nan equals every nan (one value to the language)."""

    value: float

    def _key(self) -> tuple[float, ...]:
        v = float(self.value)
        return () if math.isnan(v) else (v, math.copysign(1.0, v))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Const) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True)
class Var:
    """A read of a name: an input, a state, a hyperparameter, or the latest assignment above it.

    Example:
        >>> from optdsl import parse
        >>> parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * m, m\\n").new_states
        (Var(name='m'),)
    """

    name: str


@dataclass(frozen=True)
class Call:
    """An op of :mod:`optdsl.ops` applied to argument expressions (``a + b`` is ``Call("add", ...)``).

    Example:
        >>> from optdsl import parse
        >>> parse("def f(w, g, v, lr):\\n    return lr * g / sqrt(v), v\\n").update.args[1]
        Call(op='sqrt', args=(Var(name='v'),))
    """

    op: str
    args: tuple[Expr, ...]


Expr = Const | Var | Call


@dataclass(frozen=True)
class Assign:
    """One statement ``target = expr``; ``loc`` is its ``(line, column)`` in the source, for error
    messages only (the column 0-based, as ast gives it; messages show it 1-based).

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * m, m\\n")
        >>> p.body[0]
        Assign(target='m', expr=Call(op='interp', args=(Var(name='g'), Var(name='m'), Const(value=0.9))))
        >>> p.body[0].loc
        (2, 4)
    """

    target: str
    expr: Expr
    loc: tuple[int, int] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class State:
    """Optimizer state: ``kind`` is its shape (full like w, row, col, per-tensor scalar),
    ``init`` its value at step 1 (zeros, ones, or a copy of w), and ``keep`` marks a state the
    user reads (an EMA of the weights) so dead-code removal never drops it."""

    name: str
    kind: str = "full"
    init: str = "zeros"
    keep: bool = False


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter: an argument with a numeric default, one value for every tensor, and the
    values it may take (``domain``: a name of :data:`optdsl.domains.DOMAINS`, None for any number).

    Example:
        >>> from optdsl import load
        >>> load("lion").hypers[:2]
        (Hyper(name='lr', default=0.0001, domain=None), Hyper(name='beta1', default=0.9, domain=None))
    """

    name: str
    default: float
    domain: str | None = None


@dataclass(frozen=True)
class Program:
    """One optimizer step: states, hyperparameters, a straight-line body, and the outputs
    ``update`` (``w <- w - update``) and ``new_states`` (see the module docstring's invariants).

    Example:
        >>> from optdsl import load
        >>> p = load("adamw")
        >>> p.state_names, len(p.body), p.hyper_defaults["weight_decay"]
        (('m', 'v'), 5, 0.01)
    """

    name: str
    states: tuple[State, ...]
    hypers: tuple[Hyper, ...]
    body: tuple[Assign, ...]
    update: Expr
    new_states: tuple[Expr, ...]
    doc: str = field(default="", compare=False)
    filename: str = field(default="<string>", compare=False, repr=False)
    source: str | None = field(default=None, compare=False, repr=False)
    return_loc: tuple[int, int] | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        """The program as DSL source (:func:`optdsl.printer.to_source`); ``repr`` keeps the fields.

        Example:
            >>> from optdsl import parse
            >>> print(parse("def sgd(w, g, lr=0.1):\\n    return lr * g\\n"))
            def sgd(w, g, lr=0.1):
                return lr * g
            <BLANKLINE>
        """
        from .printer import to_source  # (the printer reads this module: imported when first used)

        return to_source(self)

    @property
    def state_names(self) -> tuple[str, ...]:
        """The states' names, in signature order."""
        return tuple(s.name for s in self.states)

    @property
    def hyper_defaults(self) -> dict[str, float]:
        """``{name: default}`` of every hyperparameter (``lr`` too when it has one)."""
        return {h.name: h.default for h in self.hypers}

    @property
    def hyper_domains(self) -> dict[str, str]:
        """``{name: domain}`` of the hyperparameters that declare one (:mod:`optdsl.domains`)."""
        return {h.name: h.domain for h in self.hypers if h.domain is not None}

    def state(self, name: str) -> State:
        """The state called ``name`` (StopIteration if there is none)."""
        return next(s for s in self.states if s.name == name)

    def outputs(self) -> tuple[Expr, ...]:
        """``(update, *new_states)``: every value the step hands back."""
        return (self.update, *self.new_states)

    def with_body(self, body, update=None, new_states=None, **kw) -> Program:
        """A copy with ``body`` (and ``update``, ``new_states`` and other fields ``kw`` where given)."""
        return replace(self, body=tuple(body), update=self.update if update is None else update,
                       new_states=self.new_states if new_states is None else tuple(new_states), **kw)

    def with_lr(self, value: float) -> Program:
        """A copy whose ``lr`` is a hyperparameter defaulting to ``value``, first among them (its domain
        kept, where it declares one)."""
        lr = Hyper("lr", float(value), self.hyper_domains.get("lr"))
        return replace(self, hypers=(lr, *(h for h in self.hypers if h.name != "lr")))

    def with_exprs(self, fn: Callable[[Expr], Expr]) -> Program:
        """``fn`` applied to every statement's expression, the update and each new state's value."""
        return self.with_body([replace(a, expr=fn(a.expr)) for a in self.body], update=fn(self.update),
                              new_states=[fn(e) for e in self.new_states])

    def uses(self, name: str) -> bool:
        """Does any statement or output read the input ``name``?"""
        return any(name in free_vars(e) for e in [a.expr for a in self.body] + list(self.outputs()))


def expect_program(value) -> Program:
    """``value`` if it is a :class:`Program`, else TypeError saying how to get one (the API's
    functions take programs, not zoo names or source text).

    Example:
        >>> expect_program("sgd")
        Traceback (most recent call last):
        TypeError: expected an optdsl Program, not str: optdsl.load('sgd') for a zoo program, ...
    """
    if not isinstance(value, Program):
        name = repr(value) if isinstance(value, str) and value.isidentifier() else "name"
        raise TypeError(f"expected an optdsl Program, not {type(value).__name__}: optdsl.load({name}) "
                        "for a zoo program, optdsl.parse(text) for source")
    return value


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of ``expr``, parents before children, left to right.

    Example:
        >>> e = Call("mul", (Var("lr"), Call("sign", (Var("m"),))))  # lr * sign(m)
        >>> [n.op if isinstance(n, Call) else n.name for n in walk(e)]
        ['mul', 'lr', 'sign', 'm']
    """
    stack = [expr]  # not nested generators: the search walks every child it proposes
    while stack:
        e = stack.pop()
        yield e
        if type(e) is Call:
            stack.extend(reversed(e.args))


def free_vars(expr: Expr) -> set[str]:
    """The names ``expr`` reads.

    Example:
        >>> e = Call("mul", (Var("lr"), Call("sign", (Var("m"),))))  # lr * sign(m)
        >>> sorted(free_vars(e))
        ['lr', 'm']
    """
    out, stack = set(), [expr]
    while stack:
        e = stack.pop()
        if type(e) is Var:
            out.add(e.name)
        elif type(e) is Call:
            stack.extend(e.args)
    return out


def made_from(program: Program, names) -> set[str]:
    """``names`` and every name a statement of ``program`` binds from a value that reads one of
    them, directly or through earlier statements (a name reassigned from something else stays in).

    Example:
        >>> p = Program("f", (), (), (Assign("a", Var("m")), Assign("b", Call("add", (Var("g"), Var("a"))))),
        ...             Var("b"), ())
        >>> sorted(made_from(p, {"m"}))
        ['a', 'b', 'm']
    """
    out = set(names)
    for a in program.body:
        if free_vars(a.expr) & out:
            out.add(a.target)
    return out


def substitute(expr: Expr, mapping: dict[str, Expr]) -> Expr:
    """``expr`` with each ``Var(name)`` in ``mapping`` replaced by ``mapping[name]``.

    Example:
        >>> e = Call("mul", (Var("lr"), Call("sign", (Var("m"),))))  # lr * sign(m)
        >>> substitute(e, {"m": Var("g")})
        Call(op='mul', args=(Var(name='lr'), Call(op='sign', args=(Var(name='g'),))))
    """
    if isinstance(expr, Var):
        return mapping.get(expr.name, expr)
    if isinstance(expr, Call):
        return Call(expr.op, tuple(substitute(a, mapping) for a in expr.args))
    return expr


def map_calls(expr: Expr, fn) -> Expr:
    """Rebuild ``expr`` bottom-up, passing every rebuilt Call through ``fn``.

    Example:
        >>> e = Call("mul", (Var("lr"), Call("sign", (Var("m"),))))  # lr * sign(m)
        >>> map_calls(e, lambda c: Call("tanh", c.args) if c.op == "sign" else c)  # sign(x) -> tanh(x)
        Call(op='mul', args=(Var(name='lr'), Call(op='tanh', args=(Var(name='m'),))))
    """
    if isinstance(expr, Call):
        return fn(Call(expr.op, tuple(map_calls(a, fn) for a in expr.args)))
    return expr


def inline(program: Program) -> tuple[Expr, tuple[Expr, ...]]:
    """Outputs as single expressions over the inputs (every assignment substituted in).

    Example: for ``m = interp(g, m, 0.9); return lr * m, m`` the update is
    ``lr * interp(g, m, 0.9)`` in terms of the incoming ``m``.
    """
    env: dict[str, Expr] = {}
    for a in program.body:
        env[a.target] = substitute(a.expr, env)
    return substitute(program.update, env), tuple(substitute(e, env) for e in program.new_states)


def names_in(program: Program) -> set[str]:
    """Every name a program binds or reads (for picking fresh temporaries).

    Example:
        >>> from optdsl import load
        >>> sorted(names_in(load("sgd")))
        ['g', 'lr', 'step', 'update', 'w']
    """
    used = set(INPUTS) | set(program.state_names) | {h.name for h in program.hypers}
    for a in program.body:
        used.add(a.target)
        used |= free_vars(a.expr)
    for e in program.outputs():  # (a program a printer builds may read names it binds elsewhere)
        used |= free_vars(e)
    return used


def fresh_name(base: str, used: set[str]) -> str:
    """``base``, or ``base_1``, ``base_2``... whichever is not in ``used`` and passes the
    identifier policy (``global_norm`` -> ``global_norm_1``), and record it.

    Example:
        >>> used = {"t", "t_1"}
        >>> fresh_name("t", used), fresh_name("global_norm", used), fresh_name("m", used)
        ('t_2', 'global_norm_1', 'm')
        >>> sorted(used)
        ['global_norm_1', 'm', 't', 't_1', 't_2']
    """
    from .names import check_name  # here, not at the top: names reads the op table, which reads the IR

    name, k = base, 0
    # A printer's internal (``_fit``) starts with ``_`` on purpose: the policy is for program names.
    while name in used or (check_name(name) is not None and not base.startswith("_")):
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name
