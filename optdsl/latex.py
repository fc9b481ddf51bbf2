r"""LaTeX: the update rule as the system of equations a paper prints.

One line per statement, in an ``aligned`` environment, then the step ``w_t = w_{t-1} - u_t``.
States read before their update carry ``t-1``, values computed this step carry ``t``
(``m_t = (1 - \beta_1) g_t + \beta_1 m_{t-1}``); a name assigned again gets a version
(``u^{(1)}_t``), as does every assignment of an input (``g^{(1)}_t = \operatorname{clip}(g_t, \pm \eta)``).
A product prints its number first (``0.46 w_{t-1}``) and ``interp`` with a constant weight as
``0.1 g_t + 0.9 m_{t-1}``.
Hyperparameters print as their usual symbols (``beta1`` -> ``\beta_1``, ``eps`` -> ``\epsilon``,
``weight_decay`` -> ``\lambda``, ``lr`` -> ``\eta``, ``step`` -> ``t``), ``x_hat`` as ``\hat{x}``,
and every op with the op table's ``latex`` template.

Example:
    >>> from optdsl import load
    >>> print(to_latex(load("sgd")))
    \begin{aligned}
    u_t &= \eta g_t \\
    w_t &= w_{t-1} - u_t
    \end{aligned}
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache

import sympy

from .ir import START_VALUES, Call, Const, Expr, Program, Var, free_vars
from .ops import OPS
from .printer import Printer, format_number
from .symbolic import expr_to_sympy, number, step_powers
from .symbolic import symbol as sympy_symbol
from .time_limit import time_limit

#: A root's argument as the language reads it, ``|x|``; printed as ``x`` where x is known >= 0.
_ROOT_OF_ABS = r"{{\left|{0}\right|}}"

GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "mu",
         "nu", "xi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega", "lambda"}
SPECIAL = {"lr": r"\eta", "eps": r"\epsilon", "weight_decay": r"\lambda", "wd": r"\lambda", "step": "t",
           "pi": r"\pi", "update": "u"}

_ADDITIVE = 10  # precedence of + and - (see the op table)
_PREFIX = 25  # an operator written before its argument, \sum x: it reaches to the end of a product
_INFIX_PREC = {"add": 10, "sub": 10, "mul": 20, "mod": 20, "neg": 30, "power": 40}


def _open_end(expr: Expr) -> str | None:
    """How the printed ``expr`` ends, where what follows it would read as part of it: ``"prefix"``
    (``\\sum g``, ``\\log|g|``: the next factor joins its argument), ``"cases"`` (a ``where``'s
    cases block: anything after it joins the last case), else None. A product ends as its last
    printed factor does (a number leads its product: see ``_print_mul``), any other template that
    ends with an argument as that argument does (``a + where(...)``, interp's ``a y``)."""
    if not isinstance(expr, Call):
        return None
    if expr.op == "where":
        return "cases"
    if expr.op in ("mul", "neg"):
        last = expr.args[0] if expr.op == "mul" and isinstance(expr.args[1], Const) else expr.args[-1]
        return _open_end(last)
    template = OPS[expr.op].latex
    if template.endswith(" {0}") or template.startswith(r"\log"):
        return "prefix"
    last = re.search(r"(?<!\{)\{(\d)\}$", template)  # (a brace-delimited {{{1}}} closes itself)
    return _open_end(expr.args[int(last.group(1))]) if last else None


def _template_prec(name: str) -> int:
    """How tightly an op's printed form binds: infix ops by the op table; a template that is a
    sum at its top level (interp) like +; an operator written before its argument (``\\sum x``)
    between a product and a power; anything delimited (brackets, \\frac, functions) is atomic."""
    if name in _INFIX_PREC:
        return _INFIX_PREC[name]
    template, depth = OPS[name].latex, 0
    for i, ch in enumerate(template):
        depth += ch in "({[" and 1 or 0
        depth -= ch in ")}]" and 1 or 0
        if depth == 0 and template[i:i + 3] in (" + ", " - "):
            return _ADDITIVE
    if template.endswith(" {0}"):
        return _PREFIX
    return 100


def symbol(name: str) -> str:
    """A name as a math symbol: ``beta1`` -> ``\\beta_1``, ``v_hat`` -> ``\\hat{v}``.

    Example:
        >>> print(symbol("beta1"), symbol("v_hat"), symbol("lr"), symbol("beta10"), symbol("rate"))
        \\beta_1 \\hat{v} \\eta \\beta_{10} \\mathrm{rate}
    """
    if name in SPECIAL:
        return SPECIAL[name]
    if name.endswith("_hat"):
        return r"\hat{" + symbol(name[:-4]) + "}"
    if name.endswith("_bar"):
        return r"\bar{" + symbol(name[:-4]) + "}"
    m = re.fullmatch(r"([A-Za-z]+)_?(\d+)", name)
    if m:
        return f"{symbol(m.group(1))}_{{{m.group(2)}}}" if len(m.group(2)) > 1 else f"{symbol(m.group(1))}_{m.group(2)}"
    if name in GREEK:
        return "\\" + name
    if len(name) == 1:
        return name
    return r"\mathrm{" + name.replace("_", r"\_") + "}"


def _with_time(sym: str, time: str) -> str:
    """Attach a time subscript: ``m`` -> ``m_t``, ``\\beta_1`` -> ``\\beta_{1,t}``; a version stays
    last where the symbol has a subscript already (``t_0^{(1)}`` -> ``t_{0,t}^{(1)}``: a second
    subscript after the version is a LaTeX error)."""
    base, version = re.fullmatch(r"(.*?)((?:\^\{\(\d+\)\})?)", sym).groups()
    m = re.fullmatch(r"(.*)_(?:\{([^}]*)\}|(\w))", base)
    if m:
        return f"{m.group(1)}_{{{m.group(2) or m.group(3)},{time}}}{version}"
    return f"{sym}_{{{time}}}" if len(time) > 1 else f"{sym}_{time}"


class LatexPrinter(Printer):
    """Prints expressions with the op table's ``latex`` templates; ``names`` maps each program
    name to its symbol at this point of the rule."""

    target = "latex"

    def __init__(self, names: dict[str, str], nonnegative: frozenset[str] = frozenset(),
                 values: dict[str, float] | None = None):
        self.names = names
        self.nonnegative = nonnegative  # program names whose value here is known >= 0 ...
        self.values = values  # ... the hyperparameters at their defaults

    def _print_Const(self, expr: Const) -> str:
        text = format_number(expr.value)
        if text in ("inf", "-inf", "nan"):
            return {"inf": r"\infty", "-inf": r"-\infty", "nan": r"\mathrm{NaN}"}[text]
        if "e" in text:
            mant, exp = text.split("e")
            exp = str(int(exp))
            return (f"{mant} \\cdot 10^{{{exp}}}" if mant not in ("1", "1.0") else f"10^{{{exp}}}")
        return text

    def _print_Var(self, expr: Var) -> str:
        return self.names[expr.name]

    def _prec(self, expr: Expr) -> int:
        if isinstance(expr, Const):
            return 30 if expr.value < 0 else 100
        if isinstance(expr, Call):
            return _template_prec(expr.op)
        return 100

    def _print_mul(self, expr: Call) -> str:
        if isinstance(expr.args[1], Const) and not isinstance(expr.args[0], Const):
            expr = Call("mul", expr.args[::-1])  # a number leads its product: 0.46 w, not w 0.46
        return self._print_Call(expr)

    def _print_interp(self, expr: Call) -> str:
        """``interp(x, y, 0.9)`` as ``0.1 x + 0.9 y``: the complement of a constant weight is a
        number too (computed in decimal, so 1 - 0.899 prints 0.101)."""
        x, y, a = expr.args
        if not isinstance(a, Const):
            return self._print_Call(expr)
        rest = Const(float(Decimal(1) - Decimal(repr(float(a.value)))))
        return self._print(Call("add", (Call("mul", (rest, x)), Call("mul", (a, y)))))

    def _print_Call(self, expr: Call) -> str:
        op = OPS[expr.op]
        args = []
        for i, a in enumerate(expr.args):
            text = self._print(a)
            # a sign after a factor or an operator reads as a subtraction: x (-g), not x -g, and
            # (1 - b) (-g), not (1 - b) -g; after a relation or a comma it reads as a sign
            before = op.latex[:op.latex.find("{" + str(i) + "}")].rstrip()
            signed = text.startswith("-") and op.name not in ("div", "where") and before.endswith(
                ("+", "-", r"\pm", "}", ")", r"\bmod"))
            if signed or self._needs_parens(op, i, a, text):
                text = r"\left(" + text + r"\right)"
            args.append(text)
        if op.name == "mul" and args[1].lstrip("{")[:1].isdigit():  # ({3}^{g} too: 2 {3}^{g} reads 23^g)
            return rf"{args[0]} \cdot {args[1]}"  # 2 \cdot 0.5 and \eta \cdot 2 g, not 2 0.5 or \eta 2 g
        template = op.latex
        if _ROOT_OF_ABS in template and known_nonnegative(expr.args[0], self.nonnegative, self.values):
            template = template.replace(_ROOT_OF_ABS, "{{{0}}}")  # sqrt(v): v >= 0, no |v| to print
        return template.format(*args)

    def _needs_parens(self, op, i: int, arg: Expr, text: str) -> bool:
        """Parenthesise an argument (printed as ``text``) that binds looser than a spot the
        template puts it in (interp's weight has two), or that ends open (:func:`_open_end`) where
        more follows it."""
        if op.name in ("div", "where"):  # \frac and cases group their parts
            return False
        return any(self._needs_parens_at(op, i, arg, text, op.latex[:at.start()].rstrip(),
                                         op.latex[at.end():].lstrip())
                   for at in re.finditer(re.escape("{" + str(i) + "}"), op.latex))

    def _needs_parens_at(self, op, i: int, arg: Expr, text: str, before: str, after: str) -> bool:
        mine = self._prec(arg)
        if (op.name == "power" and i == 0) or after.lstrip("}").startswith("^"):
            # the base of a power: TeX's braces group without showing, so {{g}^2}^2 reads g^22,
            # {2.5 \cdot 10^{-5}}^{g} 2.5 \cdot 10^{-5 g} and {-0.0}^{g} -(0^g)
            return mine < 100 or "^" in text or r"\cdot" in text or text.startswith("-") or bool(
                _open_end(arg))
        if op.name == "power":
            return False
        if before.endswith(("{", "(", "|", "[")) and after.startswith(("}", ")", r"\right", "|", ",", "]")):
            return False  # the template already delimits it
        ends = _open_end(arg)
        closed = after.startswith(("}", ")", r"\right", "|", ",", "]", "&", r"\\"))
        if ends and after and not closed and (ends == "cases" or not after.startswith(("+", "-", r"\pm"))):
            return True  # (\sum g) w, not \sum g w, which reads as sum(g w); a cases block's last case
        if op.name == "mod" and text.startswith("-"):  # (-g) mod w is not -(g mod w), as -g mod w reads
            return True
        if op.infix and op.arity == 2:
            if op.precedence <= _ADDITIVE:
                return mine < op.precedence or (i == 1 and op.name == "sub" and mine == op.precedence)
            # a product beside a \bmod reads either way: x (y \bmod z), not x y \bmod z
            other = arg.op if isinstance(arg, Call) else None
            return mine < op.precedence or (mine == op.precedence and (other != op.name or (
                i == 1 and not op.commutative)))
        if op.name == "neg":
            return mine <= 30
        return mine < (_PREFIX if _template_prec(op.name) == _PREFIX else 20)  # \sum (g w)


def known_nonnegative(expr: Expr, nonnegative: frozenset[str], values: dict | None = None) -> bool:
    """Does sympy show ``expr`` >= 0, the names in ``nonnegative`` being >= 0, those in ``values``
    those numbers, ``step`` >= 1 and the others any real (``v / (1 - 0.999 ** step)``: yes)?

    Example:
        >>> from optdsl.ir import Var
        >>> known_nonnegative(Call("add", (Call("mul", (Var("g"), Var("g"))), Var("v"))), frozenset({"v"}))
        True
    """
    names = free_vars(expr)  # (only the names it reads: the cache below then serves every build)
    bound = tuple(sorted((k, v) for k, v in (values or {}).items() if k in names))
    return _known_nonnegative(expr, nonnegative & names, bound)


@lru_cache(maxsize=4096)
def _known_nonnegative(expr: Expr, nonnegative: frozenset[str], values: tuple) -> bool:
    values = dict(values)
    try:  # (an inf value is no number sympy takes: the expression keeps its |x|)
        env = {n: number(values[n]) if n in values else sympy_symbol(n) if n == "step" else
               sympy.Symbol(n, nonnegative=True) if n in nonnegative else sympy.Symbol(n, real=True)
               for n in free_vars(expr)}
        with time_limit(1.0):
            return bool(sympy.together(step_powers(expr_to_sympy(expr, env))).is_nonnegative)
    except Exception:  # noqa: BLE001 - an expression sympy cannot place (or not in time) keeps its |x|
        return False


def nonnegative_names(program: Program, values: dict) -> list[frozenset[str]]:
    """The names known >= 0 before each statement of ``program`` and at its return
    (:func:`known_nonnegative`, hyperparameters at ``values``): lr, and the states that start at 0
    or 1 and come back >= 0 whenever they came in so (the largest such set, as
    :func:`optdsl.symbolic.nonnegative_states` finds it, one small expression at a time).

    Example:
        >>> from optdsl import load
        >>> adam = load("adam")
        >>> sorted(nonnegative_names(adam, adam.hyper_defaults)[-1])
        ['lr', 'v', 'v_hat']
    """
    states = {s.name for s in program.states if s.init in START_VALUES and START_VALUES[s.init] >= 0}
    read = _values_read(program)  # sympy only for values something reads (a 1 MB dead program took 74 s)
    while True:
        known, seen = {"lr", *states}, []
        for a, is_read in zip(program.body, read):
            seen.append(frozenset(known))
            if is_read and known_nonnegative(a.expr, frozenset(known), values):
                known.add(a.target)
            else:
                known.discard(a.target)
        seen.append(frozenset(known))
        still = {s.name for s, e in zip(program.states, program.new_states)
                 if s.name in states and known_nonnegative(e, frozenset(known), values)}
        if still == states:
            return seen
        states = still


def _values_read(program: Program) -> list[bool]:
    """Per statement: is the value it assigns read, by a later statement before its name is
    assigned again or by the return?

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, lr):\\n    t = g\\n    u = g * 2\\n    t = t + 1\\n    return lr * t\\n")
        >>> _values_read(p)
        [True, False, True]
    """
    later = set().union(*map(free_vars, program.outputs()))  # names whose value at this point is read
    read = []
    for a in reversed(program.body):
        read.append(a.target in later)
        later = (later - {a.target}) | free_vars(a.expr)
    return read[::-1]


def symbol_table(program: Program) -> dict[str, str]:
    """Every name's symbol; when two names would print alike (``wd`` and ``weight_decay`` are
    both ``\\lambda``), the later one is spelled out (inputs, hyperparameters, states first).

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, lr, wd=0.1, weight_decay=0.01):\\n    return lr * wd * weight_decay\\n")
        >>> t = symbol_table(p)
        >>> print(t["lr"], t["wd"], t["weight_decay"])
        \\eta \\lambda \\mathrm{weight\\_decay}
    """
    order = ["w", "g", "lr", "step", *(h.name for h in program.hypers), *program.state_names,
             *(a.target for a in program.body), "update"]
    table: dict[str, str] = {}
    for name in dict.fromkeys(order):
        sym = symbol(name)
        if sym in table.values():
            sym = r"\mathrm{" + name.replace("_", r"\_") + "}"
        table[name] = sym
    return table


def to_latex(program: Program) -> str:
    r"""The update rule as aligned LaTeX equations (see the module docstring).

    Example: for lion the last lines are ``m_t &= (1 - \beta_2) g_t + \beta_2 m_{t-1} \\``
    and ``w_t &= w_{t-1} - u_t``.
    """
    states = set(program.state_names)
    table = symbol_table(program)
    names: dict[str, str] = dict(table)
    names.update({"w": _with_time("w", "t-1"), "g": _with_time("g", "t"), "step": "t"})
    names.update({s: _with_time(table[s], "t-1") for s in states})
    total: dict[str, int] = {}
    for a in program.body:
        total[a.target] = total.get(a.target, 0) + 1
    update = program.update
    named = isinstance(update, Var) and update.name not in {"w", "g"} | states and (
        update.name in names or update.name in total)
    if not named and "update" in total:  # the closing u_t line is the last value of `update`
        total["update"] += 1
    for s, e in zip(program.states, program.new_states):  # so is a state's closing line
        if s.name in total and e != Var(s.name):
            total[s.name] += 1
    seen: dict[str, int] = {}
    inputs = {"w", "g", "lr", "step", *(h.name for h in program.hypers)}
    values = {h.name: h.default for h in program.hypers if h.name != "lr"}
    nonnegative = nonnegative_names(program, values)  # what a root's |x| may drop, statement by statement
    lines = []
    for i, a in enumerate(program.body):
        rhs = LatexPrinter(names, nonnegative[i], values).doprint(a.expr)
        seen[a.target] = k = seen.get(a.target, 0) + 1
        # An input assigned again always takes a version: plain g_t is the step's gradient.
        versioned = k < total[a.target] or a.target in inputs
        base = table[a.target] + (f"^{{({k})}}" if versioned else "")
        names[a.target] = lhs = _with_time(base, "t")
        lines.append(f"{lhs} &= {rhs}")
    printer = LatexPrinter(names, nonnegative[-1], values)
    if named:
        u = names[update.name]
    else:
        u = _with_time(table["update"], "t")
        lines.append(f"{u} &= {printer.doprint(update)}")
    for s, e in zip(program.states, program.new_states):
        target = _with_time(table[s.name], "t")
        value = printer.doprint(e)
        if value != target:
            lines.append(f"{target} &= {value}")
    lines.append(f"{_with_time('w', 't')} &= {_with_time('w', 't-1')} - {u}")
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


__all__ = ["LatexPrinter", "symbol", "to_latex"]
