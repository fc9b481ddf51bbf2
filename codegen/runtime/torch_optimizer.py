"""The machinery every generated torch optimizer shares: :class:`_Program` (one program's tables and
its functional step) and :class:`_Optimizer` (a ``torch.optim.Optimizer`` that runs them).

The block between the runtime markers is copied verbatim into each generated module (see
:func:`codegen.runtime.source`), which then defines only what is specific to its program: the step
functions, one ``_Program(...)`` table and a short subclass::

    _PROGRAM = _Program(name="sgd", hyper_defaults={"lr": 0.01}, state_names=(), paths=(...), ...)

    class SGD(_Optimizer):
        _program = _PROGRAM

        def __init__(self, params, lr=0.01, *, maximize=False, foreach=None, fused=None, backend=None):
            super().__init__(params, {"lr": lr}, maximize=maximize, foreach=foreach, fused=fused,
                             backend=backend)

Behaviour, as torch.optim's own optimizers have it:
  - state per parameter in ``opt.state[p]``: a float32 ``step`` tensor of its own and the program's
    states (float32, or float64 for float64 params; bf16/fp16 params keep float32 state), all
    updated in place; replacing or deleting them between steps is honoured at the next step;
  - ``lr`` and every hyperparameter in the param groups (schedulers edit them), validated with
    torch's messages; ``betas=(beta1, beta2)`` beside ``beta1``/``beta2`` for programs that have
    both, kept in the groups so momentum-cycling schedulers (OneCycleLR) work;
    ``maximize`` (ascend: g -> -g); ``foreach=True`` picks the multi-tensor backend, ``fused=True``
    a fused one (``compiled`` or an extra backend); ``capturable`` and ``differentiable`` are
    accepted at torch's defaults (False);
  - ``state_dict``/``load_state_dict``, ``copy.deepcopy`` and ``pickle``; checkpoints of the
    torch.optim optimizer the program is (declared by the program, see ``torch_checkpoints``) load
    into it, any other foreign checkpoint is refused when loaded; the settings such a declaration
    requires are accepted at those values (``amsgrad=False``), refused at others, and a tuple it
    maps is a keyword (``eps=(None, 1e-3)`` sets ``eps2``; None keeps the program's default);
  - AMP: ``grad_scale``/``found_inf`` as torch's fused optimizers take them from GradScaler;
  - complex parameters, for elementwise programs: stepped as their real and imaginary parts;
  - FSDP2: DTensor params get DTensor states sharded as they are; reductions see whole tensors
    (see :func:`_runs_local`).

Per-step host work does not grow with per-parameter bookkeeping: a *plan* (:class:`_Plan`) groups
the tensors by param group, path, device, dtype and step count and is rebuilt only when the params
with grads, their storage, or the state tensors change.
"""

# --- optdsl runtime: begin (codegen/runtime/torch_optimizer.py, copied verbatim; edit it there)
import functools
import itertools
import math
import numbers
import operator
import shutil
import sys
import types
import warnings

import torch


def _compute_dtype(dtype):
    """Math and state dtype: float64 for float64 params, float32 otherwise (bf16/fp16 params too;
    complex params: see :func:`_state_dtype`)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _state_dtype(dtype):
    """A state's dtype for params of ``dtype``: the compute dtype, complex for complex params (the
    real view of a complex64 state is float32: see :func:`_real`)."""
    if dtype.is_complex:
        return torch.complex128 if dtype == torch.complex128 else torch.complex64
    return _compute_dtype(dtype)


def _is_state_value(value):
    """Is ``value`` (from a checkpoint) a tensor of a program state's kind: floating or complex?"""
    return torch.is_tensor(value) and (value.is_floating_point() or value.is_complex())


def _real(t):
    """A complex tensor as the real tensor of its parts (``torch.view_as_real``, a view: shape
    ``(..., 2)``), else t: an elementwise program steps a complex parameter's real and imaginary
    parts as numbers of their own, as torch.optim does (:attr:`_Program.elementwise`)."""
    return torch.view_as_real(t) if t.is_complex() else t


_FLOAT32_MAX = torch.finfo(torch.float32).max


def _in_float32(floats):
    """A float32 step's Python-number scalars, those beyond float32's range as float32 holds them (x
    -> float32(x), inf): many torch ops refuse such a number beside float32 tensors ("cannot be
    converted to type float without overflow": lerp's weight, torch.full, where, clamp, alpha), where
    the reference's float32 step has inf. The others stay as they are: the ops round them alike, and
    the step's own arithmetic on them (``1 - beta2``) is float64's (rounding them all, wherever one
    was inf, put Adam's second moment 1.3e-5 off under ``clip_by_global_norm(max_norm=inf)``)."""
    wide = [k for k, v in floats.items() if not abs(v) <= _FLOAT32_MAX]  # (a nan too: it stays nan)
    if not wide:
        return floats
    narrow = torch.tensor([floats[k] for k in wide], dtype=torch.float64, device="cpu").float().tolist()
    return {**floats, **dict(zip(wide, narrow))}


def _state_shape(kind, shape):
    """The shape of a state of ``kind`` for a parameter of ``shape``."""
    return {"full": shape, "row": shape[:-1], "col": shape[:-2] + shape[-1:], "scalar": ()}[kind]


def _init_state(kind, init, w):
    """A fresh state for parameter ``w``: zeros, ones, or a copy of w, in the compute dtype. For a
    DTensor ``w`` (FSDP2) a DTensor on w's mesh, sharded as w is (:func:`_state_placements`);
    each rank allocates only its own shard."""
    dtype = _state_dtype(w.dtype)
    if init == "w":
        return w.detach().to(dtype).clone()
    fill = (1.0 if init == "ones" else 0.0) * (1 + 1j if w.is_complex() else 1)
    shape = _state_shape(kind, tuple(w.shape))
    if _is_dtensor(w):
        placements = _state_placements(kind, w)
        return sys.modules[_DTENSOR].full(
            shape, fill, dtype=dtype, device_mesh=w.device_mesh, placements=placements
        )
    return torch.full(shape, fill, dtype=dtype, device=w.device)


_DTENSOR = "torch.distributed.tensor"
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # the types no DTensor has
_PLAIN_TYPES = frozenset(_PLAIN)


def _is_dtensor(t):
    """Is ``t`` a DTensor (FSDP2's parameters)? Read from sys.modules: no tensor can be one unless
    torch.distributed.tensor was imported, and a torch built without distributed has none."""
    if type(t) in _PLAIN:  # (called per tensor and step: the common answer first)
        return False
    module = sys.modules.get(_DTENSOR)
    return module is not None and isinstance(t, module.DTensor)


def _local(t):
    """A DTensor's local shard (a view of its memory: in-place updates reach the DTensor), else t."""
    return t.to_local() if _is_dtensor(t) else t


def _locals(tensors):
    """:func:`_local` of each of ``tensors``; the list itself where all are plain tensors (the
    per-step path: the types are checked in C; a Python call per tensor costs ~0.3 us, 60 us a step
    for BERT's 200. torch.distributed.tensor is imported with torch.optim, so sys.modules does not
    tell)."""
    return tensors if set(map(type, tensors)) <= _PLAIN_TYPES else [_local(t) for t in tensors]


_data_ptr, _is_sparse = torch.Tensor.data_ptr, operator.attrgetter("is_sparse")
_shape = operator.attrgetter("shape")
_is_none, _is_not_none = functools.partial(operator.is_, None), functools.partial(operator.is_not, None)


def _state_placements(kind, w):
    """The placements of a ``kind`` state of DTensor ``w``: a state axis stays sharded as the
    parameter axis it comes from; an axis the state drops (row: the last, col: the second to last)
    makes it replicated, as does a scalar state or a placement other than Shard."""
    if kind == "full":
        return w.placements
    gone = {"row": (w.ndim - 1,), "col": (w.ndim - 2,), "scalar": tuple(range(w.ndim))}[kind]
    dtensor = sys.modules[_DTENSOR]
    out = []
    for p in w.placements:
        dim = p.dim % w.ndim if p.is_shard() else None
        if dim is None or dim in gone:
            out.append(dtensor.Replicate())
        else:
            out.append(dtensor.Shard(dim - sum(d < dim for d in gone)))
    return out


def _runs_local(prog, w):
    """May DTensor ``w`` step on its local shard alone, as a plain tensor (any backend)? When the
    program is row-separable (elementwise ops, rowmean, full or row states) and no mesh dimension
    shards w's last axis, every value of a shard's step depends on that shard's rows only. Else
    its reductions must see the whole tensor and the step runs on DTensors."""
    if prog.not_separable is not None:
        return False
    return all(p.is_replicate() or (p.is_shard() and p.dim % w.ndim != w.ndim - 1) for p in w.placements)


def _needs_2d(w, value):
    """``value``, for a parameter ``w`` with 2 or more axes (a row or column state or mean); else the
    interpreter's error, a ValueError, where a 1-d mean over the last axis would be a number. Reads
    only ``.ndim`` and ``.shape``: the jax target copies it too."""
    if w.ndim < 2:
        raise ValueError(
            f"this program needs parameters with 2 or more axes here, got shape {tuple(w.shape)}"
        )
    return value


def _holds(test, w):
    """A shape test's truth for ``w``, evaluated as Python evaluates it (``and`` short-circuits)."""
    try:
        return bool(test(w))
    except IndexError:
        raise ValueError(
            f"a shape test asks for an axis a parameter of shape {tuple(w.shape)} does not have"
        ) from None


class _Path:
    """One static specialisation of the program: its states as (name, kind, init), whether it needs
    parameters with 2 or more axes, whether it may run on 1-d views of the tensors (``flat``:
    elementwise values and whole-tensor reductions only, no shape facts) and whether its eager step
    may run on slices of them (``sliceable``: True for 1-d slices, ``"rows"`` for blocks of whole
    rows, False; see :func:`_chunks`)."""

    def __init__(self, states, needs_2d, flat, sliceable=False):
        self.states, self.needs_2d, self.flat, self.sliceable = states, needs_2d, flat, sliceable

    def __repr__(self):
        return (
            f"_Path(states={self.states!r}, needs_2d={self.needs_2d}, flat={self.flat}, "
            f"sliceable={self.sliceable})"
        )


