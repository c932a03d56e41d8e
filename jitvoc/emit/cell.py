"""Emit the loop of a compiled cell (jitvoc.plan.cell.CellPlan -> llvmlite.ir), one function:

    N_run(n i64, params ptr*)        (contracts.CELL_RUN)

runs n steps. `params` is the plan's pointer table: per-step arrays (inputs, outputs) at row 0,
each row one step further per step (an indexed input: the row its "rows" entry gives); the
states and a second buffer of each (the loop swaps the two every step, and copies the last
values into the state's array after the last step when they lie in the other), vector weights,
the scratch slots, per hoisted product its kernels' float entry points (contracts.SPMV,
function pointers) and arrays, per in-loop product its kernel's core (contracts.SPMV_CORE, a
module of its own: core_modules), its arrays and its epilogue's bias. The loop is emitted for
its in-loop kernels (loop_name: their specs are in its name and cache key). Steps run in chunks
of HOIST_VECTORS: first the chunk's hoisted products (the B-vector kernel once, or for a
shorter last chunk the one-vector kernel per step, the same bits per vector), then its steps. A
float32 cell's hoisted kernels read the input rows in place; an integer cell's read them scaled
into scratch by 2^frac_t (the most fractional bits that cover max |x_t| in the kernels' format,
quant.covering_fracs, found from the float bits of max |x_t|), and the products are multiplied
by x_scale_t = 2^−frac_t where they are read (exact: powers of two).

Each step: the plan's items in order. A product's input vector, read in place (a state, a kept
node, a slice of a product), is made what its kernel reads (spmv.activations: integer kernels'
codes in the plan's fixed format) in a stack buffer, and the kernel's core writes the product
into the loop's stack buffer of its rows (rows_padded), with the plan's epilogue: the biases
added, then relu (plan.epilogues; the nodes they stand for are read from there). A vector
several products read in one format is quantized once (plan.codes: a state's codes kept in a
buffer of the loop, written by the sweeps that store its next value, computed from the initial
state once per call). A pass runs one sweep per vector length over its roots: 16 lanes at a
time, then one at a time, every root's value computed in registers from what earlier items
stored (a `take` is an offset, a node used twice in a sweep is computed once) and stored. A
draw (jitvoc.emit.draw) reads its 256 logits in place and stores the class (int32) in its slot,
with ξ of the counter-based generator at sample index t0 + step (params "counter": t0 and the
seed); a softmax (a `Draw` too) stores its 256 probabilities there; a `lookup` loads its
table's element at an int32 state, input or class, a `column` reads the matrix column the
runner passes as a vector. Then the states' buffers swap: the next values
written in this step become the states, with no copy. A kept node that is (a piece of) a
state's update is stored only there (plan.homes).

Element-wise arithmetic is plain IEEE float32 in the graph's order, no FMA; sigmoid, tanh and
exp go through jitvoc.emit.mathfn's exponential (e^x of the same bits at every vector width,
its polynomial per dtype: POLY), so a sweep's lanes and its tail agree bit for bit and so does
every CPU generation. exp saturates where mathfn's gate exponential does (|x| ≳ 41.6).

A GRU update the plan lowers by its rule (CellPlan.gru, jitvoc.cells.rules) is computed as
the hand-written loop (emit/loop.py, deleted once the cell replaced it) computed it
(docs/model.md, "The GRU step"; mathfn's gate exponential and blend): the pre-activations in
gate units (an integer product of CellPlan.gate_unit dequantizes in them), the conditioning and
bias folded as the loop's per-frame rows are.

Streams mode (`streams` B > 1, in-loop kernels of B vectors; a cell without hoisted products):

    N_run_streams(n i64, lens i64*, tables ptr*)        (contracts.CELL_RUN_STREAMS)

steps B streams together, each with its own pointer table (tables[v], as N_run's params: its
states, inputs, outputs, scratch, counter) and number of steps (lens[v] <= n). Every step runs
the plan's items: a product once for all B by its B-vector core (each weight panel loaded once
for all B vectors), on the streams' inputs made what the kernel reads stream by stream (codes
quantized, floats copied) and interleaved (spmv.interleave; a state's kept codes, plan.codes,
one row per stream, interleaved from there), its outputs one row per stream; the draws and
passes stream by stream, by the single-stream code on the stream's table and rows of the loop's
buffers (`_at`). A stream whose steps are done (t >= lens[v]) is left as it is: no pass, draw
or swap; its frozen input still goes through the products (the kernels have B lanes). The
products are bit-exact per vector, the rest is the same code: stream v's bits are those of N_run
alone.
"""
from __future__ import annotations

import hashlib

import numpy as np
from llvmlite import ir

from ..cells.graph import INDEX, Node
from ..cells.rules import slice_of
from ..contracts import CELL_RUN, CELL_RUN_STREAMS, SPMV, SPMV_CORE
from ..errors import CellError
from ..layout import CACHE_LINE
from ..plan.cell import HOIST_VECTORS, MATRIX_ARRAYS, CellPlan, column_key, resolved, size_of
from . import draw, mathfn, spmv
from .irutil import (alloca, call, counted_loop, define, f32, gep, i32, i64, load, ptr,
                     signature, splat, vec)

V = 16   # lanes of the element-wise sweeps
# V-lane blocks a pass's sweep computes per iteration, in both modes: 7 (the 448 lanes of a
# hidden-896 GRU half in 4 iterations) measured x1.03-1.05 over 4 at one stream on the Xeon
# (int8 and int16, paired; bench/README.md, "Ninth round: the update and the draws"), and
# in streams mode, where a stream's rows come from L2 ("Issue 15: B = 8, sixth round")
SWEEP_BLOCKS = 7
ENTRY_FN = signature(SPMV)
CORE_FN = signature(SPMV_CORE)
# The e^x polynomial per dtype (jitvoc.emit.mathfn): float32 cells the softmax's (2.1e-7
# relative, near float rounding); integer cells the vocoder's gate polynomial of that dtype,
# whose error stays well below their activation codes' step.
POLY = {"float32": mathfn.EXP2_POLY, "int8": mathfn.GATE_POLY["int8"],
        "int16": mathfn.GATE_POLY["int16"]}


