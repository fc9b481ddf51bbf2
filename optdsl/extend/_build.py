"""Small builders the extensions share: add a hyperparameter or a state, rename an input, keep
the incoming value of every state. Each returns a new Program; names come from
:func:`optdsl.ir.fresh_name`, so they never clash with what the program already binds."""

from __future__ import annotations

from dataclasses import replace

from ..checkpoints import without_declarations
from ..domains import DOMAINS, outside
from ..ir import Assign, Call, Const, Expr, Hyper, Program, State, Var, fresh_name, names_in, substitute


def call(op: str, *args) -> Call:
    """``Call`` with numbers and names lifted to ``Const`` and ``Var``.

    Example:
        >>> call("interp", "g", "m", 0.9)
        Call(op='interp', args=(Var(name='g'), Var(name='m'), Const(value=0.9)))
    """
    return Call(op, tuple(a if isinstance(a, (Call, Const, Var)) else
                          Const(float(a)) if isinstance(a, (int, float)) else Var(a) for a in args))


def checked(name: str, value, domain: str | None = None) -> float:
    """``value`` as a float, or ValueError saying what ``name`` must be (``domain``: a name of
    :data:`optdsl.domains.DOMAINS`, None for any number).

    Example:
        >>> checked("accum_steps", 0, "count")
        Traceback (most recent call last):
        ValueError: accum_steps must be a whole number >= 1, not 0
    """
    words = "a number" if domain is None else DOMAINS[domain].words
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or outside(name, value, domain):
        raise ValueError(f"{name} must be {words}, not {value!r}")
    return float(value)


class Builder:
    """Accumulates the pieces of a derived program around an ``inner`` one."""

    def __init__(self, inner: Program):
        self.inner = inner
        self.used = names_in(inner)
        self.states = list(inner.states)
        self.hypers = list(inner.hypers)
        self.new_states = list(inner.new_states)
        self.body = list(inner.body)
        self.update = inner.update
        self.prologue: list[Assign] = []  # statements that run before the inner body

    def name(self, base: str) -> str:
        """A name starting with ``base`` that the program does not use yet."""
        return fresh_name(base, self.used)

    def hyper(self, base: str, default: float, domain: str | None = None) -> Var:
        """Adds a hyperparameter with ``default``, which must lie in ``domain`` (else ValueError:
        :func:`checked`), as every value given later must (:mod:`optdsl.domains`)."""
        default = checked(base, default, domain)
        name = self.name(base)
        self.hypers.append(Hyper(name, default, domain))
        return Var(name)

    def state(self, base: str, kind="full", init="zeros", keep=False) -> Var:
        """Adds a state (next value: itself, until :meth:`next` sets one)."""
        name = self.name(base)
        self.states.append(State(name, kind, init, keep))
        self.new_states.append(Var(name))
        return Var(name)

    def next(self, state: Var, value: Expr) -> None:
        """The value ``state`` takes at the next step (names read as bound at the return)."""
        self.new_states[[s.name for s in self.states].index(state.name)] = value

    def let(self, base: str, expr: Expr, where: str = "after") -> Var:
        """A fresh name bound to ``expr``, before the inner body or after it."""
        name = self.name(base)
        stmt = Assign(name, expr)
        if where == "before":
            self.prologue.append(stmt)
        else:
            self.body.append(stmt)
        return Var(name)

    def rename_input(self, name: str, to: Var) -> None:
        """Every read of the input ``name`` (``lr`` or ``step``: never reassigned) reads ``to``."""
        sub = {name: to}
        self.body = [Assign(a.target, substitute(a.expr, sub), a.loc) for a in self.body]
        self.update = substitute(self.update, sub)
        self.new_states = [substitute(e, sub) for e in self.new_states]

    def incoming(self, names=None) -> dict[str, Var]:
        """The value each inner state (or each of ``names``) came in with, kept before the body
        may reassign it."""
        names = self.inner.state_names if names is None else names
        return {n: self.let(f"{n}_in", Var(n), "before") for n in names}

    def build(self, suffix: str, note: str) -> Program:
        """The derived program, named ``<inner>_<suffix>``, its docstring the inner one's plus ``note``."""
        inner = without_declarations(self.inner.doc)  # no longer the torch.optim optimizer it was
        doc = (inner + "\n\n" if inner else "") + note
        return replace(self.inner, name=f"{self.inner.name}_{suffix}", states=tuple(self.states),
                       hypers=tuple(self.hypers), body=tuple(self.prologue + self.body), update=self.update,
                       new_states=tuple(self.new_states), doc=doc, source=None)
