"""JAX target: a program -> a standalone module defining an optax ``GradientTransformationExtraArgs``.

For each parameter leaf ``w`` with gradient ``g`` the generated transformation runs::

    update, *states = program(w, g, *states, lr, step, **hyperparameters)   # step = count + 1
    updates = -update                                                       # optax adds updates

in float32 (or the leaf's dtype when wider), states stored in that dtype, updates returned in the
gradient's dtype. The module imports only ``typing``, ``jax``, ``jax.numpy`` and ``optax``.

How a program becomes code:
  - Static shape branches (``if ndim(w) >= 2``) are resolved at generation time into one function
    per distinct specialisation (a *variant*); a Python-level shape test picks the variant of each
    leaf while JAX traces, so jit sees straight-line code. A state a variant does not use is held
    as an empty array.
  - Row/col values broadcast against full ones exactly as :func:`optdsl.interpreter.expand` does.
  - Global reductions cut every variant into :func:`optdsl.passes.segments`: segment ``k`` of
    every leaf runs, its per-leaf partials combine into the global value, then segment ``k + 1``.
  - The hyperparameters are the factory's plain arguments (``lr`` is spelled ``learning_rate`` as
    in optax and may be a schedule of the 0-based step count), so ``optax.inject_hyperparams``
    works.

Example:
    >>> import optdsl
    >>> text = emit(optdsl.load("lion"))
    >>> "def lion(learning_rate=0.0001, beta1=0.9, beta2=0.99, weight_decay=0):" in text
    True
"""

from __future__ import annotations

import re

from optdsl.errors import DslError
from optdsl.ir import Call, Const, Expr, Program, Var, fresh_name, map_calls, names_in, substitute, walk
from optdsl.ops import COL, ELEMENTWISE, OPS, REDUCE, ROW, STATIC
from optdsl.passes import eliminate_dead_code, fold, global_statements, hoist_globals, liveness, segments
from optdsl.passes.fold import fold_expr
from optdsl.printer import DslPrinter, Printer, docstring, to_source
from optdsl.typecheck import expr_kind, input_kinds, join

from .generated import black_format, check_identifier, number

# Ops whose value is a truth value: jax spells them as booleans, the language as 1.0 / 0.0.
TRUTH_OPS = frozenset({"lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not", "isfinite", "allfinite"})
# How per-leaf partials of a global reduction combine (``parts`` is a Python list of scalars);
# the per-leaf partial itself is the op table's ``jax`` template.
GLOBAL_COMBINE = {
    "global_norm": "jnp.sqrt(sum({parts}))",
    "global_allfinite": "jnp.where(jnp.all(jnp.stack({parts})), 1.0, 0.0)",
}
# A state's shape for a parameter ``w`` (as :func:`optdsl.interpreter.state_shape`).
STATE_SHAPE = {"full": "w.shape", "row": "w.shape[:-1]", "col": "w.shape[:-2] + w.shape[-1:]", "scalar": "()"}
STATE_INIT = {"zeros": "jnp.zeros({shape}, dtype)", "ones": "jnp.ones({shape}, dtype)", "w": "w.astype(dtype)"}
MAX_VARIANTS = 16
# Ops that Python raises on for some numbers (1 / 0, 0 ** -1, 10.0 ** 400) where IEEE gives inf/nan.
PYTHON_RAISES = frozenset({"div", "mod", "floordiv", "power", "reciprocal"})

_NUMBER = re.compile(r"\d[\d.]*(e[+-]?\d+)?")
_CLOSE = {"(": ")", "[": "]"}


def _atomic(text: str) -> bool:
    """Is ``text`` one primary expression (name, number, call, subscript, parenthesised group)?"""
    if _NUMBER.fullmatch(text):
        return True
    i = 0
    while i < len(text) and (text[i].isalnum() or text[i] in "_."):
        i += 1
    if i == 0 and not text.startswith(("(", "[")):
        return False
    while i < len(text):
        if text[i] not in _CLOSE:
            return False
        depth, j = 0, i
        while j < len(text):
            if text[j] in "([":
                depth += 1
            elif text[j] in ")]":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
        while i < len(text) and text[i] == ".":  # attribute after a call: f(x).y
            i += 1
            while i < len(text) and (text[i].isalnum() or text[i] == "_"):
                i += 1
    return True


