"""Elementwise functions of the language that torch's CPU kernels compute slowly, as compositions of
fast ones with the language's meaning (numpy's, value by value, to an ulp).

On this project's CPU (x86, AVX-512, torch 2.13) ``torch.asinh`` takes ~75x the time of an addition,
and ``torch.where`` over random conditions ~30x ``torch.sign`` (a data-dependent branch per
element), which the language's ``sign`` needed to keep nan. The search's evaluator trains millions of
model copies with these ops (``arcsinh`` is in 90% of the programs some searches train, ``sign`` in
76% of others), and generated eager optimizers call them per tensor, so the op table spells them
with the functions below, which use only fast kernels and no ``where``. torch has no cube root at
all; ``_cbrt`` gives numpy's to an ulp.

The block between the markers is copied into generated modules function by function (only those a
program uses; :func:`codegen.runtime.functions`); ``_dim`` is here for the same reason: the
spellings of the ops call it (it reads only ``.ndim`` and ``.shape``, and the jax target copies it
too), ``_cosine_sim``, and ``_tensor``, which the printer writes where a torch function needs a
number as a tensor.

Example:
    >>> import torch
    >>> _sign(torch.tensor([-2.0, 0.0, float("nan")]))
    tensor([-1.,  0., nan])
    >>> round(float(_arcsinh(torch.tensor(-1e30))), 4)
    -69.7707
    >>> float(_cbrt(torch.tensor(-27.0)))
    -3.0
"""

# --- optdsl runtime: begin (codegen/runtime/torch_math.py, copied verbatim; edit it there)
import torch


def _sign(x):
    """sign(x) in {-1, 0, 1}, nan kept, sign(-0.0) = 0.0 (numpy's): ``max(sign(x), min(x, -1))``.
    ``torch.sign(nan)`` is 0; ``min(x, -1)`` is nan exactly where x is and <= -1 elsewhere, and
    ``torch.maximum`` propagates nan. (The eager group step runs the same three ops on lists.)"""
    return torch.maximum(torch.sign(x), torch.clamp_max(x, -1))


def _tensor(x, like, dtype=None):
    """``x`` (a Python number) as a tensor of ``like``'s dtype (or ``dtype``) and device, where a
    torch function needs a tensor argument: the printed code's constants and per-step numbers.
    ``like`` may be a dtype (a group step's number of its compute dtype): a tensor on the CPU, as a
    Python number is."""
    if isinstance(like, torch.dtype):
        return torch.as_tensor(x, dtype=like, device="cpu")
    return torch.as_tensor(x, dtype=dtype or like.dtype, device=like.device)


def _cosine_sim(x, y):
    """cosine_sim(x, y) = sum(x y) / (||x|| ||y||) over the whole tensors (a helper: the expression
    names x and y twice, and a printed line holding it would outgrow the width)."""
    return torch.sum(x * y) / (torch.linalg.vector_norm(x) * torch.linalg.vector_norm(y))


def _dim(x, i):
    """dim(x, i), the length of axis i of x; where x has no axis i, the interpreter's message (a
    ValueError at the step) instead of an IndexError from inside it."""
    if -x.ndim <= i < x.ndim:
        return x.shape[i]
    raise ValueError(
        f"dim(w, {i}) asks for an axis a parameter of shape {tuple(x.shape)} does not have; "
        "guard it with `if ndim(w) > ...:`"
    )


def _arcsinh(x):
    """arcsinh(x) = sign(x) (log1p(b + b / (1/b + sqrt(1 + 1/b^2))) + log(max(a, 2^100) / 2^100)),
    a = |x|, b = min(a, 2^100): the usual ``log1p(a + a^2 / (1 + sqrt(1 + a^2)))`` with a^2 divided
    out, on an argument small enough that nothing overflows; above 2^100, arcsinh(a) = log(2a) to
    the last bit of float64, which the second term adds (0 exactly below: a power of 2 divides)."""
    a = torch.abs(x)
    b = torch.clamp_max(a, 2.0**100)
    r = torch.reciprocal(b)
    u = b + b / (r + torch.sqrt(1 + r * r))
    return torch.copysign(torch.log1p(u) + torch.log(torch.clamp_min(a, 2.0**100) * 2.0**-100), x)


def _cbrt(x):
    """cbrt(x) = sign(x) (y - (y - a / y^2) / 3), a = |x|, y = a^(1/3): one Newton step on
    ``torch.pow``'s root. torch has no cube root, and the power's exponent, 1/3 rounded to x's
    dtype, is off by a relative 1e-8 (float32), so y is |log a| 1e-8 off: 12 ulp at 1e+-30. The step
    takes it to an ulp, as numpy's ``cbrt``. At a = 0 and a = inf the step is 0 / 0 or inf - inf and
    is dropped (the root is exact there); a nan stays nan."""
    a = torch.abs(x)
    y = a ** (1 / 3)
    return torch.copysign(y - torch.nan_to_num((y - a / (y * y)) / 3, nan=0.0), x)


