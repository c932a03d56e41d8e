"""Compiled cells (the run stage): jitvoc.compile_cell(cell, weights, dtype, cpu) -> CompiledCell.

    runner = jitvoc.compile_cell(jitvoc.cells.gru(80, 512), weights, dtype="int8")
    outputs, state = runner.run({"x": x}, {"h": h0})        # x [T, 80] -> outputs["h"] [T, 512]
    y, state = runner.step({"x": x[0]}, state)               # one step: outputs without T

The schedule comes from jitvoc.plan.cell, the loop from jitvoc.emit.cell, emitted once the
products' kernels are chosen: build_matvec kernels in the cell's dtype, chosen by the planner per
stacked matrix. The loop quantizes an in-loop product's input in the plan's fixed format and
calls the kernel's core (compiled beside the loop, with the plan's epilogue: bias, relu). Hoisted
products run per chunk of HOIST_VECTORS steps, a B-vector kernel for a whole chunk and the
one-vector kernel per step for a shorter one (the same bits per vector); integer ones quantize
each step's input in its own format (covering its max |x|: the loop scales the row by a power of
two into the kernels' fixed format and the product back), so a step's result does not depend on
the other steps in its call: step() and run() agree bit for bit. One native call runs the whole
sequence; Python only checks the inputs. A cell with draws takes the generator's `seed` and
the sample index `t0` of its first step, as the oracle does; its int32 states and outputs (the
classes) are int32 arrays. Semantics and bounds: docs/cells.md; the oracle is
jitvoc.reference.cells.run.
"""
from __future__ import annotations

import threading

import numpy as np

from . import config, jit, native
from . import cpu as cpu_mod
from .cells import INDEX, Cell, Rows
from .contracts import CELL_RUN
from .emit import cell as emit_cell
from .errors import CellError
from .matvec import build_matvec
from .plan import cell as plan_cell
from .plan.cell import HOIST_VECTORS
from .quant import ACTIVATION_BITS, FixedPoint


