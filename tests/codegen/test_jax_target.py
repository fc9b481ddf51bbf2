"""The JAX target: generated optax transformations agree with the reference interpreter and with
optax's own optimizers, and compose with jit, vmap, chain, inject_hyperparams and masks."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
import textwrap

import black
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import scaled_examples

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp
from trajectories import run_interpreter

import codegen
import optdsl
from codegen.jax_target import JaxPrinter, emit
from optdsl import Interpreter, parse
from optdsl.ir import Assign, Call, Const, Hyper, Program, State, Var
from optdsl.names import check_name
from optdsl.ops import ELEMENTWISE, REDUCE, search_vocabulary
from optdsl.passes import variants

from layout_checks import assert_black_finds_nothing, emitted_without_black  # isort: skip

SHAPES = {"vec": (5,), "mat": (3, 4), "cube": (2, 3, 4), "one": (1,), "one2": (1, 1), "scalar": ()}

# Exercises what the zoo may not: static branches on ndim/size/dim, row/col/scalar states,
# states starting at 1 and at w, a step-dependent select, truth values in arithmetic, a global
# reduction read by a later statement, and names that collide with the generated code's own.
KITCHEN_SINK = '''
def sink(w, g, r: row, c: col, s: scalar, u: full(init=1), slow: full(init=w), m, step, lr=0.01,
         beta=0.9, treedef=0.5, count=2.0):
    gn = global_norm(g)
    g = g / max(1, gn)
    flag = (g > 0) + (g < 0)
    if ndim(w) >= 2:
        r = interp(rowmean(g * g), r, beta)
        c = interp(colmean(g * g), c, beta)
        d = g * rsqrt(r * c / max(mean(r), 1e-12) + 1e-8)
    else:
        d = g * flag
    if size(w) == 1:
        d = d * 0.5
    if ndim(w) >= 2 and dim(w, -1) > 3:
        d = d + 0.1 * sign(g)
    m = interp(d, m, beta)
    s = s + mean(d * d)
    u = u * (1 - 0.01 * lr)
    slow = interp(slow, w, 0.5) if step % 3 == 0 else slow
    gm = global_norm(m)
    return lr * (m * u / (1 + gm)) + treedef * (w - slow) * lr + count * lr * sqrt(s), r, c, s, u, slow, m
'''


@functools.cache
def factory(src: str):
    program = optdsl.load(src) if "\n" not in src else parse(src)
    return program, codegen.build(program, "jax")


def grads_at(params, t):
    """A deterministic gradient stream: a pull towards 0.3 plus noise that changes every step."""
    rng = np.random.default_rng(t)
    return {k: (np.asarray(params[k], np.float32) - 0.3 + rng.normal(0, 0.5, np.shape(params[k])))
            .astype(np.float32) for k in sorted(params)}  # sorted: jax returns dicts in key order


def run_generated(opt, params, steps):
    """Parameters after each step, through one jitted step function (one compilation)."""
    state = opt.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    history = []
    for t in range(1, steps + 1):
        params, state = step(params, state, grads_at(params, t))
        history.append({k: np.asarray(v) for k, v in params.items()})
    return history


def initial_params():
    rng = np.random.default_rng(0)
    return {k: rng.normal(0, 1, shape).astype(np.float32) for k, shape in SHAPES.items()}


def assert_close_history(got, want, rtol=2e-4, atol=2e-5):
    for t, (a, b) in enumerate(zip(got, want), start=1):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=f"step {t}, leaf {k}")


@pytest.mark.parametrize("src", [*optdsl.zoo_names(), KITCHEN_SINK],
                         ids=[*optdsl.zoo_names(), "kitchen_sink"])
def test_matches_interpreter(src):
    program, make = factory(src)
    lr = {} if "lr" in program.hyper_defaults else {"learning_rate": 1e-2}
    params = initial_params()
    want = Interpreter(program, np.float32, **({"lr": 1e-2} if lr else {})).run(params, grads_at, 20)
    got = run_generated(make(**lr), {k: jnp.asarray(v) for k, v in params.items()}, 20)
    assert_close_history(got, want)
    assert any(not np.allclose(want[-1][k], params[k]) for k in params), "the test must move the params"


@pytest.mark.parametrize("body, h", [("isfinite(h)", 1e39), ("sqrt(h)", 1e39), ("log(h)", 0.999),
                                     ("arctanh(h)", 0.999), ("sin(h)", 88.9), ("h % 3", 1e30),
                                     ("sqrt(log(h)) + 1", 3.0)])
def test_an_expression_of_hyperparameters_is_rounded_once(body, h):
    """An audit found jnp computing ``sqrt(h)`` (inf at 1e39) and ``log(0.999)`` (200 ulp off) in
    float32, where the interpreter and torch compute numbers in float64 and round once."""
    program = parse(f"def f(w, g, lr=1.0, h={h!r}):\n    return lr * g * 0 - ({body})\n")
    params = {"w": np.ones(3, np.float32)}
    want = Interpreter(program, np.float32).run(params, grads_at, 1)[-1]["w"]
    got = run_generated(codegen.build(program, "jax")(), params, 1)[-1]["w"]
    np.testing.assert_array_equal(got, want)
    injected = optax.inject_hyperparams(codegen.build(program, "jax"))(h=h)  # h a float32 array
    traced = run_generated(injected, params, 1)[-1]["w"]  # computed as traced, in float32
    if np.isfinite(np.float32(h)) and "%" not in body:  # (1e39 is inf in float32; 1e30 % 3 is 0)
        np.testing.assert_allclose(traced, want, rtol=1e-5)


VOCABULARY = [o for o in search_vocabulary() if o.shape in (ELEMENTWISE, REDUCE)]


def expressions(depth: int = 3):
    leaves = st.one_of(st.sampled_from([Var("g"), Var("m"), Var("w"), Var("lr")]),
                       st.floats(-3, 3, allow_nan=False).map(lambda v: Const(round(v, 3))))
    return st.recursive(leaves, lambda inner: st.sampled_from(VOCABULARY).flatmap(
        lambda op: st.tuples(*[inner] * op.arity).map(lambda args: Call(op.name, args))), max_leaves=6)


@settings(max_examples=scaled_examples(12), deadline=None)
@given(expr=expressions())
def test_random_programs_match_interpreter(expr):
    """Any expression of the search's vocabulary prints to jax code that computes what numpy does."""
    program = Program("rnd", (State("m"),), (Hyper("lr", 0.1),),
                      (Assign("u", expr), Assign("m", Call("interp", (Var("g"), Var("m"), Const(0.9))))),
                      Call("mul", (Var("lr"), Var("u"))), (Var("m"),))
    params = {"a": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), "b": np.float32([0.5, -2.0])}
    want = Interpreter(program, np.float32).run(params, grads_at, 2)
    with np.errstate(all="ignore"):
        got = run_generated(codegen.build(program, "jax")(), params, 2)
    for a, b in zip(got, want):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-5, equal_nan=True, err_msg=k)