# Elements in one chunk of the eager step (below). A chunk's lists (AdamW: params, grads, m, v and
# two temporaries, 3 MB) stay in a core's L2 cache from one multi-tensor op to the next, and a
# temporary this small is served again from memory the allocator holds: a temporary as large as a
# whole tensor list is fresh pages, faulted in at every step (measured: 2.9x torch's foreach
# AdamW on BERT-base's 110M parameters, 0.8x in chunks of 2**17).
_CHUNK = 1 << 17


def _chunks(columns, size, sliceable):
    """The rows of ``columns`` (lists of tensors, one tensor of each per parameter: params, grads,
    states) in chunks of about ``size`` elements: ``[(columns restricted to the chunk, the index of
    each row's parameter)]``. With ``sliceable=True``, a parameter larger than ``size`` whose
    tensors are all contiguous and as large is cut into 1-d views of ``size`` elements, each a row
    of its own (an elementwise step on every slice is the step on the whole); with
    ``sliceable="rows"``, into blocks of whole rows of about ``size`` elements (:func:`_row_blocks`:
    row values and row states stay whole); otherwise a row is a whole parameter. Rows keep the
    parameters' order.

    Example: three rows of 100 elements, size 150: chunks [[a, b], [c]] in each column, indices
    [0, 1] and [2]."""
    if sum(map(torch.Tensor.numel, columns[0])) <= size:  # a small model: one chunk, nothing cut
        return [(columns, list(range(len(columns[0]))))]
    rows = []
    for i, row in enumerate(zip(*columns)):
        w, n = row[0], row[0].numel()
        cut = None
        if sliceable is True and n > size and all(t.is_contiguous() and t.numel() == n for t in row):
            cut = list(zip(*(t.view(-1).split(size) for t in row)))
        elif sliceable == "rows" and n > size and all(t.is_contiguous() for t in row) and w.shape[-1]:
            cut = _row_blocks(row, w.shape, max(1, size // w.shape[-1]))
        rows.extend((i, piece) for piece in cut or [row])
    chunks, start, total = [], 0, 0
    for k, (_, row) in enumerate(rows):
        total += row[0].numel()
        if total >= size or k == len(rows) - 1:
            part = rows[start : k + 1]
            chunks.append(([list(column) for column in zip(*(r for _, r in part))], [i for i, _ in part]))
            start, total = k + 1, 0
    return chunks


def _row_blocks(row, shape, block):
    """A parameter's tensors (contiguous; full ones shaped like w, row ones like ``w.shape[:-1]``)
    as blocks of ``block`` whole rows of w (2-d and 1-d views: leading axes flattened), or None
    when a tensor has another shape."""
    rows, cols = row[0].numel() // shape[-1], shape[-1]
    pieces = []
    for t in row:
        if t.shape == shape:
            pieces.append(t.view(rows, cols).split(block))
        elif t.shape == shape[:-1]:
            pieces.append(t.view(rows).split(block))
        else:
            return None
    return list(zip(*pieces))


def _pick(c, a, b):
    """``torch.where(c != 0, a, b)`` for the condition ``c`` of one tensor (0-d: a per-tensor
    reduction's value). On a CPU, where reading c costs a load, it is ``a`` or ``b`` itself when
    that one has the result's shape and dtype (no pass over the tensor: Tiger's nan guard); a
    number, a broadcast or a device tensor goes through torch.where (no host sync). The caller
    must not write the result in place."""
    if c.device.type == "cpu":
        out, other = (a, b) if c != 0 else (b, a)
        # the other's shape broadcast to out's (torch.broadcast_shapes costs 20 us a call)
        fits = torch.is_tensor(out) and (not torch.is_tensor(other) or other.shape in (out.shape, ()))
        if fits and out.dtype == torch.result_type(a, b):
            return out
    return torch.where(c != 0, a, b)


def _which(c):
    """Which side of ``where(c, a, b)`` every tensor of a group takes, ``c`` being one number per
    tensor (the group's numbers as a 1-d tensor or a list of 0-d tensors): 1 when all take a (c !=
    0, nan included, as torch.where's ``c != 0``), 0 when all take b, None when they differ or c
    lives on an accelerator (reading it would wait for the device). On a CPU the group step then
    skips what only the other side reads (Tiger's nan branch, where no grad holds a nan).
    Example: ``_which(torch.tensor([0.0, 0.0])) == 0``."""
    stacked = c if torch.is_tensor(c) else torch.stack(c)
    if stacked.device.type != "cpu" or _is_dtensor(stacked):
        return None
    taken = [x != 0 for x in stacked.tolist()]  # one read of all the numbers (~1 us)
    return 1 if all(taken) else 0 if not any(taken) else None


def _interp_lists(x, y, a, into=None):
    """interp(x, y, a) = (1 - a) x + a y over lists of tensors, ``a`` a Python number: into the list
    ``into`` (x or y, in place) or new lists; returns the lists. torch's lerp takes 1 - weight in the
    tensors' dtype for a weight >= 0.5 (in float32 1 - 0.999 keeps 4 digits: a state averaged at
    0.001 was 1.3e-5 off the interpreter where g is 0), so it runs only with a weight <= 0.5, from
    the end ``a`` weighs more; into the other end, a multiply and an add. torch.optim's AdamW step,
    ``lerp_(m, g, 1 - beta1)``, is the first case.
    Example: ``_interp_lists([torch.ones(2)], [torch.zeros(2)], 0.75)`` is ``(tensor([0.2500, 0.2500]),)``."""
    near_y = a >= 0.5  # (a nan: from x, giving nan)
    if into is None:
        return torch._foreach_lerp(y, x, 1 - a) if near_y else torch._foreach_lerp(x, y, a)
    if x is y or (x and y and x[0] is y[0]):
        # interp(x, x, a) is x; a multiply then an add would scale x first. x + a (x - x), one pass:
        # x, or nan where x is inf
        torch._foreach_lerp_(into, into, a)
        return into
    if into is y:
        if near_y:
            torch._foreach_lerp_(y, x, 1 - a)
        else:
            torch._foreach_mul_(y, a)
            torch._foreach_add_(y, x, alpha=1 - a)
    elif not near_y:
        torch._foreach_lerp_(x, y, a)
    else:
        torch._foreach_mul_(x, 1 - a)
        torch._foreach_add_(x, y, alpha=a)
    return into


_NUMBER_TENSORS = {}  # dtype -> {x (-0.0: its sign too): x as a 0-d CPU tensor}, the numbers of recent steps


def _numbers(like, dtype):
    """``x -> x`` as the multi-tensor ``add``, ``sub``, ``mul`` and ``div`` over the list ``like``
    take a number fastest: on a CPU, a list holding one 0-d ``dtype`` tensor of x for each tensor of
    ``like`` (given a Python number, those ops wrap it in a new tensor for every tensor of the list,
    ~1.2 us apiece, torch 2.13; the bits are the same, x being rounded to ``dtype`` either way);
    elsewhere, and for a number ``dtype`` cannot hold or anything but a Python number, x itself.

    Example: ``_numbers([torch.ones(3)], torch.float32)(0.5) == [torch.tensor(0.5)]``."""
    if like[0].device.type != "cpu":
        return lambda x: x
    n, cache = len(like), _NUMBER_TENSORS.setdefault(dtype, {})

    def numbers(x):
        if type(x) not in (float, int):
            return x
        key = x if x else (0.0, math.copysign(1.0, x))  # (0.0 == -0.0: each zero a key of its own)
        t = cache.get(key)
        if t is None:
            try:
                t = torch.scalar_tensor(x, dtype=dtype, device="cpu")  # (whatever the default device)
            except (RuntimeError, OverflowError):  # beyond dtype's range (1e39 in float32): the op's inf
                return x
            if len(cache) > 64:
                cache.clear()
            cache[key] = t
        return [t] * n

    return numbers


def _per_tensor(how, parts, lengths):
    """Per-parameter totals from the rows' ``parts`` (0-d tensors in row order; ``lengths``: rows per
    parameter, or None for one each), summed or maxed (nan propagates, as in torch.amax)."""
    stacked = torch.stack(parts)
    if lengths is None:
        return stacked
    return torch.segment_reduce(stacked, how, lengths=lengths)


class _GroupRun:
    """One group's eager step (see :meth:`_Program.group_step`) taken a stage at a time: its chunks,
    each chunk's ``hyper`` (Python-number scalars, then the values stages hand on) and the next
    stage. Per-tensor totals are finished here; a global's rows are returned for the program to
    combine over every group (:meth:`hand` gives its value back)."""

    def __init__(self, program, path, params, grads, states, floats):
        self.program, self.path, self.params = program, path, params
        self.names = [name for name, _, _ in program.paths[path].states]
        columns = [params, grads, *(states[n] for n in self.names)]
        if _compute_dtype(params[0].dtype) == torch.float32:
            floats = _in_float32(floats)
        if params[0].device.type != "cpu":  # an accelerator: one launch per op; its allocator caches
            self.chunks = [(columns, list(range(len(params))))]
        else:
            self.chunks = _chunks(columns, _CHUNK, program.paths[path].sliceable)
        self.hypers = [dict(floats) for _ in self.chunks]
        self.stages, self.stage = program.stages[path], 0
        # per stage, the globals it reduces; a stage waits on those of the stages before it
        names = program.global_names
        self.reduces = [{n for n, _, _ in outputs if n in names} for _, outputs in self.stages]
        self.waits_on = set()
        rows = [i for _, index in self.chunks for i in index]
        self.lengths = None  # rows per parameter, where the chunks cut one into several (for the stages)
        if self.stages and len(rows) > len(params):
            owners = torch.tensor(rows, device="cpu")  # each row's parameter
            self.lengths = torch.bincount(owners, minlength=len(params)).to(params[0].device)
        # every parameter one row of the one chunk, in order: it takes the values as they are
        self.whole = self.lengths is None and len(self.chunks) == 1
        self.dtype = _compute_dtype(params[0].dtype)
        self._given = {name for name in program.global_names if name in floats}
        for name in self._given:
            self.hand(name, floats[name])

    def given(self, name):
        """Did the caller hand in the global ``name``'s value (see :meth:`_Program.group_steps`)?"""
        return name in self._given

    def passed(self, name):
        """Has a stage that reduces the global ``name`` run?"""
        return any(name in reduced for reduced in self.reduces[: self.stage])

    def next_stage(self):
        """Run the next stage over every chunk; return each global it reduces as ``(per term: every
        row's partial)``."""
        segment, outputs = self.stages[self.stage]
        self.waits_on |= self.reduces[self.stage]
        self.stage += 1
        parts = []
        for (c, _), h in zip(self.chunks, self.hypers):
            values, part = segment(c[0], c[1], dict(zip(self.names, c[2:])), h)
            h.update(values)
            parts.append(part)
        out = {}
        for r, (name, how, finish) in enumerate(outputs):
            terms = zip(*(part[r] for part in parts))  # per term: each chunk's list of partials
            rows = [[x for chunk in t for x in chunk] for t in terms]
            if name in self.program.global_names:
                out[name] = rows
                continue
            totals = [_per_tensor(how, t, self.lengths) for t in rows]
            self.hand(name, finish(*totals, self.counts()))
        return out

    def counts(self):
        """The group's parameters' elements as a tensor (kept per program: a new tensor each step
        cost ~20 us, a tenth of Tiger's small-model step)."""
        params, memo = self.params, self.program._counts
        key = (self.dtype, params[0].device, tuple(p.numel() for p in params))
        if key not in memo:
            if len(memo) > 64:
                memo.clear()
            memo[key] = torch.tensor(key[2], dtype=key[0], device=key[1])
        return memo[key]

    def hand(self, name, value):
        """Hand the stages after this one ``name``'s value: per parameter (a 1-d tensor), or one
        number for all (a global's 0-d tensor or Python number); each chunk gets its rows' values."""
        if torch.is_tensor(value):
            value = value.to(self.dtype)
        else:  # (the device named: a torch.device context would put a new tensor on its own)
            value = torch.tensor(value, dtype=self.dtype, device=self.params[0].device)
        for (_, index), h in zip(self.chunks, self.hypers):
            if value.dim() == 0:
                h[name] = value.to(self.params[0].device).expand(len(index))
            else:
                h[name] = value if self.whole else value[torch.tensor(index, device=value.device)]

    def finish(self):
        """The step itself, over every chunk."""
        for (c, _), h in zip(self.chunks, self.hypers):
            self.program.groups[self.path](c[0], c[1], dict(zip(self.names, c[2:])), h)


class _Program:
    """One program's tables, printed by the generator, and the steps built on them.

    ``tree`` picks a parameter's path: a path index, or ``(test, tree if test(w), tree if not)``.
    ``uniforms[k](**values)`` computes path k's per-step scalars (bias corrections...) from lr, step
    and the hyperparameters in float64 0-d tensors, ``uniform_floats[k]`` (None where the program
    has no such spelling) in Python floats, raising where they would be inf or nan; ``segments[k]``
    are path k's per-tensor functions, cut at the global reductions (``global_names``;
    ``combine[j]`` is ``(how, finish)``: the tensors' totals are summed or maxed, and
    ``finish(total)`` is the value); ``groups[k]`` runs path k over a list of tensors with
    multi-tensor ops (programs without global reductions only), after the segments ``stages[k]``
    that compute its per-tensor reductions (see :meth:`group_step`).
    ``backends`` maps an extra backend's name to ``(group_step, available)``; ``one_op``: every
    path's group step is one multi-tensor op per tensor (plain SGD); ``sparse_paths``: the paths
    whose step on a sparse gradient's rows is the whole step (row-separable, and a zero gradient
    leaves a row as it is: :func:`optdsl.symbolic.still_at_zero_gradient`); ``torch_checkpoints``
    maps a torch.optim class name to ``{"states": {torch name: ours}, "hypers": {torch name: (ours,
    ...)}, "requires": {group key: value}, "records": (group key, ...)}``; ``copied_out``: the
    paths whose last segment returns a copy of an input it also writes (``prev <- w``: see
    codegen.torch_target's ``_clones``), whose compiled step returns its values to be copied in
    (see :func:`_step_copied_out`);
    ``global_backends``: the fused backends that step a program with global reductions, taking
    their values as per-step numbers (:meth:`global_totals`): ``compiled`` where nothing is computed
    before them, the ``cpp`` kernels where every global reduces an input before anything else;
    ``unavailable``: why a backend the targets make for
    other programs has none for this one (``{"cpp": "state v is scalar-shaped"}``); ``hyper_domains``
    maps a hyperparameter that declares its domain to ``(words, test)`` (:func:`_check_hyper`).
    """

    def __init__(
        self,
        *,
        name,
        hyper_defaults,
        state_names,
        paths,
        tree,
        uniforms,
        segments,
        uniform_floats=None,
        groups=(),
        stages=None,
        global_names=(),
        combine=(),
        not_separable=None,
        sparse_paths=(),
        backends=None,
        one_op=False,
        torch_checkpoints=None,
        copied_out=(),
        global_backends=(),
        unavailable=None,
        hyper_domains=None,
    ):
        self.name, self.hyper_defaults, self.state_names = name, hyper_defaults, state_names
        self.hyper_domains = dict(hyper_domains or {})
        self.hyper_names = tuple(dict.fromkeys(("lr", *hyper_defaults)))  # lr may have no default
        self.paths, self.tree = paths, tree
        self.uniforms, self.segments, self.groups = uniforms, segments, groups
        self.uniform_floats = uniform_floats or (None,) * len(paths)
        self.stages = stages or ((),) * len(paths)
        self.global_names, self.combine = global_names, combine
        self.not_separable, self.sparse_paths = not_separable, frozenset(sparse_paths)
        # each number its own coordinate (no reduction, no shape fact, full states): complex params
        # step as their real and imaginary parts (see _real)
        self.elementwise = not_separable is None and isinstance(tree, int) and paths[tree].flat
        self.backends, self.one_op = dict(backends or {}), one_op
        self.global_backends, self.unavailable = frozenset(global_backends), dict(unavailable or {})
        self.torch_checkpoints = dict(torch_checkpoints or {})
        # torch's tuple spellings of hyperparameters (Adafactor's eps -> (eps1, eps2)), the first
        # declaration's where two name one: read from a group at every step (_spellings_into)
        self.spellings = {}
        for decl in self.torch_checkpoints.values():
            for key, targets in decl["hypers"].items():
                self.spellings.setdefault(key, tuple(targets))
        self._counts = {}  # (dtype, device, each tensor's elements) -> those counts as a tensor (group_step)
        self._compiled = {}
        # paths whose compiled step returns its values: a copy of an input it writes (torch 2.13's
        # inductor drops a clone of an input that the graph then writes in place, and the state read
        # the new value: w's for heavy ball's prev <- w), or whose in-place step inductor failed to build
        self.copied_out = set(copied_out)

    def path_of(self, w):
        """Index into ``paths`` of the path a tensor shaped like ``w`` runs (Python shape tests)."""
        k = self.tree
        while not isinstance(k, int):  # (test, if it holds, if not)
            k = k[1] if _holds(k[0], w) else k[2]
        return _needs_2d(w, k) if self.paths[k].needs_2d else k

    def check_hyper(self, name, value):
        """ValueError unless ``value`` is one the hyperparameter ``name`` may take (:func:`_check_hyper`)."""
        _check_hyper(name, value, self.hyper_defaults.get(name), self.hyper_domains.get(name))

    def check_domains(self, group):
        """ValueError unless every hyperparameter of the param group ``group`` that declares a domain
        (``accum_steps: count``) holds a value in it: one outside would make a step never update
        (``accum_steps=0``) or update with no meaning."""
        for name in self.hyper_domains.keys() & group.keys():
            self.check_hyper(name, group[name])

    def init_states(self, params):
        """The first ``states`` of the functional step: each path's states, None where a path has none."""
        states = {name: [None] * len(params) for name in self.state_names}
        for i, p in enumerate(params):
            for name, kind, init in self.paths[self.path_of(p)].states:
                states[name][i] = _init_state(kind, init, p)
        return states

    def scalars(self, k, values, dtype, device):
        """lr, step, the hyperparameters and path k's per-step scalars as 0-d tensors of ``dtype``:
        :meth:`floats`, each cast once, as torch.optim computes its bias corrections in Python
        floats (``1 - 0.999 ** 10000`` in float32 loses digits that a float32 step cannot afford).
        A value handed in as a tensor (a scheduler's lr, one on an accelerator, one vmap batches) is
        not read as a number: the scalars are then computed in float64 tensors."""
        if not any(torch.is_tensor(v) for v in values.values()):
            return {n: torch.tensor(x, dtype=dtype, device=device) for n, x in self.floats(k, values).items()}
        base = {n: torch.as_tensor(v, dtype=torch.float64, device=device) for n, v in values.items()}
        # a 1-element tensor counts as its number, whatever its shape (torch.optim takes lr of shape
        # (1,)): 0-d, else it broadcasts a 0-d parameter's step to shape (1,)
        base = {n: t.reshape(()) if t.dim() and t.numel() == 1 else t for n, t in base.items()}
        out = {**base, **self.uniforms[k](**base)}
        # a value handed in may be the caller's own tensor (a step counter): never return it
        return {n: t.to(dtype) if t.dtype != dtype else t.clone() for n, t in out.items()}

    def floats(self, k, values):
        """lr, step, the hyperparameters and path k's per-step scalars as Python floats (float64).

        In Python float arithmetic (``uniform_floats[k]``, libm's math as numpy's: the reference
        interpreter's), except where that raises (1 / 0, math.exp(1000)) or the program has ops
        without a Python spelling: then in float64 0-d tensors (``uniforms[k]``), whose IEEE
        results (inf, nan) the step then takes."""
        base = {n: v.item() if isinstance(v, torch.Tensor) else float(v) for n, v in values.items()}
        if self.uniform_floats[k] is not None:
            try:
                return {**base, **self.uniform_floats[k](**base)}
            except (ArithmeticError, ValueError):
                pass
        wide = torch.tensor(list(base.values()), dtype=torch.float64, device="cpu")
        tensors = dict(zip(base, wide.unbind()))
        out = {**tensors, **self.uniforms[k](**tensors)}
        numbers = [
            t.to(torch.float64) if torch.is_tensor(t) else torch.tensor(t, dtype=torch.float64, device="cpu")
            for t in out.values()
        ]
        return dict(zip(out, torch.stack(numbers).tolist()))

    def run(self, envs, paths, segments):
        """Run each tensor's path (``envs[i]`` holds its named inputs and scalars) segment by segment;
        between segments combine each global reduction across all tensors (the interpreter's
        lockstep). Returns ``[(w - update, new states)]``."""
        for j, (how, finish) in enumerate(self.combine):
            parts = []
            for i, k in enumerate(paths):
                values, part = segments[k][j](**envs[i])
                envs[i] = {**envs[i], **values}
                parts.append(part.full_tensor() if _is_dtensor(part) else part)  # a shard's part: reduce
            stacked = torch.stack([part.to(parts[0].device) for part in parts])
            total = finish(stacked.sum() if how == "sum" else stacked.amax())
            envs = [{**env, self.global_names[j]: total.to(env["w"].dtype)} for env in envs]
        return [segments[k][-1](**env) for env, k in zip(envs, paths)]

    def step(self, params, grads, states, *, lr, step, **hyper):
        """The functional step: ``(new_params, new_states)``, nothing modified in place (an empty
        parameter and its states come back as they are)."""
        unknown = set(hyper) - set(self.hyper_defaults)
        if unknown:
            raise TypeError(
                f"unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(self.hyper_defaults)}"
            )
        values = {**self.hyper_defaults, **hyper, "lr": lr, "step": step}
        envs, paths, members, scalars = [], [], [], {}
        for i, (p, g) in enumerate(zip(params, grads)):
            if p.numel() == 0:
                continue
            k = self.path_of(p)
            w = p.to(_compute_dtype(p.dtype))
            at = (k, w.dtype, w.device)
            if at not in scalars:
                scalars[at] = self.scalars(k, values, w.dtype, w.device)
            env = {"w": w, "g": g.to(w.dtype), **scalars[at]}
            env.update({name: states[name][i] for name, _, _ in self.paths[k].states})
            envs.append(env)
            paths.append(k)
            members.append(i)
        new_params = list(params)
        new_states = {name: list(states.get(name, [None] * len(params))) for name in self.state_names}
        for i, k, (new_w, values) in zip(members, paths, self.run(envs, paths, self.segments)):
            new_params[i] = new_w.to(params[i].dtype)
            for (name, _, _), v in zip(self.paths[k].states, values):
                new_states[name][i] = v
        return new_params, new_states

    def eager_group_step(self, path, params, grads, states, *, lr, step, **hyper):
        """In-place step of tensors sharing a path, device and dtype with multi-tensor ops (the
        signature of an extra backend's group step: Python-number lr, step and hyperparameters)."""
        if params:
            hyper = self.floats(path, {**self.hyper_defaults, **hyper, "lr": lr, "step": step})
            self.group_step(path, params, grads, states, hyper)

    def group_step(self, path, params, grads, states, floats):
        """``groups[path]`` (``floats``: its Python-number scalars) over the tensors in chunks of
        about ``_CHUNK`` elements on a CPU (:func:`_chunks`), whole on an accelerator, where the
        chunks would multiply the kernel launches: params and states updated in place.

        Per-tensor reductions (``norm(w)``, Tiger's nan test ``amax(g != g)``) cut the step into
        segments, each a pass over the chunks: ``stages[path]`` holds ``(segment, outputs)`` per
        stage; ``segment(params, grads, states, hyper)`` returns the values it hands to later
        segments and each output's terms as one 0-d partial per row; ``outputs`` are ``(name,
        "sum" | "max", finish)``: a parameter's rows combine, and ``finish(*totals, n)`` (n: the
        parameter's elements) is its value, handed on as ``hyper[name]``, a 1-d tensor holding each
        row's parameter's value (the group functions' stack of it). So a sliced parameter's
        reductions still see the whole tensor. The values a segment hands on stay in memory until
        the step (a chunk each)."""
        self.group_steps([(path, params, grads, states, floats)])

    def group_steps(self, groups):
        """:meth:`group_step` of every ``(path, params, grads, states, floats)`` in ``groups``, in
        lockstep where the program has global reductions (``global_names``): see :meth:`_lockstep`.
        A global whose value ``floats`` already holds (an extra backend's fallback, handed the
        values of :meth:`global_totals`) is taken as it is."""
        runs = [_GroupRun(self, *group) for group in groups if group[1]]
        self._lockstep(runs)
        for run in runs:
            run.finish()

    def global_totals(self, groups):
        """Each global reduction's value over every ``(path, params, grads, states, floats)`` of
        ``groups`` as a 0-d tensor, the group stages run only as far as they need to (so a fused
        backend takes the values as per-step numbers: ``global_backends``)."""
        runs = [_GroupRun(self, *group) for group in groups if group[1]]
        return self._lockstep(runs, all_stages=False)

    def _lockstep(self, runs, all_stages=True):
        """Run the :class:`_GroupRun` stages: a global's rows are combined over every group, as
        ``combine`` says, and a group's stage runs once the globals of its earlier stages are known
        (the interpreter's lockstep, a group's tensors at a time). Returns the globals' values
        (0-d tensors); ``all_stages=False``: stops once they are known."""
        totals = {name: None for name in self.global_names if runs and runs[0].given(name)}
        parts = {name: [] for name in self.global_names if name not in totals}
        while any(run.stage < len(run.stages) for run in runs) and (all_stages or parts):
            ran = False
            for run in runs:
                while run.stage < len(run.stages) and run.waits_on <= totals.keys():
                    for name, terms in run.next_stage().items():
                        if name in parts:
                            parts[name].append(terms)
                    ran = True
            for j, name in enumerate(self.global_names):
                if name in parts and all(run.passed(name) for run in runs):
                    how, finish = self.combine[j]
                    rows = [x for terms in parts.pop(name) for x in terms[0]]
                    stacked = torch.stack([x.to(rows[0].device) for x in rows])
                    totals[name] = finish(stacked.sum() if how == "sum" else stacked.amax())
                    for run in runs:
                        run.hand(name, totals[name])
                    ran = True
            if not ran:  # (codegen cuts every global out of every path's stages)
                raise RuntimeError(f"{self.name}: the group stages cannot reach {sorted(parts)}")
        return totals

    def compiled_apply(self, path, flat, dtype, in_place=True):
        """torch.compile of one in-place tensor step for params of ``dtype`` (a compile for the first
        size, one for all others, of each rank); ``in_place=False``: of one that returns ``(w - update,
        new states)`` instead."""
        key = (path, flat, dtype, in_place)
        if key not in self._compiled:
            segment = self.segments[path][-1]
            names = [name for name, _, _ in self.paths[path].states]

            def apply(p, g, states, scalars):
                w = p.to(_compute_dtype(p.dtype))
                new_w, new_states = segment(w=w, g=g.to(w.dtype), **dict(zip(names, states)), **scalars)
                if not in_place:
                    return new_w, new_states
                p.copy_(new_w)
                for s, v in zip(states, new_states):
                    s.copy_(v)

            # dynamic=None (torch's automatic dynamic): a static-size kernel for the first size, one
            # dynamic-size kernel once a second size comes; the static loop runs ~15% faster on a CPU
            self._compiled[key] = torch.compile(_own_code(apply), dynamic=None)
        return self._compiled[key]

    def compiled_segments(self):
        """Every segment function under torch.compile (for programs with global reductions), one
        compiled copy per dtype and rank of ``w``."""
        if "segments" not in self._compiled:
            self._compiled["segments"] = tuple(tuple(map(_compiled_per_kind, row)) for row in self.segments)
        return self._compiled["segments"]

    def available(self, backend, device):
        """May ``backend`` run on ``device``? (``compiled`` on a CPU needs a C++ compiler.)"""
        if backend == "eager":
            return True
        if backend == "compiled":
            return device.type != "cpu" or any(shutil.which(cc) for cc in ("c++", "g++", "clang++", "cc"))
        return self.backends[backend][1](device)


def _own_code(f):
    """``f`` with a copy of its code object. dynamo stops compiling a code object after 8 graphs
    (``recompile_limit``) and runs it uncompiled from then on, with a warning: functions compiled
    for different paths, dtypes or ranks get code objects of their own, so that they do not share
    one limit (a bf16 model beside a float32 one with the same generated Tiger went past it)."""
    return types.FunctionType(f.__code__.replace(), f.__globals__, f.__name__, f.__defaults__, f.__closure__)


def _compiled_per_kind(segment):
    """``segment(**env)`` under torch.compile (sizes dynamic), a compiled copy for each dtype and
    rank of ``env["w"]`` (see :func:`_own_code`)."""
    compiled = {}

    def call(**env):
        w = env["w"]
        key = (w.dtype, w.dim())
        if key not in compiled:
            compiled[key] = torch.compile(_own_code(segment), dynamic=True)
        return compiled[key](**env)

    return call


def _flat(t):
    """A 1-d tensor on t's memory that is not a view (a view's base would make torch.compile
    guard on, and recompile for, each rank): parameters of every shape share the graphs."""
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    return out.set_(t.untyped_storage(), t.storage_offset(), (t.numel(),), (1,))


def _unscale(grads, grad_scale):
    """g /= grad_scale in place for every grad (a sparse grad's values), one _foreach_div_ per device,
    as torch's fused optimizers leave their grads unscaled after an AMP step."""
    by_device = {}
    for g in itertools.chain(*grads):
        if g is not None:
            by_device.setdefault(g.device, []).append(g._values() if g.is_sparse else _local(g))
    for device, tensors in by_device.items():
        torch._foreach_div_(tensors, grad_scale.to(device))


def _step_copied_out(prog, path, p, g, states, scalars):
    """The compiled step of one tensor that returns ``(w - update, new states)``, copied into ``p`` and
    its states here: for a 0-d ``p`` (the in-place step's ``copy_`` into it is dropped, torch 2.13)
    and for the paths of ``_Program.copied_out`` (a clone of an input the step writes, an in-place
    step inductor could not compile). The values are new tensors (the segment clones any input it
    returns), so the order of the copies does not matter."""
    new_w, new_states = prog.compiled_apply(path, False, p.dtype, in_place=False)(p, g, states, scalars)
    torch._foreach_copy_([p, *states], [new_w, *new_states])


def _is_compile_error(e):
    """Did torch.compile itself fail (no C++ compiler, an op inductor cannot lower...)?"""
    text = f"{type(e).__module__}.{type(e).__name__}"
    return "torch._dynamo" in text or "torch._inductor" in text or "CppCompileError" in text


_COMPILE_FROM = 1 << 20  # elements; below, a CPU model's default backend starts on eager (see _backend_for)
_KERNELS_AFTER = 1000  # steps a small CPU model takes on eager before its default backend is cpp

_TORCH_CHECKS = {  # torch.optim's messages for the hyperparameters it knows
    "lr": ("Invalid learning rate: {}", lambda v: v >= 0.0),
    "eps": ("Invalid epsilon value: {}", lambda v: v >= 0.0),
    "eps1": ("Invalid epsilon value: {}", lambda v: v >= 0.0),
    "eps2": ("Invalid epsilon value: {}", lambda v: v >= 0.0),
    "beta1": ("Invalid beta parameter at index 0: {}", lambda v: 0.0 <= v < 1.0),
    "beta2": ("Invalid beta parameter at index 1: {}", lambda v: 0.0 <= v < 1.0),
    "weight_decay": ("Invalid weight_decay value: {}", lambda v: v >= 0.0),
    "momentum": ("Invalid momentum value: {}", lambda v: v >= 0.0),
}


def _check_hyper(name, value, default=None, domain=None):
    """ValueError unless ``value`` is a number ``name`` may take: torch's rule for a name it knows,
    unless the program's own ``default`` breaks that rule (the paper's Program 4 averages with
    beta2 = 1.109), and a number that is not nan otherwise; and within the program's ``domain`` for
    it, ``(words, test)``, where it declares one (``accum_steps: count``). A 1-element tensor counts
    as its number.

    A number is any real one, as torch.optim takes them: numpy's scalars (``np.float32(1e-3)``, from
    a config or a scheduler) and bools (``lr=True`` is 1, as in torch.optim, which checks only the
    ranges)."""
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        value = value.item()
    if not isinstance(value, numbers.Real):
        pair = name == "beta1" and isinstance(value, (tuple, list))  # torch's signature has betas there
        hint = "; give both as betas=(beta1, beta2)" if pair else ""
        raise TypeError(f"Invalid {name} value: {value!r} (a number is needed{hint})")
    any_number = (f"Invalid {name} value: {{}}", lambda v: not math.isnan(v))
    message, ok = _TORCH_CHECKS.get(name, any_number)
    if default is not None and not ok(default):
        message, ok = any_number
    if not ok(value):
        raise ValueError(message.format(value))
    if domain is not None and not domain[1](value):
        raise ValueError(f"Invalid {name} value: {value} (it must be {domain[0]})")


def _check_flags(cls, settings, loading=False):
    """ValueError where ``settings`` (the constructor's of class ``cls``, or a param group
    ``loading``) turn on torch's ``capturable`` or ``differentiable``, which no generated step honours."""
    reasons = {
        "capturable": "CUDA graph capture: the step counts live on the CPU",
        "differentiable": "a step autograd can see through: it runs under torch.no_grad",
    }
    for flag, why in reasons.items():
        if settings.get(flag):
            where = (
                f"{cls}.load_state_dict: the checkpoint's param group has {flag}=True; " if loading else ""
            )
            raise ValueError(f"{where}{cls} does not support {flag}=True ({why})")


def _check_torch_settings(cls, checkpoints, settings):
    """Accept the settings of the torch.optim optimizer the program declares it is, at the values
    it computes (the generated AdamW takes ``amsgrad=False``, as code written for torch.optim.AdamW
    passes it): ValueError for another value, TypeError for a setting no declaration names.

    Example: ``_check_torch_settings("AdamW", {"AdamW": {"requires": {"amsgrad": False}}},
    {"amsgrad": True})`` raises ValueError."""
    for key, value in settings.items():
        wants = {name: decl["requires"][key] for name, decl in checkpoints.items() if key in decl["requires"]}
        if not wants:
            raise TypeError(f"{cls}.__init__() got an unexpected keyword argument {key!r}")
        if all(value != want for want in wants.values()):
            computes = " or ".join(f"torch.optim.{name} with {key}={want!r}" for name, want in wants.items())
            raise ValueError(f"{cls} computes {computes} only, not {key}={value!r}")


# torch.optim.Optimizer's hooks of load_state_dict (pre, post), which _Optimizer.load_state_dict runs itself
_LOAD_HOOKS = ("_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks")


class _Optimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer running the program in ``_program`` (set by each generated subclass).

    backend: ``"eager"`` (multi-tensor torch ops), ``"compiled"`` (torch.compile of one fused loop: a
    kernel for the first parameter size, one for all others), an extra backend (``"cpp"``, the C++
    kernels, on a CPU), or None for the fastest that can run (:meth:`_backend_for`): on a CPU ``cpp``
    where the program has kernels, else ``compiled``, but a model under 2**20 elements takes its
    first 1,000 steps on ``eager`` (and never ``compiled``); elsewhere the extra backends, then
    ``compiled``; ``eager`` where none of them runs.
    """

    _program = None
    _step_supports_amp_scaling = True  # torch.amp.GradScaler hands over grad_scale/found_inf

    def __init__(
        self,
        params,
        defaults,
        *,
        betas=None,
        maximize=False,
        foreach=None,
        fused=None,
        capturable=False,
        differentiable=False,
        backend=None,
        **torch_settings,
    ):
        prog = self._program
        defaults = dict(defaults)
        _spellings_into(torch_settings, defaults, prog.spellings)
        _check_torch_settings(type(self).__name__, prog.torch_checkpoints, torch_settings)
        # torch's flags at their defaults pass, as code written for torch.optim passes them
        _check_flags(type(self).__name__, {"capturable": capturable, "differentiable": differentiable})
        known = ("eager", "compiled", *prog.backends)
        if backend in prog.unavailable:
            why = prog.unavailable[backend]
            raise ValueError(
                f"backend {backend!r} cannot run program {prog.name!r} ({why}); choose from {known}"
            )
        if backend is not None and backend not in known:
            raise ValueError(f"unknown backend {backend!r}; choose from {known}")
        if backend in prog.backends and prog.global_names and backend not in prog.global_backends:
            raise ValueError(f"backend {backend!r} does not run programs with global reductions")
        if foreach and fused:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        if foreach and backend not in (None, "eager"):
            raise ValueError(f"foreach=True is backend 'eager' (multi-tensor ops), not {backend!r}")
        if fused and backend == "eager":
            raise ValueError("fused=True asks for a fused backend ('compiled' or an extra one), not 'eager'")
        if "beta1" in defaults and "beta2" in defaults:
            if betas is not None:
                defaults["beta1"], defaults["beta2"] = _pair(betas)
            defaults["betas"] = (defaults["beta1"], defaults["beta2"])
        elif betas is not None:
            raise TypeError(f"{type(self).__name__} has no beta1 and beta2 hyperparameters to set with betas")
        defaults["maximize"] = bool(maximize)
        self.backend = "eager" if foreach and backend is None else backend
        self._fused = bool(fused)
        self._fallback = None  # why the automatic choice fell back to eager, if it did
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        """torch's add_param_group, keeping ``betas`` and ``beta1``/``beta2`` in agreement, reading
        torch's tuple spellings (:func:`_spellings_into`), then checking every hyperparameter
        (ValueError with torch's message). A parameter listed twice in the group is a ValueError."""
        if "betas" in self.defaults:
            _betas_into(param_group, self.defaults)
        _spellings_into(param_group, param_group, self._program.spellings)
        params = param_group["params"]
        if not isinstance(params, (torch.Tensor, set)):  # (a set: torch's own TypeError follows)
            param_group["params"] = params = list(params)  # (a generator is read once, as torch reads it)
            if len(set(map(id, params))) < len(params):
                # torch.optim warns and steps such a parameter twice a step ("will cause an error in future")
                raise ValueError(
                    f"{type(self).__name__}: a param group lists the same parameter more than once; "
                    "list each parameter once"
                )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for name in self._program.hyper_names:
            self._program.check_hyper(name, group[name])
        self._remember_betas([len(self.param_groups) - 1])  # as made: an edit before step 1 counts too

    # --- copy, pickle, checkpoints ---
    def __getstate__(self):
        state = super().__getstate__()  # torch keeps defaults, state and param_groups only
        state.update(
            backend=self.backend,
            _fused=self._fused,
            _fallback=self._fallback,
            _betas_seen=dict(self.__dict__.get("_betas_seen", {})),
        )
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("backend", None)
        self.__dict__.setdefault("_fused", False)
        self.__dict__.setdefault("_fallback", None)
        self.__dict__.setdefault("_betas_seen", {})

    def load_state_dict(self, state_dict):
        """torch's load_state_dict, plus: state is copied (stepping never writes into the saved
        tensors), stays in the compute dtype (torch would cast it to the param dtype) and takes its
        shape (a torch.optim checkpoint's row state may carry a trailing 1); a checkpoint of the
        torch.optim optimizer this program is loads through its name map. Any other foreign
        checkpoint raises ValueError here rather than at the next step.

        Hooks act as in torch.optim: those of ``register_load_state_dict_pre_hook`` run first, on a
        shallow copy of the caller's dict, and what they return is what is checked, translated and
        loaded (a hook may rename a foreign checkpoint's states); those of
        ``register_load_state_dict_post_hook`` run last, so that their edits of ``opt.state`` stand."""
        state_dict = state_dict.copy()  # (torch's: a hook may set keys of it, not the caller's)
        for hook in list(self.__dict__.get(_LOAD_HOOKS[0], {}).values()):
            returned = hook(self, state_dict)
            state_dict = state_dict if returned is None else returned
        state_dict = self._translated(state_dict)
        for group in state_dict["param_groups"]:  # (torch's load would keep them, and save them again)
            _check_flags(type(self).__name__, group, loading=True)
            self._program.check_domains(group)
        self._check_loaded_shapes(state_dict)
        current = [dict(group) for group in self.param_groups]
        # torch's load would run the hooks again, the pre-hooks on the translated dict and the post-hooks
        # before the state copied below overwrites their edits: it runs with none registered
        held = {name: self.__dict__[name] for name in _LOAD_HOOKS if name in self.__dict__}
        self.__dict__.update({name: {} for name in held})
        try:
            super().load_state_dict(state_dict)
        finally:
            self.__dict__.update(held)
        self._cached_plan = None
        for group, before in zip(self.param_groups, current):
            for key, value in before.items():
                group.setdefault(key, value)  # older checkpoints lack maximize, betas...
            _spellings_into(group, group, self._program.spellings)  # torch.optim's eps=(eps1, eps2)
            if "betas" in self.defaults:
                _betas_into(group, group)
        self._remember_betas(range(len(self.param_groups)))  # as loaded
        saved = state_dict["state"]
        for saved_group, group in zip(state_dict["param_groups"], self.param_groups):
            for pid, p in zip(saved_group["params"], group["params"]):
                kinds = {name: kind for name, kind, _ in self._program.paths[self._program.path_of(p)].states}
                for key, value in saved.get(pid, {}).items():
                    if key == "step":  # a count of its own: torch would share the saved tensor
                        self.state[p]["step"] = torch.tensor(float(value), dtype=torch.float32, device="cpu")
                    elif key in kinds and _is_state_value(value):
                        value = value.to(device=p.device, dtype=_state_dtype(p.dtype)).clone()
                        shape = _state_shape(kinds[key], tuple(p.shape))  # (checked: 1-axes aside, equal)
                        self.state[p][key] = value.reshape(shape) if tuple(value.shape) != shape else value
        for hook in list(self.__dict__.get(_LOAD_HOOKS[1], {}).values()):
            hook(self)

    def _check_loaded_shapes(self, state_dict):
        """ValueError where a state of ``state_dict`` does not have the shape of the parameter it
        would be loaded for, size-1 axes aside (torch.optim.Adafactor's row state is (rows, 1)): a
        checkpoint of other parameters, or of these listed in another order. (Where the groups'
        sizes differ, torch's load_state_dict says so.)"""
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            return
        prog = self._program
        for gi, (saved_group, group) in enumerate(zip(groups, self.param_groups)):
            for pi, (pid, p) in enumerate(zip(saved_group["params"], group["params"])):
                kinds = {name: kind for name, kind, _ in prog.paths[prog.path_of(p)].states}
                for key, value in state_dict["state"].get(pid, {}).items():
                    if key not in kinds or not _is_state_value(value):
                        continue
                    want = _state_shape(kinds[key], tuple(p.shape))
                    if [d for d in value.shape if d != 1] != [d for d in want if d != 1]:
                        raise ValueError(
                            f"{type(self).__name__}.load_state_dict: state {key!r} of parameter {pi} of "
                            f"param group {gi} has shape {tuple(value.shape)} in the checkpoint, where this "
                            f"optimizer's parameter (shape {tuple(p.shape)}) needs {want}: the checkpoint "
                            "was saved for other parameters, or for these listed in another order"
                        )

    def _translated(self, state_dict):
        """``state_dict`` in this program's names: itself, or a torch.optim checkpoint renamed. A
        param group that records a setting the program's torch.optim declarations require at
        another value (``nesterov=True`` into momentum SGD) is refused, stepped or not."""
        prog = self._program
        for group in state_dict["param_groups"]:
            wrong = [
                (cls, key, want)
                for cls, names in prog.torch_checkpoints.items()
                for key, want in names["requires"].items()
                if key in group and group[key] != want
            ]
            if wrong and len({cls for cls, _, _ in wrong}) == len(prog.torch_checkpoints):
                cls, key, want = wrong[0]
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: the checkpoint's param group has "
                    f"{key}={group[key]!r}; program {prog.name!r} computes torch.optim.{cls} with "
                    f"{key}={want!r} only"
                )
        ours = set(prog.state_names) | {"step"}
        foreign = sorted({k for s in state_dict["state"].values() for k in s} - ours)
        if not foreign:
            return state_dict
        unrecorded = []  # (class, key): the checkpoint has that class's states but not its settings
        for cls, names in prog.torch_checkpoints.items():
            if not set(foreign) <= set(names["states"]):
                continue
            missing = [k for k in names.get("records", ()) for g in state_dict["param_groups"] if k not in g]
            if missing:
                unrecorded.append((cls, missing[0]))
                continue
            state = {}
            for pid, s in state_dict["state"].items():
                mine = {names["states"].get(k, k): v for k, v in s.items() if v is not None}
                if mine and "step" not in mine:  # torch.optim.SGD keeps no step count
                    mine["step"] = torch.tensor(1.0, device="cpu")
                state[pid] = mine
            return {"state": state, "param_groups": state_dict["param_groups"]}  # (hypers: load_state_dict)
        accepted = "".join(f", torch.optim.{cls}" for cls in prog.torch_checkpoints)
        if unrecorded:
            cls, key = unrecorded[0]
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the checkpoint holds state {foreign} but its "
                f"param groups do not record {key!r}, which every torch.optim.{cls} checkpoint does: it is "
                f"another optimizer's with the same state names; it loads checkpoints of "
                f"{type(self).__name__}{accepted}"
            )
        raise ValueError(
            f"{type(self).__name__}.load_state_dict: the checkpoint holds state {foreign}, which program "
            f"{prog.name!r} does not keep (its state: {sorted(ours)}); it loads checkpoints of "
            f"{type(self).__name__}{accepted}"
        )

    # --- the step ---
    def _plan(self):
        """This step's groups of tensors (see _Plan), rebuilt only when the params with grads, their
        storage (so dtype and device), or the state tensors change."""
        groups = [group["params"] for group in self.param_groups]
        grads = [[p.grad for p in params] for params in groups]
        params, flat = list(itertools.chain.from_iterable(groups)), list(itertools.chain.from_iterable(grads))
        # storage and shapes (a new dtype or device is new storage; a view of another shape would not
        # fit the states), which have grads, which are sparse; read in C, as this runs every step
        key = (
            tuple(map(_data_ptr, _locals(params))),
            tuple(map(_shape, params)),
            tuple(map(_is_none, flat)),
            tuple(map(_is_sparse, filter(_is_not_none, flat))),
        )
        plan = self.__dict__.get("_cached_plan")
        if plan is None or plan.key != key or not plan.current(self.state):
            plan = self._cached_plan = _Plan(self, key)
        return plan, grads

    def _backend_for(self, device, numel, step=1):
        """The backend for this step: the one asked for, else the first available of the extra
        backends (on a CPU only ``cpp``, the C++ kernels), ``compiled`` and ``eager``.

        On a CPU a model of fewer than ``_COMPILE_FROM`` elements takes its first ``_KERNELS_AFTER``
        steps on ``eager`` and the rest on ``cpp``, never ``compiled``. Its kernels step such a model in
        0.2-0.7x eager's time, but their first build (0.5-3 s, once per program and machine) pays back
        only over a run about that long; a shorter run (a test, a quick look) never builds them. The
        switch follows the params' own step count (the largest in this step), so it falls on the same
        step in every run and after a resume. A program whose eager step is one multi-tensor op
        (plain SGD) stays on ``eager``, which no kernel call beats on a small model."""
        if self.backend is not None:
            return self.backend
        prog = self._program
        small = device.type == "cpu" and numel < _COMPILE_FROM and not self._fused
        extra = [b for b in prog.backends if not prog.global_names or b in prog.global_backends]
        if device.type == "cpu":  # the cpp kernels, measured faster than compiled (docs/benchmarks.md)
            late = step > _KERNELS_AFTER and not prog.one_op
            names = ["cpp"] if "cpp" in extra and (late or not small) else []
        else:
            names = extra
        names += ["compiled"] if self._fallback is None and not small else []
        names += [] if self._fused else ["eager"]
        for name in names:
            if prog.available(name, device):
                return name
        raise RuntimeError(
            f"fused=True: no fused backend can run on {device} ({self._fallback or 'none available'})"
        )

    def _grads(self, entry, grads):
        """The entry's grads; negated (new tensors) when its group maximizes."""
        gs = entry.grads(grads)
        return torch._foreach_neg(gs) if self.param_groups[entry.group]["maximize"] else gs

    def _values(self, entry):
        group = self.param_groups[entry.group]
        return {**{name: group[name] for name in self._program.hyper_names}, "step": entry.step}

    def _sync_betas(self):
        """A scheduler edits ``betas``, a user may edit ``beta1``: whichever changed since the last
        step (or since the group was made, loaded or copied) is copied to the other (``beta1``/
        ``beta2`` win when both did: they name the program's own hyperparameters). A torch tuple
        spelling set since (Adafactor's ``group["eps"] = (None, 0.5)``, as code written for torch.optim
        edits it) is set into the names it spells."""
        for group in self.param_groups if self._program.spellings else ():
            for name in _spellings_into(group, group, self._program.spellings):
                self._program.check_hyper(name, group[name])
        if "betas" not in self.defaults:
            return
        seen = self.__dict__.setdefault("_betas_seen", {})
        for i, group in enumerate(self.param_groups):
            betas, pair = tuple(group["betas"]), (group["beta1"], group["beta2"])
            if betas != pair:
                if i in seen and seen[i] != pair:
                    group["betas"] = pair
                else:
                    group["beta1"], group["beta2"] = betas
                    for name, value in zip(("beta1", "beta2"), betas):
                        self._program.check_hyper(name, value)
        self._remember_betas(range(len(self.param_groups)))

    def _remember_betas(self, indices):
        """The groups' ``(beta1, beta2)`` as they are now: :meth:`_sync_betas` takes a later change
        of them as the user's edit (and of ``betas`` alone as a scheduler's)."""
        if "betas" not in self.defaults:
            return
        seen = self.__dict__.setdefault("_betas_seen", {})
        for i in indices:
            seen[i] = (self.param_groups[i]["beta1"], self.param_groups[i]["beta2"])

    @torch.no_grad()
    def step(self, closure=None, *, grad_scale=None, found_inf=None):
        """One optimizer step; ``closure`` re-evaluates the model and returns the loss.

        AMP (the fused-optimizer protocol; torch.amp.GradScaler sets ``self.grad_scale`` and
        ``self.found_inf``, which stand in for the arguments): every grad is divided by
        ``grad_scale`` in place, g <- g / grad_scale, and the step is taken; where ``found_inf`` is
        non-zero the grads stay as they are and params, states and step counts keep their values:
        a CPU found_inf is read (a memory load), any other is never read on the host and the step
        is undone on its device instead (:class:`_Undo`).

        Every param group's hyperparameters that declare a domain are checked first
        (:meth:`_Program.check_domains`), as the group may have been edited since (``group["accum_steps"]
        = 0``): ValueError, nothing stepped."""
        for group in self.param_groups if self._program.hyper_domains else ():
            self._program.check_domains(group)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None) if grad_scale is None else grad_scale
        found_inf = getattr(self, "found_inf", None) if found_inf is None else found_inf
        plan, grads = self._plan()  # made (with the states) even for a skipped step, as torch does
        if found_inf is not None and _read_is_free(found_inf):
            if found_inf.item():  # skipped: params, states, step counts and the scaled grads stay
                return loss
            found_inf = None
        undo = None if found_inf is None else _Undo(plan, found_inf)
        if grad_scale is not None:  # a skipped step leaves its grads scaled, as torch's fused ones do
            scale = (
                grad_scale if undo is None else torch.where(undo.skip_on(grad_scale.device), 1.0, grad_scale)
            )
            _unscale(grads, scale)
        for gi, pi in plan.densify:
            grads[gi][pi] = grads[gi][pi].to_dense()
        self._sync_betas()
        self._update(plan, grads)
        if undo is not None:
            undo.apply()
        return loss

    def _update(self, plan, grads):
        """Step every tensor of the plan in place, the step counts included."""
        if plan.sparse:
            self._step_sparse(plan, grads)
        if not plan.entries:
            return
        plan.advance()
        prog = self._program
        whole = [e for e in plan.entries if e.dtensor]
        if whole:
            # DTensor params whose step reduces over the whole tensor (FSDP2) run the per-tensor
            # functions eagerly on the DTensors, where DTensor dispatch takes each norm or mean over
            # the whole tensor (the shards' parts all-reduced). Not the multi-tensor ops (their
            # per-tensor reductions meet sharded tensors in one list) and not torch.compile (the
            # compiled kernel on DTensors crashed the process with SIGSEGV, torch 2.13 CPU).
            self._step_segments(plan if prog.global_names else plan.part(whole), grads, prog.segments)
            plan = plan.part([] if prog.global_names else [e for e in plan.entries if not e.dtensor])
            if not plan.entries:
                return
        device = plan.entries[0].params[0].device
        backend = self._backend_for(device, plan.numel, max(e.step for e in plan.entries))
        if backend == "compiled":
            try:
                self._step_compiled(plan, grads)
            except Exception as e:  # no C++ compiler, unsupported op in inductor...
                if self.backend == "compiled" or self._fused or not _is_compile_error(e):
                    raise
                self._fallback = f"torch.compile failed ({type(e).__name__}: {e})"
                warnings.warn(
                    f"{type(self).__name__}: {self._fallback}; this optimizer runs backend='eager' "
                    "from now on (pass backend='compiled' to raise instead)",
                    RuntimeWarning,
                    stacklevel=5,  # past _update, step, no_grad's and torch.optim's wrappers: the caller
                )
                self._step_eager(plan, grads)
        elif backend == "eager" or (prog.global_names and backend not in prog.global_backends):
            self._step_eager(plan, grads)
        else:
            group_step = prog.backends[backend][0]
            gs = [self._grads(e, grads) for e in plan.entries]
            known = {}
            if prog.global_names:  # computed over every group first, then per-step numbers to the kernels
                known = {name: float(total) for name, total in self._global_totals(plan, gs).items()}
            for e, g in zip(plan.entries, gs):
                values = self._values(e)
                lr = float(values.pop("lr"))
                hyper = {n: float(v) for n, v in values.items() if n != "step"}
                group_step(e.path, e.params, g, e.states, lr=lr, step=e.step, **hyper, **known)

    def _step_eager(self, plan, grads):
        prog = self._program
        if not prog.groups:  # (a global reduction the group steps cannot cut out)
            self._step_segments(plan, grads, prog.segments)
            return
        steps = [
            (e.path, e.params, self._grads(e, grads), e.states, prog.floats(e.path, self._values(e)))
            for e in plan.entries
        ]
        prog.group_steps(steps)

    def _step_compiled(self, plan, grads):
        prog = self._program
        if prog.global_names and "compiled" not in prog.global_backends:
            self._step_segments(plan, grads, prog.compiled_segments())
            return
        gs = [self._grads(e, grads) for e in plan.entries]
        known = {}
        if prog.global_names:  # over every group first (the eager stage), then numbers to each step
            known = self._global_totals(plan, gs)
        for e, egs in zip(plan.entries, gs):
            dtype, device = _compute_dtype(e.params[0].dtype), e.params[0].device
            scalars = prog.scalars(e.path, self._values(e), dtype, device)
            scalars.update({name: total.to(dtype=dtype, device=device) for name, total in known.items()})
            flat, views = e.flat_views(prog)
            kind = e.params[0].dtype
            apply, whole = prog.compiled_apply(e.path, flat, kind), prog.compiled_apply(e.path, False, kind)
            for p, g, (flat_p, flat_states, states) in zip(e.params, egs, views):
                if flat and g.is_contiguous() and e.path not in prog.copied_out:
                    apply(flat_p, _flat(g), flat_states, scalars)
                elif p.dim() == 0 or e.path in prog.copied_out:
                    _step_copied_out(prog, e.path, p, g, states, scalars)
                else:
                    try:
                        whole(p, g, states, scalars)
                    except Exception as error:  # (raised while compiling: nothing was written yet)
                        if not _is_compile_error(error):
                            raise
                        # torch 2.13's inductor raises KeyError 'bufN' on some in-place steps with a row
                        # reduction (C++ outer-loop fusion of a mutated buffer, pytorch#196570); the
                        # step that returns its values compiles, at one more pass over the tensors
                        prog.copied_out.add(e.path)
                        _step_copied_out(prog, e.path, p, g, states, scalars)

    def _global_totals(self, plan, gs):
        """The global reductions' values over every group of the step (grads ``gs``), as 0-d tensors:
        :meth:`_Program.global_totals`, what the fused backends take as per-step numbers."""
        prog = self._program
        groups = [
            (e.path, e.params, g, e.states, prog.floats(e.path, self._values(e)))
            for e, g in zip(plan.entries, gs)
        ]
        return prog.global_totals(groups)

    def _step_segments(self, plan, grads, segments):
        prog = self._program
        envs, paths, members = [], [], []
        for e in plan.entries:
            dtype, device = _compute_dtype(e.params[0].dtype), e.params[0].device
            scalars = prog.scalars(e.path, self._values(e), dtype, device)
            for i, (p, g) in enumerate(zip(e.params, self._grads(e, grads))):
                env = {"w": p.to(dtype), "g": g.to(dtype), **scalars}
                env.update({name: states[i] for name, states in e.states.items()})
                envs.append(env)
                paths.append(e.path)
                members.append((e, i))
        for (e, i), (new_w, new_states) in zip(members, prog.run(envs, paths, segments)):
            e.params[i].copy_(new_w)
            for states, v in zip(e.states.values(), new_states):
                states[i].copy_(v)

    def _step_sparse(self, plan, grads):
        """Sparse-row grads of the paths where that is the whole step (``sparse_paths``: lazy programs,
        plain SGD): gather the touched rows of w and of its full and row states, run the functional
        step on them, and copy the results back; other rows, and their states, stay as they are, as
        the dense step on the densified grad leaves them. (Any other sparse grad is densified.)"""
        prog = self._program
        for gi, pi, p, state in plan.sparse:
            group = self.param_groups[gi]
            g = grads[gi][pi].coalesce()
            if g.sparse_dim() == 1:  # hybrid COO (nn.Embedding): one value row per unique index
                rows, values = g.indices()[0], g.values()
            else:
                rows = g.indices()[0].unique()
                values = g.index_select(0, rows).to_dense()
            if group["maximize"]:
                values = -values
            state["step"] += 1
            names = [name for name, _, _ in prog.paths[prog.path_of(p)].states]
            hyper = {n: group[n] for n in prog.hyper_defaults if n != "lr"}
            new_params, new_states = prog.step(
                [p.index_select(0, rows)],
                [values],
                {n: [state[n].index_select(0, rows)] for n in names},
                lr=group["lr"],
                step=state["step"],
                **hyper,
            )
            p.index_copy_(0, rows, new_params[0])
            for n in names:
                state[n].index_copy_(0, rows, new_states[n][0])


