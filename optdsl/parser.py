"""Source text -> :class:`~optdsl.ir.Program`, through the standard library's ``ast``; never executed.

The accepted subset reads like the listings of the search paper::

    def lion(w, g, m, lr, beta1=0.9, beta2=0.99, weight_decay=0.0):
        \"\"\"Lion (Chen et al. 2023).\"\"\"
        update = sign(interp(g, m, beta1)) + weight_decay * w
        update = update * lr
        m = interp(g, m, beta2)
        return update, m

Signature: ``w``, ``g``, ``lr`` and ``step`` (1-based) are inputs; every other argument without a
default is a state, every argument with a numeric default a hyperparameter. A state's
annotation gives its shape and first value: ``m`` (zeros like w), ``r: row``, ``c: col``,
``s: scalar``, ``slow: full(init=w)``, ``u: full(init=1)``, ``ema: full(init=w, keep=True)``. A
hyperparameter's annotation names the values it may take (:mod:`optdsl.domains`):
``accum_steps: count = 4``, ``max_norm: positive = 1.0``.

Body: assignments (one name on the left; nested expressions allowed; any name, inputs included,
may be assigned again, as in the paper's ``lr = lr * 0.001``, and a read sees the latest value),
``+=``-style updates, ``if``/``else`` (lowered to ``where``, so a shape test such as ``ndim(w) >= 2`` is resolved per
parameter and a step test such as ``step % k == 0`` becomes a select), and one final
``return update, <new value of each state, in signature order>``.

Limits, each a located DslError: names follow :mod:`optdsl.names`; a number written in the
source must be a finite float64 (arithmetic on numbers follows IEEE: ``1 / 0`` is ``inf``);
an expression nests at most :data:`MAX_DEPTH` (64) levels; the text holds no NUL and no lone
surrogate, and a docstring no control character other than newline and tab.
"""

from __future__ import annotations

import ast
import inspect
import io
import math
import re
import sys
import tokenize
import unicodedata
import warnings

from .domains import DOMAINS, outside
from .errors import DslError
from .ir import (
    INPUTS,
    STATE_INITS,
    STATE_KINDS,
    Assign,
    Call,
    Const,
    Expr,
    Hyper,
    Program,
    State,
    Var,
    fresh_name,
)
from .names import check_name, suggest
from .ops import CONSTANTS, OPS
from .passes.fold import constant
from .typecheck import validate

#: Inputs that the machinery around a program reads as well: ``w`` is the parameter (its shape
#: decides shape facts; the step ends with ``w - update``), extensions rename every read of
#: ``lr`` and ``step`` (a schedule, accumulation). An assignment to one of them in the body
#: binds a fresh local instead (``lr = lr * 0.001`` -> ``lr_1 = lr * 0.001``), so the IR never
#: reassigns them; ``g``, states and hyperparameters are plain values, reassigned in place.
RENAMED = ("w", "lr", "step")

#: The deepest expression a program may hold: ample for any update rule (the zoo's deepest is
#: 10 levels), and far from what recursive stages (printers, sympy, black) can walk.
MAX_DEPTH = 64

# A NUL or a lone surrogate in the text itself (possible in a str handed to parse()), or a
# bidirectional-text control: it makes a line display in another order than it parses ("Trojan
# Source", CVE-2021-42574), and a docstring's would be copied into every generated file.
_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# A whole number longer than Python converts (its SyntaxError names no column).
_HUGE_INTEGER = re.compile(rf"(?<![\w.])\d{{{sys.get_int_max_str_digits() + 1},}}")

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "power",
           ast.Mod: "mod", ast.FloorDiv: "floordiv"}