def test_static_branches_become_variants():
    program = parse(KITCHEN_SINK)
    found = variants(program).programs
    # ndim >= 2 splits; size == 1 splits each side; dim(w, -1) > 3 only matters for matrices.
    assert len(found) == 6
    text = emit(program)
    assert "if w.ndim >= 2:" in text and "if w.size == 1:" in text and "_dim(w, -1) > 3" in text


# --- against optax's own optimizers, on a small real model -------------------------------------


@functools.cache
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return jnp.asarray(x[:256] / 16.0, jnp.float32), jnp.asarray(y[:256])


def mlp_params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"w1": jax.random.normal(k1, (64, 32)) * 0.1, "b1": jnp.zeros(32),
            "w2": jax.random.normal(k2, (32, 10)) * 0.1, "b2": jnp.zeros(10)}


def mlp_loss(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train(opt, steps=50):
    """Losses and final parameters of ``steps`` full-batch steps on 256 digits."""
    x, y = digits()

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(mlp_loss)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    params = mlp_params()
    state = opt.init(params)
    losses = []
    for _ in range(steps):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    return np.array(losses), params


def assert_same_training(ours, theirs, rtol=1e-4, atol=1e-5):
    (l1, p1), (l2, p2) = ours, theirs
    np.testing.assert_allclose(l1, l2, rtol=rtol, atol=atol)
    for k in p2:
        np.testing.assert_allclose(p1[k], p2[k], rtol=rtol, atol=atol, err_msg=k)
    assert l1[-1] < l1[0] * 0.8, "training must make progress"


def test_lion_equals_optax_lion():
    _, lion = factory("lion")
    ours = train(lion(learning_rate=3e-3, beta1=0.9, beta2=0.99, weight_decay=1e-3))
    theirs = train(optax.lion(3e-3, b1=0.9, b2=0.99, weight_decay=1e-3))
    assert_same_training(ours, theirs)


@pytest.mark.skipif("lamb" not in optdsl.zoo_names(), reason="the zoo has no lamb yet")
def test_lamb_equals_optax_lamb():
    _, lamb = factory("lamb")
    ours = train(lamb(learning_rate=1e-2, weight_decay=1e-3))
    theirs = train(optax.lamb(1e-2, weight_decay=1e-3))
    assert_same_training(ours, theirs)


@pytest.mark.parametrize("name, reference", [
    ("adamw", lambda: optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)),
    ("adafactor_optax", lambda: optax.adafactor(0.01)),
])
def test_generated_equals_optax_builtin(name, reference):
    """The programs the JAX benchmark times against optax compute what optax computes."""
    if name not in optdsl.zoo_names():
        pytest.skip(f"the zoo has no {name}")
    rng = np.random.default_rng(2)
    shapes = {"a": (130, 129), "b": (7,), "c": (2, 128, 140), "d": (3, 5)}
    params = {k: jnp.asarray(rng.normal(0, 1, s), jnp.float32) for k, s in shapes.items()}
    outs = []
    for opt in (factory(name)[1](learning_rate=1e-2), reference()):
        update = jax.jit(opt.update)
        p, state = params, opt.init(params)
        for t in range(1, 8):
            u, state = update(grads_at(p, t), state, p)
            p = optax.apply_updates(p, u)
        outs.append(p)
    for k in shapes:
        np.testing.assert_allclose(outs[0][k], outs[1][k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_learning_rate_schedule_matches_optax():
    _, lion = factory("lion")
    schedule = optax.linear_schedule(3e-3, 1e-4, 20)
    ours = train(lion(learning_rate=schedule, weight_decay=1e-3), steps=20)
    theirs = train(optax.lion(schedule, weight_decay=1e-3), steps=20)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)


# --- composition with JAX and optax -----------------------------------------------------------


def test_vmap_over_a_batch_of_param_sets():
    _, make = factory(KITCHEN_SINK)
    opt = make()
    batch = 3
    rng = np.random.default_rng(1)
    params = {k: jnp.asarray(rng.normal(0, 1, (batch, *s)), jnp.float32) for k, s in SHAPES.items()}
    grads = {k: jnp.asarray(rng.normal(0, 1, (batch, *s)), jnp.float32) for k, s in SHAPES.items()}

    def two_steps(p, g):
        state = opt.init(p)
        u, state = opt.update(g, state, p)
        u, state = opt.update(g, state, optax.apply_updates(p, u))
        return u

    batched = jax.jit(jax.vmap(two_steps))(params, grads)
    one = jax.jit(two_steps)
    for i in range(batch):
        single = one({k: v[i] for k, v in params.items()}, {k: v[i] for k, v in grads.items()})
        for k in SHAPES:
            np.testing.assert_allclose(batched[k][i], single[k], rtol=1e-5, atol=1e-6)


def test_chain_with_clip_by_global_norm():
    _, lion = factory("lion")
    ours = train(optax.chain(optax.clip_by_global_norm(0.5), lion(learning_rate=3e-3, weight_decay=1e-3)), 20)
    theirs = train(optax.chain(optax.clip_by_global_norm(0.5), optax.lion(3e-3, weight_decay=1e-3)), 20)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)