def _spellings_into(source, target, spellings):
    """Take torch.optim's tuple spellings of hyperparameters out of ``source`` into ``target``, the
    names they spell (``spellings``: :attr:`_Program.spellings`, torch.optim.Adafactor's ``eps ->
    (eps1, eps2)``); torch's None ("its default") leaves that name as it is. Returns the names set.
    A group holds the program's names only, so an edit of the spelling is seen.

    Example: ``_spellings_into(g, g, {"eps": ("eps1", "eps2")})`` with ``g = {"eps": (None, 0.5)}``
    leaves ``g == {"eps2": 0.5}``."""
    names = []
    for key, targets in spellings.items():
        if key in source:
            values = tuple(source.pop(key))
            if len(values) != len(targets):
                raise ValueError(f"{key} must be a tuple ({', '.join(targets)}), got {values!r}")
            chosen = {t: v for t, v in zip(targets, values) if v is not None}
            target.update(chosen)
            names += chosen
    return names


def _pair(betas):
    betas = tuple(betas)
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return betas


def _betas_into(group, defaults):
    """Make ``group``'s ``betas`` and ``beta1``/``beta2`` agree, from whichever it sets (``betas``
    when it sets both): a group naming neither is left for the defaults to fill."""
    if "betas" in group:
        group["beta1"], group["beta2"] = _pair(group["betas"])
    elif "beta1" in group or "beta2" in group:
        group["betas"] = (group.get("beta1", defaults["beta1"]), group.get("beta2", defaults["beta2"]))
        group.setdefault("beta1", group["betas"][0])
        group.setdefault("beta2", group["betas"][1])
    if "betas" in group:
        group["betas"] = tuple(group["betas"])


