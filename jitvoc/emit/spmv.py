"""Emit a matrix-vector kernel (KernelSpec + packed matrix -> llvmlite.ir).

Every kernel module defines, for ``N = spec.name``:

- ``N_core`` / ``N_core_acc(y, xin, W, index, panel_ptr, row_scale, zcorr, x_scale)`` the panel
  product (internal) for every padded row: dequantized float32 y, or the raw accumulators.
  ``xin`` is the stored activation codes (contiguous panels, and gathering panels on CPUs with
  byte permutes), or ``group`` shifted copies of them as int32 (``T_j[c] = code[c] << bits·j``)
  so that a gathering panel's x word is ``T_0[c_0] | T_1[c_1] | …``;
- ``N_raw(y, x_codes, W, index, panel_ptr)`` the integer entry point (x_codes padded to x_len);
- ``N(y, x, W, index, panel_ptr, row_scale, zcorr, x_inv_scale, x_scale)`` float32 in and out:
  quantize x (round half to even, saturate), product,
  ``y = (acc − zcorr) · (row_scale · x_scale)`` (row_scale, zcorr padded to whole row blocks);
- ``N_loop(n, …)`` the float entry called n times (benchmarks time this, not Python).

``index`` is ``Packed.kernel_index()``, or ``Packed.permute_gathers().index`` for byte-permute
gathers (see jitvoc.layout): those kernels first build every panel's x word into a stack array
(``_permute_words``), then read each panel's word from its slot.
Variants: ``idx`` loops over row blocks and reads each panel's columns from ``index``;
``grouped`` visits row blocks sorted by panel count with each count's panels unrolled (no
unpredictable branches; columns still from ``index``); ``baked`` unrolls every panel with its
columns (or word slots) and offsets as constants; ``dense`` walks contiguous panels.
Float kernels use a fixed logical vector width and no FMA, so results do not depend on the ISA.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..contracts import (PERMUTE_GROUP, PERMUTE_PASS, PERMUTE_SLOT, SPMV, SPMV_CORE,
                         SPMV_LOOP, SPMV_RAW)
from ..errors import ContractError
from ..layout import CACHE_LINE, Packed
from ..spec import KernelSpec
from .irutil import (alloca, broadcast_load, byte_size, call, counted_loop, define, f32, gep, i8,
                     i16, i32, i64, load, ptr, splat, store, vec)
from .isa import Backend, generic_dot

GROUPED_UNROLL_LIMIT = 64  # panels per row block fully unrolled by the grouped variant
ROUND_MAGIC = 12582912.0  # 1.5 * 2**23: (v + M) - M rounds |v| < 2**22 half to even


def round_half_even(b: ir.IRBuilder, v):
    """Round float(s) to the nearest integer value, ties to even (IEEE default), exactly."""
    m = ir.Constant(v.type, ROUND_MAGIC) if not isinstance(v.type, ir.VectorType) else \
        ir.Constant(v.type, [ROUND_MAGIC] * v.type.count)
    return b.fsub(b.fadd(v, m), m)


def clamp(b: ir.IRBuilder, v, lo_c, hi_c):
    """v limited to [lo_c, hi_c] (constants of v's type)."""
    v = b.select(b.fcmp_ordered("<", v, lo_c), lo_c, v)
    return b.select(b.fcmp_ordered(">", v, hi_c), hi_c, v)


def core_symbol(spec: KernelSpec, dequantize: bool, bias: bool = False, relu: bool = False) -> str:
    name = SPMV_CORE.symbol(spec.name) + ("" if dequantize else "_acc")
    return name + ("_bias" if bias else "") + ("_relu" if relu else "")


class SpmvEmitter:
    """Writes one kernel's functions into an llvmlite module (which may hold other kernels)."""

    def __init__(self, spec: KernelSpec, packed: Packed, gen, module: ir.Module):
        self.spec, self.p, self.gen, self.module = spec, packed, gen, module
        self.lanes = packed.bh
        self.group = spec.group
        self.is_float = spec.dtype == "float32"
        self.elem = {"int8": i8, "int16": i16, "float32": f32}[spec.dtype]
        self.esize = {"int8": 1, "int16": 2, "float32": 4}[spec.dtype]
        self.kind = {"int8": "dot4", "int16": "dot2"}.get(spec.dtype)
        if self.is_float:
            self.backend, self.width = None, self.lanes
        else:
            self.backend = Backend(spec.isa, gen, module)
            native = self.backend.width(self.kind, self.lanes)  # 0: no native width fits
            self.width, self.native = native or self.lanes, bool(native)
        self.chunks = self.lanes // self.width
        self.acc_t = vec(f32 if self.is_float else i32, self.width)
        self.w_t = vec(self.elem, self.width * self.group)
        self.panel_bytes = self.lanes * self.group * self.esize
        self.stride = spec.x_stride or packed.x_len   # distance between shifted tables
        self.permute = spec.x_permute                 # byte-permute window (VBMI gathers)
        self.codes_input = packed.contiguous or bool(self.permute)  # xin = plain codes
        self.gathers = packed.permute_gathers(self.permute) if self.permute else None
        self.x_pad = self.gathers.x_pad if self.permute else packed.x_len

    # --- core ----------------------------------------------------------------------------------
    def emit_core(self, dequantize: bool, bias: bool = False, relu: bool = False,
                  internal: bool = True) -> ir.Function:
        """N_core (float y, dequantized) or N_core_acc (raw accumulators), named by
        core_symbol; `internal=False` exports it (a core compiled in a module of its own).

        Arguments: y, xin, W, index, panel_ptr, row_scale, zcorr, x_scale, bias (row_scale,
        zcorr and x_scale are read only when dequantizing an integer kernel). With `bias` the
        epilogue adds bias[row], with `relu` it then clamps at zero.
        """
        s, p = self.spec, self.p
        name = core_symbol(s, dequantize, bias, relu)
        if name in self.module.globals:  # same spec, same code (another matrix of this layout)
            return self.module.globals[name]
        fn, a = define(self.module, SPMV_CORE, s.name, internal, symbol=name)
        fn.attributes.add("noinline")  # big loops: inlining them only costs compile time
        y, xin, w, index, pptr = a.y, a.xin, a.W, a.index, a.panel_ptr
        self.row_scale, self.zcorr, self.x_scale, self.bias = a.row_scale, a.zcorr, a.x_scale, a.bias
        for a in fn.args[:7]:
            a.add_attribute("noalias")
        self.add_bias, self.relu = bias, relu
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.dequantize = dequantize and not self.is_float
        n_sets = s.accumulators
        self.accs = [[b.alloca(self.acc_t) for _ in range(self.chunks)] for _ in range(n_sets)]
        self.b, self.xin, self.w = b, xin, w
        if self.permute:
            self._permute_words(index, pptr)
        if s.variant == "baked":
            for i, rb in enumerate(p.rb_order.tolist()):
                self._zero()
                lo, hi = int(p.panel_ptr[i]), int(p.panel_ptr[i + 1])
                for q in range(lo, hi):
                    col = ([int(self.gathers.slots[q])] if self.permute
                           else [int(c) for c in p.cols_idx[q]])
                    self._panel(q, col, (q - lo) % n_sets)
                self._store(y, rb, self.accs)
        elif s.dense:
            self._dense(y)
        elif s.variant == "grouped":
            self._grouped(y, index, pptr)
        else:
            with counted_loop(b, 0, p.row_blocks, name="rb") as rb:
                self._zero()
                self._panel_loop(index, pptr, rb)
                self._store(y, rb, self.accs)
        b.ret_void()
        return fn

    def _panel_loop(self, index, pptr, i):
        """The index-driven loop over the i-th stored row block's panels, unrolled `unroll`
        times."""
        b, s = self.b, self.spec
        start = b.sext(load(b, pptr, i32, i, align=4), i64)
        stop = b.sext(load(b, pptr, i32, b.add(i, i64(1)), align=4), i64)
        main_end = b.add(start, b.mul(b.sdiv(b.sub(stop, start), i64(s.unroll)), i64(s.unroll)))
        with counted_loop(b, start, main_end, s.unroll, name="main") as q:
            for u in range(s.unroll):
                qu = b.add(q, i64(u))
                self._panel(qu, self._runtime_cols(index, qu), u % s.accumulators)
        with counted_loop(b, main_end, stop, 1, name="rest") as q:
            # one panel per trip into accumulator 0, then rotate the accumulators, so that
            # consecutive trips do not wait on each other's result
            self._panel(q, self._runtime_cols(index, q), 0)
            self._rotate()

    def _grouped(self, y, index, pptr):
        """Row blocks stored sorted by panel count (layout.pack by_count): one loop per count
        with that many panels unrolled, walking panels in memory order, so every branch is
        predictable. Where each row block goes is a constant array in the module."""
        b, p, n_sets = self.b, self.p, self.spec.accumulators
        counts = (p.panel_ptr[1:] - p.panel_ptr[:-1]).astype(np.int64)
        if np.any(np.diff(counts) < 0):
            raise ValueError("grouped kernels need row blocks packed by_count")
        name = f"{self.spec.name}_order"
        table = self.module.globals.get(name)
        if table is None:  # shared by both cores
            kind = ir.ArrayType(i32, p.row_blocks)
            table = ir.GlobalVariable(self.module, kind, name=name)
            table.initializer = ir.Constant(kind, p.rb_order.tolist())
            table.global_constant, table.linkage = True, "internal"
        start = 0
        for k in np.unique(counts).tolist():
            stop = start + int(np.count_nonzero(counts == k))
            base = int(p.panel_ptr[start])
            with counted_loop(b, start, stop, name=f"count{k}") as i:
                rb = b.sext(load(b, table, i32, i, align=4), i64)
                self._zero()
                if k <= GROUPED_UNROLL_LIMIT:
                    first = b.add(i64(base), b.mul(b.sub(i, i64(start)), i64(k)))
                    for u in range(k):
                        q = b.add(first, i64(u))
                        self._panel(q, self._runtime_cols(index, q), u % n_sets)
                else:
                    self._panel_loop(index, pptr, i)
                self._store(y, rb, self.accs)
            start = stop

    def _dense(self, y):
        """Dense: `accumulators` row blocks at a time share each broadcast of x (register blocking);
        the column loop is unrolled `unroll` times."""
        b, s, p = self.b, self.spec, self.p
        n_k = p.x_len // self.group
        n_rb = s.accumulators
        full = p.row_blocks // n_rb * n_rb

        def group(rb0, count):
            self._zero()
            k_main = n_k // s.unroll * s.unroll

            def step(k):
                col = [b.mul(k, i64(self.group)) if not isinstance(k, int) else k * self.group]
                xw = self._xword(col)
                for r in range(count):
                    q = b.add(b.mul(b.add(rb0, i64(r)), i64(n_k)), k if not isinstance(k, int)
                              else i64(k))
                    self._panel(q, None, r, xw)

            if k_main:
                with counted_loop(b, 0, k_main, s.unroll, name="k") as k:
                    for u in range(s.unroll):
                        step(b.add(k, i64(u)))
            for k in range(k_main, n_k):
                step(i64(k))
            for r in range(count):
                self._store(y, b.add(rb0, i64(r)), [self.accs[r]])

        if full:
            with counted_loop(b, 0, full, n_rb, name="rbgroup") as rb0:
                group(rb0, n_rb)
        if p.row_blocks > full:
            group(i64(full), p.row_blocks - full)

    def _permute_words(self, index, pptr):
        """VBMI prologue: every gathering panel's activation word, 16 panels per group, into a
        stack array (layout.PermuteGathers): per group one byte permute of a 128-byte window of
        x, then one masked permute per extra pass. Kernels with the pattern compiled in know the
        group count; index-driven ones read it from panel_ptr."""
        b, p, rec_size = self.b, self.p, PERMUTE_PASS.size
        bytes64 = vec(i8, 64)
        if self.spec.pattern:
            n_panels = i64(p.n_panels)
        else:
            n_panels = b.sext(load(b, pptr, i32, i64(p.row_blocks), align=4), i64)
        n_groups = b.udiv(b.add(n_panels, i64(PERMUTE_GROUP - 1)), i64(PERMUTE_GROUP))
        self.words = words = alloca(b, i32, b.mul(n_groups, i64(PERMUTE_GROUP)),
                                    align=CACHE_LINE)
        firsts = b.mul(n_groups, i64(PERMUTE_GROUP * SLOT_BYTES))   # the first passes follow
        result = b.alloca(bytes64)

        def field(off, name):
            return b.sext(load(b, pass_field(b, index, off, name, i32), i32, align=4), i64)

        def permute(off):
            start = field(off, "offset")
            lo = b.load(gep(b, self.xin, i8, start), typ=bytes64, align=1)
            hi = b.load(gep(b, self.xin, i8, b.add(start, i64(64))), typ=bytes64, align=1)
            idx = b.load(pass_field(b, index, off, "byte_index", bytes64), typ=bytes64, align=1)
            return self.backend.permute_window(b, lo, idx, hi)

        with counted_loop(b, 0, n_groups, name="gather") as g:
            first = b.add(firsts, b.mul(g, i64(rec_size)))
            b.store(permute(first), result)
            further = field(first, "next_at")
            with counted_loop(b, 0, field(first, "further"), name="pass") as j:
                off = b.add(further, b.mul(j, i64(rec_size)))
                mask = b.bitcast(b.load(pass_field(b, index, off, "mask", i64), typ=i64,
                                        align=4), vec(ir.IntType(1), 64))
                b.store(b.select(mask, permute(off), b.load(result)), result)
            b.store(b.load(result), gep(b, words, i32, b.mul(g, i64(PERMUTE_GROUP))), align=4)

    def _runtime_cols(self, index, q):
        """Panel q's column (contiguous panels) or table offsets (gathering panels), as i64;
        with byte permutes, the slot of its precomputed word."""
        b, g = self.b, self.group
        if self.permute or self.p.contiguous:   # one int32 per panel
            return [b.sext(load(b, index, i32, q, align=4), i64)]
        word_t = ir.IntType(16 * g)  # g uint16 offsets in one load
        packed = b.load(gep(b, index, i16, b.mul(q, i64(g))), typ=word_t, align=2)
        return [b.zext(b.trunc(b.lshr(packed, word_t(16 * j)) if j else packed, i16), i64)
                for j in range(g)]

    def _rotate(self):
        b, accs = self.b, self.accs
        for k in range(self.chunks):
            vals = [b.load(acc_set[k]) for acc_set in accs]
            for acc_set, v in zip(accs, vals[1:] + vals[:1]):
                b.store(v, acc_set[k])

    def _zero(self):
        zero = ir.Constant(self.acc_t, [0.0 if self.is_float else 0] * self.width)
        for acc_set in self.accs:
            for a in acc_set:
                self.b.store(zero, a)

    def _xword(self, col):
        """The broadcast activations of one panel, as <width x i32> (or <width x float>)."""
        b = self.b
        as_i64 = [i64(c) if isinstance(c, int) else c for c in col]
        if self.is_float:
            return broadcast_load(b, self.xin, f32, as_i64[0], self.width, align=4)
        if self.permute:
            return broadcast_load(b, self.words, i32, as_i64[0], self.width, align=4)
        if self.p.contiguous:  # g consecutive codes starting at col[0]: one 32-bit load
            return broadcast_load(b, gep(b, self.xin, self.elem, as_i64[0]), i32, 0, self.width,
                                  align=4)
        word = None   # OR of the shifted tables at the panel's offsets
        for j, c in enumerate(col):
            idx = i64(c + j * self.stride) if isinstance(c, int) else c
            t = load(b, self.xin, i32, idx, align=4)
            word = t if word is None else b.or_(word, t)
        return splat(b, word, self.width)

    def _panel(self, q, col, acc_index: int, xw=None):
        b = self.b
        xw = self._xword(col) if xw is None else xw
        base = q * self.panel_bytes if isinstance(q, int) else b.mul(q, i64(self.panel_bytes))
        for k in range(self.chunks):
            off = k * self.width * self.group * self.esize
            idx = i64(base + off) if isinstance(base, int) else b.add(base, i64(off))
            wv = b.load(gep(b, self.w, i8, idx), typ=self.w_t, align=1)
            acc = b.load(self.accs[acc_index][k])
            if self.is_float:
                new = b.fadd(acc, b.fmul(wv, xw))
            elif self.native:
                new = self.backend.dot(b, self.kind, acc, xw, wv)
            else:
                new = generic_dot(b, self.kind, acc, xw, wv)
            b.store(new, self.accs[acc_index][k])

    def _store(self, y, rb, acc_sets):
        """Sum the accumulator sets of row block rb and store them (dequantized if asked)."""
        b = self.b
        for k in range(self.chunks):
            total = b.load(acc_sets[0][k])
            for acc_set in acc_sets[1:]:
                v = b.load(acc_set[k])
                total = b.fadd(total, v) if self.is_float else b.add(total, v)
            row = (i64(rb * self.lanes + k * self.width) if isinstance(rb, int)
                   else b.add(b.mul(rb, i64(self.lanes)), i64(k * self.width)))
            if self.dequantize:
                zc = b.load(gep(b, self.zcorr, i32, row), typ=self.acc_t, align=4)
                rs = b.load(gep(b, self.row_scale, f32, row), typ=vec(f32, self.width), align=4)
                scale = b.fmul(rs, splat(b, self.x_scale, self.width))
                total = b.fmul(b.sitofp(b.sub(total, zc), scale.type), scale)
            if self.add_bias:
                total = b.fadd(total, b.load(gep(b, self.bias, f32, row), typ=total.type, align=4))
            if self.relu:
                zero = ir.Constant(total.type, [0.0] * self.width)
                total = b.select(b.fcmp_ordered(">", total, zero), total, zero)
            b.store(total, gep(b, y, total.type.element, row), align=4)

    # --- entry points ----------------------------------------------------------------------------
    def emit_entries(self) -> None:
        s, p, m = self.spec, self.p, self.module
        core_acc, core = self.emit_core(dequantize=False), self.emit_core(dequantize=True)
        null = ir.Constant(ptr, None)

        raw, a = define(m, SPMV_RAW, s.name)
        b = ir.IRBuilder(raw.append_basic_block("entry"))
        call(b, SPMV_CORE, core_acc, y=a.y, xin=self.prepare_x(b, a.x_codes), W=a.W,
             index=a.index, panel_ptr=a.panel_ptr, row_scale=null, zcorr=null, x_scale=f32(0.0),
             bias=null)
        b.ret_void()

        fl, a = define(m, SPMV, s.name)
        fl.attributes.add("noinline")
        b = ir.IRBuilder(fl.append_basic_block("entry"))
        xin = self.activations(b, a.x, a.x_inv_scale)
        out = a.y if p.rows_padded == p.rows else alloca(b, f32, p.rows_padded, align=CACHE_LINE)
        call(b, SPMV_CORE, core, y=out, xin=xin, W=a.W, index=a.index, panel_ptr=a.panel_ptr,
             row_scale=a.row_scale, zcorr=a.zcorr, x_scale=a.x_scale, bias=null)
        if out is not a.y:
            with counted_loop(b, 0, p.rows, name="out") as r:
                store(b, load(b, out, f32, r, align=4), a.y, r, align=4)
        b.ret_void()

        lp, a = define(m, SPMV_LOOP, s.name)
        b = ir.IRBuilder(lp.append_basic_block("entry"))
        with counted_loop(b, 0, a.n, name="rep"):
            call(b, SPMV, fl, **{n: getattr(a, n) for n in SPMV.names})
        b.ret_void()

    def prepare_x(self, b: ir.IRBuilder, codes):
        """What the core reads as xin, from stored codes (padded to x_len): the codes, a copy
        zero-padded to x_pad for permute windows, or their shifted tables."""
        if self.is_float or self.p.contiguous:
            return codes
        if self.permute:
            buf = alloca(b, self.elem, self.x_pad, align=CACHE_LINE)
            with counted_loop(b, 0, self.x_pad, name="pad") as c:
                inside = b.icmp_signed("<", c, i64(self.p.x_len))
                v = load(b, codes, self.elem, b.select(inside, c, i64(0)), align=1)
                store(b, b.select(inside, v, ir.Constant(self.elem, 0)), buf, c, align=1)
            return buf
        table = alloca(b, i32, self.group * self.stride, align=CACHE_LINE)
        with counted_loop(b, 0, self.p.x_len, name="table") as c:
            self._store_shifted(b, table, c, b.zext(load(b, codes, self.elem, c,
                                                         align=self.esize), i32))
        return table

    def _store_shifted(self, b, table, c, code):
        """T_j[c] = code << (bits · j) for every table j; `code` an i32 or an i32 vector."""
        for j in range(self.group):
            shift = i32(8 * self.esize * j)
            if isinstance(code.type, ir.VectorType):
                shift = ir.Constant(code.type, [8 * self.esize * j] * code.type.count)
            v = b.shl(code, shift) if j else code
            store(b, v, table, b.add(c, i64(j * self.stride)), align=4, elem_type=i32)

    def xin_buffer(self, b: ir.IRBuilder, length: int = 0):
        """Stack space for what the core reads (None when float x can be read in place), at
        least `length` codes long. Allocate it once, in the entry block, when the core runs in
        a loop."""
        p = self.p
        if self.is_float:
            return None if p.x_len == p.cols else alloca(b, f32, p.x_len, align=CACHE_LINE)
        if not self.codes_input:
            return alloca(b, i32, self.group * self.stride, align=CACHE_LINE)
        return alloca(b, self.elem, max(self.x_pad, length), align=CACHE_LINE)

    def stack_bytes(self) -> int:
        """The most stack the entry points allocate: the xin buffer or tables (xin_buffer,
        prepare_x), the padded output (emit_entries) and the permute words (_permute_words)."""
        p = self.p
        if self.is_float:
            xin = 0 if p.x_len == p.cols else 4 * p.x_len
        elif not self.codes_input:
            xin = 4 * self.group * self.stride
        else:
            xin = self.esize * self.x_pad
        out = 4 * p.rows_padded if p.rows_padded != p.rows else 0
        words = 4 * (p.n_panels + 15) // 16 * 16 + 64 if self.permute else 0
        return xin + out + words

    def activations(self, b: ir.IRBuilder, x, x_inv, buf=None):
        """xin for float x: quantized codes (saturating, half to even) or their shifted tables,
        zero-padded to x_len; float kernels get x itself (copied if it needs padding)."""
        p = self.p
        buf = self.xin_buffer(b) if buf is None else buf
        if self.is_float:
            if p.x_len == p.cols:
                return x
            with counted_loop(b, 0, p.cols, name="copy") as c:
                store(b, load(b, x, f32, c, align=4), buf, c, align=4)
            with counted_loop(b, p.cols, p.x_len, name="pad") as c:
                store(b, f32(0.0), buf, c, align=4)
            return buf
        n = self.backend.vector_bits // 32   # floats per vector: quantize n at a time
        main = p.cols // n * n
        if main:
            with counted_loop(b, 0, main, n, name="quant") as c:
                v = b.load(gep(b, x, f32, c), typ=vec(f32, n), align=4)
                self.put_codes(b, buf, c, self.code(b, v, x_inv))
        with counted_loop(b, main, p.cols, name="quant_tail") as c:
            self.put_codes(b, buf, c, self.code(b, load(b, x, f32, c, align=4), x_inv))
        with counted_loop(b, p.cols, self.x_pad, name="pad") as c:
            self.put_codes(b, buf, c, i32(0))
        return buf

    def code(self, b: ir.IRBuilder, v, x_inv):
        """The stored code (as i32, zero point added) of float v (scalar or vector): v · x_inv
        saturated to the format's range and rounded half to even."""
        s = self.spec
        if s.dtype == "int8":
            lo, hi, zp = (-128.0, 127.0, 128) if s.x_signed else (0.0, 255.0, 0)
        else:
            lo, hi, zp = -32768.0, 32767.0, 0
        vt = v.type
        n = vt.count if isinstance(vt, ir.VectorType) else 0
        const = (lambda t, c: ir.Constant(t, [c] * n)) if n else (lambda t, c: ir.Constant(t, c))
        x_inv = splat(b, x_inv, n) if n else x_inv
        v = clamp(b, b.fmul(v, x_inv), const(vt, lo), const(vt, hi))
        it = vec(i32, n) if n else i32
        return b.add(b.fptosi(round_half_even(b, v), it), const(it, zp))

    def put_codes(self, b: ir.IRBuilder, buf, c, code):
        """Store code(s) for column c on: into the shifted tables (gathering panels, as the
        unsigned 8/16-bit pattern) or as stored codes."""
        n = code.type.count if isinstance(code.type, ir.VectorType) else 0
        if not self.codes_input:
            narrow = b.trunc(code, vec(self.elem, n) if n else self.elem)
            self._store_shifted(b, buf, c, b.zext(narrow, code.type))
        else:
            store(b, b.trunc(code, vec(self.elem, n) if n else self.elem), buf, c,
                  align=self.esize, elem_type=self.elem)


SLOT_BYTES = np.dtype(PERMUTE_SLOT).itemsize


def pass_field(b: ir.IRBuilder, index, off, name: str, typ):
    """The address of field `name` of the byte-permute pass at byte `off` of `index`, read as
    `typ` (which must have the field's size)."""
    f = PERMUTE_PASS.field(name)
    if byte_size(typ) != f.nbytes:
        raise ContractError(f"permute pass field {name} has {f.nbytes} bytes, read as {typ}")
    return gep(b, index, i8, b.add(off, i64(f.offset)) if f.offset else off)


def stack_bytes(spec: KernelSpec, packed: Packed, gen) -> int:
    """Stack bytes a call of the kernel's entry points needs for its buffers."""
    return SpmvEmitter(spec, packed, gen, ir.Module(name=spec.name)).stack_bytes()


def build_module(spec: KernelSpec, packed: Packed, gen) -> ir.Module:
    """A module holding one kernel's core and entry points."""
    m = ir.Module(name=spec.name)
    SpmvEmitter(spec, packed, gen, m).emit_entries()
    return m