def test_inject_hyperparams_changes_lr():
    _, sgd = factory("sgd")
    opt = optax.inject_hyperparams(sgd)(learning_rate=0.1)
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 2.0)}
    state = opt.init(params)
    update = jax.jit(opt.update)
    u, state = update(grads, state, params)
    np.testing.assert_allclose(u["w"], -0.2)
    state.hyperparams["learning_rate"] = jnp.asarray(0.01)
    u, state = update(grads, state, params)
    np.testing.assert_allclose(u["w"], -0.02, rtol=1e-6)


def test_masked_and_partition_leave_other_leaves_alone():
    _, lion = factory("lion")
    mask = {"w1": True, "b1": False, "w2": True, "b2": False}
    ours = train(optax.masked(lion(learning_rate=3e-3), mask), 10)
    theirs = train(optax.masked(optax.lion(3e-3, weight_decay=0.0), mask), 10)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    labels = {"w1": "lion", "b1": "sgd", "w2": "lion", "b2": "sgd"}
    ours = train(optax.partition({"lion": lion(learning_rate=3e-3), "sgd": optax.sgd(0.1)}, labels), 10)
    theirs = train(optax.partition({"lion": optax.lion(3e-3, weight_decay=0.0), "sgd": optax.sgd(0.1)},
                                   labels), 10)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)


