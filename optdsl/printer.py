"""Printers: one method per kind of node, in the style of sympy's code printers.

:class:`Printer` walks an expression; ``_print_<op>`` methods override how one op prints, and
otherwise the op table's template for ``Printer.target`` (``"torch"``, ``"jax"``, ...) is filled
with the printed arguments. Code generators subclass it; :class:`DslPrinter` prints the
language itself, so any program (from a file, a pass, an extension or the search) reads back as
source that parses to the same program.

Example:
    >>> from optdsl import parse, to_source
    >>> print(to_source(parse("def sgd(w, g, lr):\\n    return lr*(g)\\n")).strip())
    def sgd(w, g, lr):
        return lr * g
"""

from __future__ import annotations

import math
import textwrap

from .ir import Call, Const, Expr, Program, Var
from .ops import OPS


def format_number(v: float) -> str:
    """Shortest text that reads back as the same float (``2`` for 2.0, ``1e-08``)."""
    if not math.isfinite(v):
        raise ValueError(f"non-finite constant {v!r} cannot be printed as source")
    if float(v).is_integer() and abs(v) < 1e16:
        return str(int(v))
    return repr(float(v))


class Printer:
    """Expression printer driven by the op table; subclass and set ``target``."""

    target = "torch"

    def doprint(self, expr: Expr) -> str:
        return self._print(expr)

    def _print(self, expr: Expr) -> str:
        if isinstance(expr, Const):
            return self._print_Const(expr)
        if isinstance(expr, Var):
            return self._print_Var(expr)
        method = getattr(self, f"_print_{expr.op}", None)
        if method is not None:
            return method(expr)
        return self._print_Call(expr)

    def _print_Const(self, expr: Const) -> str:
        return format_number(expr.value)

    def _print_Var(self, expr: Var) -> str:
        return expr.name

    def _print_Call(self, expr: Call) -> str:
        template = getattr(OPS[expr.op], self.target)
        if template is None:
            raise NotImplementedError(f"{type(self).__name__} cannot print {expr.op}()")
        return "(" + template.format(*[self._print(a) for a in expr.args]) + ")"


class DslPrinter(Printer):
    """Prints the language: infix operators with the fewest parentheses Python needs."""

    target = "dsl"

    def _prec(self, expr: Expr) -> int:
        if isinstance(expr, Const):
            return 30 if expr.value < 0 else 100
        if isinstance(expr, Call) and OPS[expr.op].infix:
            return OPS[expr.op].precedence
        return 100

    def _print_Call(self, expr: Call) -> str:
        op = OPS[expr.op]
        if op.infix is None:
            return f"{op.name}({', '.join(self._print(a) for a in expr.args)})"
        p = op.precedence
        if op.arity == 1:
            inner = self._wrap(expr.args[0], p, strict=op.name != "not")
            sep = " " if op.infix == "not" else ""
            return f"{op.infix}{sep}{inner}"
        left, right = expr.args
        chain = p == 5  # comparisons chain in Python: keep nested ones parenthesised
        if op.name == "power":  # right-associative
            ls, rs = self._wrap(left, p, strict=True), self._wrap(right, p, strict=False)
        else:
            ls, rs = self._wrap(left, p, strict=chain), self._wrap(right, p, strict=True)
        return f"{ls} {op.infix} {rs}"

    def _wrap(self, expr: Expr, parent: int, strict: bool) -> str:
        text = self._print(expr)
        mine = self._prec(expr)
        if mine < parent or (strict and mine == parent):
            return f"({text})"
        return text


def docstring(doc: str) -> str:
    """``doc`` as a Python string literal that cannot end early (quotes and backslashes escaped)."""
    body = doc.replace("\\", "\\\\").replace('"', '\\"')
    return f'"""{body}"""' if "\n" not in body else f'"""{body}\n"""'


def _signature(program: Program) -> str:
    parts = ["w", "g"]
    for s in program.states:
        options = []
        if s.init != "zeros":
            options.append("init=" + {"ones": "1", "w": "w"}[s.init])
        if s.keep:
            options.append("keep=True")
        if s.kind == "full" and not options:
            parts.append(s.name)
        else:
            parts.append(f"{s.name}: {s.kind}" + (f"({', '.join(options)})" if options else ""))
    if program.uses("step"):
        parts.append("step")
    defaults = program.hyper_defaults
    parts.append(f"lr={format_number(defaults['lr'])}" if "lr" in defaults else "lr")
    parts += [f"{h.name}={format_number(h.default)}" for h in program.hypers if h.name != "lr"]
    return f"def {program.name}({', '.join(parts)}):"


def to_source(program: Program, doc: bool = True) -> str:
    """The program as DSL source text (parses back to an equal program).

    Example:
        >>> from optdsl import load
        >>> print(to_source(load("lion"), doc=False).splitlines()[0])
        def lion(w, g, m, lr=0.0001, beta1=0.9, beta2=0.99, weight_decay=0):
    """
    printer = DslPrinter()
    lines = [_signature(program)]
    if doc and program.doc:
        lines.append(textwrap.indent(docstring(program.doc), "    "))
    for a in program.body:
        lines.append(f"    {a.target} = {printer.doprint(a.expr)}")
    outs = ", ".join(printer.doprint(e) for e in program.outputs())
    lines.append(f"    return {outs}")
    return "\n".join(lines) + "\n"
