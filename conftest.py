"""pytest's doctest collection imports every module: one that needs an optional extra missing here is
left out (its tests skip, see tests/differential.py's needs_optax)."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("optax") else ["codegen/bench_jax.py",
                                                               "codegen/runtime/jax_math.py"]
collect_ignore += [] if importlib.util.find_spec("triton") else ["codegen/runtime/triton_kernels.py"]