class CellEmitter:
    def __init__(self, plan: CellPlan, kernels: dict, gen, name: str, streams: int = 1):
        self.plan, self.cell, self.name = plan, plan.cell, name
        self.streams, self.v = streams, None   # streams mode: B; the stream being emitted
        self.m = ir.Module(name=name)
        self.kernels = {label: spmv.Kernel.of(kp.spec, kp.packed, gen, self.m)
                        for label, kp in kernels.items()}
        self.tables = {}
        self.kept = {n: plan.pass_of(n) for n in plan.kept}

    def build(self) -> ir.Module:
        if self.streams > 1:
            return self._build_streams()
        fn, a = define(self.m, CELL_RUN, self.name)
        self.entry = fn.append_basic_block("entry")
        b = self.b = ir.IRBuilder(self.entry)
        self._point(a.params)
        self._outputs()
        self.codes, self.reads = {}, {}   # state -> (owner kernel, buffer); label -> its codes
        for name, readers in self.plan.codes.items():
            self._share_codes(name, readers)
        self.xin = {label: spmv.xin_buffer(k, b) for label, k in self.kernels.items()
                    if label not in self.reads}
        self._previous()
        self._counter()
        self._state_buffers()
        self._start_buffers()
        with counted_loop(b, 0, a.n, HOIST_VECTORS, name="chunk") as c0:
            end = b.add(c0, i64(HOIST_VECTORS))
            end = b.select(b.icmp_signed("<", end, a.n), end, a.n)
            self._hoist(c0, end)
            with counted_loop(b, c0, end, name="step") as t:
                self._step(t, b.sub(t, c0))
        self._settle()
        b.ret_void()
        return self.m

    def _point(self, table):
        """self.p: the addresses of pointer table `table` by name, loaded where the builder
        is."""
        b = self.b
        types = {".fn": ENTRY_FN.as_pointer(), ".core": CORE_FN.as_pointer()}
        self.p = {key: load(b, table, types.get(key[key.rfind("."):], ptr),
                            self.plan.params.slot(key), align=8, elem_type=ptr)
                  for key in self.plan.params.names}

    def _counter(self):
        """t0 and the seed of the draws of classes, from self.p's counter."""
        if "counter" in self.p:
            b = self.b
            self.t0 = load(b, self.p["counter"], i64, 0, align=8)
            self.seed = b.trunc(load(b, self.p["counter"], i64, 1, align=8), i32)

    # --- the loop's stack buffers, one row per stream (self.streams) ---------------------------
    def _outputs(self):
        """Per in-loop product its output (rows_padded)."""
        self.y = {label: alloca(self.b, f32, k.packed.rows_padded * self.streams,
                                align=CACHE_LINE) for label, k in self.kernels.items()}

    def _previous(self):
        """The row each input the GRU rules' rows read was last at (_frame_rows): one stream's
        set unseen (-1) here, B streams' by _start_buffers."""
        b, self.previous = self.b, {}
        for rule in self.plan.gru.values():
            for node in rule.linear[:2] if rule.linear else rule.k[0][:1]:
                if node.name not in self.previous:
                    self.previous[node.name] = alloca(b, i64, self.streams)
                    if self.streams == 1:
                        b.store(i64(-1), self.previous[node.name])

    def _state_buffers(self):
        """Each state's two buffers (now, following)."""
        self.buffers = {name: (alloca(self.b, ptr, self.streams),
                               alloca(self.b, ptr, self.streams)) for name in self.cell.states}

    def _start_buffers(self):
        """The stream's states' buffers at its arrays (and, B streams, its rows unseen)."""
        b = self.b
        for previous in self.previous.values() if self.streams > 1 else ():
            b.store(i64(-1), self._at(previous, i64, 1))
        for name, (now, following) in self.buffers.items():
            b.store(self.p[f"state.{name}"], self._at(now, ptr, 1))
            b.store(self.p[f"next.{name}"], self._at(following, ptr, 1))

    def _at(self, base, typ, n: int):
        """The stream's row of a buffer of one row per stream (rows of n `typ`)."""
        if self.v is None:
            return base
        return gep(self.b, base, typ, self.b.mul(self.v, i64(n)))

    # --- streams mode: B streams stepped together (contracts.CELL_RUN_STREAMS) --------------
    def _build_streams(self) -> ir.Module:
        """The loop for B streams: every step the plan's items, the products by the B-vector
        kernels (each weight panel loaded once for all B, on the streams' inputs interleaved),
        the draws and passes stream by stream on the stream's own pointer table; a stream
        whose steps are done (t >= lens[v]) is left as it is (its frozen input still goes
        through the products: the kernels have B lanes)."""
        if self.plan.hoisted:
            raise CellError("a cell with hoisted products has no streams mode yet")
        fn, a = define(self.m, CELL_RUN_STREAMS, self.name)
        self.entry = fn.append_basic_block("entry")
        b = self.b = ir.IRBuilder(self.entry)
        self.args = a
        self._outputs()
        self._previous()
        self._state_buffers()
        together = self._interleaved_readers()
        self.vbufs = {label: spmv.vector_buffers(k, b) for label, k in self.kernels.items()
                      if label not in together}
        self._stream_codes()
        self._each_stream(None, self._start_buffers)
        with counted_loop(b, 0, a.n, name="step") as t:
            if self.plan.gru:
                self._each_stream(t, lambda: self._frame_rows(t))
            for kind, content in self.plan.items:
                if kind == "products":
                    for product in content:
                        self._vector_product(product, t)
                else:
                    self._each_stream(t, lambda: self._item(kind, content, t))
                    if kind == "pass":
                        self._reinterleave(content)
            self._each_stream(t, self._swap)
        self._each_stream(None, self._settle)
        b.ret_void()
        return self.m

    def _each_stream(self, t, body, active: bool = True):
        """body() for every stream v (self.v, self.p its table's, and at step t its rows),
        at step t only for those still running (t < lens[v]) when `active`."""
        b = self.b
        with counted_loop(b, 0, self.streams, name="stream") as v:
            self.v = v
            self._point(load(b, self.args.tables, ptr, v, align=8))
            self._counter()
            if t is None:
                body()
            elif not active:
                self._step_rows(t, None)
                body()
            else:
                with b.if_then(b.icmp_signed("<", t, load(b, self.args.lens, i64, v,
                                                          align=8))):
                    self._step_rows(t, None)
                    body()
        self.v = None

    def _stream_codes(self):
        """plan.codes in streams mode: a state's codes, one row of its owner kernel's x_len
        per stream (written where its next value is stored, computed from the initial state
        once per call), read by the products whose kernels take the owner's codes (dtype,
        signedness, format) from their column on, interleaved: once per step into a buffer
        of the owner's layout for those that read it as their own (_interleaved_readers: the
        columns a pass rewrote, after the pass, _reinterleave), by each product for the
        others."""
        b, self.codes, self.reads = self.b, {}, {}
        self.interleaved, self.kept_xin = {}, {}   # label -> its xin; state -> (owner, codes, xin)
        together = self._interleaved_readers()
        for name, readers in self.plan.codes.items():
            owner, label = self.kernels[readers[0][0]], readers[0][0]
            shared = self._shared_codes(readers)
            if not shared:
                continue
            buf = alloca(b, owner.elem, owner.packed.x_len * self.streams, align=CACHE_LINE)
            self.codes[name] = (owner, buf, self._x_inv(label))
            self.reads.update((lb, (owner, buf, column)) for lb, column in shared)

            def first(name=name, owner=owner, buf=buf, label=label):
                spmv.quantize(owner, b, self.p[f"state.{name}"], self._x_inv(label),
                              self._at(buf, owner.elem, owner.packed.x_len), spmv.put_codes,
                              owner.packed.x_len)
            self._each_stream(None, first)
            readers = [(lb, column) for lb, column in shared if lb in together]
            if readers:
                xin = spmv.interleave_buffer(owner, b)
                spmv.interleave(owner, b, buf, owner.packed.x_len, buf=xin)
                self.kept_xin[name] = (owner, buf, xin)
                self.interleaved.update((lb, spmv.interleaved_at(owner, b, xin, column))
                                        for lb, column in readers)

    def _shared_codes(self, readers) -> list:
        """(label, column) of a state's readers that read its kept codes in streams mode: those
        whose kernels take the owner's codes, when at least two do (else none)."""
        owner, label = self.kernels[readers[0][0]], readers[0][0]
        shared = [(lb, column) for lb, column in readers
                  if self._same_codes(self.kernels[lb], owner, lb, label)]
        return [] if owner.is_float or len(shared) < 2 else shared

    def _interleaved_readers(self) -> set:
        """The products whose B-vector kernels read a state's codes interleaved once per step,
        in the owner's buffer (spmv.reads_interleaved): when two or more do. Interleaving h's
        codes once (896 columns a step at B = 8) instead of per reader (R, O1, O3: 1,792)
        took 767 -> 310 ns a step at B = 8, alone (bench/README.md, "Issue 15 item 6
        on AVX2")."""
        labels = set()
        for readers in self.plan.codes.values():
            shared = self._shared_codes(readers)
            owner = shared and self.kernels[shared[0][0]]
            together = [lb for lb, column in shared
                        if spmv.reads_interleaved(self.kernels[lb], owner, column)]
            labels.update(together if len(together) > 1 else ())
        return labels

    def _reinterleave(self, content):
        """After a pass (all streams): the columns of kept codes it rewrote, interleaved again
        into the buffer their readers share (_stream_codes)."""
        for length, roots in content.sweeps().items():
            for _, (kind, name), offset in roots:
                if kind == "next" and name in self.kept_xin:
                    owner, codes, xin = self.kept_xin[name]
                    spmv.interleave_columns(owner, self.b, codes, owner.packed.x_len, offset,
                                            offset + length, xin)

    def _same_codes(self, k, owner, label, owner_label) -> bool:
        """Whether kernel k (of product `label`) reads the codes the owner's product reads."""
        return ((k.spec.dtype, k.spec.x_signed, self.plan.formats[label]) ==
                (owner.spec.dtype, owner.spec.x_signed, self.plan.formats[owner_label]))

    def _vector_product(self, product, t):
        """y[v] = W x[v] (plus the epilogue) for the B streams by the product's B-vector core:
        x[v] quantized stream by stream into a row of codes (floats copied), then interleaved
        (spmv.interleave); codes the loop keeps interleaved from their rows, or read where the
        loop keeps them interleaved (_stream_codes)."""
        label = product.label
        xin = (self.interleaved[label] if label in self.interleaved else
               self._vector_input(product, t))
        self._point(load(self.b, self.args.tables, ptr, 0, align=8))
        self._core_call(label, xin)

    def _vector_input(self, product, t):
        """What the B-vector core of a product reads, built in the product's buffers
        (self.vbufs): from the codes the loop keeps, or from each stream's input."""
        b, label = self.b, product.label
        k, (rows, buf) = self.kernels[label], self.vbufs[label]
        if label in self.reads:
            owner, codes, column = self.reads[label]
            return spmv.interleave(k, b, gep(b, codes, owner.elem, i64(column)), k.packed.cols,
                                   owner.packed.x_len, buf)
        self._each_stream(t, lambda: self._stream_input(k, product, rows, buf), active=False)
        return buf if k.permute else spmv.interleave_rows(k, b, rows, buf)

    def _stream_input(self, k, product, rows, buf):
        """The stream's input of a product into its row of what the B-vector core reads:
        floats copied (cols floats a row), codes quantized (x_len a row; byte-permute
        gathers: straight into xin's rows, x_pad apart)."""
        b, p, x = self.b, k.packed, self._address(product.source)
        if k.is_float:
            row = self._at(rows, f32, p.cols)
            with counted_loop(b, 0, p.cols, name="copy") as c:
                b.store(load(b, x, f32, c, align=4), gep(b, row, f32, c), align=4)
            return
        target, length = (buf, k.x_pad) if k.permute else (rows, p.x_len)
        spmv.quantize(k, b, x, self._x_inv(product.label), self._at(target, k.elem, length),
                      spmv.put_codes, length)

    def _item(self, kind, content, t):
        """One item of the plan but products: the draws, or a pass's sweeps."""
        if kind == "draws":
            for d in content:
                self._draw(d, t)
            return
        self.current = content.index
        for length, roots in content.sweeps().items():
            self._sweep(length, roots)

    def _share_codes(self, name: str, readers: tuple):
        """The codes buffer of state `name` (plan.codes), in the layout of the kernel of its
        first reader (the owner, which reads it whole), for the readers whose kernels read that
        layout from their column on (shared); zero past the state's codes, and the initial
        state's codes computed once per call."""
        b, owner = self.b, self.kernels[readers[0][0]]
        shared = [(label, column) for label, column in readers
                  if _reads_layout_of(self.kernels[label], owner, column)]
        if len(shared) < 2:
            return
        reach = max(column + self.kernels[label].x_pad for label, column in shared)
        buf = spmv.xin_buffer(owner, b, reach)
        if owner.codes_input:
            with counted_loop(b, owner.x_pad, reach, name=f"clear_{name}") as c:
                spmv.put_codes(owner, b, buf, c, i32(0))
        spmv.activations(owner, b, self.p[f"state.{name}"], self._x_inv(readers[0][0]), buf)
        self.codes[name] = (owner, buf, self._x_inv(readers[0][0]))
        self.reads.update((label, (owner, buf, column)) for label, column in shared)

    def _x_inv(self, label: str):
        fmt = self.plan.formats[label]
        return f32(2.0 ** fmt.frac if fmt else 1.0)

    def _settle(self):
        """After the last step: a state whose values lie in the params' next array (an odd
        number of steps; _step swaps the two) copied into its state array."""
        b = self.b
        for name, state in self.cell.states.items():
            now = b.load(self._at(self.buffers[name][0], ptr, 1), typ=ptr)
            target = self.p[f"state.{name}"]
            with b.if_then(b.icmp_unsigned("!=", now, target)):
                with counted_loop(b, 0, size_of(state), name=f"settle_{name}") as i:
                    self._put(load(b, now, _type(state), i, align=4), target, i)

    def _hoist(self, c0, end):
        """The hoisted products of steps c0 .. end − 1 into their slots: one call of the
        B-vector kernel for a whole chunk, else the one-vector kernel per step; an integer
        cell's input rows scaled first (_scale_row)."""
        b = self.b
        if self.plan.dtype != "float32":
            with counted_loop(b, c0, end, name="scale") as t:
                for p in self.plan.hoisted:
                    self._scale_row(p, t, b.sub(t, c0))
        whole = b.icmp_signed("==", b.sub(end, c0), i64(HOIST_VECTORS))
        with b.if_else(whole) as (then, otherwise):
            with then:
                for p in self.plan.hoisted:
                    self._hoisted_call(p, "B", c0, i64(0))
            with otherwise:
                with counted_loop(b, c0, end, name="hoist_tail") as t:
                    for p in self.plan.hoisted:
                        self._hoisted_call(p, "1", t, b.sub(t, c0))

    def _hoisted_call(self, product, kernel: str, t, row):
        """Kernel `kernel` ("B" or "1") of a hoisted product on input rows from step t, into
        its slot from row `row`."""
        b, fmt = self.b, self.plan.hoisted_format
        key = f"{product.label}.{kernel}"
        arrays = {a: self.p[f"{key}.{a}"] for a in MATRIX_ARRAYS}
        y = self._slot(product.label, row, product.rows)
        call(b, SPMV, self.p[f"{key}.fn"], y=y, x=self._hoisted_input(product, t, row), **arrays,
             x_inv_scale=f32(2.0 ** fmt.frac if fmt else 1.0),
             x_scale=f32(fmt.scale if fmt else 1.0))

    def _hoisted_input(self, product, t, row):
        """Where the hoisted product's kernel reads step t's input: the input row itself
        (float32), or the scaled row `row` of its slot (integer cells)."""
        if self.plan.dtype == "float32":
            return gep(self.b, self.p[f"input.{product.source.name}"], f32,
                       self.b.mul(t, i64(product.cols)))
        return self._slot(f"{product.label}.x", row, product.cols)

    def _scale_row(self, product, t, row):
        """Step t's input row x_t scaled by 2^frac_t into row `row` of the product's `.x` slot,
        and 2^−frac_t into row `row` of its `.x_scale` slot: frac_t is the most fractional bits
        of the kernels' format (no fractional bits) that still cover max |x_t|
        (quant.covering_fracs, computed here from the float's bits: exact)."""
        b, cols = self.b, product.cols
        x = gep(b, self.p[f"input.{product.source.name}"], f32, b.mul(t, i64(cols)))
        frac = self._covering_frac(self._max_abs_bits(x, cols))
        power = b.bitcast(b.shl(b.add(frac, i32(127)), i32(23)), f32)
        b.store(b.bitcast(b.shl(b.sub(i32(127), frac), i32(23)), f32),
                self._slot(f"{product.label}.x_scale", row, 1), align=4)
        y = self._slot(f"{product.label}.x", row, cols)
        for start, stop, width in _sweeps(cols):
            with counted_loop(b, start, stop, width, name="scale_x") as i:
                typ = vec(f32, width) if width > 1 else f32
                value = b.load(gep(b, x, f32, i), typ=typ, align=4)
                scale = splat(b, power, width) if width > 1 else power
                b.store(b.fmul(value, scale), gep(b, y, f32, i), align=4)

    def _max_abs_bits(self, x, cols: int):
        """The bits (i32) of max |x[0 .. cols)|: finite floats' magnitudes order as their bits."""
        b, best = self.b, i32(0)
        for start, stop, width in _sweeps(cols):
            typ = vec(i32, width) if width > 1 else i32
            acc = self._local(typ)
            b.store(_splat_i32(b, 0, width), acc)
            with counted_loop(b, start, stop, width, name="max_abs") as i:
                bits = b.and_(b.load(gep(b, x, f32, i), typ=typ, align=4),
                              _splat_i32(b, 0x7FFFFFFF, width))
                old = b.load(acc, typ=typ)
                b.store(_max(b, bits, old), acc)
            lanes = b.load(acc, typ=typ)
            for k in range(width):
                best = _max(b, b.extract_element(lanes, i32(k)) if width > 1 else lanes, best)
        return best

    def _local(self, typ):
        """A stack slot for one `typ`, allocated in the entry block (promoted to registers)."""
        with self.b.goto_block(self.entry):
            return alloca(self.b, typ)

    def _covering_frac(self, bits):
        """frac (i32) of quant.covering_fracs for a magnitude m ≥ 0 given by its float bits:
        m·2^f ≤ qmax for the largest f (at most 32; qmax's exponent minus m's, less one where
        m's mantissa exceeds qmax's), and ACTIVATION_BITS − 1 for m = 0. A subnormal m (exponent
        field 0) gives more than 32 already, clamped."""
        b, fmt = self.b, self.plan.hoisted_format
        qmax = np.float32(2 ** (fmt.bits - 1) - 1).view(np.int32)
        frac = b.sub(i32(int(qmax >> 23)), b.lshr(bits, i32(23)))
        above = b.icmp_signed(">", b.and_(bits, i32(0x7FFFFF)), i32(int(qmax & 0x7FFFFF)))
        frac = b.sub(frac, b.zext(above, i32))
        frac = b.select(b.icmp_signed(">", frac, i32(32)), i32(32), frac)
        return b.select(b.icmp_signed("==", bits, i32(0)), i32(fmt.bits - 1), frac)

    def _step(self, t, row):
        """One step: row pointers of step t (row `row` of the hoisted slots), the plan's
        items, the states' buffers swapped."""
        self._step_rows(t, row)
        if self.plan.gru:
            self._frame_rows(t)
        for kind, content in self.plan.items:
            if kind == "products":
                for product in content:
                    self._product(product)
            else:
                self._item(kind, content, t)
        self._swap()

    def _swap(self):
        """The next values written in this step become the states: the buffers swapped."""
        for name, (now, following) in self.buffers.items():
            self.b.store(self.following[name], self._at(now, ptr, 1))
            self.b.store(self.now[name], self._at(following, ptr, 1))

    def _step_rows(self, t, row):
        """The states' buffers now and following, and the row pointers of step t (row `row`
        of the hoisted slots)."""
        b, cell = self.b, self.cell
        self.now, self.following = ({name: b.load(self._at(pair[k], ptr, 1), typ=ptr)
                                     for name, pair in self.buffers.items()} for k in (0, 1))
        sizes = {**{f"input.{k}": n for k, n in cell.inputs.items()},
                 **{f"output.{k}": n for k, n in cell.outputs.items()}}
        at = {f"input.{k}": load(b, self.p[f"rows.{k}"], i64, t, align=8)
              for k in self.plan.indexed}
        self.rows = {key: gep(b, self.p[key], f32, b.mul(at.get(key, t), i64(size_of(n))))
                     for key, n in sizes.items()}
        self.rows.update({f"hoist.{p.label}": self._slot(p.label, row, p.rows)
                          for p in self.plan.hoisted})
        if self.plan.dtype != "float32":
            self.rows.update({f"hoist.{p.label}.x_scale": load(
                b, self._slot(f"{p.label}.x_scale", row, 1), f32, align=4)
                for p in self.plan.hoisted})

    # --- products ------------------------------------------------------------------------------
    def _product(self, product):
        """y = W x of one stacked product (plus its epilogue's bias, then relu: plan.epilogues)
        by its kernel's core, on the input quantized here in the plan's format."""
        b, label = self.b, product.label
        k = self.kernels[label]
        if label in self.reads:   # codes the loop keeps (plan.codes)
            owner, buf, column = self.reads[label]
            xin = spmv.xin_at(owner, b, buf, column)
        else:
            xin = spmv.activations(k, b, self._address(product.source), self._x_inv(label),
                                   self.xin[label])
        self._core_call(label, xin)

    def _core_call(self, label: str, xin):
        """The call of a product's core on `xin` into its output, with its arrays, epilogue
        bias and x_scale from self.p (in streams mode: stream 0's table, which holds them)."""
        fmt = self.plan.formats[label]
        arrays = {a: self.p[f"{label}.{a}"] for a in MATRIX_ARRAYS}
        unit = mathfn.GATE_UNIT if label in self.plan.gate_unit else 1.0
        bias = self.p.get(f"{label}.bias", ir.Constant(ptr, None))
        call(self.b, SPMV_CORE, self.p[f"{label}.core"], y=self.y[label], xin=xin, **arrays,
             x_scale=f32((fmt.scale if fmt else 1.0) * unit), bias=bias)

    def _draw(self, d, t):
        """The class of draw `d` at step t of the call into its slot (an int32); a softmax's
        probabilities: p = exp(l − max l) in blocks (jitvoc.emit.draw), each divided by Σp."""
        b, poly = self.b, mathfn.SOFTMAX_POLY[self.plan.dtype]
        if d.distribution:
            _, total = draw.exp_blocks(b, self._address(d.logits), self._slot("draw.p"), poly)
            inv = splat(b, total, V)
            for j in range(0, size_of(d.node), V):
                p = b.fdiv(b.load(self._slot("draw.p", j), typ=vec(f32, V), align=4), inv)
                b.store(p, self._slot(d.label, j), align=4)
            return
        xi = draw.uniform(b, self.seed, b.add(self.t0, t), d.stream)
        cls = draw.draw(b, self._address(d.logits), xi, self._slot("draw.p"),
                        self._slot("draw.prefix"), poly)
        b.store(cls, self._slot(d.label), align=4)

    def _slot(self, key, offset=0, stride: int = 1):
        """Float `offset` · `stride` (offset: an int or an i64 value) of a scratch slot."""
        b, start = self.b, self.plan.slots[key]
        if isinstance(offset, int):
            return gep(b, self.p["scratch"], f32, i64(start + offset * stride))
        return gep(b, gep(b, self.p["scratch"], f32, i64(start)), f32, b.mul(offset, i64(stride)))

    def _address(self, node: Node):
        """Where a product's input vector lies (plan.cell._unaddressable keeps the others)."""
        if node in self.plan.results:
            return self._product_at(node)
        if node.op == "take":
            return gep(self.b, self._address(node.args[0]), f32, i64(node.attr("start")))
        if node.op == "ref":
            return self._address(self.cell.bindings[node.name])
        if node.op == "state":
            return self.now[node.name]
        if node.op == "matvec":
            return self._product_at(node)
        return self._kept_at(node)

    def _kept_at(self, node: Node):
        """Where a kept node lies: in its home, a state's next value (plan.homes), or its slot."""
        if node in self.plan.homes:
            name, offset = self.plan.homes[node]
            return gep(self.b, self.following[name], f32, i64(offset))
        return self._slot(node)

    def _product_at(self, node: Node):
        """Row 0 of a product's output (or an epilogue's result): its stack's output (or
        hoisted row) plus its offset."""
        product, offset = self.plan.product_of(node)
        if product.hoisted:
            return gep(self.b, self.rows[f"hoist.{product.label}"], f32, i64(offset))
        y = self._at(self.y[product.label], f32, self.kernels[product.label].packed.rows_padded)
        return gep(self.b, y, f32, i64(offset))

    # --- passes --------------------------------------------------------------------------------
    def _sweep(self, length: int, roots: list):
        """The roots of one length: SWEEP_BLOCKS x V lanes at a time (every block's values
        computed before any is stored: a store cannot order the next block's loads after it),
        then V lanes at a time, then the tail one at a time."""
        b = self.b
        for start, stop, width, blocks in _sweeps(length, SWEEP_BLOCKS):
            with counted_loop(b, start, stop, width * blocks,
                              name=f"sweep{length}_{width}x{blocks}") as i:
                self.width, stores = width, []
                for k in range(blocks):
                    self.i, self.memo = b.add(i, i64(k * width)) if k else i, {}
                    stores += [(self._value(node, 0), where, b.add(self.i, i64(offset)))
                               for node, where, offset in roots]
                for value, where, at in stores:
                    self._put(value, self._destination(where), at)
                    if where[0] == "next" and where[1] in self.codes:   # plan.codes
                        owner, buf, x_inv = self.codes[where[1]]
                        buf = self._at(buf, owner.elem, owner.packed.x_len)
                        spmv.put_codes(owner, b, buf, at, spmv.code(owner, b, value, x_inv))

    def _destination(self, where):
        kind, key = where
        if kind == "slot":
            return self._slot(key)
        return self.rows[f"output.{key}"] if kind == "output" else self.following[key]

    def _put(self, value, base, index):
        self.b.store(value, gep(self.b, base, f32, index), align=4)

    def _load(self, base, shift: int):
        b = self.b
        typ = vec(f32, self.width) if self.width > 1 else f32
        return b.load(gep(b, base, f32, b.add(self.i, i64(shift))), typ=typ, align=4)

    def _value(self, node: Node, shift: int):
        """`node`'s elements i + shift .. (the sweep's lanes) as a float or a vector; a scalar
        node's value splat."""
        if node.shape == ():
            shift = 0
        key = (node, shift)
        if key not in self.memo:
            value = self._compute(node, shift)
            if node.shape == () and self.width > 1 and not isinstance(value.type, ir.VectorType):
                value = splat(self.b, value, self.width)
            self.memo[key] = value
        return self.memo[key]

    def _compute(self, node: Node, shift: int):
        op, b = node.op, self.b
        if node in self.kept and self.kept[node] < self.current:
            return self._read(self._kept_at(node), shift, node)
        if node in self.plan.gru:
            return self._gru(self.plan.gru[node], shift)
        if node in self.plan.results:
            return self._read(self._product_at(node), shift, node)
        if op in LEAVES:
            return LEAVES[op](self, node, shift)
        if op == "take":
            return self._value(node.args[0], shift + node.attr("start"))
        if op == "ref":
            return self._value(self.cell.bindings[node.name], shift)
        if op == "lookup":
            return self._lookup(*node.args)
        args = [self._value(a, shift) for a in node.args]
        if op in TRANSCENDENTAL:
            return TRANSCENDENTAL[op](b, *args, POLY[self.plan.dtype])
        return ARITHMETIC[op](b, *args)

    def _read(self, base, shift: int, node: Node):
        """Element i + shift of an array (a scalar node: element 0, an int32 one as i32)."""
        if node.shape == ():
            return load(self.b, base, _type(node), 0, align=4)
        return self._load(base, shift)

    def _lookup(self, table: Node, index: Node, factor: float = 1.0):
        """table[index] (a float) for an int32 state, input or class `index` (the plan and the
        runner check that its values stay within the table); a constant table times `factor`
        (_table)."""
        index = resolved(self.cell, index)
        at = (self.now[index.name] if index.op == "state" else
              self.rows[f"input.{index.name}"] if index.op == "input" else
              self._slot(self.plan.draw_of(index).label))
        base = (self.p[f"weight.{table.name}"] if table.op == "weight"
                else self._table(table, factor))
        i = load(self.b, at, i32, 0, align=4)
        return load(self.b, base, f32, self.b.zext(i, i64), align=4)

    def _matvec(self, node: Node, shift: int):
        """A product's elements: from its slot or hoisted row (an integer cell's scaled back
        by this step's x_scale)."""
        value = self._read(self._product_at(node), shift, node)
        product, _ = self.plan.product_of(node)
        if not product.hoisted or self.plan.dtype == "float32":
            return value
        x_scale = self.rows[f"hoist.{product.label}.x_scale"]
        return self.b.fmul(value, splat(self.b, x_scale, self.width) if self.width > 1
                           else x_scale)

    # --- the GRU update, as the hand-written loop computes it (plan.gru, cells.rules) ----------
    def _gru(self, rule, shift: int):
        """h' of a GruGates rule per docs/model.md "The GRU step": pre-activations in gate
        units, E_u, E_r, z = a_e / (1 + E_r) + v_e, E_e = e^−2z (the dtype's gate polynomial,
        its shift folded into the rows), the blend with one division (mathfn.gru_blend)."""
        b, poly = self.b, mathfn.GATE_POLY[self.plan.dtype]
        (au, vu), (ar, vr), (ae, ve) = (self._gate(rule, g, shift) for g in range(3))
        e_u = mathfn.gate_exp(b, b.fadd(au, vu), poly, shifted=True)
        e_r = mathfn.gate_exp(b, b.fadd(ar, vr), poly, shifted=True)
        z = b.fadd(b.fdiv(ae, b.fadd(_c(ae, 1.0), e_r)), ve)
        e_e = mathfn.gate_exp(b, z, poly, squared=True, shifted=True)
        return mathfn.gru_blend(b, self._value(rule.h, shift), e_u, e_e)

    def _gate(self, rule, g: int, shift: int):
        """(a, v) of gate g (u, r, e) in gate units, as the hand-written loop formed them: a from the
        product (in gate units already for an integer cell) and the gate's rows (_frame_rows);
        v the terms with the table folded into gate units, then for e U K_f + s/2, then
        α · U (K_f+1 − K_f) with a linear upsampling."""
        b, length = self.b, size_of(rule.blend)
        acc = self._value(rule.product, shift + rule.starts[g])
        rows = self._load(self._slot((rule.blend, "rows")), shift + g * length)
        if self.plan.dtype == "float32":
            a = b.fmul(b.fadd(acc, rows), _c(acc, mathfn.GATE_UNIT))
        else:
            a = b.fadd(acc, rows)
        v = self._gate_terms(rule.terms[g], shift)
        if g == 2:
            v = b.fadd(v, self._load(self._slot((rule.blend, "ke")), shift))
        if rule.linear:
            dk = self._load(self._slot((rule.blend, "dk")), shift + g * length)
            v = b.fadd(v, b.fmul(self._value(rule.linear[2], 0), dk))
        return a, v

    def _frame_rows(self, t):
        """The GRU rules' rows that change only with the conditioning's rows (plan.GRU_ROWS),
        recomputed at step t when the row of an input they read differs from the previous
        step's (cells.Rows: once per frame of a vocoder)."""
        b, changed = self.b, ir.Constant(ir.IntType(1), 1)
        if all(name in self.plan.indexed for name in self.previous):
            changed = ir.Constant(ir.IntType(1), 0)
            for name, previous in self.previous.items():
                previous = self._at(previous, i64, 1)
                row = load(b, self.p[f"rows.{name}"], i64, t, align=8)
                changed = b.or_(changed, b.icmp_signed("!=", b.load(previous, typ=i64), row))
                b.store(row, previous)
        with b.if_then(changed):
            for rule in self.plan.gru.values():
                for start, stop, width in _sweeps(size_of(rule.blend)):
                    with counted_loop(b, start, stop, width, name=f"frame{width}") as i:
                        self.i, self.width, self.memo = i, width, {}
                        self._store_frame_rows(rule)

    def _store_frame_rows(self, rule):
        """The sweep's lanes of a rule's rows: per gate U (bR + K_f) + s (u, r) or U bR (e)
        (float32: bR + K_f and bR, multiplied by U with the product), U K_f + s/2 of the e
        gate, U (K_f+1 − K_f) per gate."""
        b, length, kappa = self.b, size_of(rule.blend), mathfn.GATE_POLY[self.plan.dtype].shift
        for g in range(3):
            k0, k1 = self._conditioning(rule, g)
            bias = self._value(rule.bias, rule.starts[g])
            unit = _c(bias, mathfn.GATE_UNIT)
            rows = b.fadd(bias, k0) if g < 2 else bias
            if self.plan.dtype != "float32":
                rows = b.fmul(rows, unit)
                rows = b.fadd(rows, _c(rows, kappa)) if kappa and g < 2 else rows
            self._put(rows, self._slot((rule.blend, "rows")), b.add(self.i, i64(g * length)))
            if g == 2:
                ke = b.fmul(k0, unit)
                ke = b.fadd(ke, _c(ke, kappa / 2)) if kappa else ke
                self._put(ke, self._slot((rule.blend, "ke")), self.i)
            if k1 is not None:
                self._put(b.fmul(b.fsub(k1, k0), unit), self._slot((rule.blend, "dk")),
                          b.add(self.i, i64(g * length)))

    def _conditioning(self, rule, g: int) -> tuple:
        """(K_f, K_f+1) of gate g's rows at the sweep's lanes; (k, None) without the linear
        upsampling."""
        base, offset = rule.k[g]
        if rule.linear is None:
            return self._value(base, offset), None
        return self._value(rule.linear[0], offset), self._value(rule.linear[1], offset)

    def _gate_terms(self, node: Node, shift: int):
        """A sum of column · lookup(const) terms (cells.rules) in gate units: each table
        multiplied by mathfn.GATE_UNIT, rounded once from its given values."""
        b = self.b
        if node.op in ("take", "ref"):
            base, offset = slice_of(self.cell, node)
            return self._gate_terms(base, shift + offset)
        if node.op == "add":
            return b.fadd(*(self._gate_terms(x, shift) for x in node.args))
        column, look = node.args
        value = self._lookup(*look.args, mathfn.GATE_UNIT)
        return b.fmul(self._value(column, shift),
                      splat(b, value, self.width) if self.width > 1 else value)

    def _const(self, node: Node, shift: int):
        if node.shape == ():
            return f32(float(node.attr("value")))
        return self._load(self._table(node), shift)

    def _table(self, node: Node, factor: float = 1.0):
        """The module's internal constant array of a vector constant (times `factor`: rounded
        once from the values as given)."""
        values = node.attr("value") if factor == 1.0 else node.attr("given") * factor
        if (node, factor) not in self.tables:
            typ = ir.ArrayType(f32, values.size)
            table = ir.GlobalVariable(self.m, typ, name=f"{self.plan.name}_c{len(self.tables)}")
            table.initializer = ir.Constant(typ, [float(v) for v in values.astype(np.float32)])
            table.global_constant, table.linkage = True, "internal"
            self.tables[node, factor] = table
        return self.tables[node, factor]


