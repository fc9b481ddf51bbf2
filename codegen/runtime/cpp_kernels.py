"""The ``cpp`` backend's runtime: build a program's C++ kernels once, cache them, and step groups of
tensors through them (:mod:`codegen.cpp_target` prints the kernels).

The block between the runtime markers is copied verbatim into each generated torch module whose
program has kernels; the module then defines::

    _CPP = _CppKernels("<C++ source>", scalars=(("beta1", "lr", ...),))  # one tuple per path

    def _cpp_group_step(path, params, grads, states, *, lr, step, **hyper):
        _CPP.group_step(_PROGRAM, path, params, grads, states, lr=lr, step=step, **hyper)

The kernels are compiled with the machine's C++ compiler (``c++``/``g++``/``clang++``; needed only
at run time, and only for this backend) into ``<torch extensions dir>/optdsl_<hash>/kernels.so``,
the hash covering the source, the flags and the compiler, and loaded with ctypes: no torch headers
are compiled. The kernels for each parameter dtype (float32, float64; bfloat16 and float16 with
float32 math and states, as the eager step has them) are a library of their own, built when a group
of that dtype first steps (a build takes 0.3-2 s; a cached one loads in milliseconds). Without a
compiler, or when a build fails, those groups run the eager backend, after one RuntimeWarning.

Where a group does not fit the kernels (tensors that are not plain contiguous CPU tensors, such as
FSDP2's DTensors, or states of another dtype), that group runs the eager backend.
"""

# --- optdsl runtime: begin (codegen/runtime/cpp_kernels.py, copied verbatim; edit it there)
import ctypes
import shutil
import statistics
import time
import warnings

import torch

# os, subprocess... are imported where they are used: a generated module's namespace holds no `os`

# -mprefer-vector-width=256: on an AVX-512 Xeon, 512-bit sqrt and division took AdamW's loop from
# 0.9x to 1.9x torch's fused AdamW; -fno-math-errno lets sqrt vectorize (no value changes). No
# -ffast-math: no reassociation, no flushed subnormals, nan and inf as IEEE says. -ffp-contract=fast
# (g++'s default, explicit for compilers whose default differs): a * b + c may be one fused
# multiply-add, rounded once where the interpreter rounds twice, a few ulp apart like the factors the
# kernels lift out of the element loop (the differential tests' tolerance); with =off AdamW's kernel
# took 1.06-1.07x its time (16 x 2^20 floats, 1 thread, a 2-core AMD EPYC, three interleaved runs).
_CPP_FLAGS = (
    "-O3",
    "-march=native",
    "-mprefer-vector-width=256",
    "-fno-math-errno",
    "-ffp-contract=fast",
    "-std=c++17",
    "-shared",
    "-fPIC",
)


def _cpp_compiler():
    """The path of a C++ compiler on PATH (``$CXX`` first), or None."""
    import os

    for cc in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


