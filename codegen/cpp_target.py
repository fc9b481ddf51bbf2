"""C++/OpenMP kernels for the torch target's ``cpp`` backend: passes over all tensors of a group.

A generated torch optimizer steps a group of tensors (same path, dtype, step count) with one call
into a kernel compiled from C++ printed here from the validated program (the straight-line,
hoisted form the ``compiled`` backend also runs; compiled and cached at run time by
:mod:`codegen.runtime.cpp_kernels`). The kernel splits every tensor of the group into chunks of
``CHUNK`` elements and runs all chunks of all tensors in one OpenMP parallel region; each chunk is a
``#pragma omp simd`` loop that reads w, g and the states once and writes w and the states once
(AdamW: 28 bytes per float32 parameter, the least a step can move), a cache line at a time, and
may prefetch a page ahead in every array (less beyond 4 arrays). Whether it does is the runtime's
choice, timed per group on its first steps (:mod:`codegen.runtime.cpp_kernels`): on a Xeon, whose
hardware prefetchers stop at each 4 KiB page so that every stream starts cold on every page, it
took AdamW's kernel from 0.96x torch's fused AdamW to 0.84x and Lion's from 0.77x to 0.63x (16 x
2^20 floats, one thread); on an AMD EPYC (Zen 4) it cost 6-24%. Per-step scalars (bias
corrections...) come in computed once per step in float64 (``_Program.floats``), cast to the compute
type ``T`` (float, or double for float64 parameters) as the other backends cast them.

Reductions. A program that reduces (per tensor: ``Op.shape == "reduce"``; per row or per column:
``"row"``/``"col"``, the means over the last or the second-last axis) runs as a sequence of passes
over each tensor: pass 0 computes every reduction whose argument needs no reduction, pass 1 those
that need pass 0's, ..., and the last pass computes the update from them. A pass reads only the
arrays its values need (Tiger: w and g, then w, g and m). The last pass writes w and the states,
except a full state whose new value an earlier pass knows and no later pass needs the old value of:
that pass writes it, and later ones read it instead of recomputing it (LAMB: pass 0 reads w, g, m,
v and writes m, v; the update's pass reads w, m, v: 40 bytes per parameter instead of 44, 30.3
against 34.9 ms on 16 x 2^20 floats, 1 thread). Each reduction is computed in pieces as its ``Op.reduction`` says: every chunk totals its terms in
``line`` lanes (one per element of a cache line, in ``ACCUMULATE``: double, for float32 parameters
too), adds its lanes in order into its own slot of an array, and after the pass each tensor's slots
are added in chunk order and finished (``sqrt(a0 / n)`` for rms). The chunks and the order never
depend on the threads, so the result is the same bits at any thread count. A path that sees rows
(row/column reductions, Adafactor's row and column states) cuts each matrix of its tensors (the
last two axes) into chunks of whole rows and runs each row as one loop: a row's reductions are
finished at its end, row values are computed once per row, column values once per chunk (a loop
over the columns of the chunk's matrix before its rows, into a buffer of C numbers that the element
loop reads), each chunk keeps its own column totals (combined per column in chunk order), and new
column states are written by the first chunk of each matrix, copied in once the last pass has read
the old ones. Reductions whose argument is one number per tensor are that number's
(``Reduction.of_number``); a per-tensor reduction of a row value (Adafactor's ``mean(r)``) adds one
term per row. A group's tensors go through all the passes a batch at a time (``BATCH`` elements of
consecutive tensors, at least one; ``by_batches``), so that a later pass re-reads the batch's arrays
from the cache rather than from memory: per-tensor reductions make that the same work in the same
order (the same bits); on a 2-core EPYC (32 MiB L3) it took Tiger, LAMB and Adafactor 4-23% off.

Lifting. The element loop is where the time goes, and a division or a square root there costs more
than the memory it reads (5-6 cycles per 8 floats, against about one for a stream): a full-shaped
product, quotient or root (the ops whose meaning is a monomial of their arguments, read from the
op table: :data:`_MONOMIAL`) is split into the factors that vary over the elements and those that
are one number per tensor, row or column, and where that takes a division or a root out of the
loop, the latter are multiplied (divided) together once per chunk, row or column (``_Pass.factors``,
``_Pass.scaled``; a product of such numbers alone keeps the program's order, the interpreter's, as
does everything lifting would not make cheaper): ``r * c / max(mean(r), eps)`` becomes
``(r / max(mean(r), eps)) * c``, ``m / (1 - beta1^t)`` becomes ``m * (1 / (1 - beta1^t))``, a
root of a product the product of roots (``sqrt`` and ``rsqrt`` act on ``|x|``, so no sign fact is
needed), and where a power of a full-shaped value cancels a square root it is taken
(``(g rsqrt(v))^2`` = ``g^2 / |v|``: Adafactor's rms(u) pass needs no root). Adafactor's element
loops went from 2 divisions and 1 root (rms(u)) and 3 and 1 (update) to 1 and 0 and 1 and 1 on
matrices, from 1 and 1 and 2 and 1 to 1 and 0 and 1 and 1 on 1-d tensors (AdamW's and LAMB's were
at 1 and 1 already: the torch target hoists their per-step scalars before the kernel). Measured on
the BERT-base list (2-core x86 Xeon, 1 thread, old and new kernels interleaved in one process):
Adafactor's step 256 -> 164 ms, now moving the 24 bytes per matrix parameter its 3 passes read and
write at about 16 GB/s; on 16 x 2^20 floats 22.7 -> 22.0 ms (32 bytes per 1-d parameter, about 24
GB/s). Rounding: the same real numbers, the floats rounded in another order (a product regrouped,
``x / s`` as ``x * (1 / s)``): a few units in the last place, what the differential tests against
the interpreter accept (float32 and float64); the places where an intermediate product overflows or
underflows can move (``1 / s`` overflows for a subnormal ``s`` where ``x / s`` may not; a fuzz seed,
1142, had ``u * (lr * u)`` regrouped as ``(u * u) * lr``, inf near float32's largest value where the
interpreter was finite, before products that lift no division or root kept their order). Equal
factors of opposite powers are never cancelled (``x / x`` stays nan at 0 and inf).

Paths with scalar states, global reductions or shape facts get no kernels (:func:`supports` says
why); for those the backend does not exist and the optimizer's default is unchanged. (The torch
target hands in a path whose global reductions each reduce an input with those statements left
out: their values are per-step numbers then, taken by the runtime over all tensors first.)

Every value, input and temporary is its own ``const T`` local (SSA): a program's names never reach
the C++ text, so no identifier can clash with a C++ keyword, and each op's spelling
(``Op.cpp`` in :mod:`optdsl.ops`) gets plain names as arguments.

Exported symbols, per path ``k`` and parameter dtype (``PARAM_TYPES``; a library is built with one
of ``OPTDSL_F32``, ``OPTDSL_F64``, ``OPTDSL_BF16``, ``OPTDSL_F16`` defined: one type's kernels build
in ~60% of the time of two): ``optdsl_path<k>_<f32|f64|bf16|f16>`` with the signature ``(int64 n,
void** ptrs, const int64* sizes, const int64* dims, const double* scalars, int threads, int64
ahead)`` (``ahead``: the prefetch distance in bytes, 0 for none); ``ptrs``
holds n pointers per slot, slot-major: w, g (of the parameter dtype), then the path's states in
order (float32 beside bf16 and fp16 parameters, whose values the math widens to float32 and the
update rounds back to nearest even); ``dims`` the lengths of each tensor's last two axes (R, C), 1
for an axis it lacks.

Example:
    >>> import optdsl
    >>> src = kernel_source(optdsl.load("lion"))
    >>> "optdsl_path0_f32" in src and "#pragma omp simd" in src
    True
    >>> passes(optdsl.load("lamb"))  # norm(w) and norm(r) in one pass, then the update
    2
    >>> from codegen.torch_target import paths
    >>> [passes(p.program) for p in paths(optdsl.load("adafactor"))[2]]  # ndim > 2, ndim 2, ndim < 2
    [4, 4, 2]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from fractions import Fraction

import sympy

from optdsl.errors import DslError
from optdsl.ir import Call, Const, Expr, Program, Var, free_vars, substitute, walk
from optdsl.ops import COL, ELEMENTWISE, OPS, REDUCE, ROW

CHUNK = 1 << 15  # elements a thread takes at a time: 128 KiB of each float32 array
# the most bytes of lines prefetched ahead over all arrays, whatever the distance the runtime asks
# (a third of a Xeon's 48 KiB L1d: 8 KiB ahead in each of AdamW's 4 arrays lost the whole gain)
IN_FLIGHT = 16384
# elements of consecutive tensors a kernel of several passes takes through all its passes before the
# next ones (at least one tensor): a later pass then re-reads the batch's arrays from the cache, not
# from memory (Tiger's g after its nan test; LAMB's w and states after their norms)
BATCH = 1 << 20
# the type reductions add their terms in ("T" for the parameters' own); see tests/codegen/test_cpp_kernels.py
ACCUMULATE = "double"
# the kernels exported per parameter dtype: symbol suffix -> (math and state type T, param type P); a
# library holds one of them (the runtime defines OPTDSL_<SUFFIX> when it builds it)
PARAM_TYPES = {"f32": ("float", "float"), "f64": ("double", "double"), "bf16": ("float", "bf16"),
               "f16": ("float", "_Float16")}

_PRELUDE = """\
// Generated by optdsl (codegen/cpp_target.py) from a validated program; do not edit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

