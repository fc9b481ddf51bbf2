"""The ``triton`` backend's runtime: launch a program's Triton kernels over lists of tensors
(:mod:`codegen.triton_target` prints the kernels and says how a step runs on the device).

The block between the runtime markers is copied verbatim into each generated torch module whose
program has kernels; the module then defines the kernels and::

    _TRITON = _TritonKernels(families=[_Family(...), ...], hypers=("beta1", ...), complements=(...),
                             global_slots=0)

    def _triton_group_step(path, params, grads, states, /, *, lr, step, **hyper):
        _TRITON.group_step(_PROGRAM, path, params, grads, states, lr=lr, step=step, **hyper)

A step's Python work can outlast its kernels on a fast GPU (on an H200, Lion's step of the 200
BERT-base tensors took 1.03 ms through the optimizer against 0.53 ms for its kernels, before the
checks were made cheap; docs/benchmarks.md): the launch tables are cached per list of tensors and
checked each step by the tensors' addresses alone, read in C.
"""

# --- optdsl runtime: begin (codegen/runtime/triton_kernels.py, copied verbatim; edit it there)
import functools
import itertools
import math
import operator
import os

import torch
import triton
import triton.language as tl


@triton.jit
def _pointer(entry, col, DTYPE: tl.constexpr, _ALIGNED: tl.constexpr):
    """The table's address at ``entry[col]`` as a pointer; _ALIGNED: it is 16-byte aligned."""
    p = tl.load(entry + col).to(tl.pointer_type(DTYPE))
    if _ALIGNED:
        p = tl.multiple_of(p, 16)
    return p


@triton.jit
def _segment_sum(a, row_a, b, row_b):
    """The combine of a segmented sum: (a, row_a) then (b, row_b) is b plus a where they share a
    row (rows run in order along the chunk, so this is associative)."""
    return tl.where(row_a == row_b, a + b, b), row_b