def test_state_is_a_namedtuple_of_arrays_shaped_like_the_interpreter():
    program, make = factory("adafactor" if "adafactor" in optdsl.zoo_names() else KITCHEN_SINK)
    params = initial_params()
    state = make().init({k: jnp.asarray(v) for k, v in params.items()})
    assert hasattr(state, "_fields") and state._fields[0] == "count"
    want = Interpreter(program, np.float32).init(params)
    for name in program.state_names:
        for leaf, states in want.items():
            got = getattr(state, name)[leaf]
            if name in states:
                assert got.shape == states[name].shape and got.dtype == jnp.float32
            else:
                assert got.shape == (0,), "a state the leaf's code does not use is empty"


def test_update_requires_params_only_when_the_program_reads_w():
    _, sgd = factory("sgd")
    opt = sgd(learning_rate=0.5)
    u, _ = opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.ones(2)}))
    np.testing.assert_allclose(u["w"], -0.5)
    _, lion = factory("lion")
    opt = lion()
    with pytest.raises(ValueError, match="params"):
        opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.ones(2)}))


@pytest.mark.parametrize("inject", [False, True])
def test_a_hyperparameter_written_as_an_int_is_a_float(inject):
    """A state set to a hyperparameter whose default is written ``0`` (an Adafactor mutant's ``v =
    where(factored, v, decay_offset)``), then read by rsqrt: the int reached ``jax.lax.rsqrt``,
    which raised TypeError (found by a sweep of mutated zoo programs with zero gradients); and
    ``optax.inject_hyperparams`` makes an int32 array of such a default. Every number the factory
    takes is now a float, as the interpreter takes it."""
    import optax

    p = parse("def f(w, g, v, lr=1, offset=0, scale=2):\n    v = offset\n"
              "    return lr * g * rsqrt(scale + v), v\n")
    factory = codegen.build(p, "jax")
    tx = optax.inject_hyperparams(factory)() if inject else factory()
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.asarray([0.5, -2.0, 0.0])}
    state = tx.init(params)
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    want = run_interpreter(p, {"w": np.ones(3, np.float32)}, [{"w": np.asarray(grads["w"])}] * 2, lr=1.0)
    np.testing.assert_allclose(np.asarray(params["w"]), want["w"], rtol=1e-6)