// a bfloat16 parameter or gradient: read widened to float (exact), written rounded to nearest even
// (nan stays nan), as torch converts; math and states are float32 (float16: the compiler's _Float16)
struct bf16 {
  uint16_t bits;
  bf16() = default;
  bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    bits = f != f ? uint16_t(0x7FC0) : uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  }
  operator float() const {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

// maximum/minimum that propagate nan, as numpy and torch do (std::fmax would drop it)
template <typename T> static inline T op_max(T a, T b) { return (a > b || a != a) ? a : b; }
template <typename T> static inline T op_min(T a, T b) { return (a < b || a != a) ? a : b; }

// mod with the sign of b and floor division, as Python and numpy compute them from the exact fmod
// (a - b floor(a / b) rounds: 1e10 % 3 gave 256 in float32, and 1 // 0.1 gave 10 where numpy says 9):
// m = a mod b with b's sign, d = (a - m) / b
template <typename T> static inline void fmod_parts(T a, T b, T& m, T& d) {
  m = std::fmod(a, b);
  d = (a - m) / b;
  if (m != T(0) && (b < T(0)) != (m < T(0))) {
    m += b;
    d -= T(1);
  }
}
template <typename T> static inline T op_mod(T a, T b) {
  T m, d;
  fmod_parts(a, b, m, d);
  return m == T(0) ? std::copysign(T(0), b) : m;
}
template <typename T> static inline T op_floordiv(T a, T b) {
  if (b == T(0)) return a / b;
  T m, d;
  fmod_parts(a, b, m, d);
  if (d == T(0)) return std::copysign(T(0), a / b);
  const T f = std::floor(d);
  return d - f > T(0.5) ? f + T(1) : f;
}

// first[t]: the number of chunks before tensor t's. Tensor t is cut into blocks of blocks[t]
// elements (one matrix of a stack, so that no chunk holds parts of two), each block into chunks of
// lens[t] elements
static int64_t chunks_per_block(int64_t block, int64_t len) { return (block + len - 1) / len; }
static std::vector<int64_t> chunk_starts(int64_t n, const int64_t* sizes, const int64_t* blocks,
                                         const int64_t* lens) {
  std::vector<int64_t> first(n + 1, 0);
  for (int64_t t = 0; t < n; ++t)
    first[t + 1] = first[t] + (blocks[t] > 0 ? sizes[t] / blocks[t] * chunks_per_block(blocks[t], lens[t])
                                             : 0);
  return first;
}

// body(t, c, lo, hi) for every chunk c = [lo, hi) of every tensor t (c numbers all tensors' chunks
// in order), the chunks shared out by OpenMP
template <typename F>
static void for_chunks(int64_t n, const int64_t* blocks, const int64_t* lens,
                       const std::vector<int64_t>& first, int threads, F body) {
  const int64_t total = first[n];
#pragma omp parallel for schedule(static) num_threads(threads) if (total > 1)
  for (int64_t c = 0; c < total; ++c) {
    const int64_t t = std::upper_bound(first.begin(), first.end(), c) - first.begin() - 1;
    const int64_t per = chunks_per_block(blocks[t], lens[t]), q = c - first[t];
    const int64_t lo = q / per * blocks[t] + q % per * lens[t];
    body(t, c, lo, std::min(lo + lens[t], (q / per + 1) * blocks[t]));
  }
}

// element(i, lane) for every i in [lo, hi), vectorized a cache line of T at a time (lane: i's place
// in its line, where reductions keep their running totals), each array of p (elements of bytes[s])
// read `ahead` bytes beyond i in the meantime (prefetcht0, at most IN_FLIGHT bytes over all arrays;
// 0: none): the hardware prefetchers of some CPUs stop at every 4 KiB page, where each of a step's
// streams (w, g, states) would start cold again; others do better alone (the runtime times both)
template <typename T, int S, typename F>
static inline void for_lines(const void* const (&p)[S], const int64_t (&bytes)[S], int64_t ahead, int64_t lo,
                             int64_t hi, F element) {
  constexpr int64_t line = 64 / sizeof(T);
  const int64_t dist = std::min<int64_t>(ahead, IN_FLIGHT / S) / 64 * 64;
  int64_t i = lo;
  for (; i + line <= hi; i += line) {
    if (dist > 0)
      for (int s = 0; s < S; ++s)  // integer arithmetic: the address may lie past the array's end
        __builtin_prefetch(
            reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p[s]) + i * bytes[s] + dist));
#pragma omp simd
    for (int64_t j = i; j < i + line; ++j) element(j, j - i);
  }