class JaxPrinter(Printer):
    """Prints expressions as jax.numpy code through the op table's ``jax`` templates.

    ``kinds`` maps every name in scope to its shape (see :mod:`optdsl.typecheck`); row and col
    values are expanded where they meet full ones, and truth values become 1.0 / 0.0 floats.
    Parentheses are added only where Python's precedence needs them.

    Example:
        >>> p = JaxPrinter({"g": "full", "m": "full", "beta1": "uniform"})
        >>> p.doprint(Call("interp", (Var("g"), Var("m"), Var("beta1"))))
        '(1 - beta1) * g + beta1 * m'
    """

    target = "jax"

    def __init__(self, kinds: dict[str, str], python: set[str] = frozenset()):
        self.kinds = kinds
        self.python = set(python)

    def is_python(self, expr: Expr) -> bool:
        """May ``expr`` be a plain Python number while tracing (a literal, a shape fact, a
        hyperparameter given as a float, or arithmetic on those)?"""
        if isinstance(expr, Const):
            return True
        if isinstance(expr, Var):
            return expr.name in self.python
        op = OPS[expr.op]
        if op.shape == STATIC:
            return True
        return "jnp." not in op.jax and "jax." not in op.jax and all(self.is_python(a) for a in expr.args)

    def bind(self, name: str, expr: Expr) -> None:
        """Record that ``name`` now holds the value of ``expr``."""
        self.kinds[name] = self.kind(expr)
        (self.python.add if self.is_python(expr) else self.python.discard)(name)

    def kind(self, expr: Expr) -> str:
        def fail(msg, hint=None):
            raise DslError(msg, hint=hint)

        return expr_kind(expr, self.kinds, fail)

    def _print_Const(self, expr: Const) -> str:
        text = number(expr.value)  # a float literal: integer jax arrays cannot take x ** -1
        return text if any(c in text for c in ".e") else text + ".0"

    def _print_dim(self, expr: Call) -> str:
        return OPS["dim"].jax.format(self._print(expr.args[0]), int(expr.args[1].value))

    def _print_Var(self, expr: Var) -> str:
        return check_identifier(expr.name)

    def truth(self, expr: Expr) -> str:
        """``expr`` as a jax boolean where a condition is expected (no 1.0/0.0 round trip)."""
        if isinstance(expr, Call) and expr.op in TRUTH_OPS:
            return self._fill(expr)
        return self._print(expr)

    def _print_Call(self, expr: Call) -> str:
        text = self._fill(expr)
        if expr.op in TRUTH_OPS:
            return f"jnp.where({_unwrap(text)}, 1.0, 0.0)"
        return text

    def _fill(self, expr: Call) -> str:
        op = OPS[expr.op]
        template = op.jax
        kinds = [self.kind(a) for a in expr.args]
        to = join(*kinds) if op.shape in (ELEMENTWISE, REDUCE) else None
        args = []
        for i, (a, k) in enumerate(zip(expr.args, kinds)):
            cond_slot = (op.name == "where" and i == 0) or op.name in ("and", "or", "not")
            if cond_slot and isinstance(a, Call) and a.op in TRUTH_OPS:
                template = template.replace(f"{{{i}}} != 0", f"{{{i}}}")  # already a boolean
            text = self.truth(a) if cond_slot else self._print(a)
            if i == 0 and op.name in PYTHON_RAISES and all(self.is_python(x) for x in expr.args):
                text = f"jnp.asarray({text})"  # so that 1 / 0 is inf, not ZeroDivisionError
            if to == "full" and k in (ROW, COL):
                text = _wrap(text) + ("[..., :, None]" if k == ROW else "[..., None, :]")
            args.append(self._place(text, a, op, i, template))
        return template.format(*args)

    def _place(self, text: str, arg: Expr, op, i: int, template: str) -> str:
        """``text`` with the parentheses its slot ``{i}`` in ``template`` needs."""
        slot = "{" + str(i) + "}"
        at = template.index(slot)
        before, after = template[:at].rstrip(" "), template[at + len(slot):].lstrip(" ")
        if before.endswith(("(", ",", "[")) and after.startswith((")", ",", "]")):
            return _unwrap(text)  # a call argument
        if _atomic(text) and not (isinstance(arg, Const) and arg.value < 0):
            return text
        if op.infix and template in (f"{{0}} {op.infix} {{1}}", f"{op.infix}{{0}}"):
            mine = _precedence(arg)
            if mine > op.precedence or (mine == op.precedence and i == 0 and op.name != "power"):
                return text
        return f"({text})"


