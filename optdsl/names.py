"""The identifier policy: which names a program may use, decided once for the whole language.

A name in a program (the program's own name, an argument, an assigned temporary) ends up in the
code every target prints: torch and triton modules, jax/optax modules. A name is allowed when it
cannot collide with anything those modules need, whatever the target:

  - an ASCII Python identifier (generated files are ASCII; ``ϵ`` and ``x\\u0301`` are not);
  - not starting with ``_``: every printer names its own internals (locals, helpers, loop
    variables) with a leading ``_``, so those can never meet a user's name;
  - none of :data:`RESERVED`.

The parser enforces the policy with a located :class:`~optdsl.errors.DslError`; the printers
check again at emission (a hand-built :class:`~optdsl.ir.Program` never met the parser), and
tests draw names from :data:`RESERVED` to show that each one is refused.

Example:
    >>> check_name("beta1") is None
    True
    >>> check_name("print")
    'is a Python builtin'
    >>> check_name("_x")
    "starts with '_', which the generated code keeps for its own names"
"""

from __future__ import annotations

import builtins
import keyword
import unicodedata

from .ops import CONSTANTS, OPS

#: ``if``, ``lambda``, ``match``, ``type``...: a keyword (soft ones included) cannot be a variable
#: in Python 3.12+ output (``type`` is soft from 3.12 on) and would not parse.
KEYWORDS: frozenset[str] = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {"type"}

#: ``print``, ``len``, ``float``, ``zip``...: generated code calls builtins; a state named ``len``
#: would shadow one inside the step function.
BUILTINS: frozenset[str] = frozenset(name for name in dir(builtins) if not name.startswith("_"))

#: ``sign``, ``sqrt``, ``interp``...: an op's name is a function of the language; a variable of
#: that name would make ``sign(x)`` and ``sign`` mean two things (the printers also print some
#: ops as helpers of that name).
OP_NAMES: frozenset[str] = frozenset(OPS)

#: ``pi`` and ``e`` are numbers of the language; assigning them would change what they mean.
CONSTANT_NAMES: frozenset[str] = frozenset(CONSTANTS)

#: Names the generated modules cannot rename: imported modules and the names they bind
#: (``torch``, ``tl``, ``libdevice``, ``NamedTuple``...), the public API a user calls
#: (``torch.optim.Optimizer(params, defaults)`` keyword arguments, ``optax``'s
#: ``learning_rate``, Triton's launch meta-parameters ``BLOCK``/``num_warps``), the
#: per-group dictionaries of torch optimizers (``group``, ``state``), and the keys torch's
#: schedulers and ``Optimizer`` write into a param group, where a hyperparameter of that name
#: lives too (OneCycleLR sets ``initial_lr``, ``max_lr``, ``min_lr``).
GENERATED: frozenset[str] = frozenset({
    # modules and what generated files import from them
    "torch", "math", "np", "numpy", "jax", "jnp", "optax", "triton", "tl", "libdevice",
    "functools", "itertools", "os", "shutil", "warnings", "typing", "NamedTuple", "Tensor",
    "Optional", "Any", "Callable",
    # torch.optim.Optimizer's API and constructor flags
    "self", "params", "defaults", "group", "param_groups", "state", "closure", "backend",
    "foreach", "fused", "maximize", "capturable", "differentiable", "betas",
    # keys torch.optim.lr_scheduler, swa_utils and Optimizer (named params) set in param groups
    "initial_lr", "max_lr", "min_lr", "base_momentum", "max_momentum", "swa_lr", "param_names",
    # optax's API
    "learning_rate", "grads", "updates", "states", "hyper", "init_fn", "update_fn",
    # Triton's launch meta-parameters
    "BLOCK", "num_warps", "num_stages",
    # the torch target's group-step arguments, beside which hyperparameters (and the values of global
    # reductions, for the cpp kernels) travel as keywords: _cpp_group_step(path, params, ..., **hyper)
    "path", "program",
})

#: Every name a program may not use (besides those starting with ``_``).
RESERVED: frozenset[str] = KEYWORDS | BUILTINS | OP_NAMES | CONSTANT_NAMES | GENERATED


def check_name(name: object) -> str | None:
    """Why ``name`` may not appear in a program, or None when it may.

    Example:
        >>> check_name("sqrt")
        'is a function of the language'
        >>> check_name("m") is None
        True
    """
    if not isinstance(name, str) or not name.isidentifier():
        return "is not an identifier"
    if not name.isascii():
        return "is not ASCII (generated files are)"
    if name.startswith("_"):
        return "starts with '_', which the generated code keeps for its own names"
    if name in KEYWORDS:
        return "is a Python keyword"
    if name in BUILTINS:
        return "is a Python builtin"
    if name in OP_NAMES:
        return "is a function of the language"
    if name in CONSTANT_NAMES:
        return "is a constant of the language"
    if name in GENERATED:
        return "is used by the generated code"
    return None


def suggest(name: str) -> str:
    """An allowed name close to ``name``: ``print`` -> ``print_``, ``_x`` -> ``x``, the paper's
    Greek ``β1`` -> ``beta1`` (a letter by its Unicode name), an accented letter its base letter
    (``mü`` -> ``mu``, not ``mdiaeresis``).

    Example:
        >>> suggest("len"), suggest("__m"), suggest("β1"), suggest("λ"), suggest("mü"), suggest("ά")
        ('len_', 'm', 'beta1', 'lamda', 'mu', 'alpha')
    """
    def plain(c: str) -> str:
        base = unicodedata.normalize("NFKD", c)[:1] or c  # (a letter and its accents: the letter)
        return base if base.isascii() else unicodedata.name(base, "x").split()[-1].lower()

    if not name.isascii():
        name = "".join(map(plain, name))
    base = name.lstrip("_") if name.isascii() else ""
    if not base.isidentifier():
        base = "x"
    while check_name(base) is not None:
        base += "_"
    return base