#pragma omp simd
  for (int64_t j = i; j < hi; ++j) element(j, j - i);
}

// run(m, ptrs, sizes, dims) for consecutive tensors in batches of at most `budget` elements (or one
// tensor): every pass of a batch before the next batch, so that a later pass finds the batch's
// arrays in the cache. Reductions are per tensor, so this is the same work, in the same order per
// tensor, as one call on all n. ptrs holds each slot's n pointers in turn (ptrs[j * n + t]).
template <typename F>
static void by_batches(int64_t n, int slots, void** ptrs, const int64_t* sizes, const int64_t* dims,
                       int64_t budget, F run) {
  std::vector<void*> sub(size_t(slots) * size_t(n));
  for (int64_t t0 = 0, t1; t0 < n; t0 = t1) {
    int64_t total = sizes[t0];
    for (t1 = t0 + 1; t1 < n && total + sizes[t1] <= budget; ++t1) total += sizes[t1];
    const int64_t m = t1 - t0;
    for (int j = 0; j < slots; ++j)
      for (int64_t t = 0; t < m; ++t) sub[size_t(j * m + t)] = ptrs[j * n + t0 + t];
    run(m, sub.data(), sizes + t0, dims + 2 * t0);
  }
}

// a reduction's lanes combined in lane order
template <typename A, int L> static inline A lanes_sum(const A (&a)[L]) {
  A s = a[0];
  for (int l = 1; l < L; ++l) s += a[l];
  return s;
}
template <typename A, int L> static inline A lanes_max(const A (&a)[L]) {
  A s = a[0];
  for (int l = 1; l < L; ++l) s = op_max(s, a[l]);
  return s;
}
""".replace("IN_FLIGHT", str(IN_FLIGHT))

# what a value varies over: nothing, the tensors, their rows, their columns, the elements
UNIFORM, TENSOR, ROWS, COLS, FULL = range(5)
_STATE_KINDS = {"full": FULL, "row": ROWS, "col": COLS}


def _join(kinds) -> int:
    """The kind of an elementwise op's value: its arguments' broadest, rows with columns full."""
    kinds = set(kinds)
    return FULL if {ROWS, COLS} <= kinds else max(kinds, default=UNIFORM)


def _monomials() -> dict[str, tuple[int, tuple[tuple[int, Fraction, bool], ...]]]:
    """The elementwise ops whose meaning (``Op.sympy``) is a monomial of their arguments, ``c *
    prod_k x_k^e_k`` (``|x_k|^e_k`` where the op takes the absolute value): op name -> (c, ((k, e_k,
    abs), ...)). Read from the op table's meanings: mul, div, neg, abs, sqrt, rsqrt, square, cube,
    reciprocal today (``rsqrt(x) = |x|^(-1/2)``)."""
    out = {}
    xs = sympy.symbols("x0:3", real=True)
    for op in OPS.values():
        if op.shape != ELEMENTWISE or op.sympy is None or op.cpp is None:
            continue
        coeff, factors = sympy.S(1), []
        for f in sympy.Mul.make_args(sympy.sympify(op.sympy(*xs[: op.arity]))):
            base, exp = f.as_base_exp()
            absolute = isinstance(base, sympy.Abs)
            base = base.args[0] if absolute else base
            if f.is_number:
                coeff *= f
            elif base in xs and exp.is_Rational and exp != 0:
                factors.append((xs.index(base), Fraction(int(exp.p), int(exp.q)), absolute))
            else:
                break
        else:
            if factors and coeff.is_Rational:
                out[op.name] = (int(coeff) if coeff.is_Integer else float(coeff), tuple(factors))
    return out


# op name -> (coefficient, factors): how a product, a quotient or a root splits into its arguments'
_MONOMIAL = _monomials()
_Factors = tuple[tuple[Expr, Fraction, bool], ...]  # (leaf, exponent, of |leaf|): prod leaf^exponent
_LOCAL = re.compile(r"^\s*(?:const T|T\* const) (_t\d+) = ")  # a pass's line setting a local


class _Plan:
    """A path as one graph of values: each assignment an id (``%k``), each value's kind (``UNIFORM``
    ... ``FULL``) and pass (the first pass that can compute it: after every reduction it reads), and
    the reductions a pass computes (:meth:`over_elements`) that the outputs need, in passes' order."""

    def __init__(self, program: Program):
        self.scalars = scalar_names(program)
        self.slots = ["w", "g", *(s.name for s in program.states)]
        self.slot_kinds = [FULL, FULL, *(_STATE_KINDS.get(s.kind, UNIFORM) for s in program.states)]
        self.defs: dict[str, Expr] = {}
        current = {n: Var(n) for n in (*self.slots, *self.scalars)}
        for k, a in enumerate(program.body):
            self.defs[f"%{k}"] = substitute(a.expr, current)
            current[a.target] = Var(f"%{k}")
        self.outs = [substitute(e, current) for e in program.outputs()]
        self._kinds: dict[Expr, int] = {}
        self._passes: dict[Expr, int] = {}
        for name, e in self.defs.items():  # in order: a long chain of names never recurses deeply
            self._kinds[Var(name)], self._passes[Var(name)] = self.kind(e), self.pass_of(e)
        self.reductions: list[Call] = []
        pending = list(self.outs)
        seen: set[Expr] = set()
        while pending:
            e = pending.pop()
            if e in seen:
                continue
            seen.add(e)
            if isinstance(e, Var) and e.name in self.defs:
                pending.append(self.defs[e.name])
            elif isinstance(e, Call):
                if self.over_elements(e) and e not in self.reductions:
                    self.reductions.append(e)
                pending.extend(e.args)
        self.reductions.sort(key=self.pass_of)
        self.last = max(self.pass_of(o) + self.over_elements(o) for o in self.outs)  # the update's pass
        # full states written by the first pass that knows their new value, where no later pass needs
        # the old one: later passes read the new value instead of what it is computed from (LAMB's
        # update pass reads m and v, not g): slot -> pass
        # states the step leaves as they are: never written (a store of their own value moves them
        # through memory for nothing)
        self.kept = {j for j in range(2, len(self.slots)) if self.outs[j - 1] == Var(self.slots[j])}
        self.early: dict[int, int] = {}
        for j in set(range(2, len(self.slots))) - self.kept:
            new = self.outs[j - 1]
            known = self.pass_of(new) + self.over_elements(new)
            if self.slot_kinds[j] == FULL and known < self.last and not self._needs_old(j, new, known):
                self.early[j] = known

    def _needs_old(self, j: int, new: Expr, p: int) -> bool:
        """Does a pass after ``p`` read slot j's old value (other than through ``new``)?"""
        roots = [*self.outs, *(a for r in self.reductions if self.pass_of(r) > p for a in r.args)]
        pending, seen = roots, set()
        while pending:
            e = pending.pop()
            if e in seen or e == new:
                continue
            seen.add(e)
            if e == Var(self.slots[j]):
                return True
            if isinstance(e, Var) and e.name in self.defs:
                pending.append(self.defs[e.name])
            elif isinstance(e, Call) and not (self.over_elements(e) and self.pass_of(e) <= p):
                pending.extend(e.args)
        return False

    def loaded(self, p: int) -> dict[Expr, int]:
        """New state values pass ``p`` reads from their slots (written by an earlier pass)."""
        return {self.outs[j - 1]: j for j, q in self.early.items() if q < p}

    def problem(self) -> str | None:
        """Why this path has no kernel, or None."""
        for e in [*self.defs.values(), *self.outs]:
            for node in walk(e):
                if not isinstance(node, Call):
                    continue
                op = OPS[node.op]
                if op.shape not in (ELEMENTWISE, REDUCE, ROW, COL):
                    return f"{node.op}() is a {op.shape} op"
                if op.shape != ELEMENTWISE and op.reduction is None:
                    return f"{node.op}() has no pieces (Op.reduction)"
                kind = _join(self.kind(a) for a in node.args)
                if op.shape == REDUCE and kind == COLS:
                    return f"{node.op}() of a column-shaped value"
                if op.shape in (ROW, COL) and kind != FULL:
                    return f"{node.op}() of a value that is not full-shaped"
                red = op.reduction
                env = {"x": node.args[0], "y": node.args[-1]}
                if red and red.combine == "sum" and any(self.kind(substitute(t, env)) != kind for t in red.terms):
                    # (cosine_sim(s, w) of one number s: the reference's s * s is s's own, taken once)
                    return f"{node.op}() sums a term that does not vary over the elements it reduces"
        return None

    def over_elements(self, e: Expr) -> bool:
        """Is ``e`` (or the value a name holds) a reduction a pass computes: of full-shaped values (per
        tensor, per row, per column) or of a row-shaped one (per tensor)?"""
        while isinstance(e, Var) and e.name in self.defs:
            e = self.defs[e.name]
        return isinstance(e, Call) and OPS[e.op].shape != ELEMENTWISE and self.over(e) in (ROWS, FULL)

    def over(self, r: Call) -> int:
        """What reduction ``r``'s terms vary over."""
        return _join(self.kind(a) for a in r.args)

    def kind(self, e: Expr) -> int:
        if e not in self._kinds:
            if isinstance(e, Const):
                k = UNIFORM
            elif isinstance(e, Var) and e.name in self.slots:
                k = self.slot_kinds[self.slots.index(e.name)]
            elif isinstance(e, Var):
                k = UNIFORM if e.name in self.scalars else self.kind(self.defs[e.name])
            else:
                shape = OPS[e.op].shape
                k = {ELEMENTWISE: None, ROW: ROWS, COL: COLS}.get(shape, TENSOR)
                k = _join(map(self.kind, e.args)) if k is None else k
            self._kinds[e] = k
        return self._kinds[e]

    def pass_of(self, e: Expr) -> int:
        """The pass computing ``e``; for a reduction a pass computes, the pass computing its terms."""
        if e not in self._passes:
            if isinstance(e, Const) or (isinstance(e, Var) and e.name not in self.defs):
                p = 0
            elif isinstance(e, Var):
                p = self.pass_of(self.defs[e.name])
            else:
                p = max((self.pass_of(a) + (self.over_elements(a)) for a in e.args), default=0)
            self._passes[e] = p
        return self._passes[e]

    def of_shape(self, shape: str) -> list[Call]:
        """The pass reductions whose value is per tensor (``REDUCE``), per row or per column."""
        return [r for r in self.reductions if OPS[r.op].shape == shape]

    def factored(self) -> bool:
        """Does a pass see rows (row/column reductions or states)? Then chunks hold whole rows."""
        return bool(self.of_shape(ROW) or self.of_shape(COL)) or any(k in (ROWS, COLS) for k in self.slot_kinds)