def test_bf16_params_compute_in_float32():
    _, lion = factory("lion")
    opt = lion(learning_rate=0.1)
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    state = opt.init(params)
    u, state = opt.update({"w": jnp.full(4, 0.5, jnp.bfloat16)}, state, params)
    assert u["w"].dtype == jnp.bfloat16 and state.m["w"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(u["w"], np.float32), -0.1, rtol=1e-2)


# --- the generated text ---------------------------------------------------------------------------


# searched programs (search.mutate, as test_random_programs draws them) whose modules black once
# reformatted: a one-name carry between segments (``v, = _carry``); 1,000 seeds checked
BLACK_ONCE = (113, 267)


def test_modules_are_laid_out_as_black_would_without_black(tmp_path):
    """The printer lays the module out for 110 columns itself (issue 10, item 7): black finds
    nothing to change in the zoo's modules or in searched programs', and the text is the same
    where black cannot be imported."""
    from test_random_programs import searched_program

    for i, p in enumerate([*map(optdsl.load, optdsl.zoo_names()),
                           *(searched_program(seed, mutations=8) for seed in BLACK_ONCE)]):
        (tmp_path / f"m{i}.py").write_text(emit(p))
    assert_black_finds_nothing(tmp_path)
    assert emitted_without_black("adafactor", "jax") == emit(optdsl.load("adafactor"))


def test_a_long_spelling_is_cut_into_temporaries_at_the_printers_width():
    """JaxPrinter.width: a filled template wider than it has its widest arguments computed first."""
    kinds = {n: "uniform" for n in ("step", "b")}
    expr = Call("power", (Var("b"), Call("add", (Var("step"), Call("mul", (Var("b"), Var("step")))))))
    wide = JaxPrinter(dict(kinds)).statement("x", expr)
    narrow_printer = JaxPrinter(dict(kinds))
    narrow_printer.width = 40
    narrow = narrow_printer.statement("x", expr)
    assert len(wide[-1]) > 40 + len("x = ")  # (wide[0]: b - 1, which the power's spelling reads twice)
    assert len(narrow) > len(wide) and all(len(line) <= 40 + len("x = ") for line in narrow)


@pytest.mark.parametrize("name", optdsl.zoo_names())
def test_generated_module_is_black_deterministic_and_self_describing(name):
    program = optdsl.load(name)
    text = emit(program)
    assert text == emit(program)
    assert black.format_str(text, mode=black.Mode(line_length=110)) == text
    tree = ast.parse(text)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"typing", "jax", "jax.numpy", "optax"}
    factory_def = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    assert factory_def.args.args[0].arg == "learning_rate"
    doc = ast.get_docstring(tree)
    assert optdsl.to_source(program, doc=False).splitlines()[0] in doc
    try:
        from optdsl.latex import to_latex
    except ModuleNotFoundError:
        return
    assert to_latex(program).splitlines()[0] in doc