@triton.jit
def _nan_max(x, y):
    """max(x, y), nan where either is, as numpy's maximum (tl.maximum returns the other one)."""
    return tl.maximum(x, y, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _nan_min(x, y):
    """min(x, y), nan where either is, as numpy's minimum."""
    return tl.minimum(x, y, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _nan_positive(x):
    """x with each nan made +nan: tl.atomic_max compares a float's bits as an integer's, where a nan
    with its sign bit set (x86's 0 / 0) loses to every other value and +nan wins."""
    return tl.where(x != x, float("nan"), x)  # noqa: PLR0124 (x != x: the kernel's nan test)


@triton.jit
def _nan_amax(x):
    """The largest element of x (of all its axes), +nan where any element is nan, as numpy's amax
    (tl.max skips a nan)."""
    return _nan_positive(tl.reduce(x, None, _nan_max))


@triton.jit
def _tl_fmod_parts(a, b):
    """``(m, d)``: m = a mod b with b's sign and d = (a - m) / b, built as numpy builds them from the
    exact ``%`` of floats (C's fmod), for the two functions below (torch_math's ``_fmod_parts``)."""
    m = a % b
    d = (a - m) / b
    other_sign = (m != 0) & ((b < 0) != (m < 0))
    return tl.where(other_sign, m + b, m), tl.where(other_sign, d - 1.0, d)


@triton.jit
def _py_mod(a, b):
    """a mod b with the sign of b (Python's %, numpy's mod): a - b floor(a / b) rounds (float32
    1e10 % 3: 0, numpy 1)."""
    m, _ = _tl_fmod_parts(a, b)
    return tl.where(m == 0, tl.where(b < 0, -0.0, 0.0), m)


@triton.jit
def _py_floordiv(a, b):
    """floor(a / b) as Python and numpy compute it: (a - a mod b) / b rounded to an integer (float32
    1 // 0.1 is 9; floor(1 / 0.1) is 10), a / b where b is 0."""
    _, d = _tl_fmod_parts(a, b)
    f = tl.floor(d)
    f = tl.where(d - f > 0.5, f + 1.0, f)
    q = a / b
    negative = (q < 0) | (1.0 / q < 0)  # (-0.0 too)
    f = tl.where(d == 0, tl.where(negative, -0.0, 0.0), f)
    return tl.where(b == 0, q, f)


def _interpreted_libdevice():
    """libdevice for TRITON_INTERPRET, which has none: numpy's functions, the reference
    interpreter's own, on the interpreted tensors' arrays (``handle.data``; the interpreter runs
    every tl op as numpy). On a GPU the kernels call libdevice itself. Stand-ins written with
    tl.exp/log lost IEEE cases and digits: ``arcsinh(1e20)`` and ``sinh(89)`` were inf,
    ``cbrt(-0.0)`` +0, ``1 ** nan`` nan, ``tanh(1e-5)`` 1.0014e-5, ``x ** -1`` 1e-6 off."""
    import types

    import numpy as np
    from triton.runtime.interpreter import TensorHandle

    dtypes = {np.dtype(t): getattr(tl, t) for t in ("float16", "float32", "float64")}

    def interpreted(numpy_function):
        def call(*args):
            tensors = [a for a in args if isinstance(a, tl.tensor)]
            like = tensors[0].handle.data.dtype if tensors else np.float32
            # a number stays a number: numpy's x ** 0.5 of a number is its sqrt (nan at -inf, as the
            # reference's), of an array +inf
            arrays = [a.handle.data if isinstance(a, tl.tensor) else np.asarray(a, like) for a in args]
            with np.errstate(all="ignore"):  # (inf and nan are values here, as on the GPU)
                data = np.asarray(numpy_function(*arrays))
            dtype = dtypes[data.dtype]
            blocks = [a.type.shape for a in tensors if a.type.is_block()]
            return tl.tensor(TensorHandle(data, dtype), tl.block_type(dtype, blocks[0]) if blocks else dtype)

        return call

    # libdevice's names: numpy's (which spells the inverse functions arc...)
    names = {f: f for f in ("cbrt", "expm1", "log1p", "tan", "sinh", "cosh", "tanh")}
    names.update({f: "arc" + f[1:] for f in ("asin", "acos", "atan", "asinh", "acosh", "atanh")}, pow="power")
    return types.SimpleNamespace(**{f: interpreted(getattr(np, n)) for f, n in names.items()})


if os.environ.get("TRITON_INTERPRET") == "1":
    libdevice = _interpreted_libdevice()
else:
    from triton.language.extra import libdevice  # noqa: F401  (the kernels' math functions)


class _Family:
    """One path's kernels: ``passes[k]`` is None where the path has no reduction at pass k;
    ``tiles[k]`` is pass k's tiled twin where it sums columns (None elsewhere). ``narrow``: the row,
    column and scalar states the step changes (written to ``next`` buffers, then copied in)."""

    def __init__(self, states, facts, narrow, needs_2d, slots, amax_slots, wide, passes, tiles):
        self.states, self.facts, self.narrow, self.needs_2d = states, facts, list(narrow), needs_2d
        self.slots, self.amax_slots, self.wide = slots, amax_slots, wide
        self.passes, self.tiles = passes, tiles


_TRITON_DTYPES = {
    torch.float32: tl.float32,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.float64: tl.float64,
}


def _fact(fact, shape):
    if fact[0] == "ndim":
        return len(shape)
    if fact[0] == "size":
        return math.prod(shape)
    return shape[fact[1]]


#: A tile of a tiled pass is _BLOCK // _TILE_COLUMNS rows by _TILE_COLUMNS columns: in a chunk of
#: consecutive elements a column's elements lie C apart, so each took an atomic of its own, and
#: the C atomics of a chunk queued on the same addresses as every other chunk's (Adafactor on the
#: BERT-base list ran at 4% of an H200's bandwidth). Narrower matrices stay with the chunks.
_TILE_COLUMNS = 64


@functools.lru_cache(maxsize=64)
def _tile_table(matrices, block, device):
    """(tensor, tile) pairs, flat int32, of the tensors whose ``matrices[t]`` is (count, R, C)
    (None: not tiled); with their number."""
    rows = block // _TILE_COLUMNS
    tiles = torch.tensor(
        [0 if m is None else m[0] * -(-m[1] // rows) * -(-m[2] // _TILE_COLUMNS) for m in matrices],
        dtype=torch.int64,
    )
    tensor = torch.repeat_interleave(torch.arange(len(matrices)), tiles)
    tile = torch.arange(len(tensor)) - torch.repeat_interleave(torch.cumsum(tiles, 0) - tiles, tiles)
    return torch.stack([tensor, tile], 1).to(torch.int32).reshape(-1).to(device), len(tensor)


@functools.lru_cache(maxsize=64)
def _chunk_table(numels, block, device):
    """(tensor, chunk) pairs, flat int32: every whole chunk first (launched unmasked), then each
    tensor's last partial chunk; with the two counts."""
    n = torch.tensor(numels, dtype=torch.int64)
    whole = n // block
    tensor = torch.repeat_interleave(torch.arange(len(numels)), whole)
    chunk = torch.arange(int(whole.sum())) - torch.repeat_interleave(torch.cumsum(whole, 0) - whole, whole)
    tails = (n % block).nonzero().flatten()
    pairs = torch.cat([torch.stack([tensor, chunk], 1), torch.stack([tails, whole[tails]], 1)])
    return pairs.to(torch.int32).reshape(-1).to(device), len(tensor), len(tails)


class _TritonGroup:
    """Tensors of one path and dtype: the launch tables and accumulator layout."""

    def __init__(self, family, kernels_dtypes, members, block, device, wide_start):
        self.family = family
        rows, self.nexts, self.narrow_states = [], [], []
        self.wide_size = 0
        for t, (p, g, states) in enumerate(members):
            shape, n = tuple(p.shape), p.numel()
            nexts = [torch.empty_like(states[s]) for s in family.narrow]
            self.nexts += nexts
            self.narrow_states += [states[s] for s in family.narrow]
            row = [n, p.data_ptr(), g.data_ptr()] + [states[s].data_ptr() for s, _ in family.states]
            row += [x.data_ptr() for x in nexts] + [int(_fact(f, shape)) for f in family.facts]
            if family.needs_2d:
                row += [shape[-1], shape[-1] * shape[-2]]
            for scope in family.wide:
                row.append(wide_start + self.wide_size)
                self.wide_size += n // shape[-1] if scope == "row" else n // shape[-2]
            rows.append(row)
        self.table = torch.tensor(rows, dtype=torch.int64).to(device)
        self.n_tensors = len(rows)
        common = {
            "_BLOCK": block,
            "_DT": _TRITON_DTYPES[kernels_dtypes[0]],
            "_GT": _TRITON_DTYPES[kernels_dtypes[1]],
            "_CT": tl.float64 if kernels_dtypes[0] == torch.float64 else tl.float32,  # the math's dtype
            "_ALIGNED": all(a % 16 == 0 for row in rows for a in row[1 : 3 + len(family.states)]),
        }
        # a tiled pass takes the matrices at least a tile wide by tiles, the others by chunks
        tiling = any(family.tiles) and block >= 2 * _TILE_COLUMNS
        tiled = [tiling and p.dim() >= 2 and p.shape[-1] >= _TILE_COLUMNS for p, _, _ in members]
        chunks = _chunk_launches(tuple(row[0] for row in rows), block, device, common)
        untiled = _chunk_launches(
            tuple(0 if t else row[0] for t, row in zip(tiled, rows)), block, device, common
        )
        tiles = _tile_table(
            tuple(
                (p.numel() // p.shape[-1] // p.shape[-2], *p.shape[-2:]) if t else None
                for t, (p, _, _) in zip(tiled, members)
            ),
            block,
            device,
        )
        #: per pass, its launches: (kernel, chunk table, programs, the kernel's constants), each
        #: launch's constants merged here once rather than at every step
        self.passes = []
        for kernel, tiled_kernel in zip(family.passes, family.tiles):
            if kernel is None:
                self.passes.append([])
                continue
            launches = [(kernel, *c) for c in (chunks if tiled_kernel is None else untiled)]
            if tiled_kernel is not None:
                launches.append((tiled_kernel, *tiles, {**common, "_MASKED": True, "_TC": _TILE_COLUMNS}))
            self.passes.append([launch for launch in launches if launch[2]])


def _chunk_launches(numels, block, device, constants):
    """The launches over chunks of ``block`` elements of the tensors of ``numels`` (0: none of
    that tensor): (chunk table, programs, ``constants`` with _MASKED), whole chunks unmasked, then
    last chunks masked."""
    flat, n_whole, n_tail = _chunk_table(numels, block, device)
    return [
        (flat, n_whole, {**constants, "_MASKED": False}),
        (flat[2 * n_whole :], n_tail, {**constants, "_MASKED": True}),
    ]


class _DoesNotFit(NotImplementedError):
    """Tensors the kernels cannot take (raised while the launch tables are built)."""


def _fits(tensors):
    """May the kernels take these tensors: float dtypes they know, contiguous?"""
    return all(t.dtype in _TRITON_DTYPES and t.is_contiguous() for t in tensors)


_data_ptr, _is_contiguous = torch.Tensor.data_ptr, torch.Tensor.is_contiguous
_is_not_none = functools.partial(operator.is_not, None)


class _TritonStep:
    """One optimizer step over lists of tensors with a program's kernels (``kernels``: its
    :class:`_TritonKernels`).

    ``step(paths, params, grads, states, lr, step, hyper)``: ``paths[i]`` is the path of
    ``params[i]`` (or one path for all), ``states[name][i]`` its state ``name`` (compute dtype);
    everything is updated in place. Global reductions run across all the tensors given. ``block``
    elements per program; the tables are rebuilt only when a tensor's address changes.
    """

    def __init__(self, kernels, block=2048, num_warps=8):
        self.kernels, self.block, self.num_warps = kernels, block, num_warps
        self._plan, self._plan_key = None, None

    def _build(self, paths, params, grads, states):
        families = self.kernels.families
        groups = {}
        for i, (k, p, g) in enumerate(zip(paths, params, grads)):
            if p.numel() == 0:
                continue
            mine = {s: states[s][i] for s, _ in families[k].states}
            if not _fits([p, g, *mine.values()]):
                raise _DoesNotFit("the Triton kernel needs contiguous float tensors")
            groups.setdefault((k, p.dtype, g.dtype, p.device), []).append((p, g, mine))
        plan, slots, wide = [], 0, 0
        for (k, dt, gt, device), members in groups.items():
            grp = _TritonGroup(families[k], (dt, gt), members, self.block, device, wide)
            grp.acc_start, slots, wide = slots, slots + grp.n_tensors * grp.family.slots, wide + grp.wide_size
            plan.append(grp)
        n_global = self.kernels.global_slots
        # sums in float64 where any tensor's math is (the kernels read them in their math's dtype)
        wide_sums = any(dt == torch.float64 for _, dt, _, _ in groups)
        init = torch.zeros(slots + n_global + wide, dtype=torch.float64 if wide_sums else torch.float32)
        for grp in plan:
            for t in range(grp.n_tensors):
                for s in grp.family.amax_slots:
                    init[grp.acc_start + t * grp.family.slots + s] = float("-inf")
        device = params[0].device
        acc = init.to(device)
        gacc, wacc = acc[slots : slots + n_global], acc[slots + n_global :]
        views = [acc[grp.acc_start :] for grp in plan]
        nexts = [x for grp in plan for x in grp.nexts]
        narrow = [x for grp in plan for x in grp.narrow_states]
        return plan, init.to(device), acc, views, gacc, wacc, nexts, narrow

    def step(self, paths, params, grads, states, lr, step, hyper):
        """``w <- w - update`` for every tensor; states updated in place."""
        if isinstance(paths, int):
            paths = [paths] * len(params)
        # every address (a new grad each step may land elsewhere) and the grads' layout, read in C;
        # a path without some state has None in its place
        tensors = itertools.chain(params, grads, *(states[s] for s in sorted(states)))
        key = (
            tuple(paths),
            tuple(map(_data_ptr, filter(_is_not_none, tensors))),
            all(map(_is_contiguous, grads)),
        )
        if key != self._plan_key:
            self._plan, self._plan_key = self._build(paths, params, grads, states), key
        plan, acc_init, acc, views, gacc, wacc, nexts, narrow = self._plan
        if not plan:
            return
        kernels = self.kernels
        scalars = (
            [float(lr), float(step)]
            + [float(hyper[h]) for h in kernels.hypers]
            + [1.0 - float(hyper[h]) for h in kernels.complements]
        )  # float64 kernel arguments, each kernel's math dtype inside it
        n_passes = len(plan[0].family.passes)
        if acc.numel():
            acc.copy_(acc_init)
        for k in range(n_passes):
            for grp, view in zip(plan, views):
                for kernel, chunks, n, constants in grp.passes[k]:
                    kernel[(n,)](
                        grp.table,
                        chunks,
                        view,
                        gacc,
                        wacc,
                        *scalars,
                        **constants,
                        num_warps=self.num_warps,
                        # a*b + c as one rounding (FMA), as every figure in docs/benchmarks.md was
                        # taken; Triton 3.9 warns that its default turns this off in 3.10
                        enable_fp_fusion=True,
                    )
        if nexts:
            torch._foreach_copy_(narrow, nexts)


class _TritonKernels:
    """A program's Triton kernels as the torch optimizer's backend ``"triton"``: ``families[k]`` the
    kernels of path k, ``hypers`` the hyperparameters they take after lr and step (``complements``:
    those also taken as ``1 - h``), ``global_slots`` the accumulators of global reductions.

    ``config``: elements per program (``block``) and warps per program of new runners."""

    def __init__(self, families, hypers, complements=(), global_slots=0):
        self.families, self.hypers, self.complements = families, hypers, complements
        self.global_slots = global_slots
        self.config = {"block": 2048, "num_warps": 8}
        self.runners = {}  # one cached _TritonStep per parameter list

    def available(self, device):
        return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"

    def runner(self, **config):
        """A new :class:`_TritonStep` of these kernels (``block``, ``num_warps``: else ``config``'s)."""
        return _TritonStep(self, **{**self.config, **config})

    def group_step(self, program, path, params, grads, states, /, *, lr, step, **hyper):
        """In-place step of tensors sharing ``path``, device and dtype; tensors the kernels cannot
        take (not contiguous, an unknown dtype) run ``program``'s eager step."""
        if not params:
            return
        if not self.available(params[0].device):
            raise RuntimeError(
                f"backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1), got {params[0].device}"
            )
        key = (path, params[0].data_ptr(), len(params))
        runner = self.runners.get(key)
        if runner is None:
            if len(self.runners) > 64:
                self.runners.clear()
            runner = self.runners[key] = self.runner()
        try:
            runner.step(path, params, grads, states, lr, step, {**program.hyper_defaults, **hyper})
        except _DoesNotFit:  # raised before any kernel runs
            program.eager_group_step(path, params, grads, states, lr=lr, step=step, **hyper)


# --- optdsl runtime: end