def supports(program: Program) -> str | None:
    """None when ``program`` (one straight-line path) can run as a kernel, else why not.

    Example:
        >>> import optdsl
        >>> supports(optdsl.load("adamw")) is None, supports(optdsl.load("amos"))
        (True, 'state v is scalar-shaped')
    """
    for s in program.states:
        if s.kind not in _STATE_KINDS:
            return f"state {s.name} is {s.kind}-shaped"
    return _Plan(program).problem()


def passes(program: Program) -> int:
    """How many passes over its tensors a path's kernel makes (1 for an elementwise program):
    ``passes = levels of nested reductions + 1`` (each level a pass, then the update's).

    Example:
        >>> import optdsl
        >>> passes(optdsl.load("adamw")), passes(optdsl.load("lamb"))  # LAMB: the norms, then the update
        (1, 2)
    """
    return _Plan(program).last + 1


def scalar_names(program: Program) -> tuple[str, ...]:
    """The per-step numbers a path's kernel reads, in the order of its ``scalars`` array: every
    name read before it is set, other than w, g and the states (lr, hyperparameters, hoisted values).

    Example:
        >>> import optdsl
        >>> scalar_names(optdsl.load("lion"))
        ('beta1', 'beta2', 'lr', 'weight_decay')
    """
    inputs = {"w", "g", *(s.name for s in program.states)}
    defined: set[str] = set()
    needed: set[str] = set()
    for a in program.body:
        needed |= free_vars(a.expr) - defined - inputs
        defined.add(a.target)
    for e in program.outputs():
        needed |= free_vars(e) - defined - inputs
    return tuple(sorted(needed))


def _literal(value: float, t: str = "T") -> str:
    if math.isnan(value):
        return f"std::numeric_limits<{t}>::quiet_NaN()"
    if math.isinf(value):
        return f"{'-' if value < 0 else ''}std::numeric_limits<{t}>::infinity()"
    return f"{t}({float(value)!r})"


class _Lines:
    """SSA lines of C++ computing expressions of elementwise ops: ``env`` maps each name to the C++
    local holding it; each new value a ``const <t>`` local named ``<prefix><count>``."""

    def __init__(self, env: dict[str, str], t: str = "T", prefix: str = "_f"):
        self.env, self.t, self.prefix, self.lines, self.count = dict(env), t, prefix, [], 0

    def value(self, e: Expr) -> str:
        if isinstance(e, Var):
            return self.env[e.name]
        if isinstance(e, Const):
            text = _literal(e.value, self.t)
        else:
            op = OPS[e.op]
            if op.cpp is None or op.shape != ELEMENTWISE:
                raise DslError(f"{e.op}() has no C++ spelling")
            text = op.cpp.format(*(self.value(a) for a in e.args))
        name = f"{self.prefix}{self.count}"
        self.count += 1
        self.lines.append(f"const {self.t} {name} = {text};")
        return name


# where a pass computes a value of each kind: once per chunk, once per row or column, once per element
_LEVEL = {UNIFORM: TENSOR, TENSOR: TENSOR, ROWS: ROWS, COLS: COLS, FULL: FULL}


