"""Helpers of the generated JAX modules (copied into them function by function, as the torch
runtime's are; the op table's jax templates may call them, as ``_root``): leaves made arrays
(complex ones as their real and imaginary parts) and fitted back, a norm's root with a derivative
at 0, and shape arithmetic computed while JAX traces, in the interpreter's precision.

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


def _array(x):
    """``x`` as a jax array: optax takes Python and numpy numbers as leaves too (``{"w": 1.0}``)."""
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def _as_real(x):
    """``x`` as a jax array (:func:`_array`); a complex one as the real array of its real and
    imaginary parts on a last axis of 2 (torch's ``view_as_real``): an elementwise program steps
    them as numbers of their own, as torch.optim and the torch target do (:func:`_fit` undoes it)."""
    if jnp.iscomplexobj(x):
        return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
    return _array(x)


def _refuse_complex(params, name, why):
    """TypeError naming the first complex leaf of ``params``, which program ``name`` cannot step
    (``why``: what makes it more than elementwise); None where there is none. A complex number is
    stepped as its real and imaginary parts only by programs of elementwise ops and full states,
    as in the torch target: a norm or a shape test of the parts is not one of the number."""
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.iscomplexobj(x):
            raise TypeError(
                f"{name} cannot step the complex {jnp.shape(x)} parameter {jax.tree_util.keystr(path)}: "
                "a complex number is stepped as its real and imaginary parts only by programs of "
                f"elementwise ops and full states (AdamW, Lion, SGD...); this one is not ({why}). "
                "Train jnp.stack([x.real, x.imag], -1) of it instead, if that is what you mean."
            )


def _upcast(x):
    """``x`` in float32, or in its own dtype when that is wider."""
    if jnp.iscomplexobj(x):  # (the refusal of _refuse_complex, for params init did not see)
        raise TypeError(f"this program cannot step a complex {x.shape} parameter (its init says why)")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _fit(value, like):
    """``value`` with the shape and dtype of ``like`` (``like`` itself for None); for a complex
    ``like``, from its real and imaginary parts on value's last axis (:func:`_as_real`)."""
    if value is None:
        return like
    like = _array(like)
    if jnp.iscomplexobj(like):
        parts = jnp.broadcast_to(value, (*like.shape, 2))
        value = jax.lax.complex(parts[..., 0], parts[..., 1])
    return jnp.broadcast_to(value, like.shape).astype(like.dtype)


def _root(total):
    """``sqrt(total)`` for a sum of squares (a norm's, an RMS's): the same value, but derivative 0,
    not inf, where ``total`` is 0, as optax's ``safe_norm`` has it (a double ``where``): jax.grad
    through the step of an all-zero parameter (a bias initialised to zeros) was nan. ``!= 0``, not
    ``> 0``, so that a nan total stays nan."""
    nonzero = total != 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, total, 1.0)), 0.0)


def _mod(x, y):
    """x mod y with the sign of y (Python's ``%``, numpy's ``mod``), a zero result too: jnp.mod gave
    ``-0.0 % 3`` and ``-3 % 3`` as -0.0 (numpy 0.0), a zero whose reciprocal has the wrong sign."""
    m = jnp.mod(x, y)
    return jnp.where(m == 0, jnp.copysign(jnp.zeros_like(m), y), m)


def _floordiv(x, y):
    """floor(x / y) as numpy's ``floor_divide``, a zero result with the sign of x / y: jnp's gave
    ``-0.0 // 3`` as 0.0 (numpy -0.0)."""
    f = jnp.floor_divide(x, y)
    return jnp.where(f == 0, jnp.copysign(jnp.zeros_like(f), x / y), f)


def _float(x, name, domain=None):
    """A number the step takes, as the language takes every number: a float. An int or a bool (a
    default written ``0``, an integer array that ``optax.inject_hyperparams`` makes of it) would
    reach ops that take floats only (``jax.lax.rsqrt`` of a state set to it raised TypeError).

    ``name``: the hyperparameter's, for the error where ``x`` is None: optax takes None for "off"
    (``clipping_threshold=None``), which has no meaning a program could give every number.
    ``domain``: ``(words, test)`` where the program declares the values ``name`` may take
    (``accum_steps: count``); a number outside it is a ValueError, a Python or numpy one or a
    concrete 0-d array (``optax.inject_hyperparams`` makes one, outside ``jit``); a traced value
    cannot be looked at.

    Example: ``_float(0, "eps")`` is ``0.0``; ``_float(jnp.asarray(2), "eps").dtype`` is float32
    (without x64)."""
    if x is None:
        raise TypeError(
            f"{name}=None: this transformation takes a number; to turn a term off, pass the value "
            "that does so in its program (0 for a coefficient, inf for a threshold)"
        )
    known = domain is not None and jnp.ndim(x) == 0 and not isinstance(x, jax.core.Tracer)
    if known and not domain[1](float(x)):
        raise ValueError(f"{name}={float(x)!r} is outside its domain: it must be {domain[0]}")
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