def _expm1(x):
    """expm1(x) = e^x - 1: ``torch.expm1``, except under torch.compile, whose inductor (torch 2.13,
    CPU) lowers it in its vector loop as ``exp(x) - 1`` (float32 ``expm1(-1e-5)`` 1e-3 off,
    ``expm1(-2e-8)`` 0): there Kahan's ``(u - 1) (x / log u)``, u = e^x, to a few ulp, with x where u
    rounds to 1, -1 where u - 1 does and inf where u overflows."""
    if not torch.compiler.is_compiling():
        return torch.expm1(x)
    u = torch.exp(x)
    d = u - 1
    r = torch.where(d == 0, x, d * (x / torch.log(u)))
    return torch.where(torch.isinf(u) | (d == -1), d, r)


def _arctanh(x):
    """arctanh(x): ``torch.atanh``, except under torch.compile (inductor, torch 2.13, CPU: float32
    ``atanh(-2e-8)`` was 0): there sign(x) log1p(2a / (1 - a)) / 2, a = |x| (on |x|, so that no
    cancellation near -1 magnifies the rounding), nan beyond 1 and +-inf at +-1 as numpy."""
    if not torch.compiler.is_compiling():
        return torch.atanh(x)
    a = torch.abs(x)
    return torch.copysign(0.5 * torch.log1p(2 * a / (1 - a)), x)


def _arccosh(x):
    """arccosh(x): ``torch.acosh``, except under torch.compile (inductor, torch 2.13, CPU: float32
    ``acosh(1e30)`` was inf, its x^2 - 1 overflowing): there log1p(t + sqrt(t) sqrt(t + 2)),
    t = min(x, 2^100) - 1, plus log(max(x, 2^100) / 2^100) as in :func:`_arcsinh`; nan below 1."""
    if not torch.compiler.is_compiling():
        return torch.acosh(x)
    t = torch.clamp_max(x, 2.0**100) - 1
    above = torch.log(torch.clamp_min(x, 2.0**100) * 2.0**-100)  # 0 exactly up to 2^100
    return torch.log1p(t + torch.sqrt(t) * torch.sqrt(t + 2)) + above


def _fmod_parts(x, y):
    """``(m, d)``: m = x mod y with y's sign and d = (x - m) / y, built as numpy builds them from
    C's ``fmod`` (exact), for the two ops below. Either may come as a Python number (``1 % g``, ``g %
    3``): it takes the other's dtype and device, rounded to the step's dtype as the reference rounds
    its numbers (a float32 step's ``g % 1e-50`` is ``g % 0``)."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=y.dtype, device=y.device)
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y, dtype=x.dtype, device=x.device)
    m = torch.fmod(x, y)
    d = (x - m) / y
    other_sign = (m != 0) & ((y < 0) != (m < 0))
    return torch.where(other_sign, m + y, m), torch.where(other_sign, d - 1, d)


def _remainder(x, y):
    """x mod y with the sign of y (Python's ``%``, numpy's ``mod``), 0 with y's sign where exact.
    Not ``torch.remainder``: torch.compile's inductor lowers it to ``x - y floor(x / y)``, which
    rounds (float32 ``1 % 0.1``: -1.5e-08, numpy 0.09999999; ``1e10 % 3``: 0, numpy 1), and its
    eager kernel gives ``1 % -1`` as 0.0 (numpy -0.0)."""
    m, _ = _fmod_parts(x, y)
    return torch.where(m == 0, torch.copysign(torch.zeros_like(m), y), m)


def _floor_divide(x, y):
    """floor(x / y) as Python's ``//`` and numpy's ``floor_divide`` compute it: ``(x - x mod y) / y``
    rounded to the nearest integer (float32 ``1 // 0.1`` is 9: 0.1 is a little above a tenth), x / y
    where y is 0. Not ``torch.div(rounding_mode="floor")``: torch.compile lowers it to
    ``floor(x / y)`` (10 there)."""
    if not isinstance(y, torch.Tensor):  # a Python number (g // 3): the test y == 0 below must give a
        y = torch.as_tensor(y, dtype=x.dtype, device=x.device)  # tensor, not a bool torch.where refuses
    _, d = _fmod_parts(x, y)
    q = x / y
    f = torch.floor(d)
    f = torch.where(d - f > 0.5, f + 1, f)
    f = torch.where(d == 0, torch.copysign(torch.zeros_like(f), q), f)
    return torch.where(y == 0, q, f)
# --- optdsl runtime: end