def _cpp_cache_dir():
    """torch's extensions directory: ``$TORCH_EXTENSIONS_DIR``, else ``<cache>/torch_extensions``."""
    import os

    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return os.environ["TORCH_EXTENSIONS_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "torch_extensions")


def _cpu_id():
    """What ``-march=native`` compiles for: the CPU's model and instruction-set flags (Linux), else
    the platform's processor name."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _cpp_build(source, defines=()):
    """``source`` compiled with the macros ``defines`` (``-DNAME``) into a shared library (cached by
    hash): its path, or raise RuntimeError. OpenMP is asked for first; a compiler without it builds a
    single-threaded library."""
    import hashlib
    import os
    import subprocess
    import tempfile

    cc = _cpp_compiler()
    if cc is None:
        raise RuntimeError("no C++ compiler (c++, g++, clang++) on PATH")
    # -march=native: the key names the CPU too, so a cache shared between machines (a network home)
    # never hands one CPU's build to another
    flags = (*_CPP_FLAGS, *defines)
    key = hashlib.sha256("\0".join((source, cc, _cpu_id(), *flags)).encode()).hexdigest()[:20]
    folder = os.path.join(_cpp_cache_dir(), f"optdsl_{key}")
    lib = os.path.join(folder, "kernels.so")
    if os.path.exists(lib):
        return lib
    os.makedirs(folder, exist_ok=True)
    src = os.path.join(folder, "kernels.cpp")
    # written whole under a name of its own, then renamed (atomic): another process building the same
    # source from this folder may be compiling kernels.cpp now, and must never read it half-written
    fd, tmp = tempfile.mkstemp(suffix=".cpp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
        os.replace(tmp, src)
    except BaseException:
        os.unlink(tmp)
        raise
    errors = []
    for openmp in (["-fopenmp"], []):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        cmd = [cc, *flags, *openmp, src, "-o", tmp]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode == 0:
            os.replace(tmp, lib)  # atomic: another process building the same source is harmless
            return lib
        os.unlink(tmp)
        errors.append(done.stderr.strip()[-2000:])
    raise RuntimeError(f"{cc} failed to build {src}:\n{errors[0]}")


# the kernels' symbol suffix per parameter dtype (codegen.cpp_target.PARAM_TYPES)
_KERNEL_DTYPES = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16", torch.float16: "f16"}


def _cpp_fits(tensors, dtype):
    """May the kernels take these tensors: plain (not a subclass such as DTensor), dense, contiguous,
    on the CPU, of ``dtype``?"""
    plain = (torch.Tensor, torch.nn.Parameter)  # (t.is_cpu, not t.device.type: half the cost a step)
    return all(
        type(t) in plain and t.is_cpu and t.dtype == dtype and t.layout == torch.strided and t.is_contiguous()
        for t in tensors
    )


class _Prefetch:
    """How far ahead (bytes) a group's kernel prefetches, chosen by timing its first steps both ways.

    A page ahead took AdamW's kernel from 0.96x torch's fused AdamW to 0.84x on a Xeon, whose
    hardware prefetchers stop at every 4 KiB page; on an AMD EPYC (Zen 4) the same prefetches cost
    6-24% (16 x 2^20 floats, 1 and 2 threads). So the distances of ``CHOICES`` take turns over the
    first ``TRIALS`` steps, the first turn of each not counted (fresh states fault their pages in),
    and the one with the lower median time stays. The results are the same bits either way.

    Example:
        >>> p = _Prefetch()
        >>> for t in (9.0, 9.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0):
        ...     p.record(p.ahead(), t)
        >>> p.ahead()
        0
    """

    CHOICES, TRIALS = (4096, 0), 8

    def __init__(self):
        self.chosen, self._times = None, [[] for _ in self.CHOICES]

    def ahead(self):
        """The distance for the next step: the chosen one, or the next to try."""
        if self.chosen is not None:
            return self.chosen
        return self.CHOICES[sum(map(len, self._times)) % len(self.CHOICES)]

    def record(self, ahead, seconds):
        """One step's time at ``ahead``; after ``TRIALS`` steps the faster distance is kept."""
        self._times[self.CHOICES.index(ahead)].append(seconds)
        if sum(map(len, self._times)) == self.TRIALS:
            medians = [statistics.median(t[1:]) for t in self._times]
            self.chosen = self.CHOICES[medians.index(min(medians))]


class _CppKernels:
    """A program's compiled kernels: ``source`` (C++ from codegen.cpp_target) and, per path, the names
    of the per-step scalars its kernel reads, in order. Built on first use, once per process."""

    def __init__(self, source, scalars):
        self.source, self.scalars = source, scalars
        self._libs, self._failed, self._compiler, self._layouts = {}, {}, None, {}

    def available(self, device):
        """The ``cpp`` backend runs on CPUs, where a C++ compiler is found (looked up once: the
        default backend asks at every step)."""
        if device.type != "cpu":
            return False
        if self._compiler is None:
            self._compiler = _cpp_compiler() is not None
        return self._compiler

    def library(self, dtype):
        """The loaded library of the kernels for ``dtype`` parameters, or None (after one
        RuntimeWarning per dtype) when it cannot be built."""
        if dtype not in self._libs and dtype not in self._failed:
            try:
                define = f"-DOPTDSL_{_KERNEL_DTYPES[dtype].upper()}"
                self._libs[dtype] = ctypes.CDLL(_cpp_build(self.source, (define,)))
            except (OSError, RuntimeError) as e:
                self._failed[dtype] = str(e)
                message = f"the cpp backend runs eager for {dtype} parameters: {e}"
                warnings.warn(message, RuntimeWarning, stacklevel=3)
        return self._libs.get(dtype)

    def group_step(self, program, path, params, grads, states, *, lr, step, **hyper):
        """In-place step of a group sharing path, device, dtype and step count (the extra-backend
        signature): one kernel call over all its tensors, or the eager group step where they do
        not fit (see the module docstring)."""
        if not params:
            return
        dtype = params[0].dtype
        names = [name for name, _, _ in program.paths[path].states]
        slots = [params, [g.contiguous() for g in grads], *(states[name] for name in names)]
        lib = self.library(dtype) if dtype in _KERNEL_DTYPES else None
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # (the kernels' T)
        fits = all(_cpp_fits(ts, dtype if k < 2 else state_dtype) for k, ts in enumerate(slots))
        if lib is None or not fits:
            program.eager_group_step(path, params, grads, states, lr=lr, step=step, **hyper)
            return
        values = program.floats(path, {**program.hyper_defaults, **hyper, "lr": lr, "step": step})
        n = len(params)
        sizes, dims, kernel, prefetch = self.layout(lib, path, dtype, params)
        ptrs = (ctypes.c_void_p * (n * len(slots)))(*[t.data_ptr() for ts in slots for t in ts])
        numbers = [values[name] for name in self.scalars[path]]
        scalars = (ctypes.c_double * max(1, len(numbers)))(*numbers)
        threads, ahead = ctypes.c_int(torch.get_num_threads()), prefetch.ahead()
        start = time.perf_counter()
        kernel(ctypes.c_int64(n), ptrs, sizes, dims, scalars, threads, ctypes.c_int64(ahead))
        if prefetch.chosen is None:
            prefetch.record(ahead, time.perf_counter() - start)

    def layout(self, lib, path, dtype, params):
        """``(sizes, dims, kernel, prefetch)`` for a group of these shapes: each tensor's elements, the
        (rows, columns) of its last two axes (1 where it has fewer: what row and column reductions
        read), as ctypes arrays, the kernel and its :class:`_Prefetch`. Kept per shapes (they depend
        on nothing else): building them took 7-15% of a small model's step (a 55K MLP's, 20 small
        tensors')."""
        key = (path, dtype, *(p.shape for p in params))
        if key not in self._layouts:
            if len(self._layouts) >= 256:  # (shapes that change every step: keep no more than this)
                self._layouts.clear()
            n = len(params)
            sizes = (ctypes.c_int64 * n)(*[p.numel() for p in params])
            dims = (ctypes.c_int64 * (2 * n))(*[d for p in params for d in ([1, 1] + list(p.shape))[-2:]])
            kernel = getattr(lib, f"optdsl_path{path}_{_KERNEL_DTYPES[dtype]}")
            self._layouts[key] = (sizes, dims, kernel, _Prefetch())
        return self._layouts[key]


# --- optdsl runtime: end