class CompiledCell:
    """A cell compiled for one CPU generation with its weights; see the module docstring.
    `plan` is its schedule, `describe()` says what was stacked, hoisted and fused."""

    def __init__(self, cell: Cell, weights: dict, dtype: str = "float32", cpu=None,
                 autotune: bool = False, ranges: dict | None = None):
        if not isinstance(cell, Cell):
            raise CellError(f"compile_cell takes a jitvoc.cells.Cell, got {cell!r}")
        if not isinstance(autotune, bool) or (autotune and dtype == "float32"):
            raise CellError(f"autotune is True (int8, int16: candidates sum exactly, to the same "
                            f"bits; float32 ones in different orders) or False, got {autotune!r} "
                            f"for {dtype}")
        self.cell, self.dtype, self.autotune = cell, dtype, autotune
        self.gen = cpu_mod.resolve(cpu)
        cpu_mod.require_runnable(self.gen)   # compile_cell runs what it compiles
        self.plan = plan_cell.plan(cell, dtype, ranges)
        self._vectors = _weights(cell, weights, self.plan.params)
        self._hoisted = {p.label: self._matvecs(p, weights) for p in self.plan.hoisted}
        self._products = {}
        for p in self.plan.products:
            stride = 0 if self.autotune else plan_cell.shared_stride(
                self.plan, p.label, {k: mv.plan for k, mv in self._products.items()})
            self._products[p.label] = self._matvecs(p, weights, stride)[0]
        self._biases = {f"{label}.bias": _bias(ep, self._vectors, self._products[label])
                        for label, ep in self.plan.epilogues.items()}
        kernels = {label: mv.plan for label, mv in self._products.items()}
        self.loop_name = emit_cell.loop_name(self.plan, kernels)
        cores = emit_cell.core_modules(self.plan, kernels, self.gen)
        # the Library keeps the machine code of the loop and its cores alive with this runner
        lib = self._lib = jit.load_parts(
            [(self.loop_name, lambda: emit_cell.build(self.plan, kernels, self.gen)), *cores],
            self.gen)
        self._run = native.function(lib.address(CELL_RUN.symbol(self.loop_name)), CELL_RUN)
        self._fixed = self._fixed_addresses()
        self._local = threading.local()
        config.debug(1, self.describe())

    def _matvecs(self, product, weights, x_stride: int = 0) -> tuple:
        """The kernels of one stacked product: in-loop, (the kernel,), the planner's kernel for
        a fused loop (build_matvec(inline=True), as the vocoder loop's cores: compact code
        beside the loop's), with autotune the fastest candidate (build_matvec's autotune: every
        candidate gives the same bits); hoisted, (the planner's B-vector kernel, the same kernel
        for one vector)."""
        W = product.stacked(weights)
        blocks = {self.cell.weights[w].attr("block") for w in product.weights}
        block = blocks.pop() if len(blocks) == 1 else None
        if not product.hoisted:
            block = None if self.autotune else block   # autotune tries every block shape
            return (build_matvec(W, self.dtype, cpu=self.gen, block=block, autotune=self.autotune,
                                 x_format=self.plan.formats[product.label], inline=True,
                                 x_stride=x_stride),)
        batch = build_matvec(W, self.dtype, cpu=self.gen, block=block, vectors=HOIST_VECTORS,
                             x_format=self.plan.hoisted_format)
        # a shorter chunk's steps sum as a whole chunk's do (float32: the planner's one-vector
        # kernel has other accumulator sets, and step() gave other bits than run())
        return batch, batch.with_vectors(1)

    def _fixed_addresses(self) -> dict:
        """The params entries that do not change between calls: weights, kernels (in-loop:
        their cores, and the epilogues' biases) and their arrays."""
        out = {k: v.ctypes.data for k, v in self._vectors.items()}
        for label, mv in self._products.items():
            _, arrays = mv.entry(self.plan.formats[label])
            out.update({f"{label}.{k}": a.ctypes.data for k, a in arrays.items()})
            out[f"{label}.core"] = self._lib.address(
                emit_cell.core_symbol(self.plan, label, mv.kernel))
        for label, pair in self._hoisted.items():
            for k, mv in zip("B1", pair):
                address, arrays = mv.entry(self.plan.hoisted_format)
                out[f"{label}.{k}.fn"] = address
                out.update({f"{label}.{k}.{a}": v.ctypes.data for a, v in arrays.items()})
        out.update({k: v.ctypes.data for k, v in self._biases.items()})
        return out

    def kernels(self) -> dict:
        """product label -> the MatVec (or, hoisted, the B-vector and one-vector MatVecs)."""
        return {**self._hoisted, **{k: (v,) for k, v in self._products.items()}}

    def describe(self) -> str:
        """The schedule as text (printed at JITVOC_DEBUG=1): what was stacked and hoisted,
        with the kernel of every product, and which nodes each pass fused."""
        return plan_cell.describe(self.plan, {k: [m.spec for m in v]
                                              for k, v in self.kernels().items()})

    @property
    def ir(self) -> str:
        """The loop's LLVM IR (the products' kernels and cores are separate: kernels())."""
        return str(emit_cell.build(self.plan, {k: mv.plan for k, mv in self._products.items()},
                                   self.gen))

    def run(self, inputs: dict, state: dict | None = None, seed: int = 0,
            t0: int = 0) -> tuple[dict, dict]:
        """(outputs [T, *shape] per output, the states after the last step) for inputs
        [T, *shape] per input; a state left out starts at zero (a scalar fills a vector).
        Draws use the generator's `seed` at sample indices t0, t0 + 1, ..."""
        xs, rows, T = _inputs(self.cell, inputs, self.plan.indexed, self.plan.index_limits)
        states = _initial(self.cell, state or {}, self.plan.index_limits)
        frame = _Frame(self.cell, T, (xs, rows), states, self._scratch(),
                       _counter(self.cell, seed, t0))
        if T:
            self._check_range(xs)
            self._call(T, frame.pointer(self.plan.params, self._fixed), frame.states)
        return frame.outputs, frame.state_values(self.cell)

    def step(self, inputs: dict, state: dict | None = None, seed: int = 0,
             t: int = 0) -> tuple[dict, dict]:
        """One step (sample index t for draws): inputs and outputs without the T axis; the
        same bits as run(). The arrays and the pointer table of a step are made once per
        thread and reused."""
        if not isinstance(inputs, dict):
            raise CellError(f"{self.cell.name}: step() takes a dict of input arrays")
        xs, _, _ = _inputs(self.cell, {k: np.asarray(v)[None] for k, v in inputs.items()}, (),
                           self.plan.index_limits)
        states = _initial(self.cell, state or {}, self.plan.index_limits)
        self._check_range(xs)
        frame, pointer = self._step_frame()
        for k, v in xs.items():
            frame.inputs[k][...] = v
        for k, v in states.items():
            frame.states[k][...] = v
        frame.counter[...] = _counter(self.cell, seed, t)
        self._call(1, pointer, frame.states)
        return ({k: v[0].copy() for k, v in frame.outputs.items()},
                {k: v.copy() for k, v in frame.state_values(self.cell).items()})

    def _check_range(self, xs: dict) -> None:
        """CellError where a hoisted integer product's input exceeds the widest fixed format
        its kernels take (the loop scales every row into the format covering its max |x|)."""
        if self.dtype == "float32":
            return
        widest = FixedPoint(ACTIVATION_BITS[self.dtype], -32)
        for p in self.plan.hoisted:
            x = xs[p.source.name]
            peak = max(float(x.max()), -float(x.min()))
            if peak > widest.qmax * widest.scale:
                raise CellError(f"{self.cell.name}: input {p.source.name!r} reaches {peak:.3g}, "
                                f"past the widest {widest.bits}-bit format "
                                f"(±{widest.qmax * widest.scale:.3g}); scale it down or use "
                                f"float32")

    def _scratch(self) -> np.ndarray:
        """This thread's scratch slots (every slot is written before it is read in a step, so
        calls of one thread can share them; threads need their own)."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = np.empty(self.plan.scratch, np.float32)
        return scratch

    def _step_frame(self) -> tuple:
        """This thread's one-step frame and the address of its pointer table."""
        pair = getattr(self._local, "step", None)
        if pair is None:
            cell = self.cell
            xs = {k: np.zeros((1, *n.shape), _DTYPES[n.dtype]) for k, n in cell.inputs.items()}
            states = {k: np.zeros(n.shape, _DTYPES[n.dtype]).reshape(-1)
                      for k, n in cell.states.items()}
            rows = {k: np.zeros(1, np.int64) for k in self.plan.indexed}
            frame = _Frame(cell, 1, (xs, rows), states, self._scratch(), _counter(cell, 0, 0))
            pair = self._local.step = (frame, frame.pointer(self.plan.params, self._fixed))
        return pair

    def _call(self, T: int, pointer, states: dict) -> None:
        self._run(T, pointer)
        if not all(np.isfinite(v).all() for v in states.values()):
            raise CellError(f"{self.cell.name}: the state overflowed float32 (NaN or inf); "
                            f"check the weights and inputs")