class _Plan:
    """The tensors of a step grouped by (param group, path, device, dtype, step count), in param order.

    Every param keeps its own ``state[p]["step"]`` tensor, as torch optimizers do; an entry's are
    the elements of one tensor, so that one add counts them all (:meth:`_Entry.count_together`).
    The plan holds the state tensors it found and is current while ``opt.state`` still holds
    exactly those (:meth:`current`): a state replaced, deleted or cleared between steps rebuilds it
    (a missing state starts afresh)."""

    def __init__(self, opt, key):
        prog = opt._program
        self.key, self.state = key, opt.state
        entries, self.sparse, self.densify, self.empty, seen, tracked = {}, [], [], [], set(), []
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.is_complex() and not prog.elementwise:
                    why = prog.not_separable or "its step depends on the shape"
                    raise TypeError(
                        f"{type(opt).__name__} (program {prog.name!r}) cannot step the complex "
                        f"{tuple(p.shape)} parameter: a complex number is stepped as its real and imaginary "
                        "parts only by programs of elementwise ops and full states (AdamW, Lion, SGD...), as "
                        f"torch.optim does; this one is not ({why}). "
                        "Train torch.view_as_real of it instead, if that is what you mean."
                    )
                state, path = opt.state[p], prog.path_of(p)
                step = state.get("step")
                if not torch.is_tensor(step) or id(step) in seen:  # a count of its own, as torch keeps it
                    count = 0.0 if step is None else float(step)
                    state["step"] = torch.tensor(count, dtype=torch.float32, device="cpu")
                seen.add(id(state["step"]))
                names = [name for name, _, _ in prog.paths[path].states]
                for name, kind, init in prog.paths[path].states:
                    if name not in state:
                        state[name] = _init_state(kind, init, p)
                    elif _is_state_value(state[name]) and (state[name].dtype, state[name].device) != (
                        _state_dtype(p.dtype),
                        p.device,
                    ):
                        # the param moved since (model.double(), model.to(device)): its states follow, as
                        # load_state_dict places a checkpoint's (torch.optim's step fails on the mix)
                        state[name] = state[name].to(device=p.device, dtype=_state_dtype(p.dtype))
                _check_shapes(opt, gi, pi, p, state, prog.paths[path].states)
                tracked.append((p, state, names))
                if p.grad.is_sparse and path in prog.sparse_paths and not p.is_complex():
                    self.sparse.append((gi, pi, p, state))
                    continue
                if p.grad.is_sparse:  # a step of its rows is not the step: the grad means its dense form
                    self.densify.append((gi, pi))
                if p.numel() == 0:  # nothing to update (a per-tensor max of nothing has no value)
                    self.empty.append(state["step"])
                    continue
                dtensor = _is_dtensor(p) and not _runs_local(prog, p)
                at = (gi, float(state["step"]), path, p.device, p.dtype, dtensor)
                entry = entries.setdefault(at, _Entry(gi, at[1], path, dtensor))
                entry.add(pi, p, state, names)
        self.entries = list(entries.values())
        for e in self.entries:
            e.count_together()
        self.numel = sum(p.numel() for e in self.entries for p in e.params)
        self.held = [(p, state, [(k, state[k]) for k in ("step", *names)]) for p, state, names in tracked]
        # the per-step check (:meth:`current`): opt.state's keys and dicts in order, then the dict,
        # key and tensor of every tensor held, as parallel lists (compared in C, by identity)
        self.keys, self.dicts = list(opt.state), list(opt.state.values())
        slots = [(state, k, t) for _, state, tensors in self.held for k, t in tensors]
        self.slot_dicts = [state for state, _, _ in slots]
        self.slot_keys = [k for _, k, _ in slots]
        self.slot_tensors = [t for _, _, t in slots]

    def part(self, entries):
        """This plan with only ``entries`` (same states, same cache key)."""
        out = object.__new__(_Plan)
        out.__dict__.update(self.__dict__, entries=entries)
        out.numel = sum(p.numel() for e in entries for p in e.params)
        return out

    def current(self, state):
        """Does ``state`` (the optimizer's) still hold the dicts and tensors this plan was built on,
        and do its entries' step counts still agree? (The same keys and dicts in the same order, and
        in each dict the same tensors: identity checks in C, no tensor hashed, as this runs every
        step.)"""
        is_ = operator.is_
        return (
            state is self.state
            and len(state) == len(self.keys)
            and all(map(is_, state, self.keys))
            and all(map(is_, state.values(), self.dicts))
            and all(map(is_, map(dict.get, self.slot_dicts, self.slot_keys), self.slot_tensors))
            and all(e.counts_agree() for e in self.entries)
        )

    def advance(self):
        """Count one more step for every param in the plan (state edited in place is read back)."""
        if self.empty:
            torch._foreach_add_(self.empty, 1.0)
        for e in self.entries:
            e.counters.add_(_ONE)
            e.step = e.steps[0].item()


