"""The generated Triton kernels compile for an H100/H200 (sm_90) on a machine without a GPU.

Triton's interpreter (test_triton_target.py) runs the kernels' arithmetic on the CPU with numpy
and stand-ins for libdevice; it never lowers them, so the compiler's own checks (types, layouts,
the real libdevice calls, ptxas) never run there. Triton compiles for a named target without a
device, to PTX and, through the ptxas its wheel carries, to a cubin; so every kernel is compiled
here as the GPU would compile it at its first launch, for each kind of launch the runtime makes.
"""

from __future__ import annotations

import re

import pytest

import codegen
import optdsl
from codegen.generated import load_module
from optdsl.ir import Assign, Call, Var
from optdsl.ops import COL, GLOBAL, OPS, REDUCE, ROW

triton = pytest.importorskip("triton")
pytest.importorskip("torch")
import triton.language as tl
from test_triton_target import REDUCTIONS, _every_elementwise_op
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

HOPPER = GPUTarget("cuda", 90, 32)
POINTERS = {"_table": "*i64", "_chunks": "*i32", "_acc": "*fp32", "_gacc": "*fp32", "_wacc": "*fp32"}
#: float64 parameters' accumulators are float64 (codegen.runtime.triton_kernels._TritonStep._build)
WIDE_SUMS = {name: "*fp64" for name in ("_acc", "_gacc", "_wacc")}
#: the launches of codegen.runtime.triton_kernels: whole aligned fp32 chunks (the common case), a
#: masked unaligned bf16 tail with fp32 math, and float64 parameters (math in float64)
LAUNCHES = {
    "fp32": {"_DT": tl.float32, "_GT": tl.float32, "_CT": tl.float32, "_MASKED": False, "_ALIGNED": True},
    "bf16 tail": {"_DT": tl.bfloat16, "_GT": tl.bfloat16, "_CT": tl.float32, "_MASKED": True,
                  "_ALIGNED": False},
    "fp64": {"_DT": tl.float64, "_GT": tl.float64, "_CT": tl.float64, "_MASKED": True, "_ALIGNED": True},
}


def compile_kernels(program, launch: dict, block: int = 2048, num_warps: int = 8,
                    wide_sums: bool | None = None, ttir: list | None = None) -> list[str]:
    """Compile every kernel of ``program``'s generated module for sm_90; returns their names.
    ``wide_sums``: float64 accumulators (default: where the launch's math is float64; a float32
    launch takes them too when a global reduction spans float64 parameters). ``ttir``: a list the
    kernels' Triton IR is appended to."""
    module = load_module(codegen.emit(program, "triton"), f"optdsl_aot_{program.name}")
    names = []
    tile_columns = {"_TC": module._TILE_COLUMNS}  # the tiled passes' tile width
    for family in module._TRITON.families:
        for kernel in filter(None, [*family.passes, *family.tiles]):
            names.append(kernel.__name__)
            constants = {**launch, "_BLOCK": block, **(tile_columns if "_tiles" in names[-1] else {})}
            wide = launch["_CT"] == tl.float64 if wide_sums is None else wide_sums
            pointers = {**POINTERS, **(WIDE_SUMS if wide else {})}
            # the per-step scalars are float64 arguments, each kernel's math dtype inside it
            signature = {p.name: "constexpr" if p.is_constexpr else pointers.get(p.name, "fp64")
                         for p in kernel.params}
            compiled = triton.compile(ASTSource(kernel, signature, constants), target=HOPPER,
                                      options={"num_warps": num_warps, "enable_fp_fusion": True})
            assert ".entry" in compiled.asm["ptx"] and compiled.asm["cubin"]
            if ttir is not None:
                ttir.append(compiled.asm["ttir"])
    return names


@pytest.mark.parametrize("name", optdsl.zoo_names())
def test_zoo_kernels_compile_for_hopper(name):
    names = compile_kernels(optdsl.load(name), LAUNCHES["fp32"])
    assert names and (name != "adafactor" or "_path0_pass1_tiles" in names)


# per-step and shape arithmetic of numbers alone, float64 in the kernel (the interpreter's): in float32,
# lr * 1e30 * 1e30 * 1e-50 was inf and 1 + 1e-8 step - 1 lost the step (an audit, 2026-12-06)
PER_STEP_F64 = ["def f(w, g, lr=0.1):\n    return lr * 1e30 * 1e30 * 1e-50 * g\n",
                ("def f(w, g, step, lr=0.1, b=0.999):\n"
                 "    return lr * g * (1 + 1e-8 * step - 1) * 1e8 / (1 - b ** step)\n"),
                ("def f(w, g, m: scalar, lr=0.1, b=0.9):\n    m = interp(mean(g), m, b)\n"
                 "    return lr * interp(g, m, b) / norm(lr * b + g), m\n"),
                # shape facts are float64 too, and meet a tensor and a per-tensor number rounded
                ("def f(w, g, m: scalar, lr=0.1):\n    m = norm(g) * size(w) + m\n"
                 "    return lr * g * exp(size(w) / 10) / exp(size(w) / 10 - 1) * m / ndim(w), m\n")]


@pytest.mark.parametrize("source", [*optdsl.zoo_names(), *PER_STEP_F64])
def test_float32_kernels_do_no_float64_math_on_tensors(source):
    """Per-step numbers are float64 in a kernel, rounded where they meet a tensor's values: no block
    of float64 may come of it (a float64 number times a float32 block is a float64 block)."""
    program = optdsl.load(source) if source in optdsl.zoo_names() else optdsl.parse(source)
    ttir = []
    compile_kernels(program, LAUNCHES["fp32"], ttir=ttir)
    assert ttir and not any(re.search(r"tensor<[0-9x]*xf64>", text) for text in ttir)


def test_a_scalar_state_given_a_number_compiles():
    program = optdsl.parse("def f(w, g, s: scalar, lr=0.1):\n    return lr * (g + s), 0.9\n")
    assert compile_kernels(program, LAUNCHES["fp32"])


@pytest.mark.parametrize("launch", ["bf16 tail", "fp64"])
@pytest.mark.parametrize("name", ["adafactor", "tiger"])  # row, column and scalar states, two levels
def test_every_launch_kind_compiles(name, launch):
    assert compile_kernels(optdsl.load(name), LAUNCHES[launch])


def test_float32_math_compiles_with_float64_sums():
    """Where one step's global reductions span float32 and float64 parameters, the float32 kernels
    add into (and read, as float32) float64 accumulators."""
    assert compile_kernels(optdsl.parse(REDUCTIONS), LAUNCHES["fp32"], wide_sums=True)


def _every_reduction() -> optdsl.Program:
    """A program whose update adds every reduction of the op table (per tensor, row, column,
    global) of ``g`` (and ``w`` for two-argument ones)."""
    base = optdsl.parse("def every(w, g, lr=1.0):\n    u = g\n    return lr * u\n")
    body = list(base.body)
    for op in OPS.values():
        if op.shape in (REDUCE, ROW, COL, GLOBAL):
            args = (Var("g"), Var("w"))[: op.arity]
            body.append(Assign("u", Call("add", (Var("u"), Call(op.name, args)))))
    return optdsl.parse(optdsl.to_source(base.with_body(body)))  # printed and parsed back: validated


def test_every_op_compiles_with_the_gpus_libdevice():
    """The interpreter runs libdevice's stand-ins (codegen.runtime.triton_kernels); the GPU calls
    libdevice itself, so each op's Triton spelling is compiled against the real one here."""
    for program in (_every_elementwise_op(), _every_elementwise_op(per_step=True), _every_reduction()):
        assert compile_kernels(program, LAUNCHES["fp32"])
