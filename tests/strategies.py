"""Hypothesis strategies for random valid programs, and a differential check against the interpreter.

``expressions(env, kind)`` draws an expression whose shape fits ``kind`` given the shapes of the
names in ``env``; ``programs()`` draws a whole validated Program: states of several kinds
(full, scalar, and row/col when ``factored``), hyperparameters, reassignments, reductions,
shape tests (``where(ndim(w) >= 2, ...)``), selections on per-tensor or per-step numbers and ops
drawn from the op table's search vocabulary.
``assert_same_updates(p, q)`` runs both through the reference interpreter on the same weights and
gradients and compares the updates wherever ``p``'s are finite.

Example (in a test)::

    @given(programs())
    def test_something(p):
        assert_same_updates(p, my_pass(p))
"""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from optdsl.interpreter import Interpreter
from optdsl.ir import Assign, Call, Const, Expr, Hyper, Program, State, Var, walk
from optdsl.ops import OPS, search_vocabulary
from optdsl.typecheck import expr_kind, fits, input_kinds, validate

_VOCAB = search_vocabulary()


def scaled_examples(n: int) -> int:
    """A test's own number of examples under the loaded profile: ``n`` under ``ci`` and ``dev``
    (100 examples by default), ten times ``n`` under ``long`` (1000), so that the long profile hunts
    further in the tests that set their own count too.

    Example: ``@settings(max_examples=scaled_examples(40))``."""
    return max(1, n * settings.default.max_examples // 100)


UNARY = sorted(o.name for o in _VOCAB if o.shape == "elementwise" and o.arity == 1)
BINARY = sorted(o.name for o in _VOCAB if o.shape == "elementwise" and o.arity == 2)
REDUCE = sorted(o.name for o in _VOCAB if o.shape == "reduce" and o.arity == 1)
CONSTANTS = st.one_of(st.sampled_from([0.5, 0.9, 0.99, 2.0, -1.0, 1e-8, 3.0, 0.1]),
                      st.integers(-40, 40).map(lambda k: k / 8))


def _fail(msg, hint=None):
    raise AssertionError(msg)


@st.composite
def expressions(draw, env: dict[str, str] | None = None, kind: str = "full", depth: int = 3) -> Expr:
    """An expression over the names of ``env`` (name -> shape) whose shape fits a ``kind`` slot."""
    env = env or {"w": "full", "g": "full", "lr": "uniform"}
    leaves = [n for n, k in env.items() if fits(k, kind) and k != "static"]
    if depth <= 0 or draw(st.integers(0, 3)) == 0:
        if leaves and draw(st.booleans()):
            return Var(draw(st.sampled_from(sorted(leaves))))
        return Const(draw(CONSTANTS))
    sub = lambda k=kind: expressions(env, k, depth - 1)
    choice = draw(st.sampled_from(["unary", "binary", "binary", "interp", "reduce", "factored", "static", "select"]))
    if choice == "factored" and (kind not in ("row", "col", "full")
                                 or not any(k in ("row", "col") for k in env.values())):
        choice = "unary"
    if choice == "unary":
        op, arg = draw(st.sampled_from(UNARY)), draw(sub())
        if op == "neg" and isinstance(arg, Const):  # the parser reads `-0.5` as one literal
            return Const(-arg.value)
        return Call(op, (arg,))
    if choice == "binary":
        return Call(draw(st.sampled_from(BINARY)), (draw(sub()), draw(sub())))
    if choice == "interp":
        return Call("interp", (draw(sub()), draw(sub()), draw(sub("scalar"))))
    if choice == "reduce":
        return Call(draw(st.sampled_from(REDUCE)), (draw(sub("full")),))
    if choice == "factored":
        op = {"row": "rowmean", "col": "colmean"}.get(kind) or draw(st.sampled_from(["rowmean", "colmean"]))
        return Call(op, (Call("mul", (Var("g"), draw(sub("full")))),))  # the argument must be full
    if choice == "select":  # a condition of one number per tensor or per step (a norm, a hyperparameter)
        return Call("where", (draw(sub("scalar")), draw(sub()), draw(sub())))
    cond = Call("ge", (Call("ndim", (Var("w"),)), Const(2.0)))
    return Call("where", (cond, draw(sub()), draw(sub())))


@st.composite
def programs(draw, max_statements: int = 5, max_states: int = 3, factored: bool = True) -> Program:
    """A random valid program; ``factored`` allows row/col states (then it needs 2-d parameters)."""
    kinds = ["full", "full", "scalar"] + (["row", "col"] if factored else [])
    states = []
    for i in range(draw(st.integers(0, max_states))):
        kind = draw(st.sampled_from(kinds))
        init = draw(st.sampled_from(["zeros", "ones", "w"] if kind == "full" else ["zeros", "ones"]))
        states.append(State(f"s{i}", kind, init))
    hypers = [Hyper("lr", 0.1)] + [Hyper(f"h{i}", draw(CONSTANTS)) for i in range(draw(st.integers(0, 2)))]
    skeleton = Program("random", tuple(states), tuple(hypers), (), Const(0.0), ())
    env = input_kinds(skeleton)
    body = []
    for i in range(draw(st.integers(1, max_statements))):
        targets = [f"t{i}"] + [s.name for s in states] + [a.target for a in body]
        target = draw(st.sampled_from(targets))
        slot = next((s.kind for s in states if s.name == target), None) or draw(
            st.sampled_from(["full", "full", "scalar"]))
        expr = draw(expressions(env, slot, depth=2))
        env[target] = expr_kind(expr, env, _fail)
        body.append(Assign(target, expr))
    update = draw(expressions(env, "full", depth=2))
    if draw(st.booleans()):
        update = Call("mul", (Var("lr"), update))
    new_states = []
    for s in states:
        pick = draw(st.integers(0, 7))
        if pick < 2:
            new_states.append(Var(s.name))
        elif pick == 2:  # a state set to a number (a simplified winner's `m = 0` once broke a printer)
            new_states.append(Const(draw(CONSTANTS)))
        else:
            new_states.append(draw(expressions(env, s.kind, depth=2)))
    program = Program("random", tuple(states), tuple(hypers), tuple(body), update, tuple(new_states))
    return validate(program)


def needs_2d(program: Program) -> bool:
    """Does the program use row/col values (so it only runs on parameters of 2+ axes)?"""
    exprs = [a.expr for a in program.body] + list(program.outputs())
    return any(s.kind in ("row", "col") for s in program.states) or any(
        isinstance(n, Call) and OPS[n.op].shape in ("row", "col") for e in exprs for n in walk(e))


def test_shapes(program: Program) -> tuple[tuple[int, ...], ...]:
    return ((3, 4), (2, 3, 4)) if needs_2d(program) else ((5,), (3, 4))


test_shapes.__test__ = False  # a helper, not a test


def assert_same_updates(p: Program, q: Program, steps: int = 4, seed: int = 0, rtol: float = 1e-6,
                        shapes=None) -> None:
    """``q`` gives ``p``'s updates on the same inputs, wherever ``p``'s are finite.

    Both see the same weights (``p``'s trajectory) and gradients; comparison stops at the first
    step where ``p`` produces a non-finite value (its states may carry it on differently)."""
    shapes = shapes or test_shapes(p)
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.normal(size=s) for i, s in enumerate(shapes)}
    ip, iq = (Interpreter(x, **({} if "lr" in x.hyper_defaults else {"lr": 0.1})) for x in (p, q))
    sp, sq = ip.init(params), iq.init(params)
    for t in range(1, steps + 1):
        grads = {n: rng.normal(size=v.shape) for n, v in params.items()}
        up, sp = ip.updates(params, grads, sp, t)
        uq, sq = iq.updates(params, grads, sq, t)
        for n in params:
            x, y = up[n], uq[n]
            finite = np.isfinite(x)
            scale = float(np.max(np.abs(x[finite]), initial=1.0))
            np.testing.assert_allclose(y[finite], x[finite], rtol=rtol, atol=rtol * scale,
                                       err_msg=f"step {t}, shape {x.shape}")
        if not all(np.isfinite(up[n]).all() for n in params):
            return
        params = {n: params[n] - up[n] for n in params}