class _Pass:
    """The C++ of one pass: lines per level (once per chunk: uniform and per-tensor values; once per
    column of the chunk's block, before its rows: column values, those the elements read kept in
    ``colbuf``; once per row: row values, and pointers that make ``colbuf`` readable as ``x[i]``; once
    per element), the slots it reads, and its reductions' running totals."""

    def __init__(self, plan: _Plan, p: int):
        self.plan, self.p = plan, p
        self.levels: dict[int, list[str]] = {TENSOR: [], COLS: [], ROWS: [], FULL: []}
        self.colbufs: list[str] = []  # column values the element loop reads, in colbuf's order
        self.memo: dict[Expr, str] = {}
        self.reads: set[int] = set()
        self.count = 0
        self.loaded = plan.loaded(p)
        self.split: dict[Expr, tuple[Expr | None, _Factors, _Factors]] = {}

    def line(self, kind: int, text: str) -> str:
        name = f"_t{self.count}"
        self.count += 1
        self.levels[_LEVEL[kind]].append(f"const T {name} = {text};")
        return name

    def element(self, e: Expr) -> str:
        """``e``'s value in the element loop: a column value computed in the column loop is kept in
        the chunk's ``colbuf`` and read there through a pointer set once per row (columns repeat in
        every row of a block)."""
        name = self.value(e)
        if self.plan.kind(e) != COLS:
            return name
        key = Call("%colbuf", (Var(name),))
        if key not in self.memo:
            self.memo[key] = f"_t{self.count}"
            self.count += 1
            self.levels[ROWS].append(f"T* const {self.memo[key]} = colbuf.data() + {len(self.colbufs)} * C - i0;")
            self.colbufs.append(name)
        return f"{self.memo[key]}[i]"

    def prepare(self, roots: list[Expr]) -> None:
        """Compute every name ``roots`` need in program order (reductions of earlier passes are read
        back: what they read is not needed), so that :meth:`value` never recurses through names."""
        plan, needed, pending = self.plan, set(), list(roots)
        while pending:
            e = pending.pop()
            if e in self.loaded:
                continue
            if isinstance(e, Var) and e.name in plan.defs and e.name not in needed:
                needed.add(e.name)
                pending.append(plan.defs[e.name])
            elif isinstance(e, Call) and not (plan.over_elements(e) and plan.pass_of(e) < self.p):
                pending.extend(e.args)
        for name, e in plan.defs.items():
            if name in needed:
                self.memo[Var(name)] = self.value(e)

    def value(self, e: Expr) -> str:
        if e in self.memo:
            return self.memo[e]
        plan, kind = self.plan, self.plan.kind(e)
        if e in self.loaded:  # a state's new value, written by an earlier pass
            self.reads.add(self.loaded[e])
            name = self.line(FULL, f"p{self.loaded[e]}[i]")
        elif isinstance(e, Const):
            name = self.line(UNIFORM, _literal(e.value))
        elif isinstance(e, Var) and e.name in plan.slots:
            j = plan.slots.index(e.name)
            self.reads.add(j)
            at = {FULL: f"p{j}[i]", ROWS: f"p{j}[row]", COLS: f"p{j}[cblk * C + col]"}[kind]
            name = self.line(kind, at)
        elif isinstance(e, Var):
            given = e.name in plan.scalars
            name = f"_s{plan.scalars.index(e.name)}" if given else self.value(plan.defs[e.name])
        elif OPS[e.op].shape == ELEMENTWISE:
            full, lows, fulls = self.factors(e) if kind == FULL else (e, (), ())
            merged = _merged(fulls)
            if sum(k.denominator == 2 for _, k, _ in merged) < sum(k.denominator == 2 for _, k, _ in fulls):
                name = self.scaled(_product(merged), lows)  # (g rsqrt(v))^2 = g^2 / |v|: one root less
            elif any(k != 1 for _, k, _ in lows):  # a division or root leaves the loop
                name = self.scaled(full, lows)
            else:
                arg = self.element if kind == FULL else self.value
                name = self.line(kind, OPS[e.op].cpp.format(*(arg(a) for a in e.args)))
        elif plan.over_elements(e):  # computed by an earlier pass: read back
            assert plan.pass_of(e) < self.p, e
            shape = OPS[e.op].shape
            k = plan.of_shape(shape).index(e)
            if shape == ROW:
                name = self.line(ROWS, f"rowv[{k} * rows_all + row0[t] + row]")
            elif shape == COL:
                name = self.line(COLS, f"colv[{k} * cols_all + col0[t] + cblk * C + col]")
            else:
                name = self.line(TENSOR, f"red[t * {len(plan.of_shape(REDUCE))} + {k}]")
        else:  # a reduction of one number per tensor
            name = self.value(OPS[e.op].reduction.of_number(*e.args))
        self.memo[e] = name
        return name

    def factors(self, e: Expr) -> tuple[Expr | None, _Factors, _Factors]:
        """A full-shaped value as ``full * prod leaf^exp`` (``|leaf|^exp`` where flagged), each leaf one
        number per tensor, row or column: the factors of its products, quotients and roots
        (:data:`_MONOMIAL`) that do not vary over the elements, lifted out so that they are combined
        once per chunk, row or column (:meth:`scaled`) and the element loop only multiplies by them
        (``r * c / max(mean(r), eps)`` -> ``(r / max(mean(r), eps)) * c``; ``m / (1 - beta1^t)`` ->
        ``m * (1 / (1 - beta1^t))``). ``full`` is e with those factors set to 1 (None where none is
        left); a value with nothing to lift is itself, with no factors. Third: the full-shaped leaves'
        factors, ``full`` as a product of powers too (read by :meth:`value` to cancel square roots)."""
        if e in self.split:
            return self.split[e]
        plan, out = self.plan, (e, (), ((e, Fraction(1), False),))
        if e == Const(1.0):  # the empty product (what a lifted factor leaves in its place)
            out = (None, (), ())
        elif plan.kind(e) != FULL:
            out = (None, ((e, Fraction(1), False),), ())
        elif e in self.loaded or isinstance(e, Const):
            pass
        elif isinstance(e, Var):
            if e.name in plan.defs:
                full, lows, fulls = self.factors(plan.defs[e.name])
                out = (full if lows else e, lows, fulls)
        elif e.op in _MONOMIAL:
            coeff, sig = _MONOMIAL[e.op]
            parts = [self.factors(a) for a in e.args]
            lows, fulls = ([(leaf, k * exp, absolute or flag or (k * exp).denominator != 1)
                            for j, exp, absolute in sig for leaf, k, flag in parts[j][which]] for which in (1, 2))
            if coeff == 1 and all(k.denominator <= 2 for _, k, _ in lows + fulls):  # square roots at most
                kept = [(j, exp, absolute) for j, exp, absolute in sig if parts[j][0] is not None]
                if not lows:
                    full = e
                elif not kept:
                    full = None
                elif len(kept) == 1 and kept[0][1:] == (1, False):
                    full = parts[kept[0][0]][0]  # x * s: x
                else:
                    full = Call(e.op, tuple(Const(1.0) if f is None else f for f, _, _ in parts))
                out = (full, tuple(lows), tuple(fulls))
        self.split[e] = out
        return out

    def scaled(self, full: Expr | None, lows: _Factors) -> str:
        """``full * prod leaf^exp`` (see :meth:`factors`): the factors' product computed per row (with
        the per-tensor ones, where there are row factors), per column and per chunk, then one
        multiplication each in the element loop."""
        groups: dict[int, list] = {ROWS: [], COLS: [], TENSOR: []}
        for leaf, exp, absolute in lows:
            groups[max(TENSOR, self.plan.kind(leaf))].append((leaf, exp, absolute))
        if groups[ROWS]:
            groups[ROWS] += groups.pop(TENSOR)
        names = [self.element(full)] if full is not None else []
        names += [self.element(_product(factors)) for factors in groups.values() if factors]
        name = names[0]
        for other in names[1:]:
            name = self.line(FULL, f"{name} * {other}")
        return name

    def terms(self, r: Call) -> list[str]:
        """Reduction r's terms, as values of this pass."""
        red = OPS[r.op].reduction
        env = {"x": r.args[0], "y": r.args[-1]}
        return [self.value(substitute(term, env)) for term in red.terms]