_ONE = torch.ones((), dtype=torch.float32, device="cpu")  # (add_ of it takes half the time of add_(1.0))


def _check_shapes(opt, gi, pi, p, state, states):
    """RuntimeError where ``p``'s grad or a state of it does not have the shape ``p`` needs (the
    kernels would read and write past their ends): the param was given new data of another shape
    after its state was made, or a state of another shape was set into ``opt.state`` (a checkpoint's
    are checked when loaded). torch.optim fails there too, with a broadcast error; this says which."""
    shape = tuple(p.shape)
    wrong = [("its grad", tuple(p.grad.shape), shape)] if tuple(p.grad.shape) != shape else []
    for name, kind, _ in states:
        want = _state_shape(kind, shape)
        if torch.is_tensor(state[name]) and tuple(state[name].shape) != want:
            wrong.append((f"its state {name!r}", tuple(state[name].shape), want))
    if wrong:
        what, got, want = wrong[0]
        raise RuntimeError(
            f"{type(opt).__name__}.step: the parameter {pi} of param group {gi} has shape {shape} but "
            f"{what} has shape {got} (it needs {want}): the parameter changed shape after its state was "
            "made, or a state of another shape was set; del opt.state[param] starts its state afresh"
        )


def _read_is_free(t):
    """Reading a CPU tensor is a load from memory, not a wait for a device: there a skipped AMP step
    is decided on the host and costs nothing (:class:`_Undo` is for accelerators)."""
    return t.device.type == "cpu"


