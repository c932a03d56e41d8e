"""The JIT engine: runs the compiled generation loop (the run stage of the vocoder).

Same interface as reference.vocoder.ReferenceEngine: ``generate(K, t0, n, state, seed)`` and
``teacher_forced(K, audio)``. The model is planned (plan.vocoder: a kernel per matrix) once per
(model, dtype, CPU generation); both run the WaveRNN step written in the cell language
(jitvoc.cells.wavernn, and wavernn_teacher with the true samples as inputs), scheduled for those
kernels (plan.vocoder.vocoder_cell), emitted (emit.cell), compiled and cached (jit). Each is a
module of its own: the sampling cell is compiled with the matrix cores, the teacher-forced one
at its first use. An engine of B > 1 streams (vectors) compiles the sampling cell for B streams
(emit.cell's streams mode, B-vector kernels): generate_batch.

The plan and the arrays the loop reads (packed weights, index arrays, scales) are cached too,
beside the compiled code (jitvoc.cache: an entry is used only if it verifies), keyed by the
model's fingerprint (arrays and meta), the dtype, the generation, the compiler version and the
code that plans and packs: planning and packing took 75 ms of a 120 ms `jitvoc.load` of the
shipped model (int8). The entry is a pickle (jitvoc.sparsepickle: the plan's dense copies of
the pruned matrices as their non-zeros); the cache already holds machine code that this
process runs, under the same checks (owner, mode, digests of key and payload). The plan is
pickled apart in the entry, unpickled at its first use (JitEngine.plan), and beside it lies the
loop's CompiledCell (what its calls need of the schedule, and the emitter's names): an engine
whose plan and code are cached imports no module of the plan and emit stages (nor the cell
language) and schedules no cell; those are imported where code is built (the builders given to
jit.load_parts, called on a miss), and jit's cache keys hash their sources as before (imports
are read from the source, wherever they stand: jit.code_closure).
"""
from __future__ import annotations

import functools
import hashlib
import sys
import threading
from dataclasses import dataclass

import numpy as np

from . import cpu as cpu_mod
from . import cache, config, jit, native, sparsepickle
from .contracts import CELL_RUN, CELL_RUN_STREAMS, MATRIX_ARRAYS, PointerTable
from .engine import MAX_STREAMS, GenState
from .errors import InputError
from .layout import aligned, padded
from .wavernn import BY_NAME, MATRICES


RELU_READERS = tuple(m.name for m in MATRICES if not m.reads_state)   # O2, O4


def calibration_of(model) -> dict | None:
    """max |input| of the matrices that read relu outputs (O2 and O4), from the model's
    calibration (meta quantization.activation_ranges), or None if it lacks any."""
    q = model.meta.get("quantization", {}).get("activation_ranges", {})
    if not all(m in q for m in RELU_READERS):
        return None
    return {m: float(q[m]["max"]) for m in RELU_READERS}


def activation_ranges(model) -> dict:
    """The model's calibration, which the planner needs for the fixed-point formats of O2 and
    O4 in the integer dtypes; a clear error if it has none."""
    ranges = calibration_of(model)
    if ranges is None:
        raise InputError("the model has no calibration (meta quantization.activation_ranges "
                         "for out.O2 and out.O4), which the integer dtypes need: calibrate it "
                         "first (jitvoc.calibrate(model), once; save the result to keep it), "
                         "or load it with dtype='float32'")
    return ranges


def _announce(names) -> None:
    modules = f"{len(names)} module" + ("s" if len(names) != 1 else "")
    print(f"jitvoc: compiling the vocoder for this CPU ({modules}, first run only; "
          f"cached in {config.cache_dir()})...", file=sys.stderr, flush=True)


def planned(model, dtype, gen, precision=None, vectors=1) -> tuple:
    """(VocoderPlan, the arrays behind `params` by name) for the engine: from the cache when an
    entry for exactly this model, dtype, generation, precision, B, compiler and code verifies,
    else planned and packed here (and stored)."""
    _, plan, _, pack, _ = plan_and_packer(model, dtype, gen, precision, vectors)
    return plan(), pack()