def test_generated_module_runs_without_optdsl(tmp_path):
    (tmp_path / "gen_lion.py").write_text(emit(optdsl.load("lion")))
    script = textwrap.dedent("""
        import sys
        sys.modules["optdsl"] = sys.modules["codegen"] = None  # importing either now fails
        import jax.numpy as jnp
        from gen_lion import lion
        opt = lion(learning_rate=0.1)
        params = {"w": jnp.ones(3)}
        u, _ = opt.update({"w": jnp.ones(3)}, opt.init(params), params)
        print(float(u["w"][0]))
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == pytest.approx(-0.1)


def test_printer_parenthesises_only_where_needed():
    kinds = {"a": "full", "b": "full", "c": "row"}
    p = JaxPrinter(kinds)
    add = Call("add", (Var("a"), Var("b")))
    assert p.doprint(Call("mul", (add, Var("a")))) == "(a + b) * a"
    assert p.doprint(Call("sub", (Var("a"), add))) == "a - (a + b)"
    assert p.doprint(Call("power", (Const(-0.5), Var("a")))) == "jnp.power(-0.5, a)"
    assert p.doprint(Call("add", (Var("c"), Var("a")))) == "c[..., :, None] + a"
    assert p.doprint(Call("add", (Call("gt", (Var("a"), Const(0))), Var("b")))) == \
        "jnp.where(a > 0.0, 1.0, 0.0) + b"
    assert p.doprint(Call("div", (Const(1), Const(0)))) == "_f64(lambda: jnp.asarray(1.0) / 0.0)"


# --- names, shape tests, constants, size: one language on every target -------------------------

# Names a user may pick that printers once used for their own (``is = ...`` for a state ``i``);
# those the identifier policy refuses are left out, as check refuses them.
USER_NAMES = [n for n in ["i", "a", "clas", "update", "backend", "BLOCK", "state", "dtype", "params",
                          "updates", "count", "carry", "code", "out", "x", "CT"] if check_name(n) is None]


def names_program(role: str) -> Program:
    """Every name of USER_NAMES as a state (``role="state"``) or as a hyperparameter."""
    if role == "state":
        body = "".join(f"    {n} = interp(g * {k + 1}, {n}, 0.9)\n" for k, n in enumerate(USER_NAMES))
        total = " + ".join(USER_NAMES)
        return parse(f"def names(w, g, {', '.join(USER_NAMES)}, lr=0.1):\n{body}"
                     f"    return lr * ({total}), {', '.join(USER_NAMES)}\n")
    hypers = ", ".join(f"{n}={0.1 * (k + 1)}" for k, n in enumerate(USER_NAMES))
    return parse(f"def names(w, g, m, lr=0.1, {hypers}):\n    m = interp(g, m, {USER_NAMES[0]})\n"
                 f"    return lr * m * ({' + '.join(USER_NAMES)}), m\n")


@pytest.mark.parametrize("role", ["state", "hyper"])
def test_user_names_never_meet_the_generated_code(role):
    program = names_program(role)
    params = initial_params()
    want = Interpreter(program, np.float32).run(params, grads_at, 3)
    got = run_generated(codegen.build(program, "jax")(), {k: jnp.asarray(v) for k, v in params.items()}, 3)
    assert_close_history(got, want)


def test_shape_tests_short_circuit_on_a_0d_parameter():
    """`ndim(w) >= 2 and dim(w, -1) > 3` is false on a 0-d leaf everywhere (dim is not asked)."""
    program = parse("def f(w, g, lr=0.1):\n    u = g\n    if ndim(w) >= 2 and dim(w, -1) > 3:\n"
                    "        u = sign(g)\n    return lr * u\n")
    params = {"s": np.float32(2.0), "m": np.ones((2, 5), np.float32), "v": np.ones(3, np.float32)}
    want = Interpreter(program, np.float32).run(params, grads_at, 2)
    got = run_generated(codegen.build(program, "jax")(), {k: jnp.asarray(v) for k, v in params.items()}, 2)
    assert_close_history(got, want)
    g1 = grads_at(params, 1)
    np.testing.assert_allclose(want[0]["s"], 2.0 - 0.1 * g1["s"], rtol=1e-6)  # u = g, not sign(g)


def test_ieee_constants_print_and_compute_as_the_interpreter():
    inf = float("inf")
    p = JaxPrinter({})
    assert [p.doprint(Const(v)) for v in (inf, -inf, -0.0)] == ["jnp.inf", "-jnp.inf", "-0.0"]
    assert np.isnan(eval(p.doprint(Const(float("nan"))), {"jnp": jnp}))
    cases = {"reciprocal(0.0)": inf, "reciprocal(-(0 * lr))": -inf, "(-1) ** 0.5": float("nan"),
             "1 / 0": inf, "0 / 0": float("nan"), "1 % 0": float("nan")}
    for text, value in cases.items():
        program = parse(f"def f(w, g, lr):\n    c = {text}\n    return lr * g * c\n")
        tx = codegen.build(program, "jax")(learning_rate=1.0)
        params = {"w": jnp.zeros(2)}
        u, _ = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
        np.testing.assert_array_equal(-np.asarray(u["w"]), np.float32([value, value]), err_msg=text)
    # a constant no literal spells (a pass may fold one): inf and nan survive printing
    program = Program("k", (), (Hyper("lr", 1.0),), (Assign("c", Const(inf)),),
                      Call("mul", (Var("g"), Var("c"))), ())
    tx = codegen.build(program, "jax")()
    u, _ = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.zeros(2)}), {"w": jnp.zeros(2)})
    assert np.all(np.asarray(u["w"]) == -inf)


def test_output_grows_linearly_with_nesting():
    """sign repeats its argument in its template: a nested one is bound to a temporary first, and a
    300-term sum is cut into statements Python's parser accepts."""
    nested = Var("g")
    for _ in range(100):  # built directly: the parser's own depth is not what this test is about
        nested = Call("sign", (nested,))
    text = emit(Program("f", (), (Hyper("lr", 0.1),), (), Call("mul", (Var("lr"), nested)), ()))
    assert len(text) < 60_000
    compile(text, "<sign>", "exec")
    terms = [Call("mul", (Const(k % 7 + 1.0), Var("g"))) for k in range(300)]
    left, right = terms[0], terms[-1]
    for t in terms[1:]:  # ((a + b) + c) + ... prints flat; a + (b + (c + ...)) nests 300 deep
        left, right = Call("add", (left, t)), Call("add", (t, right))
    for total in (left, right):  # built directly: the parser refuses such nesting in source
        program = Program("f", (), (Hyper("lr", 1e-4),), (Assign("u", total),), Call("mul", (Var("lr"), Var("u"))), ())
        params = {"w": np.ones(3, np.float32)}
        want = Interpreter(program, np.float32).run(params, grads_at, 1)
        got = run_generated(codegen.build(program, "jax")(), params, 1)
        assert_close_history(got, want)


@pytest.mark.parametrize("name", optdsl.zoo_names())
def test_zoo_programs_leave_an_empty_parameter_alone(name):
    program, make = factory(name)
    lr = {} if "lr" in program.hyper_defaults else {"learning_rate": 1e-2}
    params = {"empty": np.zeros((0, 3), np.float32), "w": np.ones((2, 3), np.float32)}
    want = Interpreter(program, np.float32, **({"lr": 1e-2} if lr else {})).run(params, grads_at, 2)
    got = run_generated(make(**lr), {k: jnp.asarray(v) for k, v in params.items()}, 2)
    assert got[-1]["empty"].shape == want[-1]["empty"].shape == (0, 3)
    assert_close_history(got, want)


@pytest.mark.parametrize("name", ["adax", "adam", "amos"])
def test_per_step_scalars_keep_float32_precision(name):
    """(1 + beta2) ** t - 1 and 1 - beta ** t are taken through expm1/log1p: the float32 update is
    within float32 rounding of the float64 reference (AdaX was 9e-5 off, Adam 7e-6)."""
    program, make = factory(name)
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(8, 16)).astype(np.float32), "b": rng.normal(size=(16,)).astype(np.float32)}
    grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    tx = make()
    update = jax.jit(tx.update)
    for step in (1, 150, 1000):
        state = tx.init(params)._replace(count=jnp.asarray(step - 1, jnp.int32))
        got, _ = update(grads, state, params)
        opt = Interpreter(program, np.float64)
        want, _ = opt.updates(params, grads, opt.init(params), step)
        for k in params:
            err = np.max(np.abs(-np.asarray(got[k]) - want[k])) / np.max(np.abs(want[k]))
            assert err < 1e-6, f"{name} step {step} {k}: {err:.2g}"