_DTYPES = {"float32": np.float32, INDEX: np.int32}


class _Frame:
    """The arrays of one call of the loop: inputs [T, *shape] (an indexed one: its table and
    rows, int64 [T]) and outputs [T, *shape], the states (flat, updated in place) and their
    next values, the scratch slots and the generator's counter (int64 [t0, seed])."""

    def __init__(self, cell: Cell, T: int, inputs: tuple, states: dict, scratch: np.ndarray,
                 counter: np.ndarray):
        (self.inputs, self.rows), self.states, self.scratch = inputs, states, scratch
        self.table = None
        self.counter = counter
        self.outputs = {k: np.empty((T, *n.shape), _DTYPES[n.dtype])
                        for k, n in cell.outputs.items()}
        self.following = {k: np.empty_like(v) for k, v in states.items()}

    def pointer(self, params, fixed: dict):
        """The address of the params pointer table (kept by the frame): the fixed addresses
        (weights, kernels) and these arrays'."""
        arrays = {**{f"input.{k}": v for k, v in self.inputs.items()},
                  **{f"rows.{k}": v for k, v in self.rows.items()},
                  **{f"output.{k}": v for k, v in self.outputs.items()},
                  **{f"state.{k}": v for k, v in self.states.items()},
                  **{f"next.{k}": v for k, v in self.following.items()},
                  "scratch": self.scratch, "counter": self.counter}
        arrays = {k: v for k, v in arrays.items() if k in params.names}
        self.table = params.pack({**fixed, **{k: a.ctypes.data for k, a in arrays.items()}})
        return native.ptr(self.table)

    def state_values(self, cell: Cell) -> dict:
        return {k: v.reshape(cell.states[k].shape) for k, v in self.states.items()}


