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

import ast
import itertools
import math
import re
import textwrap
from functools import cache
from typing import ClassVar

from .ir import Call, Const, Expr, Program, Var, expect_program
from .ops import OPS


def format_number(v: float) -> str:
    """Shortest source text that reads back as the same float (``2`` for 2.0, ``1e-08``); the
    language's constants ``inf``, ``-inf`` and ``nan`` for what folding ``1 / 0`` or ``0 / 0`` gives.

    Example:
        >>> format_number(2.0), format_number(1e-08), format_number(0.5735), format_number(-math.inf)
        ('2', '1e-08', '0.5735', '-inf')
    """
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0 and math.copysign(1.0, v) < 0:
        return "-0.0"  # 1 / -0.0 is -inf: the sign is part of the value
    if float(v).is_integer() and abs(v) < 1e16:
        return str(int(v))
    return repr(float(v))


def float_literal(v: float, inf: str = 'float("inf")', nan: str = 'float("nan")') -> str:
    """``v`` as a float literal of generated code (``2.0``, ``1e-08``, ``-0.0``); IEEE's infinities
    and nan through the target's spellings ``inf`` and ``nan``.

    Example:
        >>> float_literal(2.0), float_literal(-0.0), float_literal(-math.inf, inf="jnp.inf")
        ('2.0', '-0.0', '-jnp.inf')
    """
    if math.isnan(v):
        return nan
    if math.isinf(v):
        return inf if v > 0 else "-" + inf
    if v == 0:
        return "-0.0" if math.copysign(1.0, v) < 0 else "0.0"
    text = format_number(v)
    return text if any(c in text for c in ".e") else text + ".0"


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


# --- generated code: parenthesised by Python's precedence, repeated arguments bound once ---------

ATOM = 100  # a name, a number, a call, a subscript, a parenthesised group
UNARY = 30  # -x, +x, ~x
_BINARY = {ast.Add: 10, ast.Sub: 10, ast.Mult: 20, ast.Div: 20, ast.FloorDiv: 20, ast.Mod: 20,
           ast.MatMult: 20, ast.Pow: 40, ast.BitOr: 6, ast.BitXor: 7, ast.BitAnd: 8, ast.LShift: 9,
           ast.RShift: 9}


def _precedence(node: ast.AST) -> int:
    """Python's binding strength of an expression node (higher binds tighter)."""
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)]
    if isinstance(node, ast.UnaryOp):
        return 4 if isinstance(node.op, ast.Not) else UNARY
    if isinstance(node, ast.Compare):
        return 5
    if isinstance(node, ast.BoolOp):
        return 3 if isinstance(node.op, ast.And) else 2
    if isinstance(node, (ast.IfExp, ast.Lambda, ast.NamedExpr)):
        return 1
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and node.value < 0:
        return UNARY
    return ATOM


def _needs(parent: ast.AST, child: ast.AST) -> int:
    """The precedence ``child`` must have to stand unparenthesised where it is in ``parent``."""
    if isinstance(parent, ast.BinOp):
        p = _BINARY[type(parent.op)]
        if isinstance(parent.op, ast.Pow):  # right-associative; its exponent may be unary (2 ** -x)
            return p + 1 if child is parent.left else UNARY
        return p if child is parent.left else p + 1
    if isinstance(parent, ast.UnaryOp):
        return 4 if isinstance(parent.op, ast.Not) else UNARY
    if isinstance(parent, (ast.Compare, ast.BoolOp)):
        return _precedence(parent) + 1  # comparisons would chain; keep each operand whole
    if isinstance(parent, ast.Attribute) or (isinstance(parent, (ast.Subscript, ast.Call)) and
                                               child is getattr(parent, "value", getattr(parent, "func", None))):
        return ATOM
    if isinstance(parent, ast.IfExp):
        return 2
    return 1  # a call argument, a subscript index, a list or tuple element