class _Undo:
    """Undo a step where ``found_inf`` is non-zero, on the device (no host sync), as torch's fused
    optimizers skip it: every tensor the step may write (params, states, step counts; a DTensor's
    local shard) is copied before the step, and afterwards t <- where(found_inf != 0, copy, t).
    The cost, a copy and a masked write of params and states per AMP step (60 bytes a parameter
    for AdamW, whose own step moves 28), buys one mechanism for every backend on an accelerator (a
    CPU found_inf is simply read); a mask inside each fused kernel, as torch's fused optimizers take
    found_inf, would cost nothing.
    The step counts live on the CPU (as torch.optim keeps them, and the step's scalars are computed
    from them there), so with a found_inf on a GPU they take one blocking copy of it per step."""

    def __init__(self, plan, found_inf):
        self.found_inf, self._skip = found_inf, {}
        self.tensors = [_local(t) for p, _, held in plan.held for t in (p, *(t for _, t in held))]
        self.saved = [t.clone() for t in self.tensors]

    def skip_on(self, device):
        """``found_inf != 0`` on ``device``, copied there once a step (the grads' unscaling reads it
        too). Blocking: a non_blocking copy to the CPU could be read before it lands."""
        if device not in self._skip:
            self._skip[device] = self.found_inf.to(device) != 0
        return self._skip[device]

    def apply(self):
        for t, saved in zip(self.tensors, self.saved):
            torch.where(self.skip_on(t.device), saved, t, out=t)  # in place: one pass, no new tensor


