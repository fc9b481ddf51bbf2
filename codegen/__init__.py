"""Code generation: one program -> a standalone optimizer module for a target.

Targets (each a printer module exposing ``emit(program) -> str``):
  - ``torch``:  a ``torch.optim.Optimizer`` subclass (eager multi-tensor and torch.compile paths)
  - ``triton``: the same class plus a fused Triton kernel (``backend="triton"``)
  - ``jax``:    an optax ``GradientTransformationExtraArgs`` factory

Example:
    >>> import optdsl, codegen
    >>> Lion = codegen.build(optdsl.load("lion"), "torch")   # the class, loaded in memory
    >>> text = codegen.emit(optdsl.load("lion"), "jax")       # the module's source
"""

from __future__ import annotations

import importlib

from optdsl.ir import Program
from optdsl.typecheck import validate

from .generated import load_module

TARGETS = {"torch": "codegen.torch_target", "triton": "codegen.triton_target", "jax": "codegen.jax_target"}


def _target(target: str):
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[target])


def emit(program: Program, target: str) -> str:
    """The generated module's source text for ``target`` (deterministic, formatted).

    Example:
        >>> import optdsl
        >>> text = emit(optdsl.load("sgd"), "torch")
        >>> [line for line in text.splitlines() if line.startswith("class SGD")]
        ['class SGD(_Optimizer):']
        >>> emit(optdsl.load("sgd"), "cuda")
        Traceback (most recent call last):
        ValueError: unknown target 'cuda'; choose from torch, triton, jax
    """
    return _target(target).emit(validate(program))


def build(program: Program, target: str):
    """The generated optimizer loaded in memory, without writing a file: the Optimizer class
    for ``torch``/``triton``, the optax factory function for ``jax``. A step does
    ``w <- w - update``, ``update`` being the program's first output.

    Example:
        >>> import optdsl, torch
        >>> SGD = build(optdsl.load("sgd"), "torch")  # update = lr * g
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> w.grad = torch.tensor([1.0, -1.0])
        >>> SGD([w], lr=0.1).step()
        >>> w.data
        tensor([0.9000, 2.1000])
    """
    module = load_module(emit(program, target), f"optdsl_generated_{program.name}_{target}")
    return _target(target).entry_point(module, program)