def _precedence(expr: Expr) -> int:
    if isinstance(expr, Const):
        return 30 if expr.value < 0 else 100
    if isinstance(expr, Call) and OPS[expr.op].infix and expr.op not in TRUTH_OPS:
        return OPS[expr.op].precedence
    return 0 if isinstance(expr, Call) else 100


def _unwrap(text: str) -> str:
    """``text`` without parentheses around all of it."""
    while text.startswith("(") and _atomic(text) and _matching(text, 0) == len(text) - 1:
        text = text[1:-1]
    return text


def _matching(text: str, i: int) -> int:
    depth = 0
    for j in range(i, len(text)):
        depth += text[j] in "(["
        depth -= text[j] in ")]"
        if depth == 0:
            return j
    return -1


def _wrap(text: str) -> str:
    return text if _atomic(text) else f"({text})"


class ShapeTestPrinter(DslPrinter):
    """Prints a static shape test as plain Python (``w.ndim >= 2``), evaluated while JAX traces.

    Only Python's own operators, ``abs``, ``max`` and ``min`` may appear: anything jax.numpy
    computes would be staged out by jit instead of deciding which code to trace.
    """

    PYTHON = frozenset({"abs", "max", "min"})

    def _print_Call(self, expr: Call) -> str:
        op = OPS[expr.op]
        if op.shape == STATIC:
            return op.jax.format(*[self._print(a) for a in expr.args])
        if op.infix is None and op.name not in self.PYTHON:
            raise DslError(f"the jax target cannot test {op.name}() of a shape while tracing",
                           hint="write the shape test with + - * / // % ** comparisons, abs, max, min")
        return super()._print_Call(expr)


# --- variants: one straight-line program per outcome of the static shape tests ---------------------


def _static_wheres(program: Program):
    """Yield ``(statement index or None, where-call, its condition inlined)`` for every ``where``
    whose condition is a shape fact, innermost first; inlining follows static assignments."""
    kinds = input_kinds(program)
    statics: dict[str, Expr] = {}

    def fail(msg, hint=None):
        raise DslError(msg, program.filename, hint=hint)

    def post_order(e: Expr):
        if isinstance(e, Call):
            for a in e.args:
                yield from post_order(a)
        yield e

    def scan(e: Expr, i):
        for node in post_order(e):
            if isinstance(node, Call) and node.op == "where" and expr_kind(node.args[0], kinds, fail) == "static":
                yield i, node, substitute(node.args[0], statics)

    for i, a in enumerate(program.body):
        yield from scan(a.expr, i)
        kinds[a.target] = expr_kind(a.expr, kinds, fail)
        if kinds[a.target] == "static":
            statics[a.target] = substitute(a.expr, statics)
        else:
            statics.pop(a.target, None)
    for e in program.outputs():
        yield from scan(e, None)