LEAVES = {
    "const": CellEmitter._const,
    "state": lambda e, n, s: e._read(e.now[n.name], s, n),
    "input": lambda e, n, s: e._read(e.rows[f"input.{n.name}"], s, n),
    "weight": lambda e, n, s: e._read(e.p[f"weight.{n.name}"], s, n),
    "matvec": CellEmitter._matvec,
    "column": lambda e, n, s: e._load(e.p[column_key(n)], s),
    "sample": lambda e, n, s: e._read(e._slot(e.plan.draw_of(n).label), s, n),
    "softmax": lambda e, n, s: e._read(e._slot(e.plan.draw_of(n).label), s, n),
}


def _reads_layout_of(k, owner, column: int) -> bool:
    """Whether kernel k can read the owner kernel's input buffer from `column` on: the same
    kind of input (codes, or shifted tables of one stride that k's columns fit in)."""
    same = (k.elem, k.codes_input, bool(k.permute), k.group) == (
        owner.elem, owner.codes_input, bool(owner.permute), owner.group)
    if k.is_float or not same:
        return False
    return k.codes_input or (k.stride == owner.stride and column + k.packed.x_len <= owner.stride)


def _type(node: Node):
    """The IR type of one element of a node's value."""
    return i32 if node.dtype == INDEX else f32