def _merged(factors: _Factors) -> list[tuple[Expr, Fraction, bool]]:
    """``factors`` with the powers of one leaf added up, numerator's and denominator's apart (``x /
    x`` stays: 0 / 0 is nan, not 1)."""
    out: dict[tuple[Expr, bool, bool], Fraction] = {}
    for leaf, exp, absolute in factors:
        key = (leaf, absolute or exp.denominator != 1, exp > 0)
        out[key] = out.get(key, Fraction(0)) + exp
    return [(leaf, exp, absolute) for (leaf, absolute, _), exp in out.items()]


def _product(factors: _Factors | list[tuple[Expr, Fraction, bool]]) -> Expr:
    """``prod leaf^exp`` (``|leaf|^exp`` where flagged; exponents whole or halves) as an expression:
    the numerator's product over the denominator's, a half power as a square root."""
    num: list[Expr] = []
    den: list[Expr] = []
    for leaf, exp, absolute in factors:
        base = Call("abs", (leaf,)) if absolute else leaf
        whole, half = divmod(abs(exp), 1)
        (num if exp > 0 else den).extend([base] * int(whole) + ([Call("sqrt", (leaf,))] if half else []))

    def prod(xs: list[Expr]) -> Expr:
        out = xs[0] if xs else Const(1.0)
        for x in xs[1:]:
            out = Call("mul", (out, x))
        return out

    return Call("div", (prod(num), prod(den))) if den else prod(num)


def _finish(r: Call, totals: list[str], n: str, target: str, prefix: str) -> list[str]:
    """Lines setting ``target`` (a T) to reduction ``r``'s value from its totals, in Acc (locals
    named ``prefix<k>``)."""
    red = OPS[r.op].reduction
    lines = _Lines({**{f"a{k}": a for k, a in enumerate(totals)}, "n": n}, "Acc", prefix)
    out = lines.value(red.finish)
    return lines.lines + [f"{target} = T({out});"]


def _indent(lines: list[str], depth: int) -> list[str]:
    return [" " * depth + line for line in lines]


_INIT = {"sum": "Acc(0)", "max": "-std::numeric_limits<Acc>::infinity()"}
_ADD = {"sum": "{0} += {1};", "max": "{0} = op_max({0}, {1});"}


def path_function(k: int, program: Program) -> str:
    """Path ``k``'s kernel: a template over T (math and states) and P (params and grads), then its
    export for each parameter dtype of ``PARAM_TYPES``.

    Example:
        >>> import optdsl
        >>> re.findall(r'extern "C" void (\\w+)', path_function(1, optdsl.load("lion")))
        ['optdsl_path1_f32', 'optdsl_path1_f64', 'optdsl_path1_bf16', 'optdsl_path1_f16']
    """
    plan = _Plan(program)
    head = ["template <typename T, typename P>  // T: math and states; P: params and grads",
            f"static void path{k}(int64_t n, void** ptrs, const int64_t* sizes, const int64_t* dims,",
            "                   const double* s, int threads, int64_t ahead) {",
            "  (void)dims;"]
    if plan.reductions:
        head += [f"  using Acc = {ACCUMULATE};  // reductions add their terms in this type"]
    head += [f"  const T _s{j} = T(s[{j}]);  // {name}" for j, name in enumerate(plan.scalars)]
    head += ["  std::vector<int64_t> blocks(n), lens(n), row0(n + 1, 0), col0(n + 1, 0);",
             "  for (int64_t t = 0; t < n; ++t) {"]
    if plan.factored():  # blocks of one matrix (R, C), chunks of whole rows
        head += ["    const int64_t R = dims[2 * t], C = dims[2 * t + 1];",
                 "    blocks[t] = R * C;",
                 f"    lens[t] = C > 0 ? C * std::max<int64_t>(1, {CHUNK} / C) : {CHUNK};",
                 "    row0[t + 1] = row0[t] + (C > 0 ? sizes[t] / C : 0);",
                 "    col0[t + 1] = col0[t] + (R > 0 ? sizes[t] / R : 0);"]
    else:
        head += ["    blocks[t] = sizes[t];", f"    lens[t] = {CHUNK};"]
    head += ["  }",
             "  const std::vector<int64_t> first = chunk_starts(n, sizes, blocks.data(), lens.data());",
             "  const int64_t rows_all = row0[n], cols_all = col0[n];",
             "  (void)rows_all, (void)cols_all;"]
    if plan.of_shape(ROW):
        head += [f"  std::vector<T> rowv({len(plan.of_shape(ROW))} * rows_all);  // per row: the row reductions"]
    if plan.of_shape(COL):
        head += [f"  std::vector<T> colv({len(plan.of_shape(COL))} * cols_all);  // per column: the column reductions",
                 "  std::vector<int64_t> cpo(n + 1, 0);  // where each tensor's chunks' column totals start",
                 "  for (int64_t t = 0; t < n; ++t) cpo[t + 1] = cpo[t] + (first[t + 1] - first[t]) * dims[2 * t + 1];",
                 "  std::vector<Acc> colparts;  // per chunk, per column: its totals"]
    if plan.of_shape(REDUCE):
        head += [f"  std::vector<T> red(n * {len(plan.of_shape(REDUCE))});  // per tensor: the reductions' values",
                 "  std::vector<Acc> parts;  // per chunk: its totals"]
    if any(k == COLS for k in plan.slot_kinds):
        head += ["  std::vector<T> newcols;  // column states' new values, copied in after the update's pass"]
    body: list[str] = []
    for p in range(plan.last + 1):
        body += _pass_text(plan, p)
    tail = ["}", ""]
    for suffix, (t, param) in PARAM_TYPES.items():
        tail += [f"#ifdef OPTDSL_{suffix.upper()}",
                 f'extern "C" void optdsl_path{k}_{suffix}(int64_t n, void** p, const int64_t* sizes,',
                 "                       const int64_t* dims, const double* s, int threads, int64_t ahead) {",
                 *(_batched(f"path{k}<{t}, {param}>", len(plan.slots)) if plan.last else
                   [f"  path{k}<{t}, {param}>(n, p, sizes, dims, s, threads, ahead);"]), "}", "#endif"]
    return "\n".join(_commented(line) for line in head + body + tail)