def _weights(cell: Cell, weights: dict, params) -> dict:
    """The vector weights (biases) and the matrix columns the loop reads (params entries
    column.NAME.J) as float32 arrays, by their params key; every declared weight checked,
    finite."""
    out = {}
    for name, w in cell.weight_arrays(weights).items():
        if not np.isfinite(w).all():
            raise CellError(f"{cell.name}: weight {name!r} holds NaN or infinite values")
        if w.ndim < 2:
            out[f"weight.{name}"] = w.reshape(-1)
        out.update({f"column.{name}.{j}": np.ascontiguousarray(w[:, j])
                    for j in range(w.shape[1] if w.ndim == 2 else 0)
                    if f"column.{name}.{j}" in params.names})
    return out


def _bias(epilogue, vectors: dict, mv) -> np.ndarray:
    """An epilogue's bias as its core reads it: the vector weights (checked, by params key:
    _weights) joined, zero-padded to the kernel's rows_padded."""
    joined = np.concatenate([vectors[f"weight.{w}"] for w in epilogue.bias])
    out = np.zeros(mv.plan.packed.rows_padded, np.float32)
    out[:len(joined)] = joined
    return out


def _counter(cell: Cell, seed, t0) -> np.ndarray:
    """The generator's [t0, seed] (the seed as uint32, as docs/model.md's arithmetic takes it)."""
    for what, value in (("seed", seed), ("t0", t0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise CellError(f"{cell.name}: {what} must be an int, got {value!r}")
    if t0 < 0:
        raise CellError(f"{cell.name}: t0 must be non-negative, got {t0}")
    return np.array([t0, int(seed) & 0xFFFFFFFF], np.int64)


def _float_array(cell: Cell, what: str, value, shape: tuple) -> np.ndarray:
    """`value` as a C-contiguous float32 array of `shape`: CellError for other shapes,
    non-numeric dtypes and NaN/inf."""
    array = np.asarray(value)
    if array.dtype != np.float32 and not (np.issubdtype(array.dtype, np.floating)
                                          or np.issubdtype(array.dtype, np.integer)):
        raise CellError(f"{cell.name}: {what} must be numeric, got dtype {array.dtype}")
    if array.shape != shape:
        raise CellError(f"{cell.name}: {what} must have shape {list(shape)}, "
                        f"got {list(array.shape)}")
    array = np.ascontiguousarray(array, np.float32)
    if not np.isfinite(array).all():
        raise CellError(f"{cell.name}: {what} holds NaN or infinite values")
    return array


def _inputs(cell: Cell, inputs: dict, indexed: tuple, limits: dict) -> tuple:
    """(every input as float32 [T, *shape] (an int32 one as int32 [T], classes below its
    limit: plan.index_limits), or for an `indexed` one given as Rows its table [F, *shape];
    the row index, int64 [T], of every indexed input; T)."""
    if not isinstance(inputs, dict):
        raise CellError(f"{cell.name}: inputs must be a dict of arrays by name")
    unknown, missing = set(inputs) - set(cell.inputs), set(cell.inputs) - set(inputs)
    if unknown or missing:
        raise CellError(f"{cell.name}: inputs {sorted(cell.inputs)} expected; unknown "
                        f"{sorted(unknown)}, missing {sorted(missing)}")
    lengths = {_steps(v) for v in inputs.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise CellError(f"{cell.name}: every input needs the same number of steps T as its "
                        f"first axis, got shapes {[np.shape(v) for v in inputs.values()]}")
    T = lengths.pop()
    xs, rows = {}, {}
    for k, n in cell.inputs.items():
        value = inputs[k]
        if isinstance(value, Rows) and k in indexed and n.dtype != INDEX:
            table = value.table
            xs[k] = _float_array(cell, f"input {k!r}'s table", table,
                                 (len(table) if np.ndim(table) else 0, *n.shape))
            rows[k] = _row_index(cell, k, value.index, len(xs[k]))
            continue
        value = value.values() if isinstance(value, Rows) else value
        xs[k] = (_classes(cell, k, value, T, limits[k]) if n.dtype == INDEX else
                 _float_array(cell, f"input {k!r}", value, (T, *n.shape)))
        if k in indexed:
            rows[k] = np.arange(T, dtype=np.int64)
    return xs, rows, T


def _classes(cell: Cell, name: str, value, T: int, limit: int) -> np.ndarray:
    """An int32 input's values as int32 [T]: integers in [0, limit) (the tables it indexes)."""
    array = np.asarray(value)
    if array.shape != (T,) or array.dtype.kind not in "iu" or (
            T and not 0 <= array.min() <= array.max() < limit):
        raise CellError(f"{cell.name}: input {name!r} holds classes, integers in [0, {limit}), "
                        f"one per step (shape [{T}])")
    return np.ascontiguousarray(array, np.int32)


def _steps(value) -> int:
    """The steps of an input: its first axis, or its Rows' index length; -1 for a scalar."""
    value = np.asarray(value.index) if isinstance(value, Rows) else value
    return len(np.asarray(value)) if np.ndim(value) else -1


def _row_index(cell: Cell, name: str, index, rows: int) -> np.ndarray:
    """A Rows index as int64 [T]: integers in [0, rows)."""
    index = np.asarray(index)
    if index.ndim != 1 or index.dtype.kind not in "iu" or (
            len(index) and not 0 <= index.min() <= index.max() < rows):
        raise CellError(f"{cell.name}: input {name!r}'s Rows index must be integers in "
                        f"[0, {rows}) (its table's rows), one per step")
    return np.ascontiguousarray(index, np.int64)


def _initial(cell: Cell, state: dict, limits: dict) -> dict:
    """Every state as a fresh array (flat) of its dtype: given, or zero; a scalar fills a
    vector; an int32 state an integer in [0, its limit) (the tables it indexes)."""
    if not isinstance(state, dict):
        raise CellError(f"{cell.name}: state must be a dict of arrays by name")
    unknown = set(state) - set(cell.states)
    if unknown:
        raise CellError(f"{cell.name}: unknown states {sorted(unknown)}")
    out = {}
    for name, node in cell.states.items():
        value = state.get(name, 0)
        if np.shape(value) == () and node.shape:
            value = np.full(node.shape, value)
        if node.dtype == INDEX:
            out[name] = _index_array(cell, name, value, limits[name])
            continue
        out[name] = _float_array(cell, f"state {name!r}", value, node.shape).reshape(-1).copy()
    return out


def _index_array(cell: Cell, name: str, value, limit: int) -> np.ndarray:
    """An int32 state's value as int32 [1]: an integer in [0, limit)."""
    array = np.asarray(value)
    if (array.shape != () or array.dtype.kind not in "iuf" or array != np.floor(array)
            or not 0 <= array < limit):
        raise CellError(f"{cell.name}: state {name!r} is a class, an integer in [0, {limit}), "
                        f"got {value!r}")
    return np.array([int(array)], np.int32)


def compile_cell(cell: Cell, weights: dict, dtype: str = "float32", cpu=None,
                 autotune: bool = False, ranges: dict | None = None) -> CompiledCell:
    """A cell compiled into one loop over the sequence: `run(inputs, state)` over a whole
    sequence, `step(inputs, state)` for one step (docs/cells.md, "Compiling a cell").
    autotune (int8, int16): time the candidate kernels of every in-loop product and keep the
    fastest (the same bits; the decision is cached on disk). ranges (int8, int16): matrix name
    -> max |x| of its in-loop product's input, where it may pass 1 (a relu's output: the
    vocoder's out.O2 and out.O4, as a model's calibration gives them)."""
    return CompiledCell(cell, weights, dtype, cpu, autotune, ranges)