def plan_and_packer(model, dtype, gen, precision=None, vectors=1) -> tuple:
    """planned, deferred, with the loop: (the plan's name, a function returning the
    VocoderPlan, the CompiledCell of its loop, a function returning the arrays, a function
    returning the loop's schedule, vocoder_cell(plan)). On a cache miss the plan and the
    loop's schedule are made at once and the arrays' function packs them and stores the entry,
    so that JitEngine packs while its code compiles. On a hit the plan is unpickled (importing
    the plan stage's modules for its classes) and the schedule made only if asked for: a warm
    engine needs the plan's name and arrays alone."""
    key = "\0".join(["vocoder-plan", model.fingerprint, dtype,
                     repr(sorted((precision or {}).items())), str(vectors), gen.name, gen.llvm_cpu, gen.llvm_features,
                     config.compiler_version(), jit.code_fingerprint(__name__)]).encode()
    entry = f"plan-{hashlib.sha256(key).hexdigest()[:20]}.pkl"
    payload = cache.read(entry, key)
    if payload is not None:
        name, pickled_plan, cell, arrays = sparsepickle.loads(payload)
        plan = functools.cache(lambda: sparsepickle.loads(pickled_plan))
        if config.debug_level() >= 1:
            from .plan.vocoder import describe
            config.debug(1, f"{describe(plan())} (cached)")
        return (name, plan, cell, lambda: {k: aligned(a) for k, a in arrays.items()},
                functools.cache(lambda: _vocoder_cell(plan())))
    from .plan.vocoder import describe, plan_vocoder
    # the calibration only here (model.meta is a deep copy): an entry for an integer dtype
    # exists only for a model whose meta, in the key, has one
    ranges = None if dtype == "float32" else activation_ranges(model)
    made = plan_vocoder(model, dtype, gen, ranges, precision, vectors)
    config.debug(1, describe(made))
    schedule = _vocoder_cell(made)
    cell = compiled_cell(*schedule)

    def pack():
        arrays = param_arrays(made, model.weights)
        cache.write(entry, key, sparsepickle.dumps((made.name, sparsepickle.dumps(made), cell,
                                                    arrays)))
        return arrays
    return made.name, lambda: made, cell, pack, lambda: schedule


def _vocoder_cell(plan, teacher: bool = False) -> tuple:
    """plan.vocoder.vocoder_cell, imported when a cell is scheduled (a module to compile)."""
    from .plan.vocoder import vocoder_cell
    return vocoder_cell(plan, teacher)


@dataclass(frozen=True, eq=False)
class CompiledCell:
    """What the calls of a compiled cell need of its schedule (plan.cell.CellPlan) and of the
    emitter's names, as plain data, cached with the vocoder's plan: a warm engine neither
    schedules the cell nor imports the emit stage (jitvoc.emit), which only a module to compile
    needs."""
    loop: str       # the loop's name (emit.cell.loop_name): its entry point's prefix
    products: tuple   # (label, matrix, its core's symbol, epilogue with a bias) per in-loop product
    params: PointerTable   # the loop's pointer table
    outputs: tuple  # (name, floats per step, NumPy dtype, shape) per output of the cell
    states: tuple   # (name, floats, NumPy dtype) per state of the cell
    scratch: int    # floats of scratch

    @property
    def cores(self) -> tuple:
        """The cores' symbols, one module each (emit.cell.core_modules), in its order."""
        return tuple(dict.fromkeys(core for _, _, core, _ in self.products))


def compiled_cell(schedule, kernels: dict) -> CompiledCell:
    """The CompiledCell of a schedule (CellPlan) and its in-loop products' kernels (label -> the
    planner's Plan)."""
    from .cells import INDEX
    from .plan.cell import size_of
    emit_cell = _emit_cell()

    def dtype(node):
        return {INDEX: np.int32, "float32": np.float32}[node.dtype]
    return CompiledCell(
        loop=emit_cell.loop_name(schedule, kernels),
        products=tuple((p.label, p.weights[0],
                        emit_cell.core_symbol(schedule, p.label, kernels[p.label].spec),
                        p.label in schedule.epilogues) for p in schedule.products),
        params=schedule.params,
        outputs=tuple((name, size_of(node), dtype(node), node.shape)
                      for name, node in schedule.cell.outputs.items()),
        states=tuple((name, size_of(node), dtype(node))
                     for name, node in schedule.cell.states.items()),
        scratch=schedule.scratch)


def _emit_cell():
    """jitvoc.emit.cell, imported where code is emitted or named: on a cache miss only."""
    from .emit import cell
    return cell


