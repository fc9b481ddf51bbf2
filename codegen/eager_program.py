"""The eager target's program passes: a path's program as the multi-tensor printer of
:mod:`codegen.torch_target` takes it.

Folds that let one multi-tensor call do the work of several (``x + c y`` as one
``_foreach_add``, ``z + x / y`` as ``_foreach_addcdiv``, ``interp(x y, s, a)`` as
``_foreach_addcmul``, a nan test as one ``amax``), the sides of a where moved next to it so that a
Python test can skip the side no tensor takes (lazy wheres), the cut of a step at its per-tensor
reductions into segments that run on slices of the tensors (:func:`_split`), and the steps printed
for a test's common case (:func:`_variants`). Every pass takes and returns a :class:`Program`;
the printer only prints.

Example:
    >>> import optdsl
    >>> from codegen.torch_target import _Module
    >>> split = _Module(optdsl.load("lamb"), {}).splits[0]
    >>> [len(stage) for stage in split.stages]  # LAMB's two norms: one stage
    [2]
"""

from __future__ import annotations

from dataclasses import dataclass

from optdsl.errors import DslError
from optdsl.ir import (
    Assign,
    Call,
    Const,
    Expr,
    Program,
    Var,
    free_vars,
    fresh_name,
    map_calls,
    names_in,
    substitute,
    walk,
)
from optdsl.ops import ELEMENTWISE, GLOBAL, OPS, REDUCE
from optdsl.passes import fold, liveness
from optdsl.typecheck import expr_kind, input_kinds


def _live_after(body: list[Assign], outputs) -> list[set[str]]:
    """For each statement of ``body``, the names read after it (by later statements or ``outputs``)."""
    live = set().union(*[free_vars(e) for e in outputs])
    out: list[set[str]] = []
    for a in reversed(body):
        out.append(set(live))
        live.discard(a.target)
        live |= free_vars(a.expr)
    return out[::-1]


@dataclass
class _Split:
    """An eager program cut at its per-tensor and global reductions (see :func:`_split`): the
    segment of each statement; per stage, its reductions (statement indices); per segment, the names
    it takes from earlier ones (with their kinds), the names it hands on and the names later
    segments read; the op shapes whose reductions were cut out (``REDUCE``, ``GLOBAL``)."""

    seg: list[int]
    stages: list[list[int]]
    taken: list[dict[str, str]]
    carried: list[set[str]]
    live_out: list[set[str]]
    cut: frozenset[str] = frozenset()

    def reduced(self, prog: Program) -> set[str]:
        """The names of the reductions cut out of ``prog`` (the program this split cuts)."""
        return {prog.body[i].target for stage in self.stages for i in stage}


def _whole(prog: Program) -> _Split:
    """``prog``'s step as one segment, nothing cut out (a path without per-tensor reductions, or
    whose reductions cannot be cut)."""
    return _Split([0] * len(prog.body), [], [{}], [set()], [set()])


