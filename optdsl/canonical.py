"""Canonical form and structural hash: renamed or reordered copies of a program look the same.

:func:`canonicalize` folds constants and removes dead code, then rebuilds the program from the
dataflow graph of its outputs: every distinct computation once (common subexpressions merged),
arguments of commutative ops sorted, one op per statement (three-address form; values computed
from ``dim(w, i)`` stay inline, inside the branch that guards them), statements named
``t1, t2, ...`` in the order a depth-first walk from the outputs first needs them, states renamed
``s1, s2, ...`` in an order fixed by what they compute (not by their names), unused
hyperparameters dropped (``lr`` stays: it is an input every optimizer takes). Statement order, temporary and state names therefore never matter.

The graph is hash-consed: each node's key is a digest of its op and its arguments' keys, so the
work is linear in the program even when inlining it would be exponential.

Example:
    >>> from optdsl import parse
    >>> a = parse("def f(w, g, m, lr):\\n    m = interp(g, m, 0.9)\\n    return lr * m, m\\n")
    >>> b = parse("def f(w, g, mom, lr):\\n    x = 2\\n    mom = interp(g, mom, 0.9)\\n    return mom * lr, mom\\n")
    >>> structural_hash(a) == structural_hash(b)
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from .ir import Assign, Call, Const, Expr, Program, State, Var
from .ops import OPS
from .passes import eliminate_dead_code, fold
from .printer import format_number, to_source

_ROUNDS = 4  # refinement rounds that tell states apart by what they compute


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


class _Graph:
    """Hash-consed dataflow graph: key -> (op, argument keys) for calls, key -> leaf otherwise."""

    def __init__(self, program: Program, state_label: dict[str, str]):
        self.nodes: dict[str, tuple] = {}
        env: dict[str, str] = {}
        for name in ("w", "g", "lr", "step", *(h.name for h in program.hypers)):
            env[name] = self.leaf(Var(name), "in:" + name)
        for s in program.states:
            env[s.name] = self.leaf(Var(s.name), "state:" + state_label[s.name])
        for a in program.body:
            env[a.target] = self.key(a.expr, env)
        self.outputs = [self.key(e, env) for e in program.outputs()]

    def reads_dim(self) -> set[str]:
        """Keys of nodes computing from ``dim(w, i)``: they stay inside their expression (and so
        inside the ``where`` branch guarding them), for parameters may lack axis i."""
        out: set[str] = set()
        changed = True
        while changed:
            changed = False
            for k, node in self.nodes.items():
                if k not in out and node[0] != "leaf" and (node[0] == "dim" or any(a in out for a in node[1])):
                    out.add(k)
                    changed = True
        return out

    def leaf(self, expr: Expr, text: str) -> str:
        k = _digest("leaf", text)
        self.nodes[k] = ("leaf", expr)
        return k

    def key(self, expr: Expr, env: dict[str, str]) -> str:
        if isinstance(expr, Const):
            return self.leaf(expr, "const:" + format_number(expr.value))
        if isinstance(expr, Var):
            return env[expr.name]
        args = [self.key(a, env) for a in expr.args]
        if OPS[expr.op].commutative:
            args.sort()
        k = _digest(expr.op, *args)
        self.nodes[k] = (expr.op, tuple(args))
        return k


def _state_order(program: Program) -> list[State]:
    """States sorted by a label refined from what each one's new value computes."""
    label = {s.name: f"{s.kind}/{s.init}/{s.keep}" for s in program.states}
    for _ in range(_ROUNDS):
        graph = _Graph(program, label)
        update = graph.outputs[0]
        label = {s.name: _digest(label[s.name], graph.outputs[i + 1], update)
                 for i, s in enumerate(program.states)}
    index = {s.name: i for i, s in enumerate(program.states)}
    return sorted(program.states, key=lambda s: (label[s.name], index[s.name]))


def canonicalize(program: Program) -> Program:
    """The canonical form of ``program`` (see the module docstring); same updates, same states
    up to renaming, hyperparameters kept by name (they are the program's interface).

    Example:
        >>> from optdsl import parse, to_source
        >>> p = parse("def f(w, g, k, lr):\\n    x = 2\\n    k = interp(g, k, 0.9)\\n    return k * lr, k\\n")
        >>> print(to_source(canonicalize(p)), end="")
        def f(w, g, s1, lr):
            t1 = interp(g, s1, 0.9)
            t2 = t1 * lr
            return t2, t1
    """
    program = eliminate_dead_code(fold(program))
    order = _state_order(program)
    names = {s.name: f"s{i + 1}" for i, s in enumerate(order)}
    graph = _Graph(program, {s.name: names[s.name] for s in program.states})
    index = {s.name: i for i, s in enumerate(program.states)}
    outputs = [graph.outputs[0]] + [graph.outputs[index[s.name] + 1] for s in order]

    body: list[Assign] = []
    emitted: dict[str, Expr] = {}
    guarded = graph.reads_dim()

    def emit(root: str) -> Expr:
        # Depth-first, arguments left to right, with an explicit stack: a chain of 20,000
        # statements is 20,000 nodes deep.
        stack = [(root, False)]
        while stack:
            k, ready = stack.pop()
            if k in emitted:
                continue
            node = graph.nodes[k]
            if node[0] == "leaf":
                leaf = node[1]
                emitted[k] = Var(names.get(leaf.name, leaf.name)) if isinstance(leaf, Var) else leaf
            elif not ready:
                stack.append((k, True))
                stack.extend((a, False) for a in reversed(node[1]))
            elif k in guarded:
                emitted[k] = Call(node[0], tuple(emitted[a] for a in node[1]))
            else:
                emitted[k] = Var(f"t{len(body) + 1}")
                body.append(Assign(emitted[k].name, Call(node[0], tuple(emitted[a] for a in node[1]))))
        return emitted[root]

    out_exprs = [emit(k) for k in outputs]
    states = tuple(replace(s, name=names[s.name]) for s in order)
    canon = Program(program.name, states, program.hypers, tuple(body), out_exprs[0], tuple(out_exprs[1:]))
    used = {n for a in canon.body for n in _names(a.expr)} | {n for e in canon.outputs() for n in _names(e)}
    hypers = sorted((h for h in canon.hypers if h.name in used or h.name == "lr"), key=lambda h: (h.name != "lr", h.name))
    return replace(canon, hypers=tuple(hypers))


def _names(expr: Expr) -> set[str]:
    if isinstance(expr, Var):
        return {expr.name}
    if isinstance(expr, Call):
        return set().union(*(_names(a) for a in expr.args))
    return set()


def structural_hash(program: Program) -> str:
    """Hex digest of the canonical form (the program's name and docstring excluded).

    Example: ``structural_hash(p) == structural_hash(to_renamed(p))`` for any renaming of states
    and temporaries or reordering of independent statements."""
    canon = replace(canonicalize(program), name="program", doc="")
    return hashlib.sha256(to_source(canon, doc=False).encode()).hexdigest()


__all__ = ["canonicalize", "structural_hash"]