def _core(schedule, symbol: str, gen):
    """The module of core `symbol` of the loop of `schedule()` (emit.cell.core_modules)."""
    return dict(_emit_cell().core_modules(*schedule(), gen))[symbol]()


def param_arrays(plan, weights) -> dict:
    """The arrays the compiled cell reads (cell_addresses), by name (kept alive by the
    engine)."""
    from .plan.matvec import kernel_index
    from .quant import zero_correction
    out = {}
    for name, p_plan in plan.plans.items():
        p = p_plan.packed
        fmt = plan.formats.get(name)
        zc = (zero_correction(p_plan.w_codes, fmt) if fmt is not None and fmt.zero_point
              else np.zeros(p.rows, np.int32))
        arrays = {"W": p.weights, "index": kernel_index(p_plan),
                  "panel_ptr": p.panel_ptr,
                  "row_scale": padded(p_plan.row_scale, p.rows_padded, np.float32),
                  "zcorr": padded(zc, p.rows_padded, np.int32)}
        out |= {f"{name}.{a}": aligned(arrays[a]) for a in MATRIX_ARRAYS}
        # the bias its epilogue reads, padded like its rows (B copies: SPMV_VECTORS's core)
        bias = padded(weights[BY_NAME[name].bias], p.rows_padded, np.float32)
        out[BY_NAME[name].bias] = np.tile(bias, plan.vectors)
    I = weights["gru.I"]
    out |= {f"gru.I{j}": aligned(I[:, j], np.float32) for j in range(3)}
    return out


def cell_addresses(cell: CompiledCell, arrays: dict, lib) -> dict:
    """The compiled cell's params (plan.cell) that stay the same between calls: per in-loop
    product its matrix's arrays (param_arrays) and core (in `lib`) and its epilogue's bias,
    the vector weights and the columns of gru.I."""
    out = {f"weight.{m.bias}": arrays[m.bias].ctypes.data for m in MATRICES}
    out |= {f"column.gru.I.{j}": arrays[f"gru.I{j}"].ctypes.data for j in range(3)}
    for label, m, core, bias in cell.products:
        out |= {f"{label}.{a}": arrays[f"{m}.{a}"].ctypes.data for a in MATRIX_ARRAYS}
        out[f"{label}.core"] = lib.address(core)
        if bias:
            out[f"{label}.bias"] = arrays[BY_NAME[m].bias].ctypes.data
    return out


_SCALE, _LOW, _HIGH = np.float32(32768), np.float32(-32768), np.float32(32767)


def to_int16(value: np.ndarray) -> np.ndarray:
    """clip(rint(value · 32768), −32768, 32767) as int16 (docs/model.md), value overwritten:
    four ufunc calls (np.clip, a Python function around its ufunc, costs more on short calls)."""
    x = np.multiply(value, _SCALE, out=value)
    np.minimum(x, _HIGH, out=x)
    np.maximum(x, _LOW, out=x)
    return np.rint(x, out=np.empty(len(x), np.int16), casting="unsafe")


