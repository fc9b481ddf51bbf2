"""Helpers of the generated JAX modules (copied into them function by function, as the torch
runtime's are): shape arithmetic computed while JAX traces, in the interpreter's precision.

A parameter's shape facts (``size(w)``, ``dim(w, 1)``) are Python ints while JAX traces, so
arithmetic on them has a value then. Where plain Python would not compute float64's value
(``1 / 0`` raises; see ``codegen/shape_python.py``), jax.numpy does, but in float32 unless
``jax_enable_x64`` is on: ``2 ** size(w) > 1e30`` and ``1e30 * size(w) * 1e10 / 1e39``
overflowed there. :func:`_f64` computes it in float64 whatever that flag says.

Example (6e40 / 1e39, whose parts float32 cannot hold):
    >>> import jax.numpy as jnp
    >>> _f64(lambda: jnp.asarray(1e30) * 6 * 1e10 / 1e39), float(jnp.asarray(1e30) * 6 / 1e39)
    (60.00000000000001, 0.0)
"""

import jax
import jax.numpy as jnp


def _float(x):
    """A number the step takes, as the language takes every number: a float. An int or a bool (a
    default written ``0``, an integer array that ``optax.inject_hyperparams`` makes of it) would
    reach ops that take floats only (``jax.lax.rsqrt`` of a state set to it raised TypeError).

    Example: ``_float(0)`` is ``0.0``; ``_float(jnp.asarray(2)).dtype`` is float32 (without x64)."""
    if isinstance(x, (bool, int)):
        return float(x)
    if hasattr(x, "dtype") and not jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.asarray(x, jnp.result_type(float))
    return x


def _f64(compute):
    """``compute()`` (arithmetic of numbers known while JAX traces) in float64, as a Python float:
    run at once (``ensure_compile_time_eval``), with 64-bit types on for it alone."""
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
        return float(compute())


def _exact(compute, *inputs):
    """``compute()``, an expression of ``inputs`` (hyperparameters): in float64 (:func:`_f64`) where
    they are Python numbers, as they are known while JAX traces; as it stands where one is an array
    (``optax.inject_hyperparams`` hands them over so)."""
    if all(isinstance(x, (bool, int, float)) for x in inputs):
        return _f64(compute)
    return compute()