@pytest.mark.parametrize("name", optdsl.source.zoo_names())
def test_zoo_modules_in_float64_match_the_float64_interpreter(name):
    """With 64-bit types on, the generated module computes in float64 as the interpreter does
    (to 1e-13 of each tensor's scale: AdaX's elements near 0 differ by 2e-15 in absolute terms);
    the other tests run JAX's default float32."""
    rng = np.random.default_rng(0)
    shapes = {"a": (3, 4), "b": (5,), "c": (2, 3, 4), "d": (), "e": (200, 130)}  # e: factored
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s) * np.exp(rng.normal()) for k, s in shapes.items()} for _ in range(6)]
    program = optdsl.load(name)
    opt = Interpreter(program, np.float64, lr=1e-2)
    want, state = dict(params), opt.init(params)
    for t, g in enumerate(grads, 1):
        want, state = opt.step(want, g, state, t)
    with jax.enable_x64(True):
        tx = codegen.build(program, "jax")(learning_rate=1e-2)
        got = {k: jnp.asarray(v) for k, v in params.items()}
        state, update = tx.init(got), jax.jit(tx.update)
        for g in grads:
            updates, state = update({k: jnp.asarray(v) for k, v in g.items()}, state, got)
            got = optax.apply_updates(got, updates)
    for k in params:
        assert got[k].dtype == jnp.float64, k
        scale = np.max(np.abs(want[k]), initial=1.0)
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-13, atol=1e-13 * scale,
                                   err_msg=f"{name}: {k}")