class JitEngine:
    """The compiled WaveRNN loop for one model, dtype and CPU generation; with `vectors` B > 1,
    the loop of B streams (emit.cell's streams mode): generate_batch only."""
    backend = "jit"

    def __init__(self, model, cpu=None, dtype="int8", precision=None, vectors=1,
                 quick_start=False):
        """`quick_start`: where the loop is not cached, it first runs code compiled without
        LLVM's optimisation pipeline (about half its compile, so a first run starts sooner;
        int8 1.6% slower) while a worker compiles and caches the optimised loop, which
        replaces it between calls once stored (jit.load_parts(quick=True)); the same
        samples."""
        if not (isinstance(vectors, int) and 1 <= vectors <= MAX_STREAMS):
            raise InputError(f"vectors (streams per batch) must be an int from 1 to "
                             f"{MAX_STREAMS}, got {vectors!r}")
        gen = cpu_mod.resolve(cpu)
        cpu_mod.require_runnable(gen)
        self.model, self.dtype, self.cpu, self.gen = model, dtype, gen.name, gen
        self.vectors = vectors
        self.hop, self.k_width = model.hop_length, 3 * model.hidden   # read per call
        self.name, self._plan, cell, pack, schedule = plan_and_packer(model, dtype, gen,
                                                                      precision, vectors)
        if config.debug_level() >= 1:
            from .plan import cell as plan_cell
            config.debug(1, plan_cell.describe(schedule()[0], {
                k: [p.spec.name] for k, p in schedule()[1].items()}))
        loop = (f"{self.name}_generate",
                lambda: _emit_cell().build(*schedule(), gen, vectors))
        cores = [(core, lambda core=core: _core(schedule, core, gen)) for core in cell.cores]
        # the loop first: the longest compile (its IR built before the cores'); packing meanwhile
        self._lib = jit.load_parts([loop, *cores], gen, announce=_announce,
                                   meanwhile=lambda: setattr(self, "_arrays", pack()),
                                   quick=quick_start)
        self._cell = cell
        self._generate = self._compiled(cell, self._lib)
        self._teacher = self._teacher_lib = None   # compiled at first use (teacher_forced)

    def _compiled(self, cell: CompiledCell, lib) -> "_Calls":
        """Calls of the cell compiled in `lib` (its cores in self._lib)."""
        entry = CELL_RUN_STREAMS if self.vectors > 1 else CELL_RUN
        run = native.function(lib.address(entry.symbol(cell.loop)), entry)
        return _Calls(cell, run, cell_addresses(cell, self._arrays, self._lib),
                      self.model.hop_length)

    def _upgrade(self) -> None:
        """The optimised loop's calls, once a quick start's worker stored it (quick_start)."""
        if self._lib.upgrade():
            self._generate = self._compiled(self._cell, self._lib)

    @property
    def plan(self):
        """The VocoderPlan (plan.vocoder), unpickled from the cache at its first use."""
        return self._plan()

    def __repr__(self):
        return f"<JitEngine {self.name} on {self.cpu}>"

    def _single_stream(self, what: str) -> None:
        if self.vectors > 1:
            raise InputError(f"{what} runs on a single-stream engine; this one is batched "
                             f"(vectors = {self.vectors}): use generate_batch")

    def _check_k(self, K, n_samples) -> np.ndarray:
        H3, hop = self.k_width, self.hop
        if not (isinstance(K, np.ndarray) and K.dtype == np.float32 and K.ndim == 2
                and K.shape[1] == H3):
            raise InputError(f"K must be float32 [rows, {H3}], got "
                             f"{getattr(K, 'dtype', type(K).__name__)} {np.shape(K)}")
        rows = (n_samples - 1) // hop + 2 if n_samples else 0
        if len(K) < rows:
            raise InputError(f"{n_samples} samples need {rows} rows of K, got {len(K)}")
        if not np.isfinite(K[:rows]).all():
            raise InputError("conditioning K holds NaN or infinite values")
        return np.ascontiguousarray(K)

    def generate(self, K, t0, n_samples, state: GenState, seed) -> np.ndarray:
        """int16 samples t0 .. t0 + n_samples − 1; `state` is advanced in place."""
        self._single_stream("generate")
        hop = self.hop
        if t0 < 0 or t0 % hop:
            raise InputError(f"t0 = {t0} is not a non-negative multiple of hop {hop}")
        if state.t != t0:
            raise InputError(f"state is at sample {state.t}, not at t0 = {t0}")
        state.check_filters()
        if n_samples < 0:
            raise InputError(f"n_samples must be non-negative, got {n_samples}")
        K = self._check_k(K, n_samples)
        self._upgrade()
        out, end = self._generate(K, n_samples, cell_states(state), t0=t0, seed=seed,
                                  wanted=("value",))
        advance(state, end, n_samples)
        return to_int16(out["value"])

    def teacher_forced(self, K, audio) -> np.ndarray:
        """P(c_t), P(f_t) given the true samples, encoded with the model's representation:
        float32 [T, 2, 256] (K starts at sample 0)."""
        self._single_stream("teacher_forced")
        audio = np.asarray(audio)
        if audio.dtype != np.int16 or audio.ndim != 1 or audio.size == 0:
            raise InputError(f"audio must be non-empty 1-D int16, got {audio.dtype} {audio.shape}")
        K = self._check_k(K, len(audio))
        c, f = self.model.representation.encode(audio)
        classes = {"c": np.concatenate([[128], c[:-1]]), "f": np.concatenate([[0], f[:-1]]),
                   "c_t": c}
        out, _ = self._teacher_cell()(K, len(audio), {"h": 0.0}, classes, wanted=("p",),
                                      own=True)
        return out["p"].reshape(len(audio), 2, 256)

    def _teacher_cell(self) -> "_Calls":
        """The teacher-forced cell (plan.vocoder.vocoder_cell(teacher=True)), compiled (or read
        from the cache) on first use, a module of its own (it calls the sampling cell's cores):
        a first synthesis compiles only the sampling loop."""
        if self._teacher is None:
            schedule = _vocoder_cell(self.plan, teacher=True)
            lib = jit.load_parts([(f"{self.name}_teacher",
                                   lambda: _emit_cell().build(*schedule, self.gen))],
                                 self.gen, announce=_announce)
            self._teacher_lib = lib   # its machine code lives as long as the engine
            self._teacher = self._compiled(compiled_cell(*schedule), lib)
        return self._teacher

    def generate_batch(self, Ks, lengths, states, seeds) -> list:
        """int16 samples of up to B streams stepped together (a batched engine): stream j
        generates lengths[j] samples from states[j] (advanced in place; every state at the same
        sample t0, a multiple of hop) with its own K (as `generate`'s) and seed. Stream j's
        samples are those `generate(Ks[j], t0, lengths[j], states[j], seeds[j])` returns."""
        if self.vectors == 1:
            raise InputError("generate_batch needs an engine built with vectors > 1")
        n_streams = len(states)
        if not (1 <= n_streams <= self.vectors and len(Ks) == len(lengths) == len(seeds)
                == n_streams):
            raise InputError(f"generate_batch takes 1 to {self.vectors} streams and one K, "
                             f"length and seed each, got {len(Ks)} K, {len(lengths)} lengths, "
                             f"{n_streams} states, {len(seeds)} seeds")
        t0 = states[0].t
        if t0 % self.hop or any(st.t != t0 for st in states):
            raise InputError(f"the streams of a batch start together at a multiple of the hop, "
                             f"got samples {[st.t for st in states]}")
        for st, n in zip(states, lengths):
            st.check_filters()
            if n < 0:
                raise InputError(f"lengths must be non-negative, got {n}")
        Ks = [self._check_k(K, n) for K, n in zip(Ks, lengths)]
        self._upgrade()
        pad = self.vectors - n_streams   # idle streams: length 0, never written back
        given = [cell_states(st) for st in states]
        lens = np.array(list(lengths) + [0] * pad, np.int64)
        ran = self._generate.streams(Ks + Ks[:1] * pad, lens, given + given[:1] * pad, t0,
                                     list(seeds) + [0] * pad)
        out = []
        for j, st in enumerate(states):
            values, end = ran[j]
            advance(st, end, lengths[j])
            out.append(to_int16(values[:lengths[j]]))
        return out