def _split(prog: Program, scalars: dict[str, str], cut: frozenset[str] = frozenset({REDUCE, GLOBAL})
           ) -> _Split | None:
    """``prog`` (an eager program: one call per statement) cut into segments at its per-tensor and
    global reductions (``x = norm(r)``, ``G = global_norm(g)``), so that every segment runs on
    slices of the tensors: segment d computes what needs the values of d stages of reductions, and
    stage d's reductions as each row's partial totals; the runtime combines a tensor's rows (all
    tensors' rows, for a global one) between segments. The last segment
    is the step. None when there is no such reduction, or one cannot be cut out: an argument that
    is not full-shaped (it would not split over slices), a reduced name set twice, or a statement
    whose inputs the segment order would change (a value overwritten before a later segment reads
    it).

    ``cut``: the shapes of the reductions to cut out; ``{GLOBAL}`` leaves the per-tensor ones in
    their segments, computed whole there (a step that then runs on whole tensors, not slices).

    Example: LAMB's ``w_norm = norm(w)`` and ``r_norm = norm(r)`` are stage 0 (r reads g and the
    states: segment 0, which hands r on); ``trust`` and the update are segment 1."""
    kinds = {**input_kinds(prog), **scalars}
    fail = _raiser(prog)
    level: dict[str, int] = {}
    seg: list[int] = []
    stages: list[list[int]] = []
    defined: list[str] = []  # kind of each statement's value
    targets = [a.target for a in prog.body]
    for i, a in enumerate(prog.body):
        depth = max((level.get(v, 0) for v in free_vars(a.expr)), default=0)
        seg.append(depth)
        level[a.target] = depth
        if isinstance(a.expr, Call) and OPS[a.expr.op].shape in cut:
            full = all(isinstance(x, Var) and kinds.get(x.name) == "full" for x in a.expr.args)
            if OPS[a.expr.op].reduction is None or not full or targets.count(a.target) > 1 or a.target in kinds:
                return None
            stages += [[] for _ in range(depth + 1 - len(stages))]
            stages[depth].append(i)
            level[a.target] = depth + 1
            kinds[a.target] = "scalar"
        else:
            kinds[a.target] = expr_kind(a.expr, kinds, fail)
        defined.append(kinds[a.target])
    if not stages:
        return None
    outputs = set().union(*[free_vars(e) for e in prog.outputs()])
    reach = _reaching(prog.body, range(len(seg)), outputs)
    last = len(stages)
    reductions = {i for stage in stages for i in stage}
    users: dict[int, list[int | None]] = {j: [] for j in range(len(seg))}
    for i, defs in reach.items():
        for j in defs.values():
            if j is not None:
                users[j].append(i)
    for j in reversed(range(len(seg))):  # as late as its first reader: fewer values handed on
        if j not in reductions:
            seg[j] = min((last if i is None else seg[i] for i in users[j]), default=last)
    if reach != _reaching(prog.body, sorted(range(len(seg)), key=lambda i: (seg[i], i)), outputs):
        return None
    taken = [{} for _ in range(last + 1)]
    carried = [set() for _ in range(last + 1)]
    live_out = [set() for _ in range(last + 1)]
    for i, defs in reach.items():
        e = last if i is None else seg[i]  # None: the outputs, read by the last segment
        for v, j in defs.items():
            for d in range(e):
                live_out[d].add(v)
            if j is not None and seg[j] < e:
                taken[e][v] = defined[j]
                if j not in reductions:
                    carried[seg[j]].add(v)
    return _Split(seg, stages, taken, carried, live_out, cut)


@dataclass(frozen=True)
class _Test:
    """A test of a whole group under which its group step hands the group to one printed for that
    case (see :func:`_variants`): the per-tensor truth value ``name`` is 0 for every tensor
    (``per_tensor``: read on a CPU by the runtime's ``_which``; on an accelerator, where reading it
    would wait for the device, never taken), or the per-step number ``name`` is 0 (not 0 with
    ``nonzero``)."""

    name: str
    per_tensor: bool
    nonzero: bool = False

    def __str__(self) -> str:
        return f"{self.name} {'!=' if self.nonzero else '=='} 0" + (" for every tensor" if self.per_tensor else "")

    def hand(self, value: str, step: str) -> list[str]:
        """Lines handing the group to ``step`` where the test holds (``value``: the printed value tested)."""
        test = f"_which({value}) == 0" if self.per_tensor else f"{value} {'!=' if self.nonzero else '=='} 0"
        return [f"if {test}:", f"    return {step}(_params, _grads, _states, _hyper)"]


MAX_VARIANTS = 2  # steps printed for common cases, per path: each specialises the one before
_KIND_COST = {"const": 0, "uniform": 0, "scalar": 1, "static": 1, "row": 2, "col": 2, "full": 2}


def _variants(prog: Program, split: _Split | None, scalars: dict[str, str]) -> list[tuple]:
    """Eager programs for the common cases of a path's tests, each ``(program, its split, _Test)``
    and each specialising the one before: the group step tests the whole group once and hands it
    to the specialised step, which makes fewer per-tensor passes (:func:`_variant`). Tiger with no
    nan in any grad and ``embedding=0`` scales m by one number and its update by each tensor's rms,
    where its general step builds a decay per tensor and broadcasts a row value."""
    out, split = [], split or _whole(prog)
    for _ in range(MAX_VARIANTS):
        found = _variant(prog, split, scalars)
        if found is None:
            break
        out.append(found)
        prog, split = found[0], found[1]
    return out