_CMPOPS = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
_FORBIDDEN = {
    ast.Import: "imports are not allowed: a program is one pure update rule",
    ast.ImportFrom: "imports are not allowed: a program is one pure update rule",
    ast.For: "loops are not allowed: a program is one step; the training loop is implied",
    ast.While: "loops are not allowed: a program is one step; the training loop is implied",
    ast.AsyncFor: "loops are not allowed", ast.With: "`with` is not allowed",
    ast.Try: "`try` is not allowed", ast.FunctionDef: "nested functions are not allowed",
    ast.ClassDef: "classes are not allowed", ast.Lambda: "lambdas are not allowed",
    ast.Attribute: "attribute access is not allowed; call the language's functions by name",
    ast.Subscript: "indexing is not allowed; use rowmean/colmean or dim(w, i)",
    ast.Global: "`global` is not allowed", ast.Nonlocal: "`nonlocal` is not allowed",
    ast.Delete: "`del` is not allowed", ast.Raise: "`raise` is not allowed",
    ast.Assert: "`assert` is not allowed", ast.ListComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed", ast.Await: "`await` is not allowed",
    ast.Yield: "`yield` is not allowed", ast.NamedExpr: "`:=` is not allowed",
    ast.JoinedStr: "strings are not values in the language", ast.Starred: "`*args` is not allowed",
}


def rounds_to_zero(written: str, value: float) -> bool:
    """Is ``value``, the float64 of the number ``written``, 0 though its digits are not all 0?

    Example:
        >>> rounds_to_zero("1e-400", 0.0), rounds_to_zero("0.0e5", 0.0), rounds_to_zero("1e-300", 1e-300)
        (True, False, False)
    """
    return value == 0 and any(c in "123456789" for c in written.lower().split("e")[0])


def check_identifier(name: str, where: ast.AST | None, ctx: _Context, what: str = "name") -> str:
    """Every name a program binds passes the identifier policy (:mod:`optdsl.names`) here: the
    name back, or a DslError located at ``where`` with a suggested rename.

    Example:
        >>> check_identifier("beta1", None, _Context("f.py", ""))
        'beta1'
        >>> try:
        ...     parse("def f(w, g, lr):\\n    print = g\\n    return lr * print\\n", "f.py")
        ... except DslError as e:
        ...     print(str(e).splitlines()[0])
        f.py:2:5: name 'print' is a Python builtin; rename it, e.g. 'print_'
    """
    reason = check_name(name)
    if reason is not None:
        raise ctx.error(f"{what} {name!r} {reason}", where, f"rename it, e.g. {suggest(name)!r}")
    return name


class _Context:
    def __init__(self, filename: str, source: str):
        self.filename, self.source = filename, source
        self._lines: list[bytes] | None = None

    def written(self, node: ast.AST) -> str:
        """The source text of a one-line ``node`` (a number literal). ``ast.get_source_segment``
        splits the whole source at every call: a file of 6,000 literals took 88 s to check."""
        if self._lines is None:
            # lines as ast counts them (str.splitlines also splits at \f, \x1c...)
            self._lines = [line.encode() for line in re.split(r"\r\n|\r|\n", self.source)]
        if node.lineno != node.end_lineno or not 0 < node.lineno <= len(self._lines):
            return ast.get_source_segment(self.source, node) or ""
        return self._lines[node.lineno - 1][node.col_offset:node.end_col_offset].decode(errors="replace")

    def error(self, message: str, node: ast.AST | None = None, hint: str | None = None) -> DslError:
        line = getattr(node, "lineno", None)
        col = getattr(node, "col_offset", None)
        return DslError(message, self.filename, line, col, self.source, hint)