class _Entry:
    """One group of a _Plan: indices into the param group, params, step counters, state lists by name.

    ``dtensor``: the params are DTensors whose step must see whole tensors (see :func:`_runs_local`),
    kept as DTensors. Any other DTensor param is held as its local shard, its states and grad too."""

    def __init__(self, group, step, path, dtensor=False):
        self.group, self.step, self.path, self.dtensor = group, step, path, dtensor
        self.index, self.params, self.steps, self.states, self._views = [], [], [], {}, None
        self.dicts = []  # the params' state dicts
        self.complex = False  # (one dtype per entry: all its params are complex or none)

    def add(self, i, p, state, names):
        shard = (lambda t: t) if self.dtensor else _local
        self.complex = p.is_complex()
        self.index.append(i)
        self.params.append(_real(shard(p)))
        self.steps.append(state["step"])
        self.dicts.append(state)
        for name in names:
            self.states.setdefault(name, []).append(_real(shard(state[name])))

    def count_together(self):
        """``counters``: one CPU float32 tensor whose ``add_(1)`` counts a step for every param, its
        elements the params' own step tensors. Where they are not yet elements of one such tensor,
        they become so (their values copied; each ``state[p]["step"]`` a 0-d view of its own), as
        torch keeps its counts, on the CPU in float32: a multi-tensor add over 0-d tensors costs
        ~2 us for each."""
        first, n = self.steps[0], len(self.steps)
        where = [(t.dim(), t.untyped_storage().data_ptr(), t.storage_offset()) for t in self.steps]
        elements = [(0, where[0][1], where[0][2] + i) for i in range(n)]  # one 0-d element after another
        if first.device.type == "cpu" and first.dtype == torch.float32 and where == elements:
            self.counters = first.as_strided((n,), (1,))
            return
        self.counters = torch.stack([t.detach().to("cpu", torch.float32) for t in self.steps])
        self.steps = list(self.counters.unbind())
        for state, t in zip(self.dicts, self.steps):
            state["step"] = t

    def counts_agree(self):
        """Do the params' step counts all still read the entry's one count? (A user may reset one
        in place, ``state["step"].zero_()``, with its moments.)"""
        counts = self.counters.tolist()
        return counts.count(self.step) == len(counts)

    def grads(self, grads):
        gs = grads[self.group]
        gs = [gs[i] for i in self.index] if len(gs) != len(self.index) else gs
        gs = gs if self.dtensor else _locals(gs)
        return [_real(g) for g in gs] if self.complex else gs

    def flat_views(self, prog):
        """(flat?, [(param view, state views, states)]): aliases for the compiled step, made once;
        the views are 1-d (None where the path is not flat)."""
        if self._views is None:
            states = list(self.states.values())
            tensors = [*self.params, *itertools.chain(*states)]
            flat = prog.paths[self.path].flat and all(t.is_contiguous() for t in tensors)
            # A 0-d state of a parameter with axes (one number per tensor) is handed over as one
            # element, which the step's number broadcasts to: torch.compile (2.13, CPU) drops a
            # copy_ into a 0-d float64 input (Amos's v and b stayed 0 in float64). A 0-d
            # parameter's step returns its values instead (see _step_compiled): its states stay 0-d.
            views = [
                (
                    _flat(p) if flat else None,
                    [_flat(s) for s in ss] if flat else None,
                    [_flat(s) if s.dim() == 0 and p.dim() else s for s in ss],
                )
                for p, ss in zip(self.params, zip(*states) if states else [()] * len(self.params))
            ]
            self._views = (flat, views)
        return self._views


# --- optdsl runtime: end