def _variant(prog: Program, split: _Split, scalars: dict[str, str]) -> tuple | None:
    """The first of the step's tests worth a step of its own (see :func:`_variants`), or None:

    - a per-tensor truth value ``c`` (a guard: Tiger's nan test, LAMB's zero norms) computed before
      the step writes anything (only per-tensor and per-step numbers before it, no state), taken
      as 0 for every tensor: ``c = 0``, folded (exact: a truth value is 0.0 or 1.0);
    - a per-step number ``c`` (Tiger's ``embedding``) testing a where whose one side is of a
      cheaper kind than the where's value (a number per tensor where the where's is a row): that
      side in place of every ``where(c, ...)``, folded;

    kept where it leaves less per-tensor work than the test's own (:func:`_specialised`)."""
    last = len(split.taken) - 1
    inputs = input_kinds(prog)
    kinds = {**inputs, **scalars, **split.taken[last]}
    fail = _raiser(prog)
    targets = [a.target for a in prog.body]
    pure = True  # nothing written yet
    for i, a in enumerate(prog.body):
        if split.seg[i] != last:
            continue
        e, kind = a.expr, expr_kind(a.expr, kinds, fail)
        candidates = []
        if (pure and kind == "scalar" and isinstance(e, Call) and OPS[e.op].truth and targets.count(a.target) == 1
                and a.target not in inputs):
            body = [*prog.body[:i], Assign(a.target, Const(0.0), a.loc), *prog.body[i + 1:]]
            candidates.append((prog.with_body(body), _Test(a.target, True), i + 1))
        c = e.args[0] if isinstance(e, Call) and e.op == "where" else None
        if (isinstance(c, Var) and kinds.get(c.name) == "uniform" and c.name not in targets
                and not _reduced_after(prog, i)):
            for nonzero, side in ((False, e.args[2]), (True, e.args[1])):
                if _KIND_COST[expr_kind(side, kinds, fail)] < _KIND_COST[kind]:
                    candidates.append((prog.with_exprs(_taking(c.name, nonzero)), _Test(c.name, False, nonzero), 0))
        for candidate, test, start in candidates:
            found = _specialised(prog, split, scalars, candidate, last, start)
            if found is not None:
                return (*found, test)
        kinds[a.target] = kind
        pure = pure and _KIND_COST.get(kind, 2) < 2 and a.target not in prog.state_names
    return None


def _reduced_after(prog: Program, i: int) -> bool:
    """Does a reduction read the value statement ``i`` assigns, directly or through later ones? Then
    the where's cheaper side may not stand in for it: a number per tensor in place of a row of them
    changes what ``norm`` or ``sum`` of it counts (the interpreter's where broadcasts the number)."""
    reading = {prog.body[i].target}
    for a in prog.body[i + 1:]:
        if free_vars(a.expr) & reading:
            if any(isinstance(n, Call) and OPS[n.op].shape != ELEMENTWISE and free_vars(n) & reading
                   for n in walk(a.expr)):
                return True
            reading.add(a.target)
        else:
            reading.discard(a.target)
    return False


def _taking(c: str, nonzero: bool):
    """``expr -> expr`` with every ``where(c, a, b)`` replaced by a (``nonzero``) or b."""
    def take(e: Call) -> Expr:
        return e.args[1 if nonzero else 2] if e.op == "where" and e.args[0] == Var(c) else e
    return lambda expr: map_calls(expr, take)


def _specialised(prog: Program, split: _Split, scalars: dict[str, str], candidate: Program, last: int,
                 start: int) -> tuple[Program, _Split] | None:
    """``candidate`` (prog with a test decided) folded, dead code gone, and its split, where it is
    worth a step of its own: it leaves out at least two per-tensor ops of what the general step
    does after the test (from statement ``start``; :func:`_step_cost`), a `_which` and a call
    being worth about one. It runs after the general step's stages, on their slices and totals: so
    its states, the statements of those stages and what it takes from them are the general step's,
    and its step computes no reduction. None otherwise."""
    folded = fold(candidate)
    live, live_states = liveness(folded)
    if live_states != set(prog.state_names):
        return None
    keep = sorted(live)
    new = folded.with_body([folded.body[i] for i in keep])
    new_split = (_split(new, scalars) if split.stages else None) or _whole(new)
    new_last = len(new_split.taken) - 1
    if split.stages:
        for i, d in zip(keep, new_split.seg):
            if (split.seg[i] == last) != (d == new_last) or (d != new_last and folded.body[i] != prog.body[i]):
                return None
        if any(split.taken[last].get(n) != kind for n, kind in new_split.taken[new_last].items()):
            return None
        if any(isinstance(a.expr, Call) and OPS[a.expr.op].shape == REDUCE
               for a, d in zip(new.body, new_split.seg) if d == new_last):
            return None
    before = _step_cost(prog, split, scalars, last, start)
    return (new, new_split) if _step_cost(new, new_split, scalars, new_last) <= before - 2 else None