def _simplified(cond: Expr, known: dict[Expr, bool]) -> Expr:
    """A shape test given the outcomes of the tests already taken on this path (a Const if settled)."""
    if cond in known:
        return Const(float(known[cond]))
    if not isinstance(cond, Call):
        return cond
    c = Call(cond.op, tuple(_simplified(a, known) for a in cond.args))
    if c in known:
        return Const(float(known[c]))
    c = fold_expr(c)
    if isinstance(c, Call) and c.op in ("and", "or") and any(isinstance(a, Const) for a in c.args):
        const = next(a for a in c.args if isinstance(a, Const))
        other = c.args[1] if const is c.args[0] else c.args[0]
        if (const.value != 0) == (c.op == "or"):  # or(1, x) = 1; and(0, x) = 0
            return Const(float(c.op == "or"))
        return other if isinstance(other, Call) and other.op in TRUTH_OPS else Call("ne", (other, Const(0.0)))
    return c


def _decided(cond: Expr, known: dict[Expr, bool]) -> bool | None:
    out = _simplified(cond, known)
    return out.value != 0 if isinstance(out, Const) else None


def _resolve(program: Program, decide) -> Program:
    """``program`` with every static ``where`` whose test ``decide`` settles replaced by its arm."""
    picks = {}
    for _, node, inlined in _static_wheres(program):
        truth = decide(inlined)
        if truth is not None:
            picks[id(node)] = truth

    def pick(e: Expr) -> Expr:
        if isinstance(e, Call):
            if id(e) in picks:
                return pick(e.args[1] if picks[id(e)] else e.args[2])
            return Call(e.op, tuple(pick(a) for a in e.args))
        return e

    outs = [pick(e) for e in program.outputs()]
    body = [type(a)(a.target, pick(a.expr), a.loc) for a in program.body]
    return program.with_body(body, update=outs[0], new_states=outs[1:])


def variants(program: Program) -> tuple[object, list[Program]]:
    """The static shape tests as a decision tree, and the straight-line program at each leaf.

    A tree is an int (index into the list) or ``(condition, tree if true, tree if false)``.
    Global reductions are hoisted into statements of their own and kept in every variant, so the
    variants' :func:`~optdsl.passes.segments` line up (as :func:`optdsl.passes.specialize` does).

    Example:
        >>> from optdsl import parse
        >>> p = parse("def f(w, g, lr):\\n    u = sign(g) if ndim(w) >= 2 else g\\n    return lr * u\\n")
        >>> tree, found = variants(p)
        >>> len(found), tree[1:]
        (2, (0, 1))
    """
    hoisted = hoist_globals(program)
    live, _ = liveness(hoisted)
    forced = frozenset(i for i in global_statements(hoisted) if i in live)
    found: list[Program] = []

    def grow(p: Program, known: dict[Expr, bool]):
        p = fold(_resolve(p, lambda c: _decided(c, known)))
        undecided = [_simplified(c, known) for _, _, c in _static_wheres(p) if _decided(c, known) is None]
        if not undecided:
            spec = eliminate_dead_code(p, force=forced)
            if spec not in found:
                if len(found) == MAX_VARIANTS:
                    raise DslError(f"{program.name}: more than {MAX_VARIANTS} shape specialisations")
                found.append(spec)
            return found.index(spec)
        cond = undecided[0]
        yes, no = grow(p, {**known, cond: True}), grow(p, {**known, cond: False})
        return yes if yes == no else (cond, yes, no)

    return grow(hoisted, {}), found


# --- the generated module ------------------------------------------------------------------------


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Program"