@cache
def template_shape(template: str) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """How a spelling template ``"jnp.where({0} != 0, {1}, {2})"`` places its arguments:
    ``(precedence of the whole, precedence each slot needs, how often each slot appears)``,
    read from Python's own parse of the template (so no printed text is ever scanned).

    Example:
        >>> template_shape("{0} + {2} * ({1} - {0})")
        (10, (11, 10, 20), (2, 1, 1))
    """
    text, n = template, 0
    while "{" + str(n) + "}" in text:
        text = text.replace("{" + str(n) + "}", f"_slot{n}")
        n += 1
    tree = ast.parse(text.replace("{{", "{").replace("}}", "}"), mode="eval").body
    needs, counts = [1] * n, [0] * n
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, ast.Name) and child.id.startswith("_slot"):
                i = int(child.id[5:])
                needs[i], counts[i] = max(needs[i], _needs(parent, child)), counts[i] + 1
    if isinstance(tree, ast.Name) and tree.id.startswith("_slot"):  # "{0}": as its argument binds
        return 0, (1,), (1,)
    return _precedence(tree), tuple(needs), tuple(counts)


@cache
def _ungrouped(template: str) -> str:
    """``template`` without parentheses around all of it (``"({0} < {1})"`` -> ``"{0} < {1}"``):
    :func:`parenthesize` adds them back only where the context needs them."""
    if template.startswith("(") and template.endswith(")"):
        inner = template[1:-1]
        try:
            same = ast.dump(ast.parse(inner, mode="eval")) == ast.dump(ast.parse(template, mode="eval"))
        except SyntaxError:  # "(a) + (b)": the first and last parentheses are not a pair
            same = False
        if same:
            return _ungrouped(inner)
    return template


class Code(str):
    """Printed code that knows how tightly it binds (``prec``, see :func:`template_shape`)."""

    prec: int = 0

    def __new__(cls, text: str, prec: int):
        self = super().__new__(cls, text)
        self.prec = prec
        return self


def precedence_of(text: str) -> int:
    """How tightly ``text`` binds: its own if it is :class:`Code`, else Python's parse of it
    (higher binds tighter: ``+`` 10, ``*`` 20, unary ``-`` 30, ``**`` 40, a name or call 100).

    Example:
        >>> precedence_of("a + b"), precedence_of("a * b"), precedence_of("-x"), precedence_of("f(x)")
        (10, 20, 30, 100)
        >>> precedence_of(Code("_t0", ATOM))
        100
    """
    if isinstance(text, Code):
        return text.prec
    return _precedence(ast.parse(text, mode="eval").body)


def parenthesize(text: str, need: int) -> Code:
    """``text`` as it may stand where precedence ``need`` is required: in parentheses if it binds
    more loosely. Example: ``parenthesize(Code("a + b", 10), 20)`` is ``(a + b)``."""
    prec = precedence_of(text)
    return Code(str(text), prec) if prec >= need else Code(f"({text})", ATOM)