def _batched(call: str, slots: int) -> list[str]:
    """An exported kernel's body for a path of several passes: ``call`` on batches of tensors."""
    return [f"  by_batches(n, {slots}, p, sizes, dims, {BATCH},",
            "             [&](int64_t m, void** q, const int64_t* sz, const int64_t* dm) {",
            f"               {call}(m, q, sz, dm, s, threads, ahead);", "             });"]


def _pass_text(plan: _Plan, p: int) -> list[str]:
    """Pass ``p``: its loop over the chunks, then (a reduction pass) the totals combined and finished."""
    text = _Pass(plan, p)
    last = p == plan.last
    mine = [r for r in plan.reductions if plan.pass_of(r) == p]
    early = {j: plan.outs[j - 1] for j, q in plan.early.items() if q == p}  # states this pass writes
    done = {*plan.early, *plan.kept}  # states an earlier pass wrote, or that stay as they are
    late = [o for j, o in enumerate(plan.outs) if j + 1 not in done]  # the update and other states
    text.prepare(late if last else [*(a for r in mine for a in r.args), *early.values()])
    rows, cols, tensors = plan.of_shape(ROW), plan.of_shape(COL), plan.of_shape(REDUCE)
    chunk_decl, row_decl, row_adds, adds, row_ends, chunk_ends = [], [], [], [], [], []
    parts: list[tuple[Call, str, str]] = []  # a chunk's totals in slot order: (reduction, combine, n)
    colterms: list[tuple[Call, str]] = []  # per column reduction term: (reduction, combine)
    for r in mine:
        acc, combine = f"_a{plan.reductions.index(r)}", OPS[r.op].reduction.combine
        terms = text.terms(r)
        t_acc = "Acc" if combine == "sum" else "T"
        if OPS[r.op].shape == COL:  # totals per column of the chunk, in colparts
            for j, v in enumerate(terms):
                at = f"colparts.data() + {len(colterms)} * cpo[n] + cpo[t] + (c - first[t]) * C"
                chunk_decl.append(f"Acc* {acc}_{j} = {at};")
                adds.append(_ADD[combine].format(f"{acc}_{j}[i - i0]", f"Acc({v})"))
                colterms.append((r, combine))
            continue
        if plan.over(r) == ROWS:  # per tensor, of a row value: one total per chunk, row by row
            for j, v in enumerate(terms):
                chunk_decl.append(f"Acc {acc}_{j} = {_INIT[combine]};")
                row_adds.append(_ADD[combine].format(f"{acc}_{j}", f"Acc({v})"))
            lanes = [f"{acc}_{j}" for j in range(len(terms))]
        else:  # of full values: in lanes
            decl = []
            for j, v in enumerate(terms):
                decl += [f"{t_acc} {acc}_{j}[64 / sizeof(T)];", f"for ({t_acc}& a : {acc}_{j}) a = {_INIT[combine]};"]
                adds.append(_ADD[combine].format(f"{acc}_{j}[lane]", v if combine == "max" else f"Acc({v})"))
            lanes = [f"Acc(lanes_{combine}({acc}_{j}))" for j in range(len(terms))]
            (row_decl if OPS[r.op].shape == ROW else chunk_decl).extend(decl)
        if OPS[r.op].shape == ROW:
            at = f"rowv[{rows.index(r)} * rows_all + row0[t] + row]"
            row_ends += _finish(r, lanes, "Acc(C)", at, f"_r{rows.index(r)}_")
        else:
            n = "Acc(sizes[t])" if plan.over(r) == FULL else "Acc(row0[t + 1] - row0[t])"
            for x in lanes:
                chunk_ends.append(f"parts[c * NPARTS + {len(parts)}] = {x};")
                parts.append((r, combine, n))
    stores, col_stores = [f"p{j}[i] = {text.element(o)};" for j, o in early.items()], []
    if last:
        outs = [None if j + 1 in done else (text.value if plan.slot_kinds[j + 1] in (ROWS, COLS) else
                                             text.element)(o) for j, o in enumerate(plan.outs)]
        w = text.value(Var("w"))
        stores = [f"p0[i] = {w} - {outs[0]};"]
        for j, o in enumerate(outs[1:], start=2):
            kind = plan.slot_kinds[j]
            if o is None:
                continue
            if kind == FULL:
                stores.append(f"p{j}[i] = {o};")
            elif kind == ROWS:
                row_ends.append(f"p{j}[row] = {o};")
            else:  # once per block (by its first chunk), into newcols: other chunks still read the old values
                col_stores.append(f"if (head) newcols[{j} * cols_all + col0[t] + cblk * C + col] = {o};")
    written = {0, *(j for j in range(2, len(plan.slots)) if plan.slot_kinds[j] == FULL)} if last else set(early)
    written -= done if last else set()
    streams = sorted(j for j in text.reads | written if plan.slot_kinds[j] == FULL)
    used = sorted(text.reads | written | ({j for j in range(2, len(plan.slots))} if last else set()))
    what = "the update" if last else ", ".join(f"{r.op}()" for r in mine)
    out = [f"  // pass {p}: {what}; reads {', '.join(plan.slots[j] for j in sorted(text.reads)) or 'no array'}"]
    if parts:
        out += ["  parts.assign(first[n] * NPARTS, Acc(0));"]
    if colterms:
        out += ["  colparts.resize(" + f"{len(colterms)} * cpo[n]);"]
        out += [f"  std::fill(colparts.begin() + {k} * cpo[n], colparts.begin() + {k + 1} * cpo[n], {_INIT[combine]});"
                for k, (_, combine) in enumerate(colterms)]
    if col_stores:
        out += [f"  newcols.assign({len(plan.slots)} * cols_all, T(0));"]
    out += ["  for_chunks(n, blocks.data(), lens.data(), first, threads,",
            "             [&](int64_t t, int64_t c, int64_t lo, int64_t hi) {",
            "    (void)c;"]
    out += [f"    {'P' if j < 2 else 'T'}* p{j} = static_cast<{'P' if j < 2 else 'T'}*>(ptrs[{j} * n + t]);  "
            f"// {plan.slots[j]}" for j in used]
    if plan.factored():
        out += ["    const int64_t R = dims[2 * t], C = dims[2 * t + 1];", "    (void)R;"]
    out += _indent(text.levels[TENSOR] + chunk_decl, 4)
    # the arrays read or written element by element, prefetched (none: a pass over row values only)
    arrays = [f"const void* const arrays[] = {{{', '.join(f'p{j}' for j in streams) or 'nullptr'}}};",
              f"const int64_t bytes[] = {{{', '.join(f'sizeof(*p{j})' for j in streams) or '0'}}};"]
    element = text.levels[FULL] + adds + stores
    loop = ["for_lines<T>(arrays, bytes, ahead, i0, i1, [&](int64_t i, int64_t lane) {", "  (void)lane;",
            *_indent(element, 2), "});"] if element else ["(void)arrays, (void)bytes, (void)ahead;"]
    columns = text.levels[COLS] + [f"colbuf[{k} * C + col] = {x};" for k, x in enumerate(text.colbufs)] + col_stores
    if columns:  # the chunk's block's columns, before its rows
        out += _indent([f"std::vector<T> colbuf({len(text.colbufs)} * C);",
                        "const int64_t cblk = lo / C / R;  // the chunk's block",
                        "const bool head = lo % (R * C) == 0;  // the block's first chunk",
                        "(void)head;", "#pragma omp simd", "for (int64_t col = 0; col < C; ++col) {",
                        *_indent(columns, 2), "}"], 4)
    if plan.factored():  # chunks of whole rows, one loop a row
        out += _indent([*arrays, "for (int64_t i0 = lo; i0 < hi; i0 += C) {",
                        "  const int64_t row = i0 / C, blk = row / R, i1 = i0 + C;", "  (void)blk, (void)i1;",
                        *_indent(text.levels[ROWS] + row_decl + row_adds + loop + row_ends, 2), "}"], 4)
    else:
        out += _indent([*arrays, "const int64_t i0 = lo, i1 = hi;", *loop], 4)
    out += _indent(chunk_ends, 4) + ["  });"]
    if parts:
        out += _combine(parts, tensors)
    if colterms:
        out += _combine_columns(colterms, cols)
    if col_stores:  # the column states' new values, in place now that no chunk reads the old ones
        for j in range(2, len(plan.slots)):
            if plan.slot_kinds[j] == COLS and j not in plan.kept:
                at = f"newcols.begin() + {j} * cols_all + col0"
                out += ["  for (int64_t t = 0; t < n; ++t)",
                        f"    std::copy({at}[t], {at}[t + 1],",
                        f"              static_cast<T*>(ptrs[{j} * n + t]));"]
    return [line.replace("NPARTS", str(len(parts))) for line in _live(out)]