class _Module:
    """Names and text of one generated module (all names chosen to avoid the program's)."""

    def __init__(self, program: Program):
        check_identifier(program.name, "program name")
        for n in sorted(names_in(program)):
            check_identifier(n)
        if "learning_rate" in program.hyper_defaults:
            raise DslError(f"{program.name}: a hyperparameter may not be called 'learning_rate'",
                           hint="the jax target spells lr as learning_rate, as optax does")
        self.program = program
        self.tree, self.variants = variants(program)
        self.used = names_in(program) | {program.name, "learning_rate", "dtype"}
        self.hypers = [h for h in program.hypers if h.name != "lr"]
        self.inputs = [n for n in ("w", "g") if n == "g" or any(v.uses("w") for v in self.variants)]
        self.inputs += list(program.state_names)
        self.inputs += [n for n in ("lr", "step") if program.uses(n)]
        self.inputs += [h.name for h in self.hypers if program.uses(h.name)]
        self.needs_params = program.uses("w") or any(s.init == "w" for s in program.states)
        self.fields = {}
        taken: set[str] = set()
        for s in program.states:
            self.fields[s.name] = fresh_name(s.name.lstrip("_") or "state", taken)
        self.count = fresh_name("count", taken)
        self.state_class = fresh_name(_camel(program.name) + "State", self.used)
        self.fit, self.upcast = fresh_name("_fit", self.used), fresh_name("_upcast", self.used)
        self.init_leaf = fresh_name(f"_{program.name}_init", self.used)
        self.pick = fresh_name(f"_{program.name}_code", self.used) if len(self.variants) > 1 else None
        nseg = len(global_statements(self.variants[0])) + 1
        self.fns = [[fresh_name(f"_{program.name}" + (f"_{v}" if len(self.variants) > 1 else "")
                                + (f"_part{k}" if nseg > 1 else ""), self.used)
                     for k in range(nseg)] for v in range(len(self.variants))]

    # --- per-variant step functions --------------------------------------------------------------
    def variant_functions(self, v: int, spec: Program) -> list[str]:
        kinds = input_kinds(spec)
        kinds.update({n: "uniform" for n in ("lr", "step")})
        printer = JaxPrinter(kinds, {"lr", *(h.name for h in self.hypers)})
        cuts = [spec.body[i] for i in global_statements(spec)]
        segs = segments(spec)
        available = set(self.inputs)
        carries: list[list[str]] = []
        out = []
        for k, seg in enumerate(segs):
            lines = []
            if k == 0:
                params = list(self.inputs)
                lines.append(f'"""{self._variant_doc(v)}"""' if len(self.variants) > 1 else
                             '"""One leaf\'s step: ``update, (states...)`` from its inputs."""')
            else:
                params = ["carry", cuts[k - 1].target]
                carried = carries[k - 1]
                lines.append(f'"""After {cuts[k - 1].expr.op}: the rest of the step."""')
                lines.append(f"{_tuple(carried)} = carry" if carried else "del carry")
            for a in seg:
                lines.append(f"{check_identifier(a.target)} = {printer.doprint(a.expr)}")
                printer.bind(a.target, a.expr)
                available.add(a.target)
            if k < len(cuts):
                g = cuts[k]
                kinds[g.target] = "uniform"
                printer.python.discard(g.target)
                later = [e for s in segs[k + 1:] for e in (x.expr for x in s)]
                later += [c.expr for c in cuts[k + 1:]] + list(spec.outputs())
                read = set().union(*(set(_free(e)) for e in later))
                order = self.inputs + [a.target for a in spec.body]
                carried = list(dict.fromkeys(n for n in order if n in read and n in available))
                carried = [n for n in carried if n != g.target]
                carries.append(carried)
                partial = OPS[g.expr.op].jax.format(printer.doprint(g.expr.args[0]))
                lines.append(f"return {_tuple(carried, paren=True)}, {partial}")
                available.add(g.target)
            else:
                lines.append(self._final_return(spec, printer))
            out.append(f"def {self.fns[v][k]}({', '.join(params)}):\n" + _indent(lines))
        return out

    def _final_return(self, spec: Program, printer: JaxPrinter) -> str:
        def value(e: Expr, slot: str) -> str:
            text, k = printer.doprint(e), printer.kind(e)
            if slot == "full" and k in (ROW, COL):
                text = _wrap(text) + ("[..., :, None]" if k == ROW else "[..., None, :]")
            return text

        new = dict(zip(spec.state_names, spec.new_states))
        states = [value(new[s.name], s.kind) if s.name in new else "None" for s in self.program.states]
        return f"return {value(spec.update, 'full')}, {_tuple(states, paren=True)}"

    def _variant_doc(self, v: int) -> str:
        tests = _path(self.tree, v)
        shown = " and ".join(f"``{ShapeTestPrinter().doprint(c)}``" if t else
                             f"not ``{ShapeTestPrinter().doprint(c)}``" for c, t in tests)
        return f"One leaf's step for parameters where {shown}."

    # --- dispatch and init -----------------------------------------------------------------------
    def _tree_lines(self, tree, leaf) -> list[str]:
        if isinstance(tree, int):
            return [f"return {leaf(tree)}"]
        cond, yes, no = tree
        yes_lines, no_lines = self._tree_lines(yes, leaf), self._tree_lines(no, leaf)
        if yes_lines == no_lines:  # variants that differ in their step but not here
            return yes_lines
        test = ShapeTestPrinter().doprint(_on_w(cond))
        return [f"if {test}:", *["    " + line for line in yes_lines], *no_lines]

    def pick_function(self) -> str:
        def leaf(v):
            return _tuple(self.fns[v], paren=True) if len(self.fns[v]) > 1 else self.fns[v][0]

        doc = '"""The step code for a parameter shaped like ``w`` (a Python test, run while tracing)."""'
        return f"def {self.pick}(w):\n" + _indent([doc, *self._tree_lines(self.tree, leaf)])

    def init_function(self) -> str:
        names = ", ".join(self.program.state_names)

        def leaf(v):
            spec = self.variants[v]
            own = {s.name: s for s in spec.states}
            parts = []
            for s in self.program.states:
                s = own.get(s.name)
                parts.append(STATE_INIT[s.init].format(shape=STATE_SHAPE[s.kind]) if s else
                             "jnp.zeros((0,), dtype)")
            return _tuple(parts, paren=True)

        doc = f'"""Initial ({names}) for the parameter ``w``; a state its code does not use is empty."""'
        lines = [doc, "dtype = jnp.promote_types(w.dtype, jnp.float32)", *self._tree_lines(self.tree, leaf)]
        return f"def {self.init_leaf}(w):\n" + _indent(lines)

    # --- the factory -----------------------------------------------------------------------------
    def factory(self) -> str:
        p = self.program
        defaults = p.hyper_defaults
        args = ["learning_rate" + (f"={number(defaults['lr'])}" if "lr" in defaults else "")]
        args += [f"{h.name}={number(h.default)}" for h in self.hypers]
        local = set(self.used) | {self.fit, self.upcast, self.init_leaf, self.state_class}
        local |= {f for fs in self.fns for f in fs} | ({self.pick} if self.pick else set())

        def fresh(base):
            return fresh_name(base, local)

        # params, updates, state and states are reserved by the parser: no program name can clash.
        init_fn, update_fn, treedef, states = fresh("init_fn"), fresh("update_fn"), fresh("treedef"), "states"
        leaves, extra = fresh("leaves"), fresh("extra_args")
        field_args = [f"{self.count}=jnp.zeros([], jnp.int32)"]
        field_args += [f"{self.fields[n]}={treedef}.unflatten([s[{i}] for s in {states}])"
                       for i, n in enumerate(p.state_names)]
        init_lines = [f"def {init_fn}(params):",
                      f"    {leaves}, {treedef} = jax.tree.flatten(params)",
                      f"    {states} = [{self.init_leaf}(w) for w in {leaves}]",
                      f"    return {self.state_class}({', '.join(field_args)})"]

        grads, codes, out, fn = fresh("grads"), fresh("codes"), fresh("out"), fresh("code")
        body = [f"del {extra}"]
        if self.needs_params:
            body += ["if params is None:",
                     f"    raise ValueError('{p.name} reads the parameters: pass params to update')"]
        if p.uses("lr"):
            body.append(f"lr = learning_rate(state.{self.count}) if callable(learning_rate) else learning_rate")
        if p.uses("step"):
            body.append(f"step = state.{self.count} + 1.0  # the language's step is 1-based")
        body.append(f"{grads}, {treedef} = jax.tree.flatten(updates)")
        seqs = {"g": grads}
        if "w" in self.inputs:
            seqs["w"] = fresh("ws")
            body.append(f"{seqs['w']} = {treedef}.flatten_up_to(params)")
        for n in p.state_names:
            seqs[n] = fresh(n + "s")
            body.append(f"{seqs[n]} = {treedef}.flatten_up_to(state.{self.fields[n]})")
        leaf_vars = [n for n in self.inputs if n in seqs]
        call_args = [f"{self.upcast}({n})" if n in ("w", "g") else n for n in self.inputs]
        zipped = ", ".join(seqs[n] for n in leaf_vars)
        nseg = len(self.fns[0])
        if self.pick:
            body.append(f"{codes} = [{self.pick}(g) for g in {grads}]")
            first = f"{fn}[0]" if nseg > 1 else fn
            loop = f"for {fn}, {', '.join(leaf_vars)} in zip({codes}, {zipped})"
        else:
            first = self.fns[0][0]
            loop = f"for {', '.join(leaf_vars)} in zip({zipped})"
            if len(leaf_vars) == 1:
                loop = f"for {leaf_vars[0]} in {zipped}"
        body.append(f"{out} = [{first}({', '.join(call_args)}) {loop}]")
        cuts = [self.variants[0].body[i] for i in global_statements(self.variants[0])]
        for k, g in enumerate(cuts, start=1):
            combine = GLOBAL_COMBINE.get(g.expr.op)
            if combine is None:
                raise DslError(f"the jax target cannot combine {g.expr.op}() across parameters")
            body.append(f"{g.target} = " + combine.format(parts=f"[partial for _, partial in {out}]"))
            if self.pick:
                body.append(f"{out} = [{fn}[{k}](carry, {g.target}) for {fn}, (carry, _) in zip({codes}, {out})]")
            else:
                body.append(f"{out} = [{self.fns[0][k]}(carry, {g.target}) for carry, _ in {out}]")
        new_fields = [f"{self.count}=optax.safe_int32_increment(state.{self.count})"]
        for i, n in enumerate(p.state_names):
            new_fields.append(f"{self.fields[n]}={treedef}.unflatten([{self.fit}(s[{i}], old) for (_, s), old "
                              f"in zip({out}, {seqs[n]})])")
        body.append(f"updates = {treedef}.unflatten([{self.fit}(-u, g) for (u, _), g in zip({out}, {grads})])")
        body.append(f"return updates, {self.state_class}({', '.join(new_fields)})")
        update_lines = [f"def {update_fn}(updates, state, params=None, **{extra}):", *_indent(body).split("\n")]
        ret = f"return optax.GradientTransformationExtraArgs({init_fn}, {update_fn})"
        lines = [_docstring(self.factory_doc()), *init_lines, *update_lines, ret]
        return f"def {p.name}({', '.join(args)}):\n" + _indent(lines)

    def factory_doc(self) -> str:
        p = self.program
        hyper_lines = [f"    {h.name}: the program's ``{h.name}`` (default {number(h.default)})."
                       for h in self.hypers]
        lr_default = p.hyper_defaults.get("lr")
        summary = (p.doc.strip() + "\n\n") if p.doc.strip() else ""
        example_args = "" if lr_default is not None else "learning_rate=1e-3"
        return (
            f"{summary}The ``{p.name}`` program as an optax transformation; ``-update`` is returned\n"
            f"(optax adds updates to the parameters).\n\n"
            f"Args:\n"
            f"    learning_rate: ``lr``, a number or an optax schedule of the step count"
            + (f" (default {number(lr_default)}).\n" if lr_default is not None else ".\n")
            + "".join(line + "\n" for line in hyper_lines)
            + "\nExample:\n"
            f"    >>> import jax.numpy as jnp\n"
            f"    >>> opt = {p.name}({example_args})\n"
            f"    >>> params = {{\"w\": jnp.ones((2, 3))}}\n"
            f"    >>> state = opt.init(params)\n"
            f"    >>> updates, state = opt.update(params, state, params)"
        )

    def module_doc(self) -> str:
        p = self.program
        source = to_source(p, doc=False)
        text = (f"The optimizer ``{p.name}`` as an optax transformation, generated by optdsl from the "
                f"program below.\n\nRegenerate rather than edit: ``optdsl compile {p.name} --target jax``."
                f"\n\nProgram::\n\n" + "".join("    " + line + "\n" if line else "\n"
                                                   for line in source.splitlines()))
        latex = _latex(p)
        if latex:
            text += "\nRule (LaTeX)::\n\n" + "".join(f"    {line}\n" for line in latex.splitlines())
        return text

    def text(self) -> str:
        p = self.program
        field_lines = [f"{self.count}: jax.Array"] + [f"{self.fields[n]}: optax.Updates" for n in p.state_names]
        state_class = (f"class {self.state_class}(NamedTuple):\n"
                       + _indent([f'"""State of ``{p.name}``: the step count and one pytree per state."""',
                                  *field_lines]))
        helpers = [
            f"def {self.upcast}(x):\n"
            + _indent(['"""``x`` in float32, or in its own dtype when that is wider."""',
                       "return x.astype(jnp.promote_types(x.dtype, jnp.float32))"]),
            f"def {self.fit}(value, like):\n"
            + _indent(['"""``value`` with the shape and dtype of ``like`` (``like`` itself for None)."""',
                       "if value is None:", "    return like",
                       "return jnp.broadcast_to(value, like.shape).astype(like.dtype)"]),
        ]
        functions = [f for v, spec in enumerate(self.variants) for f in self.variant_functions(v, spec)]
        if self.pick:
            functions.append(self.pick_function())
        blocks = [_docstring(self.module_doc()),
                  "from typing import NamedTuple\n\nimport jax\nimport jax.numpy as jnp\nimport optax",
                  state_class, *helpers, *functions, self.init_function(), self.factory()]
        return "\n\n\n".join(blocks) + "\n"