def _step_cost(prog: Program, split: _Split, scalars: dict[str, str], last: int, start: int = 0) -> int:
    """The step's per-tensor work from statement ``start`` on, roughly: per statement of the last
    segment, 1 for a number per tensor, 2 for a list of full, row or column tensors, 0 for a
    per-step number or another name for a value."""
    kinds, total, fail = {**input_kinds(prog), **scalars}, 0, _raiser(prog)
    for i, a in enumerate(prog.body):
        kinds[a.target] = expr_kind(a.expr, kinds, fail)
        if i >= start and split.seg[i] == last and not isinstance(a.expr, Var):
            total += _KIND_COST.get(kinds[a.target], 2)
    return total


def _reaching(body: list[Assign], order, outputs: set[str]) -> dict:
    """Running ``body``'s statements in ``order``: for each statement (and None: ``outputs``), the
    statement whose value each name it reads is (None: an input)."""
    current: dict[str, int] = {}
    out = {}
    for i in order:
        out[i] = {v: current.get(v) for v in free_vars(body[i].expr)}
        current[body[i].target] = i
    out[None] = {v: current.get(v) for v in outputs}
    return out


def _kinds_and_reads(prog: Program, extra_kinds: dict[str, str]) -> tuple[dict[str, str], dict[str, int]]:
    """The kind of every name ``prog`` sets (its last value's) and how many times each name is read."""
    kinds = {**input_kinds(prog), **extra_kinds}
    fail = _raiser(prog)
    for a in prog.body:
        kinds[a.target] = expr_kind(a.expr, kinds, fail)
    reads: dict[str, int] = {}
    for e in [a.expr for a in prog.body] + list(prog.outputs()):
        for n in walk(e):
            if isinstance(n, Var):
                reads[n.name] = reads.get(n.name, 0) + 1
    return kinds, reads


def _fold_axpy(prog: Program, extra_kinds: dict[str, str]) -> Program:
    """``t = y * c; ...; z = x + t`` (t read once, by that sum; c a number) -> ``z = x + y * c``, which the
    multi-tensor printer runs as one ``_foreach_add(x, y, alpha=c)``: AdamW's weight decay and the
    like then cost one pass and no temporary list."""
    kinds, reads = _kinds_and_reads(prog, extra_kinds)
    states = {s.name for s in prog.states}

    def scaled_list(a: Assign | None) -> tuple[Var, Expr] | None:
        """``(y, c)`` where ``a`` is ``t = y * c`` (a list y, a number c) and t is read once."""
        e = a.expr if a is not None else None
        if not (isinstance(e, Call) and e.op == "mul" and reads.get(a.target) == 1):
            return None
        y, c = e.args if _number_like(e.args[1], kinds) else e.args[::-1]
        return (y, c) if isinstance(y, Var) and _number_like(c, kinds) else None

    body: list[Assign | None] = list(prog.body)

    def setting(name: str, j: int) -> Assign | None:
        """The statement before j that last set ``name`` (None: an input, or one folded away)."""
        return next((body[k] for k in range(j - 1, -1, -1) if prog.body[k].target == name), None)

    for i, a in enumerate(prog.body):
        if (found := scaled_list(body[i])) is None:
            continue
        y, c = found
        scaled, t = Call("mul", (y, c)), Var(a.target)
        for j in range(i + 1, len(body)):
            b = body[j]
            if isinstance(b.expr, Call) and b.expr.op in ("add", "sub") and a.target in free_vars(b.expr):
                x, other = b.expr.args  # (a number plus y c is no axpy: it would run per tensor)
                if not all(isinstance(v, Var) for v in (x, other)):
                    break  # (a sum :func:`_fold_addcdiv` made: its quotient stays whole)
                partner = other if x == t else x
                if y.name in states and b.target == y.name and b.expr.op == "add" and scaled_list(setting(partner.name, j)):
                    break  # s = s c + y2 c2: fold y2 c2 instead, so that s c is written into s's own tensors
                if other == t and x != t and not _number_like(x, kinds):
                    body[i], body[j] = None, Assign(b.target, Call(b.expr.op, (x, scaled)), b.loc)
                elif b.expr.op == "add" and x == t and other != t and not _number_like(other, kinds):
                    body[i], body[j] = None, Assign(b.target, Call("add", (other, scaled)), b.loc)
                break
            if a.target in free_vars(b.expr) or b.target in (a.target, y.name, getattr(c, "name", None)):
                break
    return prog.with_body([a for a in body if a is not None], update=prog.update, new_states=prog.new_states)


