"""JAX benchmark: generated optax transformations against optax's own, under jit on CPU.

For each pair (generated ``adamw`` / ``optax.adamw``, ``lion`` / ``optax.lion``,
``adafactor_optax`` / ``optax.adafactor``, identical hyperparameters) one jitted step
``params, state <- apply_updates(params, update(grads, state, params))`` is timed on 16 float32
matrices of 1024 x 1024 (1M entries each; ``quick``: 512 x 512). Rows follow
:mod:`codegen.bench`'s format; ``ratio`` is ms divided by optax's ms for the same optimizer
(the target is <= 1.05). The two are timed in alternating rounds (best of five medians) so that
load from other processes falls on both alike, and

    GB/s = bytes the step must move (optdsl.cost's traffic model) / time,
    frac_of_bandwidth = GB/s / GB/s of a jitted ``a + b`` over as many elements

(timed in each pair's rounds too; the fastest of them is the table's bandwidth).

Example:
    >>> rows = run(quick=True)   # doctest: +SKIP
    >>> sorted({r["impl"] for r in rows})[:2]  # doctest: +SKIP
    ['generated adafactor_optax', 'generated adamw']
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import optdsl

from . import build
from .bench import step_bytes, time_ms

# (zoo program, hyperparameters for it, optax's optimizer with the same ones). Lion's weight decay
# is optax's default, not 0: optax drops a zero decay at trace time, the program (whose 0 * w is nan
# for an infinite w) cannot.
PAIRS = (
    ("adamw", {}, lambda: optax.adamw(1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)),
    ("lion", {"weight_decay": 1e-3}, lambda: optax.lion(1e-4, b1=0.9, b2=0.99, weight_decay=1e-3)),
    ("adafactor_optax", {}, lambda: optax.adafactor(0.01)),
)


def _model(shapes, seed: int = 0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * len(shapes))
    params = {f"p{i}": jax.random.normal(keys[2 * i], s) * 0.02 for i, s in enumerate(shapes)}
    grads = {f"p{i}": jax.random.normal(keys[2 * i + 1], s) * 1e-3 for i, s in enumerate(shapes)}
    return params, grads


def stepper(opt: optax.GradientTransformation, params, grads):
    """A zero-argument function running one jitted optimizer step (update and apply, donated
    buffers) on its own copy of ``params`` and blocking until it is done:
    ``params, state <- apply_updates(params, update(grads, state, params))``.

    Example:
        >>> params, grads = {"w": jnp.ones(3)}, {"w": jnp.full(3, 2.0)}
        >>> once = stepper(optax.sgd(0.1), params, grads)
        >>> once(); once()
        >>> params["w"]  # the caller's arrays are neither stepped nor donated
        Array([1., 1., 1.], dtype=float32)
    """

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    carry = [jax.tree.map(jnp.copy, params), opt.init(params)]

    def once():
        carry[0], carry[1] = step(carry[0], carry[1], grads)
        jax.block_until_ready(carry)

    return once


def machine() -> str:
    """The CPU, its cores and the software measured, for the table's title.

    Example (the value is the machine's)::

        machine()  # e.g. 'AMD EPYC, 2 cores, jax 0.10.2, optax 0.2.8, load avg 1.8'
    """
    from .bench import host

    return host(f"jax {jax.__version__}, optax {optax.__version__}")


def time_interleaved(fns: list, warmup: int, repeats: int, rounds: int = 5) -> list[float]:
    """Best-of-``rounds`` median ms of each function, the rounds alternating between them so
    that load from other processes falls on all of them alike:
    ``ms_i = min over rounds of time_ms(fns[i], warmup, repeats)``.

    Example:
        >>> order = []
        >>> fns = [lambda: order.append("a"), lambda: order.append("b")]
        >>> ms = time_interleaved(fns, warmup=1, repeats=1, rounds=2)
        >>> "".join(order), len(ms)  # per round: a's warm-up and timed call, then b's
        ('aabbaabb', 2)
    """
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], time_ms(fn, warmup, repeats))
    return best


def add_step(n: int):
    """A call of a jitted float32 ``a = a + b`` over ``n`` elements (2 reads and 1 write of 4 bytes,
    12 bytes an element; ``a`` donated so that, like an optimizer step, it writes into memory it
    already holds): the bandwidth reference, ``GB/s = 12 * n / ms / 1e6``.

    Example:
        >>> once = add_step(1 << 16)  # 786,432 bytes per call
        >>> 12 * (1 << 16) / time_ms(once, warmup=1, repeats=3) / 1e6 > 0
        True
    """
    add = jax.jit(jnp.add, donate_argnums=0)
    carry = [jnp.zeros(n), jnp.ones(n)]

    def once():
        carry[0] = add(carry[0], carry[1])
        carry[0].block_until_ready()

    return once


def run(quick: bool = False) -> list[dict]:
    """Rows ``{suite, case, impl, ms, gb_s, frac_of_bandwidth, ratio}`` for every pair, each pair
    timed in rounds with ``jnp.add`` (the bandwidth: its fastest over all pairs' rounds, the one
    figure the table prints)::

        gb_s = step_bytes / ms / 1e6,   frac_of_bandwidth = gb_s / jnp.add GB/s,   ratio = ms / optax's ms

    Example (jit-compiles and times every pair)::

        rows = run(quick=True)
        print(markdown(rows, "JAX"))
    """
    side = 512 if quick else 1024
    warmup, repeats = (2, 5) if quick else (3, 10)
    shapes = [(side, side)] * 16
    n = 16 * side * side
    case = f"16x{side}x{side} fp32 (jit, CPU)"
    params, grads = _model(shapes)
    add = add_step(n)
    add_ms, timed = float("inf"), []
    for name, hyper, reference in PAIRS:
        if name not in optdsl.zoo_names():
            continue
        fns = [add, stepper(reference(), params, grads),
               stepper(build(optdsl.load(name), "jax")(**hyper), params, grads)]
        ms, ref_ms, ours_ms = time_interleaved(fns, warmup, repeats)
        add_ms = min(add_ms, ms)
        timed.append((name, ref_ms, ours_ms))
        del fns
    bandwidth = 12 * n / add_ms / 1e6
    rows = [{"suite": "jax", "case": case, "impl": "jnp.add (bandwidth)", "ms": add_ms, "gb_s": bandwidth,
             "frac_of_bandwidth": 1.0, "ratio": None}]
    for name, ref_ms, ours_ms in timed:
        nbytes = step_bytes(name, shapes)
        for impl, ms in ((f"optax.{name.removesuffix('_optax')}", ref_ms), (f"generated {name}", ours_ms)):
            gb_s = nbytes / ms / 1e6
            rows.append({"suite": "jax", "case": case, "impl": impl, "ms": ms, "gb_s": gb_s,
                         "frac_of_bandwidth": gb_s / bandwidth, "ratio": ms / ref_ms})
    return rows


# the note under the table ``optdsl bench --suite jax --out FILE.md`` writes
NOTE = ("ratio = ms / optax's ms for the same optimizer (target <= 1.05). A shared machine: absolute "
        "figures vary from run to run, the interleaved ratios less so.")


if __name__ == "__main__":  # the same as `optdsl bench --suite jax [--quick] [--out FILE.md]`
    import sys

    from optdsl.cli import main

    sys.exit(main(["bench", "--suite", "jax", *sys.argv[1:]]))