def cell_states(state: GenState) -> dict:
    """A GenState as the WaveRNN cell's states, by name (cells.wavernn)."""
    return {"h": state.h, "c": state.c_prev, "f": state.f_prev, "s": state.s_prev,
            "y": state.y_prev}


def advance(state: GenState, end: dict, n: int) -> None:
    """`state` set to the cell's states `end` after n more samples."""
    state.h, state.c_prev, state.f_prev = end["h"], end["c"], end["f"]
    state.s_prev, state.y_prev, state.t = end["s"], end["y"], state.t + n


ROWS_KEPT = 1 << 15   # samples whose rows of K a _Calls keeps (read only, shared by threads)
OUTPUTS_KEPT = 1 << 16   # bytes of outputs a thread's _Frame keeps (a call of more allocates)


def k_rows(n: int, hop: int) -> np.ndarray:
    """The rows that samples 0 .. n − 1 read, int64 [4, n]: of K_f and K_f+1 (i // hop,
    i // hop + 1), of alpha's table (i mod hop), of the class inputs (i)."""
    i = np.arange(n, dtype=np.int64)
    return np.stack([i // hop, i // hop + 1, i % hop, i])


class _Calls:
    """The calls of one compiled vocoder cell (plan.cell's params): per thread a _Frame (the
    arrays that keep their size between calls, the outputs of a short call, the pointer table:
    made once); per call the conditioning K read in place (k0 = K_f, k1 = K_f+1 at rows
    i // hop and i // hop + 1, alpha at row i mod hop, or k = K_f) and the classes (int32
    inputs, row i), their addresses written into the thread's table (cffi, no copies)."""

    ROW_OF = {"k0": 0, "k": 0, "k1": 1, "alpha": 2}   # k_rows' row of an input; classes: 3

    def __init__(self, cell: CompiledCell, run, fixed: dict, hop: int):
        self.cell, self.run, self.fixed, self.hop = cell, run, fixed, hop
        self.rows, self.rows_kept = k_rows(ROWS_KEPT, hop), ROWS_KEPT
        names = cell.params.names
        self.k_slots = [cell.params.slot(f"input.{k}") for k in ("k0", "k1", "k")
                        if f"input.{k}" in names]
        self.outputs, offset = [], 0   # (name, params slot, offset per step, size, dtype, shape)
        for name, size, dtype, shape in cell.outputs:
            self.outputs.append((name, cell.params.slot(f"output.{name}"), offset, size, dtype,
                                 shape))
            offset += size
        self.width = offset
        self.local = threading.local()

    def __call__(self, K, n: int, states: dict, classes=None, t0: int = 0, seed=0,
                 wanted=(), own=False) -> tuple:
        """(the outputs named in `wanted`, by name [n, *shape], the states after the call by
        name: vectors as copies, scalars as numbers) from `states` (values by name; a number
        fills a vector) and `classes` (int32 inputs by name, [n]); K C-contiguous. The outputs
        of a short call are this thread's arrays until its next call, unless `own` (then
        copies)."""
        frame = getattr(self.local, "frame", None) or self._frame()
        rows = self.rows if n <= self.rows_kept else k_rows(n, self.hop)   # alive until run
        views = self._ready(frame, K, n, states, t0, seed, rows)
        inputs = frame.point_inputs(n, classes) if classes else None   # alive until run
        if n:
            self.run(n, frame.table)
        del inputs
        outputs = {}
        for name in wanted:
            outputs[name] = views[name].copy() if own and n <= frame.kept else views[name]
        return outputs, frame.get(states)

    def streams(self, Ks, lens: np.ndarray, states: list, t0: int, seeds: list) -> list:
        """A call of the cell compiled for B streams (CELL_RUN_STREAMS): stream v from
        states[v] with its own K, seed and number of steps lens[v] (int64 [B]); per stream
        (its output "value" [lens[v]], its states after the call, as __call__'s)."""
        frames = getattr(self.local, "frames", None) or self._frames(len(Ks))
        n = int(lens.max())
        rows = self.rows if n <= self.rows_kept else k_rows(n, self.hop)   # alive until run
        views = [self._ready(frame, K, n, st, t0, seed, rows)
                 for frame, K, st, seed in zip(frames, Ks, states, seeds)]
        if n:
            self.run(n, native.ptr(lens), native.ffi.new("void *[]", [f.table for f in frames]))
        return [(v["value"][:m], frame.get(st))
                for v, frame, st, m in zip(views, frames, states, lens.tolist())]

    def _ready(self, frame, K, n: int, states: dict, t0: int, seed, rows) -> dict:
        """`frame` ready for a call of n steps from `states` with K, t0 and seed (rows: k_rows
        of at least n); the views of its outputs by name."""
        frame.put(states)
        if frame.counter is not None:
            frame.counter[0], frame.counter[1] = t0, int(seed) & 0xFFFFFFFF
        k = native.ffi.from_buffer(K)
        for slot in self.k_slots:
            frame.pointers[slot] = k
        if rows is not frame.rows:
            frame.point_rows(rows, rows is self.rows)
        if n <= frame.kept:
            if frame.outputs_at is not frame.buffer:
                frame.point_outputs(frame.buffer, frame.kept, self.outputs)
            return {name: view[:n] for name, view in frame.views.items()}
        buffer = np.empty(n * self.width, np.float32)
        frame.point_outputs(buffer, n, self.outputs)
        return output_views(buffer, n, self.outputs)

    def _frames(self, count: int) -> list:
        """This thread's `count` _Frames of a cell of streams, made (at its first call)."""
        self.local.frames = [self._new_frame() for _ in range(count)]
        return self.local.frames

    def _frame(self) -> "_Frame":
        """This thread's _Frame, made (at its first call)."""
        frame = self.local.frame = self._new_frame()
        return frame

    def _new_frame(self) -> "_Frame":
        return _Frame(self.cell, self.fixed, self.hop, self.ROW_OF, self.outputs,
                      OUTPUTS_KEPT // (4 * self.width))


def output_views(buffer: np.ndarray, steps: int, outputs) -> dict:
    """The outputs (_Calls.outputs) laid out in `buffer` for `steps` steps, by name."""
    views = {}
    for name, _, offset, size, dtype, shape in outputs:
        view = buffer[steps * offset:steps * (offset + size)].view(dtype)
        views[name] = view.reshape((steps, *shape)) if shape else view
    return views


class _Frame:
    """One thread's arrays of a compiled cell (the states and their second buffers, scratch,
    the generator's counter, alpha's table: one frame's (j / hop); the outputs of calls of up
    to `kept` steps), its pointer table (the fixed addresses and these; cffi, written in place
    per call) and typed pointers to its scalar states and counter."""

    def __init__(self, cell: CompiledCell, fixed: dict, hop: int, row_of: dict, outputs,
                 kept: int):
        params, names = cell.params, cell.params.names
        arrays = {"scratch": np.empty(cell.scratch, np.float32),
                  "counter": np.zeros(2, np.int64),
                  "input.alpha": np.arange(hop, dtype=np.float32) / np.float32(hop)}
        for name, size, dtype in cell.states:
            for kind in ("state", "next"):
                arrays[f"{kind}.{name}"] = np.zeros(size, dtype)
        self.arrays = {k: v for k, v in arrays.items() if k in names}
        addresses = fixed | {k: v.ctypes.data for k, v in self.arrays.items()}
        self.table = native.ffi.new("uint64_t[]", params.pack(
            addresses | {k: 0 for k in names if k not in addresses}).tolist())
        self.pointers = native.ffi.cast("void **", self.table)
        self.counter = self._typed("counter", "int64_t *")
        self.vectors, self.scalars = {}, {}
        for name, size, dtype in cell.states:
            if size == 1:
                kind = "int32_t *" if dtype == np.int32 else "float *"
                self.scalars[name] = self._typed(f"state.{name}", kind)
            else:
                self.vectors[name] = self.arrays[f"state.{name}"]
        self.row_slots = [(params.slot(k), row_of.get(k[len("rows."):], 3)) for k in names
                          if k.startswith("rows.")]
        self.input_slots = {k[len("input."):]: params.slot(k) for k in names
                            if k.startswith("input.") and k not in addresses}
        self.rows = self.outputs_at = None   # what the table points at
        # the outputs (_Calls.outputs) of calls of up to `kept` steps
        self.kept, self.buffer = kept, np.empty(kept * sum(o[3] for o in outputs), np.float32)
        self.views = output_views(self.buffer, kept, outputs)

    def point_rows(self, rows: np.ndarray, kept: bool) -> None:
        """The table's rows (k_rows) at `rows`; `kept`: the shared ones (else a call's own, not
        kept after it)."""
        at, stride = native.ffi.from_buffer(rows), rows.strides[0]
        for slot, row in self.row_slots:
            self.pointers[slot] = at + row * stride
        self.rows = rows if kept else None

    def point_outputs(self, buffer: np.ndarray, steps: int, outputs) -> None:
        """The table's outputs (_Calls.outputs) in `buffer`, laid out for `steps` steps."""
        at = native.ffi.from_buffer(buffer)
        for _, slot, offset, *_ in outputs:
            self.pointers[slot] = at + 4 * steps * offset
        self.outputs_at = buffer if buffer is self.buffer else None

    def point_inputs(self, n: int, classes: dict) -> np.ndarray:
        """The class inputs [len(classes), n] int32, their addresses in the table."""
        inputs = np.array(list(classes.values()), np.int32).reshape(len(classes), n)
        at = native.ffi.from_buffer(inputs)
        for j, name in enumerate(classes):
            self.pointers[self.input_slots[name]] = at + j * inputs.strides[0]
        return inputs

    def _typed(self, key: str, kind: str):
        """A cffi `kind` pointer to array `key` (None if the cell has none)."""
        array = self.arrays.get(key)
        return None if array is None else native.ffi.cast(kind, array.ctypes.data)

    def put(self, states: dict) -> None:
        """The states' values (by name) into this frame."""
        for name, value in states.items():
            if name in self.scalars:
                self.scalars[name][0] = value
            else:
                self.vectors[name][...] = value

    def get(self, names) -> dict:
        """The states `names` of this frame: vectors copied, scalars as numbers."""
        out = {}   # a loop, not a comprehension: one call frame less (0.2 µs on Python 3.11)
        for name in names:
            out[name] = self.scalars[name][0] if name in self.scalars else self.vectors[name].copy()
        return out