def _fold_addcdiv(prog: Program, extra_kinds: dict[str, str]) -> Program:
    """``q = x / y; ...; s = z + q`` (or ``z - q``; q read once, by that sum; lists x, y, z of s's
    kind) -> ``s = z + x / y``, and where ``x = x2 * c`` (read once, by that quotient; c a number)
    -> ``s = z + (x2 * c) / y``, which the multi-tensor printer runs as one
    ``_foreach_addcdiv(z, x2, y, value=c)``, whose kernel computes z + (c x2) / y: the reference's
    operations, in its order. Adam-style ``m_hat / (sqrt(v_hat) + eps) + wd w`` (AdamW, LAMB) then
    takes two passes instead of three. Statements in between may not read q or x, nor set a name
    the moved expressions read."""
    kinds, reads = _kinds_and_reads(prog, extra_kinds)
    body: list[Assign | None] = list(prog.body)
    where: dict[str, int] = {}  # the statement that last set each name

    def movable(i: int, j: int, skip: int = -1) -> bool:
        """Can statement i's expression move into statement j (only j reading its target)?"""
        a = body[i]
        assert a is not None
        blocked = {a.target} | free_vars(a.expr)
        return all(b is None or k == skip or (b.target not in blocked and a.target not in free_vars(b.expr))
                   for k, b in enumerate(body[i + 1:j], i + 1))

    def single(name: Expr, kind: str, op: str) -> int | None:
        """The statement setting ``name`` (a list of ``kind`` read once) by ``op``, if any."""
        i = where.get(name.name, -1) if isinstance(name, Var) else -1
        a = body[i] if i >= 0 else None
        if a is None or reads.get(a.target) != 1 or kinds.get(a.target) != kind:
            return None
        return i if isinstance(a.expr, Call) and a.expr.op == op else None

    for j, b in enumerate(prog.body):
        e, kind = b.expr, kinds.get(b.target)
        if isinstance(e, Call) and e.op in ("add", "sub") and kind in ("full", "row", "col"):
            for z, q in [e.args, e.args[::-1]][: 2 if e.op == "add" else 1]:
                i = single(q, kind, "div")
                if i is None or not isinstance(z, Var) or kinds.get(z.name) != kind or not movable(i, j):
                    continue
                x, y = body[i].expr.args
                if not all(isinstance(v, Var) and kinds.get(v.name) == kind for v in (x, y)):
                    continue
                h = single(x, kind, "mul")
                if h is not None:
                    x2, c = body[h].expr.args
                    x2, c = (x2, c) if _number_like(c, kinds) else (c, x2)
                    if isinstance(x2, Var) and kinds.get(x2.name) == kind and _number_like(c, kinds) and (
                            movable(h, j, skip=i)):
                        x, body[h] = Call("mul", (x2, c)), None
                body[i], body[j] = None, Assign(b.target, Call(e.op, (z, Call("div", (x, y)))), b.loc)
                break
        where[b.target] = j
    return prog.with_body([a for a in body if a is not None], update=prog.update, new_states=prog.new_states)


def _number_like(e: Expr, kinds: dict[str, str]) -> bool:
    """Is ``e`` a number the multi-tensor ops take as a Python scalar (a constant or a per-step value)?"""
    return isinstance(e, Const) or (isinstance(e, Var) and kinds.get(e.name) == "uniform")