def _sweeps(length: int, blocks: int = 0) -> list:
    """(start, stop, width) of a sweep over `length` floats: V lanes at a time, then the tail;
    with `blocks`, (start, stop, width, blocks per iteration): `blocks` x V lanes first."""
    main = length // V * V
    if not blocks:
        return [(a, z, w) for a, z, w in ((0, main, V), (main, length, 1)) if a < z]
    wide = length // (V * blocks) * V * blocks
    return [(a, z, w, n) for a, z, w, n in ((0, wide, V, blocks), (wide, main, V, 1),
                                            (main, length, 1, 1)) if a < z]


def _splat_i32(b, value: int, width: int):
    return splat(b, i32(value), width) if width > 1 else i32(value)


def _max(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _c(like, value: float):
    return (ir.Constant(like.type, [value] * like.type.count)
            if isinstance(like.type, ir.VectorType) else ir.Constant(like.type, value))


def _exp(b, x, scale: float, poly):
    """e^(scale·x): x taken into the gates' unit by one multiplication (mathfn.gate_exp)."""
    return mathfn.gate_exp(b, b.fmul(x, _c(x, -scale * mathfn.GATE_UNIT)), poly)


def _sigmoid(b, x, poly):
    """1 / (1 + e^−x)."""
    return b.fdiv(_c(x, 1.0), b.fadd(_c(x, 1.0), _exp(b, x, -1.0, poly)))


def _tanh(b, x, poly):
    """(1 − e^−2x) / (1 + e^−2x)."""
    e = _exp(b, x, -2.0, poly)
    return b.fdiv(b.fsub(_c(x, 1.0), e), b.fadd(_c(x, 1.0), e))


ARITHMETIC = {
    "add": lambda b, x, y: b.fadd(x, y),
    "sub": lambda b, x, y: b.fsub(x, y),
    "mul": lambda b, x, y: b.fmul(x, y),
    "neg": lambda b, x: b.fsub(_c(x, -0.0), x),
    "affine": lambda b, x, a, c: b.fadd(b.fmul(a, x), c),
    "relu": lambda b, x: mathfn.fmax(b, x, _c(x, 0.0)),
}
TRANSCENDENTAL = {
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "exp": lambda b, x, poly: _exp(b, x, 1.0, poly),
}


def loop_name(plan: CellPlan, kernels: dict) -> str:
    """The loop's name (its symbol and cache key): the plan's and its in-loop kernels' specs
    (the loop quantizes each product's input for its kernel and calls its core)."""
    specs = "|".join(kernels[p.label].spec.name for p in plan.products)
    return f"{plan.name}_{hashlib.sha256(specs.encode()).hexdigest()[:12]}"


def core_symbol(plan: CellPlan, label: str, spec) -> str:
    """The symbol of the core an in-loop product calls: dequantizing, with its epilogue."""
    ep = plan.epilogues.get(label)
    return spmv.core_symbol(spec, True, ep is not None, bool(ep and ep.relu))


def core_modules(plan: CellPlan, kernels: dict, gen) -> list:
    """[(symbol, build)] of the cores the loop calls, one module each (products of one spec and
    epilogue share one); `kernels`: label -> the planner's Plan of each in-loop product."""
    def build(label):
        kp, ep = kernels[label], plan.epilogues.get(label)
        module = ir.Module(name=core_symbol(plan, label, kp.spec))
        spmv.emit_core(spmv.Kernel.of(kp.spec, kp.packed, gen, module), True, ep is not None,
                       bool(ep and ep.relu), internal=False)
        return module
    firsts = {}
    for p in plan.products:
        firsts.setdefault(core_symbol(plan, p.label, kernels[p.label].spec), p.label)
    return [(sym, lambda label=label: build(label)) for sym, label in firsts.items()]


def build(plan: CellPlan, kernels: dict, gen, streams: int = 1) -> ir.Module:
    """An llvmlite module holding the one function `loop_name(plan, kernels) + "_run"`;
    `kernels`: label -> the planner's Plan (spec, packed) of each in-loop product. With
    `streams` B > 1 (kernels of B vectors), the loop `.. + "_run_streams"` of B streams."""
    return CellEmitter(plan, kernels, gen, loop_name(plan, kernels), streams).build()
