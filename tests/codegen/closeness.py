"""Comparison of a backend's trajectory with the interpreter's, shared by the Triton tests."""

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