def _fold_addcmul(prog: Program, extra_kinds: dict[str, str]) -> Program:
    """``t = x * y; ...; s2 = interp(t, s, a)`` (t read once, by that interp; lists x, y, s of t's
    kind) -> ``s2 = interp(x * y, s, a)``, which the multi-tensor printer runs as a ``mul_`` and an
    ``addcmul_`` of s: Adam's ``v = interp(g * g, v, beta2)`` then needs no temporary list.
    Statements in between may not read t or set t, x or y."""
    kinds, reads = _kinds_and_reads(prog, extra_kinds)
    body: list[Assign | None] = list(prog.body)
    for i, a in enumerate(prog.body):
        e, t = a.expr, a.target
        if not (isinstance(e, Call) and e.op == "mul" and reads.get(t) == 1 and kinds[t] in ("full", "row", "col")):
            continue
        if not all(isinstance(x, Var) and kinds.get(x.name) == kinds[t] for x in e.args):
            continue
        for j in range(i + 1, len(body)):
            b = body[j]
            if isinstance(b.expr, Call) and b.expr.op == "interp" and b.expr.args[0] == Var(t):
                body[i], body[j] = None, Assign(b.target, Call("interp", (e, *b.expr.args[1:])), b.loc)
                break
            if t in free_vars(b.expr) or b.target in (t, *(x.name for x in e.args)):
                break
    return prog.with_body([a for a in body if a is not None], update=prog.update, new_states=prog.new_states)


def _fold_nan_test(prog: Program, extra_kinds: dict[str, str]) -> Program:
    """``t = a != a; ...; x = amax(t)`` (t read once, by that amax; a not set in between) ->
    ``y = amax(a); x = y != y``: the largest element is nan exactly when one is (amax propagates
    nan, in torch as in the reference), so Tiger's nan test reads g once per tensor (a per-tensor
    reduction, cut out by :func:`_split`) instead of making a list of truth values first."""
    _, reads = _kinds_and_reads(prog, extra_kinds)
    used = names_in(prog) | set(extra_kinds)
    body: list[Assign | None] = list(prog.body)
    for i, a in enumerate(prog.body):
        e, t = a.expr, a.target
        if not (isinstance(e, Call) and e.op == "ne" and isinstance(e.args[0], Var) and e.args[0] == e.args[1]):
            continue
        if reads.get(t) != 1:
            continue
        for j in range(i + 1, len(body)):
            b = body[j]
            if b.expr == Call("amax", (Var(t),)):
                y = fresh_name("amax", used)
                body[i] = Assign(y, Call("amax", e.args[:1]), a.loc)
                body[j] = Assign(b.target, Call("ne", (Var(y), Var(y))), b.loc)
                break
            if t in free_vars(b.expr) or b.target in (t, e.args[0].name):
                break
    return prog.with_body([a for a in body if a is not None], update=prog.update, new_states=prog.new_states)


LAZY_CONDITIONS = ("scalar", "uniform")  # one number per tensor, or per step: a Python test can pick a side


def _lazy_where(a: Assign, kinds: dict[str, str], fail) -> bool:
    """Is ``a`` ``x = where(c, p, q)`` of tensors (rows, columns), its arguments names or numbers and
    c one number per tensor or per step? Then the group step may run only the side its tensors take
    (see :func:`_where_sides`)."""
    e = a.expr
    if not (isinstance(e, Call) and e.op == "where" and isinstance(e.args[0], Var)):
        return False
    if not all(isinstance(x, (Var, Const)) for x in e.args[1:]):
        return False
    return kinds.get(e.args[0].name) in LAZY_CONDITIONS and expr_kind(e, kinds, fail) in ("full", "row", "col")


def _lazy_wheres(body: list[Assign], kinds: dict[str, str], fail) -> list[int]:
    """Indices of ``body``'s lazy wheres (:func:`_lazy_where`); ``kinds``: those of the names it reads
    from before its first statement."""
    kinds, out = dict(kinds), []
    for i, a in enumerate(body):
        if _lazy_where(a, kinds, fail):
            out.append(i)
        kinds[a.target] = expr_kind(a.expr, kinds, fail)
    return out