def parse_all(text: str, filename: str = "<string>") -> dict[str, Program]:
    """Every program in ``text``, by name, in file order.

    Example:
        >>> progs = parse_all("def a(w, g, lr):\\n    return lr * g\\n\\ndef b(w, g, lr):\\n    return g\\n")
        >>> list(progs)
        ['a', 'b']
    """
    if not isinstance(text, str):
        raise TypeError(f"a program's source is a str, not {type(text).__name__}" +
                        " (decode it: text.decode('utf-8'))" * isinstance(text, (bytes, bytearray)))
    ctx = _Context(filename, text)
    bad = _UNSAFE_TEXT.search(text)
    if bad:  # Python's parser would fail without a location (or not at all, for a NUL in 3.12+)
        at = bad.start()
        char = bad.group()
        bidi = unicodedata.category(char) == "Cf"
        raise DslError(f"character {char!r} ({'a bidirectional-text control, ' * bidi}U+{ord(char):04X}) "
                       "may not appear in a program", filename, text.count("\n", 0, at) + 1,
                       at - (text.rfind("\n", 0, at) + 1), text,
                       hint="delete it" + ": the text must read in the order it runs" * bidi)
    try:
        with warnings.catch_warnings():  # Python's own SyntaxWarnings are not the user's business
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=filename)
    except SyntaxError as e:
        huge = _HUGE_INTEGER.search(text)
        if huge and "Exceeds the limit" in e.msg:  # Python names no column, and a remedy for Python code
            at = huge.start()
            raise DslError(f"a whole number of {len(huge.group())} digits: more than Python reads",
                           filename, text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1), text,
                           hint="numbers are float64 (|x| < 1.8e308): write it with an exponent "
                                "(1.5e30), or `inf` for infinity") from None
        raise DslError(f"syntax error: {e.msg}", filename, e.lineno, (e.offset or 1) - 1, text) from None
    except (RecursionError, MemoryError):  # absurd nesting: Python's parser gives no place, so the
        lines = text.splitlines() or [""]  # longest line stands for the statement that nests so deep
        line = max(range(len(lines)), key=lambda i: len(lines[i]))
        raise DslError("expression nested too deeply for Python's parser", filename, line + 1,
                       len(lines[line]) - len(lines[line].lstrip()), text,
                       hint=f"split it into statements nested at most {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise DslError(f"cannot parse: {e}", filename) from None
    lookalike = None if text.isascii() else _non_ascii_name(text)
    if lookalike:
        (line, col), name = lookalike.start, lookalike.string
        raise DslError(f"name {name!r} is not ASCII (generated files are)", filename, line, col, text,
                       hint=f"rename it, e.g. {suggest(name)!r}")
    programs: dict[str, Program] = {}
    for i, node in enumerate(tree.body):
        if i == 0 and _is_docstring(node):
            continue
        if not isinstance(node, ast.FunctionDef):
            msg = _FORBIDDEN.get(type(node), "only `def` blocks may stand at the top of a program file")
            raise ctx.error(msg, node)
        try:
            prog = validate(_Parser(ctx).function(node))
        except RecursionError:
            raise ctx.error("expression nested too deeply", node) from None
        if prog.name in programs:
            raise ctx.error(f"program {prog.name!r} is defined twice", node)
        programs[prog.name] = prog
    if not programs:
        raise DslError("no program found: expected `def name(w, g, ..., lr): ...`", filename, 1, 0, text)
    return programs


def _non_ascii_name(text: str) -> tokenize.TokenInfo | None:
    """The first name in ``text`` written with a character beyond ASCII, as written: Python's
    parser reads names in NFKC form, so a fullwidth ``ｍ`` is ``m`` to :mod:`ast` and passed the
    name policy, while the file shows another letter.

    Example:
        >>> _non_ascii_name("def f(w, g, lr):\\n    return lr * ｇ\\n").string
        'ｇ'
    """
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.NAME and not token.string.isascii():
                return token
    except (tokenize.TokenError, SyntaxError):  # (ast read it: nothing left unread that matters)
        pass
    return None


def parse(text: str, filename: str = "<string>", name: str | None = None) -> Program:
    """The program in ``text`` (or the one called ``name`` when the text holds several).

    Example:
        >>> p = parse("def sgd(w, g, lr=0.1):\\n    update = lr * g\\n    return update\\n")
        >>> p.name, p.hyper_defaults
        ('sgd', {'lr': 0.1})
    """
    programs = parse_all(text, filename)
    if name is not None:
        if name not in programs:
            raise DslError(f"no program named {name!r} here (found: {', '.join(programs)})", filename)
        return programs[name]
    if len(programs) > 1:
        raise DslError(f"{len(programs)} programs here ({', '.join(programs)}); pick one as FILE:NAME",
                       filename)
    return next(iter(programs.values()))


def _deeper_than(expr: Expr, limit: int) -> bool:
    """Does ``expr`` nest more than ``limit`` levels (a name or number is one level)? Iterative,
    so an absurd tree cannot exhaust the stack here."""
    stack = [(expr, 1)]
    while stack:
        e, d = stack.pop()
        if d > limit:
            return True
        if isinstance(e, Call):
            stack.extend((a, d + 1) for a in e.args)
    return False


def _unsafe_in_doc(doc: str) -> str | None:
    """The first character of a docstring that generated files cannot carry: a control character
    other than newline and tab (a NUL ends a C string; ``\\x1b`` drives a terminal) or a lone
    surrogate (not encodable as UTF-8)."""
    return next((c for c in doc if c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cs")), None)


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(
        node.value.value, str)


class _Parser:
    def __init__(self, ctx: _Context):
        self.ctx = ctx
        self.depth = 0  # nesting of the expression being read
        self.renamable: set[str] = set()  # inputs that an assignment renames (see `assign`)
        self.local_of: dict[str, str] = {}  # input -> the local that holds its reassigned value
        self.origin: dict[str, str] = {}  # and back
        self.defined: set[str] = set()
        self.used_names: set[str] = set()

    def err(self, msg, node, hint=None):
        return self.ctx.error(msg, node, hint)

    # --- the signature ---------------------------------------------------------------------
    def function(self, fn: ast.FunctionDef) -> Program:
        for deco in fn.decorator_list:
            if not (isinstance(deco, ast.Name) and deco.id == "program") and not (
                    isinstance(deco, ast.Attribute) and deco.attr == "program"):
                raise self.err("decorators are not allowed (except @optdsl.program)", deco)
        if fn.returns is not None:
            raise self.err("return annotations are not allowed", fn.returns)
        a = fn.args
        if a.vararg or a.kwarg:
            raise self.err("*args and **kwargs are not allowed", a.vararg or a.kwarg)
        name = check_identifier(fn.name, fn, self.ctx, "program name")
        args = a.posonlyargs + a.args + a.kwonlyargs
        defaults = dict(zip([x.arg for x in (a.posonlyargs + a.args)][::-1], a.defaults[::-1]))
        defaults.update({x.arg: d for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
        states, hypers, seen = [], [], set()
        for arg in args:
            n = check_identifier(arg.arg, arg, self.ctx, "argument")
            if n in seen:
                raise self.err(f"argument {n!r} appears twice", arg)
            seen.add(n)
            if n in ("w", "g", "step"):
                if arg.annotation is not None or n in defaults:
                    raise self.err(f"{n!r} is an input and takes no annotation or default", arg)
            elif self.is_domain(arg.annotation) and n not in defaults:
                raise self.err(f"hyperparameter {n!r}: a domain needs a default", arg.annotation,
                               f"write `{n}: {arg.annotation.id} = <default>`")
            elif n == "lr" and arg.annotation is None:
                if n in defaults:
                    hypers.append(Hyper(n, self.number(defaults[n])))
            elif n in defaults and (arg.annotation is None or self.is_domain(arg.annotation)):
                hypers.append(self.hyper(n, defaults[n], arg.annotation))
            else:
                ann = arg.annotation
                if n in defaults and isinstance(ann, ast.Name) and ann.id not in STATE_KINDS:
                    raise self.err(f"hyperparameter {n!r}: unknown domain {ann.id!r}", ann,
                                   f"use one of {', '.join(DOMAINS)}, e.g. `{n}: positive = 1.0`")
                if n in defaults:
                    raise self.err(f"state {n!r} takes its first value from its annotation, not a default",
                                   defaults[n], f"write `{n}: full(init=1)`")
                if n in INPUTS:
                    raise self.err(f"{n!r} is an input and cannot be a state", arg)
                states.append(self.state(n, arg.annotation))
        for required in ("w", "g", "lr"):
            if required not in seen:
                spelled = {"w": "weight", "g": "gradient"}.get(required)  # the paper's Program 1 (Lion)
                hint = (f"rename {spelled!r} to {required!r} (the language's name for it)" if spelled in seen
                        else "write `def name(w, g, <states>, lr, <hyperparameters>=<defaults>)`")
                raise self.err(f"the signature needs {required!r}", fn, hint)
        self.defined = set(seen)
        self.used_names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} | seen
        self.renamable = set(RENAMED)
        body = list(fn.body)
        doc = ""
        if body and _is_docstring(body[0]):
            node = body.pop(0)
            doc = inspect.cleandoc(node.value.value)
            bad = _unsafe_in_doc(doc)
            if bad is not None:
                raise self.err(f"the docstring holds {bad!r}, which generated files cannot carry", node,
                               "remove it")
        if not body or not isinstance(body[-1], ast.Return):
            raise self.err("a program ends with `return update, <states...>`", body[-1] if body else fn)
        ret = body.pop()
        stmts = self.block(body)
        update, new_states = self.returns(ret, states)
        # `a and b and ...`, chained comparisons and `if` blocks nest deeper in the IR than in the
        # source: check what every later stage will walk.
        for a in stmts:
            if _deeper_than(a.expr, MAX_DEPTH):
                raise self.too_deep(a.loc)
        if any(_deeper_than(e, MAX_DEPTH) for e in (update, *new_states)):
            raise self.too_deep(ret)
        return Program(name, tuple(states), tuple(hypers), tuple(stmts), update, new_states, doc=doc,
                       filename=self.ctx.filename, source=self.ctx.source,
                       return_loc=(ret.lineno, ret.col_offset))

    @staticmethod
    def is_domain(annotation: ast.AST) -> bool:
        """Does ``annotation`` name a hyperparameter's domain (``accum_steps: count = 4``)?"""
        return isinstance(annotation, ast.Name) and annotation.id in DOMAINS

    def hyper(self, name: str, default: ast.AST, annotation: ast.AST | None) -> Hyper:
        """The hyperparameter ``name``, its default read and, where ``annotation`` names its domain,
        checked against it."""
        value = self.number(default)
        domain = None if annotation is None else annotation.id
        why = outside(name, value, domain)
        if why is not None:
            raise self.err(f"the default {why}", default, f"give {name} {DOMAINS[domain].words}")
        return Hyper(name, value, domain)

    def number(self, node: ast.AST) -> float:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = self.number(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return self.literal(node)
        if isinstance(node, ast.Name) and node.id in CONSTANTS:  # `clip=inf`, as an expression writes it
            if math.isnan(CONSTANTS[node.id]):
                raise self.err("a hyperparameter's default must be a number", node,
                               "nan would make every step nan: give a number")
            return CONSTANTS[node.id]
        raise self.err("a hyperparameter's default must be a number", node, "a literal such as 0.9, or inf, pi, e")

    def literal(self, node: ast.Constant) -> float:
        """The float64 a number written in the source denotes. It must be finite: ``1e400`` or a
        400-digit integer is a located error (computed values follow IEEE instead: ``1e308 * 10``
        folds to ``inf``; write ``inf`` for infinity)."""
        try:
            v = float(node.value)
        except OverflowError:  # an int beyond float64's range; a float literal is already inf
            v = math.inf
        if not math.isfinite(v):
            raise self.err("this number does not fit in a float64 (|x| < 1.8e308)", node,
                           "write `inf` for infinity")
        if rounds_to_zero(self.ctx.written(node), v):
            raise self.err("this number is too small for a float64: it would be 0 (|x| >= 4.9e-324)", node,
                           "write 0 if 0 is meant")
        return v

    def state(self, name: str, ann: ast.AST | None) -> State:
        if ann is None:
            return State(name)
        kind_node, args, kwargs = ann, [], {}
        if isinstance(ann, ast.Call):
            kind_node, args = ann.func, list(ann.args)
            kwargs = {k.arg: k.value for k in ann.keywords}
            if None in kwargs:
                raise self.err("`**` is not allowed in a state annotation", ann)
        if not isinstance(kind_node, ast.Name) or kind_node.id not in STATE_KINDS:
            raise self.err(f"state {name!r}: unknown state kind", kind_node,
                           f"use one of {', '.join(STATE_KINDS)}, e.g. `{name}: row`")
        if len(args) > 1 or set(kwargs) - {"init", "keep"} or (args and "init" in kwargs):
            raise self.err(f"state {name!r}: annotation takes `init=` and `keep=` only", ann)
        init = "zeros"
        init_node = args[0] if args else kwargs.get("init")
        if init_node is not None:
            if isinstance(init_node, ast.Name) and init_node.id == "w":
                init = "w"
            elif isinstance(init_node, ast.Constant) and init_node.value in (0, 1) and type(
                    init_node.value) in (int, float):
                init = STATE_INITS[int(init_node.value)]
            else:
                raise self.err(f"state {name!r}: init must be 0, 1 or w", init_node)
        keep = False
        if "keep" in kwargs:
            k = kwargs["keep"]
            if not (isinstance(k, ast.Constant) and isinstance(k.value, bool)):
                raise self.err("keep= takes True or False", k)
            keep = k.value
        if init == "w" and kind_node.id != "full":
            raise self.err(f"state {name!r}: only a full state can start as a copy of w", ann)
        return State(name, kind_node.id, init, keep)

    def returns(self, ret: ast.Return, states: list[State]) -> tuple[Expr, tuple[Expr, ...]]:
        if ret.value is None:
            raise self.err("return the update (and the new state values)", ret)
        items = ret.value.elts if isinstance(ret.value, ast.Tuple) else [ret.value]
        if len(items) != 1 + len(states):
            names = ", ".join(["update"] + [s.name for s in states])
            what = "the update" + (f", then its {len(states)} state(s)" if states else "")
            raise self.err(f"return gives {len(items)} value(s); this program returns "
                           f"{1 + len(states)}: {what}", ret, f"write `return {names}`")
        exprs = [self.expr(x) for x in items]
        return exprs[0], tuple(exprs[1:])

    # --- statements ------------------------------------------------------------------------
    def block(self, body: list[ast.stmt]) -> list[Assign]:
        out: list[Assign] = []
        for node in body:
            out.extend(self.statement(node))
        return out

    def statement(self, node: ast.stmt) -> list[Assign]:
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                raise self.err("assign to one name at a time (`x = ...`)", node)
            return [self.assign(node.targets[0], self.expr(node.value), node)]
        if isinstance(node, ast.AugAssign):
            if not isinstance(node.target, ast.Name):
                raise self.err("assign to one name at a time (`x += ...`)", node)
            opname = _BINOPS.get(type(node.op))
            if opname is None:
                raise self.err("this operator is not in the language", node)
            target = self.name_ref(node.target.id, node.target)
            return [self.assign(node.target, Call(opname, (target, self.expr(node.value))), node)]
        if isinstance(node, ast.If):
            return self.if_block(node)
        if isinstance(node, ast.Pass):
            return []
        if isinstance(node, ast.Return):
            raise self.err("`return` may only be the last statement", node)
        if isinstance(node, ast.AnnAssign):
            raise self.err("annotated assignments are not allowed; annotate states in the signature", node)
        if isinstance(node, ast.Expr):
            raise self.err("this statement has no effect; assign its value to a name", node)
        raise self.err(_FORBIDDEN.get(type(node), f"{type(node).__name__} statements are not allowed"), node)

    def assign(self, target: ast.Name, expr: Expr, node: ast.AST) -> Assign:
        """``name = expr``. Any name may be assigned again; ``w``, ``lr`` and ``step`` (see
        :data:`RENAMED`) then become a local of a fresh name (``lr = lr * 0.001`` ->
        ``lr_1 = lr * 0.001``) that every later read reads."""
        name = check_identifier(target.id, target, self.ctx)
        if name in self.renamable:
            if name not in self.local_of:
                self.local_of[name] = fresh_name(name, self.used_names)
                self.origin[self.local_of[name]] = name
            name = self.local_of[name]
        self.defined.add(name)
        return Assign(name, expr, (node.lineno, node.col_offset))

    def if_block(self, node: ast.If) -> list[Assign]:
        """``if c: A else: B`` -> each ``x = e`` in A becomes ``x = where(c, e, x)`` (in B,
        ``where(c, x, e)``); a name first defined inside one branch stays branch-local."""
        cond = self.expr(node.test)
        before = set(self.defined)
        then = self.block(node.body)
        then_defined = self.defined
        self.defined = set(before)
        orelse = self.block(node.orelse)
        else_defined = self.defined
        out = []
        for stmts, taken, other in ((then, True, else_defined), (orelse, False, then_defined)):
            seen_here: set[str] = set()
            for a in stmts:
                known = a.target in before or (not taken and a.target in then_defined) or a.target in seen_here
                old = Var(a.target)
                if not known and a.target in self.origin:  # an input's first assignment: else, the input
                    known, old = True, Var(self.origin[a.target])
                guarded = a.expr
                if known:
                    guarded = Call("where", (cond, a.expr, old) if taken else (cond, old, a.expr))
                seen_here.add(a.target)
                out.append(Assign(a.target, guarded, a.loc))
        # Names defined in only one branch (and not before) are undefined after the `if`; an
        # input assigned in either branch is defined in both (the other keeps the input's value).
        self.defined = before | (then_defined & else_defined) | ((then_defined | else_defined) & set(self.origin))
        return out

    # --- expressions -----------------------------------------------------------------------
    def name_ref(self, name: str, node: ast.AST) -> Expr:
        if self.local_of.get(name) in self.defined:  # a reassigned input: its latest value
            return Var(self.local_of[name])
        if name in self.defined:
            return Var(name)
        if name in CONSTANTS:
            return Const(CONSTANTS[name])
        if name in OPS:
            raise self.err(f"{name!r} is a function; call it as `{name}(...)`", node)
        check_identifier(name, node, self.ctx)
        if name in INPUTS:
            raise self.err(f"undefined name {name!r}", node, f"add the input {name!r} to the signature")
        raise self.err(f"undefined name {name!r}", node,
                       "assign it first, or add it to the signature as a state or hyperparameter")

    def expr(self, node: ast.AST) -> Expr:
        """The IR of one source expression; refused past :data:`MAX_DEPTH` levels of nesting."""
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self.too_deep(node)
            return self._expr(node)
        finally:
            self.depth -= 1

    def too_deep(self, where) -> DslError:
        if isinstance(where, tuple):  # an IR location (line, col)
            where = ast.Pass(lineno=where[0], col_offset=where[1])
        return self.err(f"expression nested more than {MAX_DEPTH} levels deep", where,
                        "split it with intermediate assignments")

    def _expr(self, node: ast.AST) -> Expr:
        if isinstance(node, ast.Name):
            return self.name_ref(node.id, node)
        if isinstance(node, ast.Constant):
            if type(node.value) is bool:
                return Const(float(node.value))
            if type(node.value) in (int, float):
                return Const(self.literal(node))
            raise self.err(f"{type(node.value).__name__} constants are not values in the language", node)
        if isinstance(node, ast.BinOp):
            opname = _BINOPS.get(type(node.op))
            if opname is None:
                raise self.err("this operator is not in the language", node,
                               "use + - * / ** % // or a function")
            return Call(opname, (self.expr(node.left), self.expr(node.right)))
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.UAdd):
                return self.expr(node.operand)
            if isinstance(node.op, ast.USub):
                inner = self.expr(node.operand)
                return constant(-inner.value) if isinstance(inner, Const) else Call("neg", (inner,))
            if isinstance(node.op, ast.Not):
                return Call("not", (self.expr(node.operand),))
            raise self.err("this operator is not in the language", node)
        if isinstance(node, ast.Compare):
            parts, left = [], self.expr(node.left)
            for cmp, right_node in zip(node.ops, node.comparators):
                opname = _CMPOPS.get(type(cmp))
                if opname is None:
                    raise self.err("this comparison is not in the language", node)
                right = self.expr(right_node)
                parts.append(Call(opname, (left, right)))
                left = right
            out = parts[0]
            for p in parts[1:]:
                out = Call("and", (out, p))
            return out
        if isinstance(node, ast.BoolOp):
            name = "and" if isinstance(node.op, ast.And) else "or"
            vals = [self.expr(v) for v in node.values]
            out = vals[0]
            for v in vals[1:]:
                out = Call(name, (out, v))
            return out
        if isinstance(node, ast.IfExp):
            return Call("where", (self.expr(node.test), self.expr(node.body), self.expr(node.orelse)))
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.err(_FORBIDDEN.get(type(node), f"{type(node).__name__} expressions are not allowed"), node)

    def call(self, node: ast.Call) -> Expr:
        if not isinstance(node.func, ast.Name):
            raise self.err(_FORBIDDEN.get(type(node.func), "call functions by name (`sign(x)`), not through "
                                          "attributes or values"), node.func)
        name = node.func.id
        if node.keywords:
            raise self.err(f"{name}() takes positional arguments only", node.keywords[0].value)
        op = OPS.get(name)
        if op is None:
            raise self.err(f"unknown function {name!r}", node.func, "see `optdsl ops` for the vocabulary")
        if len(node.args) != op.arity:
            raise self.err(f"{name}() takes {op.arity} argument(s), got {len(node.args)}", node)
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.err(_FORBIDDEN[ast.Starred], a)
        return Call(name, tuple(self.expr(a) for a in node.args))