class CodePrinter(Printer):
    """A printer for generated code (jax, triton), in three rules.

    - Parentheses come from precedence (:func:`parenthesize`), never from looking at text.
    - An argument a spelling uses twice (``sign``: ``where(x > 0, 1, where(x < 0, -1, x))``) is
      bound to a temporary first when it is not a name or a number, so the output grows linearly
      with nesting.
    - Subexpressions nested deeper than :attr:`max_depth` become temporaries too, so no statement
      nests more than Python's parser allows and no printer recursion runs deeper than that.

    Temporaries are named ``_t0``, ``_t1``... (program names never start with ``_``); callers
    print a statement with :meth:`statement`, or take :meth:`flush` before the line using it.
    """

    max_depth = 40
    width: int | None = None  # when set, the widest a filled template may be (see :meth:`fill`)

    def __init__(self):
        self.temps: list[tuple[str, str]] = []
        self._counter = itertools.count()

    def temp(self, text: str) -> Code:
        """A fresh temporary bound to ``text``; its name."""
        name = f"_t{next(self._counter)}"
        self.temps.append((name, str(text)))
        return Code(name, ATOM)

    def bind_temp(self, name: str, expr: Expr) -> None:
        """Hook: the temporary ``name`` now holds ``expr`` (printers that track kinds record it)."""

    def flush(self) -> list[str]:
        """The assignments of the temporaries printed since the last flush (in order)."""
        lines, self.temps = [f"{n} = {t}" for n, t in self.temps], []
        return lines

    def statement(self, target: str, expr: Expr) -> list[str]:
        """The lines computing ``target = expr``."""
        text = self.doprint(expr)
        return self.flush() + [f"{target} = {text}"]

    def doprint(self, expr: Expr) -> Code:
        return self._print(self._cut(expr))

    def _cut(self, expr: Expr) -> Expr:
        """``expr`` with every subexpression :attr:`max_depth` levels high bound to a temporary,
        deepest first, walking without recursion (a 300-term sum nests 300 levels)."""
        done: dict[int, tuple[Expr, int]] = {}
        stack: list[tuple[Expr, bool]] = [(expr, False)]
        while stack:
            node, children_done = stack.pop()
            if not isinstance(node, Call):
                done[id(node)] = (node, 0)
            elif not children_done:
                stack.append((node, True))
                stack.extend((a, False) for a in node.args)
            else:
                args = [done[id(a)] for a in node.args]
                new, height = Call(node.op, tuple(a for a, _ in args)), 1 + max(h for _, h in args)
                if height >= self.max_depth:
                    name = self.temp(self._print(new))
                    self.bind_temp(name, new)
                    new, height = Var(str(name)), 0
                done[id(node)] = (new, height)
        return done[id(expr)][0]

    def _print(self, expr: Expr) -> Code:
        out = super()._print(expr)
        return out if isinstance(out, Code) else Code(out, precedence_of(out))

    def fill(self, template: str, args) -> Code:
        """``template`` with the printed ``args`` (expressions or already printed code) placed; where
        :attr:`width` is set and the text is wider, its widest arguments become temporaries first."""
        template = _ungrouped(template)
        prec, needs, counts = template_shape(template)
        raw = []
        for a, count in zip(args, counts):
            text = self._print(a) if isinstance(a, (Const, Var, Call)) else a
            if count > 1 and isinstance(a, Call) and not str(text).isidentifier():
                text = self.temp(text)
            raw.append(text)
        texts = [parenthesize(text, need) for text, need in zip(raw, needs)]
        while self.width is not None and len(template.format(*texts)) > self.width:
            wide = [i for i, text in enumerate(raw) if len(str(text)) > 8 and not str(text).isidentifier()]
            if not wide:
                break
            k = max(wide, key=lambda i: len(str(raw[i])))
            raw[k] = self.temp(raw[k])
            texts[k] = parenthesize(raw[k], needs[k])
        if prec == 0:  # "{0}": binds as its argument does
            return Code(template.format(*texts), precedence_of(texts[0]))
        return Code(template.format(*texts), prec)

    def operands(self, expr: Call) -> list:
        """What fills ``expr``'s template: its arguments (printers that expand or convert override)."""
        return list(expr.args)

    def _print_Call(self, expr: Call) -> Code:
        template = getattr(OPS[expr.op], self.target)
        if template is None:
            raise NotImplementedError(f"{type(self).__name__} cannot print {expr.op}()")
        return self.fill(template, self.operands(expr))

    # --- per-step scalars: b ** t, b ** t - 1 and 1 - b ** t through exp/expm1 of t log(b) --------
    # In float32, ``1 - 0.999 ** step`` keeps 4 digits after cancellation and AdaX's
    # ``(1 + 1e-4) ** step - 1`` 3. With log(b) taken as log1p(b - 1) (``1 + c`` as log1p(c)) and
    # expm1 for the difference, the result is float32-accurate, as torch.optim's Python-float
    # computation is. b <= 0 keeps the op's own spelling.

    #: The target's spellings of exp, expm1, log1p and where for that rewrite (None: no rewrite).
    PRECISE: ClassVar[dict[str, str] | None] = None

    def per_step_power(self, expr: Expr) -> bool:
        """Is ``expr`` a ``power`` of per-step scalars (no tensor involved)? Printers with kinds say."""
        return False

    def _exp_of_log(self, power: Call, form: str, fallback: Code) -> Code:
        """``form`` (a PRECISE spelling) of ``t * log(b)`` where ``b > 0``, else ``fallback``; the
        log is ``log1p(b - 1)`` where ``|b - 1| <= 0.5`` (``b - 1`` exact there), ``log(b)`` further
        out, where ``b - 1`` would lose b's digits (``1e-8 - 1`` is -1 in float32: ``1e-8 ** t`` was
        0). Both logs' arguments are kept in range where ``b <= 0`` too (a where inside as well as
        out): the unselected ``log1p(-1)`` is finite then, and so is a gradient through the where
        (``jax.grad`` with respect to ``beta1`` at 0 was nan, as optax's double-where idiom avoids)."""
        b, t = power.args
        c = next((x for x, y in (b.args, b.args[::-1]) if y == Const(1.0)), None) if (
            isinstance(b, Call) and b.op == "add") else None
        positive = self.fill("{0} > 0", [b])
        where = self.PRECISE["where"]
        below = self.fill(where, [positive, c if c is not None else self.fill("{0} - 1.0", [b]), "0.0"])
        below = self.temp(below) if not str(below).isidentifier() else below  # (read twice below)
        near = self.fill("{0} <= 0.5", [self.fill(getattr(OPS["abs"], self.target), [below])])
        log = self.fill(where, [near, self.fill(self.PRECISE["log1p"], [below]),
                                self.fill(self.PRECISE["log"], [self.fill(where, [positive, b, "1.0"])])])
        fast = self.fill(form, [self.fill("{0} * {1}", [t, log])])
        return self.fill(where, [positive, fast, fallback])

    def _plain(self, expr: Call) -> Code:
        return self.fill(getattr(OPS[expr.op], self.target), self.operands(expr))

    def _print_power(self, expr: Call) -> Code:
        if self.PRECISE and self.per_step_power(expr):
            return self._exp_of_log(expr, self.PRECISE["exp"], self._plain(expr))
        return self._print_Call(expr)

    def precise_sub(self, expr: Expr) -> tuple[Call, str] | None:
        """``(b ** t, form)`` where ``expr`` is ``b ** t - 1`` or ``1 - b ** t`` of per-step scalars,
        printed as one ``expm1`` (``form``: its PRECISE spelling, negated for ``1 - b ** t``), else
        None; a printer that lays out long lines must not take the power out of such a sub."""
        if not (self.PRECISE and isinstance(expr, Call) and expr.op == "sub"):
            return None
        x, y = expr.args
        for power, one, form in ((x, y, self.PRECISE["expm1"]), (y, x, "-" + self.PRECISE["expm1"])):
            if one == Const(1.0) and self.per_step_power(power):
                return power, form
        return None

    def _print_sub(self, expr: Call) -> Code:
        found = self.precise_sub(expr)
        if found is None:
            return self._print_Call(expr)
        power, form = found
        x, y = expr.args
        spelled = [self._plain(power), y] if power is x else [x, self._plain(power)]
        return self._exp_of_log(power, form, self.fill(getattr(OPS["sub"], self.target), spelled))


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
    r'''``doc`` as a Python string literal that cannot end early: backslashes are escaped, and so is
    every quote in a run of three or more or in a run at the end; other quotes stay as written.

    Example:
        >>> print(docstring('Adam with "decoupled" weight decay, not "L2"'))
        """Adam with "decoupled" weight decay, not "L2\""""
        >>> print(docstring('three """ quotes'))
        """three \"\"\" quotes"""
    '''
    body = re.sub(r'"{3,}|"+$', lambda run: '\\"' * len(run.group()), doc.replace("\\", "\\\\"))
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
    hypers = {h.name: h for h in program.hypers}
    parts.append(_hyper(hypers["lr"]) if "lr" in hypers else "lr")
    parts += [_hyper(h) for h in program.hypers if h.name != "lr"]
    return f"def {program.name}({', '.join(parts)}):"


def _hyper(h) -> str:
    """A hyperparameter as its signature writes it: ``beta=0.9``, or ``accum_steps: count = 4``."""
    default = format_number(h.default)
    return f"{h.name}={default}" if h.domain is None else f"{h.name}: {h.domain} = {default}"


def to_source(program: Program, doc: bool = True) -> str:
    """The program as DSL source text (parses back to an equal program).

    Example:
        >>> from optdsl import load
        >>> print(to_source(load("lion"), doc=False).splitlines()[0])
        def lion(w, g, m, lr=0.0001, beta1=0.9, beta2=0.99, weight_decay=0):
    """
    printer = DslPrinter()
    lines = [_signature(expect_program(program))]
    if doc and program.doc:
        lines.append(textwrap.indent(docstring(program.doc), "    "))
    for a in program.body:
        lines.append(f"    {a.target} = {printer.doprint(a.expr)}")
    outs = ", ".join(printer.doprint(e) for e in program.outputs())
    lines.append(f"    return {outs}")
    return "\n".join(lines) + "\n"