def _where_sides(body: list[Assign], j: int, after: set[str]) -> tuple[list[int], list[int]]:
    """For ``body[j] = where(c, p, q)``: the statements before it whose values p alone reads (directly
    or through each other), and those q alone reads (``after``: names read after ``body``). A step
    whose tensors all take p need not run q's statements, and the other way round. Per-tensor
    reductions never count: they are cut out of the step (:func:`_split`)."""
    c, p, q = body[j].expr.args
    users: dict[int, list[tuple[int | None, str]]] = {i: [] for i in range(len(body))}
    for k, defs in _reaching(body, range(len(body)), after).items():
        for v, i in defs.items():
            if i is not None:
                users[i].append((k, v))
    out = []
    for side, other in ((p, q), (q, p)):
        own: set[int] = set()
        for i in reversed(range(j)):
            e = body[i].expr
            if isinstance(e, Call) and OPS[e.op].shape in (REDUCE, GLOBAL):
                continue
            if users[i] and all(k in own or (k == j and side == Var(v) != other and v != c.name) for k, v in users[i]):
                own.add(i)
        out.append(sorted(own))
    return out[0], out[1]


def _defer_branches(prog: Program, extra_kinds: dict[str, str]) -> Program:
    """Before each lazy ``x = where(c, p, q)`` (:func:`_lazy_where`), the statements only p reads,
    then those only q reads (:func:`_where_sides`), moved there from wherever they were, when that
    changes no value any statement reads: the group step runs them under a Python test of c, so
    that Tiger computes its nan branch, and its embedding rows' rms, only when some tensor takes it.
    The last where first: one inside another's side then gathers its own sides within that one's."""
    lazy = _lazy_wheres(prog.body, {**input_kinds(prog), **extra_kinds}, _raiser(prog))
    after = set().union(*map(free_vars, prog.outputs()))
    order = list(range(len(prog.body)))  # indices into prog.body in their new order
    reads = _reaching(prog.body, order, after)
    for j in reversed(lazy):
        at = order.index(j)
        p, q = _where_sides([prog.body[i] for i in order], at, after)
        moved = [order[i] for i in p + q]
        new = [i for i in order[:at] if i not in moved] + moved + order[at:]
        if _reaching(prog.body, new, after) == reads:
            order = new
    return prog.with_body([prog.body[i] for i in order], update=prog.update, new_states=prog.new_states)


def _where_blocks(body: list[Assign], kinds: dict[str, str], fail, after: set[str]) -> dict[int, tuple]:
    """The lazy wheres of a segment's ``body`` (:func:`_lazy_where`; ``after``: names read after it):
    ``{j: (start, p's statements, q's)}``, the sides of ``body[j]`` (:func:`_where_sides`) where they
    sit just before it, p's then q's, from ``start``, as :func:`_defer_branches` leaves them (else
    none: the step still skips the per-tensor picks). A where inside another's side is a block inside
    that side."""
    blocks: dict[int, tuple] = {}
    for j in _lazy_wheres(body, kinds, fail):
        p, q = _where_sides(body, j, after)
        start = j - len(p) - len(q)
        blocks[j] = (start, p, q) if p + q == list(range(start, j)) else (j, [], [])
    return blocks


def _raiser(prog: Program):
    def fail(msg, hint=None):
        raise DslError(msg, prog.filename, hint=hint)
    return fail


def _inline_static(prog: Program, extra_kinds: dict[str, str]) -> Program:
    """Substitute names bound to shape facts into their uses (they differ per tensor of a group).
    ``extra_kinds``: the kinds of names the program reads besides its inputs."""
    kinds = {**input_kinds(prog), **extra_kinds}
    static: dict[str, Expr] = {}
    body = []

    def fail(msg, hint=None):
        raise DslError(msg, prog.filename, hint=hint)

    for a in prog.body:
        e = substitute(a.expr, static)
        kinds[a.target] = expr_kind(e, kinds, fail)
        if kinds[a.target] == "static":
            static[a.target] = e
        else:
            static.pop(a.target, None)
            body.append(type(a)(a.target, e, a.loc))
    outs = [substitute(e, static) for e in prog.outputs()]
    return prog.with_body(body, update=outs[0], new_states=outs[1:])