def _live(lines: list[str]) -> list[str]:
    """``lines`` without the locals nothing reads (a value a pass needs only through a lifted or
    cancelled form: Adafactor's u in its rms(u) pass, which adds g^2 / |v|)."""
    while True:
        counts = Counter(re.findall(r"\b_t\d+\b", "\n".join(lines)))
        kept = [x for x in lines if not ((m := _LOCAL.match(x)) and counts[m.group(1)] == 1)]
        if len(kept) == len(lines):
            return lines
        lines = kept


def _combine(parts: list[tuple[Call, str, str]], tensors: list[Call]) -> list[str]:
    """Each tensor's chunk totals combined in chunk order (the same bits whatever the threads did
    them) and its reductions finished into ``red``."""
    out = ["  for (int64_t t = 0; t < n; ++t) {"]
    out += [f"    Acc _tot{k} = {_INIT[combine]};" for k, (_, combine, _) in enumerate(parts)]
    out += ["    for (int64_t c = first[t]; c < first[t + 1]; ++c) {", "      const Acc* x = &parts[c * NPARTS];"]
    out += [f"      {_ADD[combine].format(f'_tot{k}', f'x[{k}]')}" for k, (_, combine, _) in enumerate(parts)]
    out += ["    }"]
    for j, r in enumerate(tensors):
        mine = [(f"_tot{k}", n) for k, (q, _, n) in enumerate(parts) if q == r]
        if mine:
            at = f"red[t * {len(tensors)} + {j}]"
            out += _indent(_finish(r, [x for x, _ in mine], mine[0][1], at, f"_n{j}_"), 4)
    return out + ["  }"]


def _combine_columns(colterms: list[tuple[Call, str]], cols: list[Call]) -> list[str]:
    """Each column's totals over the chunks of its block, in chunk order (a chunk's columns at a
    time: the totals are read in the order they lie), finished into ``colv``."""
    out = ["  for (int64_t t = 0; t < n; ++t) {",
           "    const int64_t R = dims[2 * t], C = dims[2 * t + 1], per = chunks_per_block(blocks[t], lens[t]);",
           f"    std::vector<Acc> tot({len(colterms)} * C);",
           "    for (int64_t blk = 0; blk * per < first[t + 1] - first[t]; ++blk) {"]
    for k, (_, combine) in enumerate(colterms):
        at = f"colparts.data() + {k} * cpo[n] + cpo[t]"
        out += [f"      std::fill(tot.begin() + {k} * C, tot.begin() + {k + 1} * C, {_INIT[combine]});",
                "      for (int64_t q = blk * per; q < (blk + 1) * per; ++q) {",
                f"        const Acc* x = {at} + q * C;",
                f"        for (int64_t j = 0; j < C; ++j) {_ADD[combine].format(f'tot[{k} * C + j]', 'x[j]')}",
                "      }"]
    out += ["      for (int64_t j = 0; j < C; ++j) {"]
    for j, r in enumerate(cols):
        mine = [f"tot[{k} * C + j]" for k, (q, _) in enumerate(colterms) if q == r]
        if mine:
            at = f"colv[{j} * cols_all + col0[t] + blk * C + j]"
            out += _indent(_finish(r, mine, "Acc(R)", at, f"_c{j}_"), 8)
    return out + ["      }", "    }", "  }"]


def _commented(line: str) -> str:
    """``line`` without its trailing ``// name`` comment when the two would pass the 110 columns the
    generated module is laid out for (a program's names may be long)."""
    return line if len(line) <= 110 else line.split("  // ")[0]


def kernel_source(program: Program | list[Program]) -> str:
    """The C++ source of every path's kernel: ``program`` is a straight-line program (one path) or
    the list of a program's hoisted paths (see ``codegen.torch_target``). DslError for a path
    :func:`supports` refuses.

    Example:
        >>> import optdsl
        >>> kernel_source(optdsl.load("lion")).splitlines()[0]
        '// Generated by optdsl (codegen/cpp_target.py) from a validated program; do not edit.'
        >>> kernel_source(optdsl.load("amos"))
        Traceback (most recent call last):
        optdsl.errors.DslError: no C++ kernel for amos: state v is scalar-shaped
    """
    paths = [program] if isinstance(program, Program) else list(program)
    for p in paths:
        why = supports(p)
        if why is not None:
            raise DslError(f"no C++ kernel for {p.name}: {why}")
    return _PRELUDE + "\n" + "\n\n".join(path_function(k, p) for k, p in enumerate(paths)) + "\n"


__all__ = ["ACCUMULATE", "CHUNK", "kernel_source", "passes", "scalar_names", "supports"]