def _docstring(text: str) -> str:
    """``text`` as a docstring literal, written as it reads (raw when it holds backslashes, as LaTeX
    does); escaped by :func:`optdsl.printer.docstring` only when it could end the literal early."""
    if '"""' in text or text.endswith(('"', "\\")):
        return docstring(text)
    return ('r"""' if "\\" in text else '"""') + text + ('\n"""' if "\n" in text else '"""')


def _free(e: Expr) -> list[str]:
    return [n.name for n in walk(e) if isinstance(n, Var)]


def _on_w(cond: Expr) -> Expr:
    """A shape test asked of any full value, asked of ``w`` (they share its shape)."""
    return map_calls(cond, lambda c: Call(c.op, (Var("w"),) + c.args[1:]) if OPS[c.op].shape == STATIC else c)


def _path(tree, v: int, path=()):
    if isinstance(tree, int):
        return list(path) if tree == v else None
    cond, yes, no = tree
    return _path(yes, v, path + ((_on_w(cond), True),)) or _path(no, v, path + ((_on_w(cond), False),))


def _tuple(items: list[str], paren: bool = False) -> str:
    if len(items) == 1:
        return f"({items[0]},)" if paren else f"{items[0]},"
    text = ", ".join(items)
    return f"({text})" if paren or not items else text


def _indent(lines: list[str]) -> str:
    return "\n".join(("    " + line) if line else "" for text in lines for line in text.split("\n"))


def _latex(program: Program) -> str | None:
    try:
        from optdsl.latex import to_latex
    except ModuleNotFoundError as e:
        if e.name != "optdsl.latex":
            raise
        return None
    return to_latex(program)


def emit(program: Program) -> str:
    """The generated module's source: an optax transformation factory named after the program.

    Example:
        >>> import optdsl
        >>> "import optax" in emit(optdsl.load("sgd"))
        True
    """
    return black_format(_Module(program).text())


def entry_point(module, program: Program):
    """The factory function of a loaded generated module (``lion(learning_rate=..., ...)``)."""
    return getattr(module, program.name)
