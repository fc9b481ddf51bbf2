"""Comparison of a backend's trajectory with the interpreter's, shared by the differential tests."""

import numpy as np

import optdsl


def assert_steps_close(got, expected, program, rtol, atol):
    """``got`` equals ``expected`` elementwise, except that a sign-based rule (Lion, Tiger) may flip
    the sign of a step whose argument is within rounding of 0 on a few elements (one lr apart)."""
    for g, e in zip(got, expected):
        bad = ~np.isclose(g, e, rtol=rtol, atol=atol)
        allowed = max(1, g.size // 1000) if "sign" in optdsl.to_source(program) else 0
        if bad.sum() > allowed:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)  # fails, showing where


def assert_within_rounding(got, ref32, ref64, err_msg="", rtol=2e-6, atol=1e-6):
    """``got`` (a float32 run) equals the float32 interpreter's ``ref32`` elementwise, or differs
    from it no more than float32 rounding moves the program itself: ``|got - ref32| <= 4 |ref32 -
    ref64| + tol`` with ``ref64`` the float64 interpreter's (a program that amplifies rounding, such
    as ``m / sqrt(v)`` with v near 0, ends a few units apart on any two float32 orders of the same
    sums). Where either reference is nan or infinite, ``got`` must be too: which of them is not
    compared (torch.lerp gives nan where one end is infinite and the language's ``interp`` gives
    +-inf, see optdsl/ops.py). The absolute tolerance scales with the largest finite value of either
    run (a difference of large terms may end near 0)."""
    got, ref32, ref64 = (np.asarray(a, np.float64) for a in (got, ref32, ref64))
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in (got, ref32)] + [np.zeros(1)])
    tol = atol * (1 + np.abs(finite).max()) + rtol * np.abs(np.where(np.isfinite(ref32), ref32, 0))
    with np.errstate(invalid="ignore"):
        def same(a, b, slack):
            return ((a == b) | (np.isnan(a) & np.isnan(b))
                    | (np.isfinite(a) & np.isfinite(b) & (np.abs(a - b) <= slack)))
        gap = np.where(np.isfinite(ref32 - ref64), np.abs(ref32 - ref64), 0)
        ok = same(got, ref32, tol + 4 * gap) | same(got, ref64, tol)
        ok |= ~np.isfinite(got) & ~(np.isfinite(ref32) & np.isfinite(ref64))
    if not ok.all():
        i = np.unravel_index(np.argmax(~ok), ok.shape) if ok.ndim else ()
        raise AssertionError(f"{err_msg}: {int((~ok).sum())} of {ok.size} elements differ; at {list(i)}: "
                             f"got {got[i]!r}, float32 interpreter {ref32[i]!r}, float64 {ref64[i]!r}")