def test_the_regenerate_command_names_a_source_the_cli_reads():
    """A winner's module said ``optdsl compile found_182 --target jax``, which the CLI cannot find
    (found_182 is no zoo name): the zoo's name only for the zoo's own program."""
    from codegen import emit

    assert "``optdsl compile lion --target jax``." in emit(optdsl.load("lion"), "jax")
    mine = emit(optdsl.parse("def lion(w, g, lr=0.1):\n    return lr * g\n"), "jax")
    assert "``optdsl compile FILE.py --target jax``, FILE.py holding the program." in mine


def test_the_jax_bench_bandwidth_is_timed_as_its_rows_are(monkeypatch):
    """``jnp.add``'s bandwidth was one median timed before the pairs, each pair's rows best of five
    interleaved medians (an optimizer at 110% of a plain add): now the add runs in every pair's
    rounds, and the table's bandwidth is its fastest."""
    from codegen import bench_jax

    adds = iter([3.0, 2.0, 4.0, 5.0, 6.0])
    calls = []

    def timed(fns, warmup, repeats):
        calls.append(len(fns))
        return [next(adds), 8.0, 9.0]

    monkeypatch.setattr(bench_jax, "time_interleaved", timed)
    rows = bench_jax.run(quick=True)
    assert calls and set(calls) == {3}
    bandwidth = rows[0]
    assert bandwidth["impl"] == "jnp.add (bandwidth)" and bandwidth["ms"] == 2.0
    assert all(r["frac_of_bandwidth"] == pytest.approx(r["gb_s"] / bandwidth["gb_s"]) for r in rows)


@pytest.mark.parametrize("dtype, tiny", [(np.float32, 1e-45), (np.float64, 1e-315)])
def test_xla_flushes_subnormals_on_a_cpu_as_the_readme_says(dtype, tiny):
    """The README's caveat, held to what XLA does: on a CPU a subnormal gradient is 0 to the
    generated step, in float32 and (with 64-bit types on) in float64, where the interpreter and the
    torch target take its sign. A JAX that stops flushing fails this: then drop the caveat."""
    program = parse("def f(w, g, lr=1.0):\n    return lr * sign(g)\n")
    g = np.array([tiny, -tiny, 1.0], dtype)
    want = Interpreter(program, dtype).step({"w": np.zeros(3, dtype)}, {"w": g}, {"w": {}})[0]["w"]
    np.testing.assert_array_equal(want, [-1.0, 1.0, -1.0])
    with jax.enable_x64(dtype == np.float64):
        tx = codegen.build(program, "jax")(learning_rate=1.0)
        params = {"w": jnp.zeros(3, dtype)}
        updates, _ = tx.update({"w": jnp.asarray(g)}, tx.init(params), params)
        got = np.asarray(optax.apply_updates(params, updates)["w"])
    np.testing.assert_array_equal(got, [0.0, 0.0, -1.0])
