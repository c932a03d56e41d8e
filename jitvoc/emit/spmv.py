"""Emit a matrix-vector kernel (KernelSpec + packed matrix -> llvmlite.ir).

Every kernel module defines, for ``N = spec.name``:

- ``N_core(y, xin, W, cols, panel_ptr)`` the panel product (internal): int32 (or float32) y for
  every padded row; ``xin`` is the stored activations (contiguous panels) or, for panels that
  gather columns, ``group`` shifted copies of them as int32 (``T_j[c] = code[c] << bits·j``) so
  that one panel's x word is ``T_0[c_0] | T_1[c_1] | …``;
- ``N_raw(y, x_codes, W, cols, panel_ptr)`` the integer entry point (x_codes padded to x_len);
- ``N(y, x, W, cols, panel_ptr, row_scale, zcorr, x_inv_scale, x_scale)`` float32 in and out:
  quantize x (round half to even, saturate), product, ``y = (acc − zcorr) · (row_scale · x_scale)``;
- ``N_loop(n, …)`` the float entry called n times (benchmarks time this, not Python).

Variants: ``idx`` loops over row blocks and reads panel columns from ``cols``; ``baked`` unrolls
every panel with its columns and offsets as constants; ``dense`` walks contiguous panels.
Float kernels use a fixed logical vector width and no FMA, so results do not depend on the ISA.
"""
from __future__ import annotations

from llvmlite import ir

from ..layout import Packed
from ..spec import KernelSpec
from .irutil import (counted_loop, f32, function, gep, i8, i16, i32, i64, load, ptr, splat,
                     store, vec, void)
from .isa import Backend, generic_dot

ROUND_MAGIC = 12582912.0  # 1.5 * 2**23: (v + M) - M rounds |v| < 2**22 half to even


def round_half_even(b: ir.IRBuilder, v):
    """Round float(s) to the nearest integer value, ties to even (IEEE default), exactly."""
    m = ir.Constant(v.type, ROUND_MAGIC) if not isinstance(v.type, ir.VectorType) else \
        ir.Constant(v.type, [ROUND_MAGIC] * v.type.count)
    return b.fsub(b.fadd(v, m), m)


def clamp(b: ir.IRBuilder, v, lo: float, hi: float):
    lo_c, hi_c = ir.Constant(v.type, lo), ir.Constant(v.type, hi)
    v = b.select(b.fcmp_ordered("<", v, lo_c), lo_c, v)
    return b.select(b.fcmp_ordered(">", v, hi_c), hi_c, v)


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
            self.width = self.backend.width(self.kind, self.lanes) or self.lanes
        self.chunks = self.lanes // self.width
        self.acc_t = vec(f32 if self.is_float else i32, self.width)
        self.w_t = vec(self.elem, self.width * self.group)
        self.panel_bytes = self.lanes * self.group * self.esize

    # --- core ----------------------------------------------------------------------------------
    def emit_core(self) -> ir.Function:
        s, p = self.spec, self.p
        fn = function(self.module, f"{s.name}_core", void, [ptr] * 5, internal=True)
        y, xin, w, cols, pptr = fn.args
        for a in (y, xin, w, cols, pptr):
            a.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.accs = [[b.alloca(self.acc_t) for _ in range(self.chunks)]
                     for _ in range(s.accumulators)]
        self.b, self.xin, self.w = b, xin, w
        if s.variant == "baked":
            for rb in range(p.row_blocks):
                self._zero()
                lo, hi = int(p.panel_ptr[rb]), int(p.panel_ptr[rb + 1])
                for q in range(lo, hi):
                    self._panel(q, [int(c) for c in p.cols_idx[q]], (q - lo) % s.accumulators)
                self._store(y, rb)
        else:
            with counted_loop(b, 0, p.row_blocks, name="rb") as rb:
                self._zero()
                if s.dense:
                    n_k = p.x_len // self.group
                    first = b.mul(rb, i64(n_k))
                    start, stop = first, b.add(first, i64(n_k))
                else:
                    start = b.sext(load(b, pptr, i32, rb, align=4), i64)
                    stop = b.sext(load(b, pptr, i32, b.add(rb, i64(1)), align=4), i64)
                main_end = b.add(start, b.mul(b.sdiv(b.sub(stop, start), i64(s.unroll)),
                                              i64(s.unroll)))
                with counted_loop(b, start, main_end, s.unroll, name="main") as q:
                    for u in range(s.unroll):
                        qu = b.add(q, i64(u))
                        self._panel(qu, self._runtime_cols(cols, qu, rb), u % s.accumulators)
                with counted_loop(b, main_end, stop, 1, name="rest") as q:
                    self._panel(q, self._runtime_cols(cols, q, rb), 0)
                self._store(y, rb)
        b.ret_void()
        return fn

    def _runtime_cols(self, cols, q, rb):
        b, g = self.b, self.group
        if self.spec.dense:  # panel q of row block rb covers columns (q - rb*K)*g ...
            first = b.mul(b.sub(q, b.mul(rb, i64(self.p.x_len // g))), i64(g))
            return [first] if self.p.contiguous else None
        if self.p.contiguous:
            return [b.sext(load(b, cols, i32, b.mul(q, i64(g)), align=4), i64)]
        return [b.sext(load(b, cols, i32, b.add(b.mul(q, i64(g)), i64(j)), align=4), i64)
                for j in range(g)]

    def _zero(self):
        zero = ir.Constant(self.acc_t, [0.0 if self.is_float else 0] * self.width)
        for acc_set in self.accs:
            for a in acc_set:
                self.b.store(zero, a)

    def _xword(self, col):
        """The broadcast activations of one panel, as <width x i32> (or <width x float>)."""
        b, g = self.b, self.group
        as_i64 = [i64(c) if isinstance(c, int) else c for c in col]
        if self.is_float:
            return splat(b, load(b, self.xin, f32, as_i64[0], align=4), self.width)
        if self.p.contiguous:  # g consecutive codes starting at col[0]: one 32-bit load
            addr = gep(b, self.xin, self.elem, as_i64[0])
            word = b.load(addr, typ=i32, align=4)
        else:
            x_len = self.p.x_len
            word = None
            for j, c in enumerate(as_i64):
                idx = b.add(c, i64(j * x_len)) if not isinstance(col[j], int) else i64(col[j] + j * x_len)
                t = load(b, self.xin, i32, idx, align=4)
                word = t if word is None else b.or_(word, t)
        return splat(b, word, self.width)

    def _panel(self, q, col, acc_index: int):
        b = self.b
        xw = self._xword(col)
        base = q * self.panel_bytes if isinstance(q, int) else b.mul(q, i64(self.panel_bytes))
        for k in range(self.chunks):
            off = k * self.width * self.group * self.esize
            idx = i64(base + off) if isinstance(base, int) else b.add(base, i64(off))
            wv = b.load(gep(b, self.w, i8, idx), typ=self.w_t, align=1)
            acc = b.load(self.accs[acc_index][k])
            if self.is_float:
                new = b.fadd(acc, b.fmul(wv, xw))
            elif self.width == self.lanes and self.backend.width(self.kind, self.lanes):
                new = self.backend.dot(b, self.kind, acc, xw, wv)
            else:
                new = generic_dot(b, self.kind, acc, xw, wv)
            b.store(new, self.accs[acc_index][k])

    def _store(self, y, rb):
        b = self.b
        for k in range(self.chunks):
            total = b.load(self.accs[0][k])
            for acc_set in self.accs[1:]:
                v = b.load(acc_set[k])
                total = b.fadd(total, v) if self.is_float else b.add(total, v)
            row = (rb * self.lanes + k * self.width if isinstance(rb, int)
                   else b.add(b.mul(rb, i64(self.lanes)), i64(k * self.width)))
            store(b, total, y, row, align=4, elem_type=self.acc_t.element)

    # --- entry points ----------------------------------------------------------------------------
    def prepare_x(self, b: ir.IRBuilder, codes):
        """What the core reads as xin: the codes, or their shifted tables for gathering panels."""
        if self.is_float or self.p.contiguous:
            return codes
        x_len, g = self.p.x_len, self.group
        table = b.alloca(i32, size=i64(g * x_len))
        bits = 8 * self.esize
        with counted_loop(b, 0, x_len, name="table") as c:
            v = b.zext(load(b, codes, self.elem, c, align=self.esize), i32)
            for j in range(g):
                store(b, b.shl(v, i32(bits * j)) if j else v, table, b.add(c, i64(j * x_len)),
                      align=4)
        return table

    def emit_entries(self, core: ir.Function) -> None:
        s, p = self.spec, self.p
        m = self.module
        # integer (or float32) entry on stored codes
        raw = function(m, f"{s.name}_raw", void, [ptr] * 5)
        b = ir.IRBuilder(raw.append_basic_block("entry"))
        y, x, w, cols, pptr = raw.args
        b.call(core, [y, self.prepare_x(b, x), w, cols, pptr])
        b.ret_void()

        # float32 entry
        fl = function(m, s.name, void, [ptr] * 7 + [f32, f32])
        fl.attributes.add("noinline")
        b = ir.IRBuilder(fl.append_basic_block("entry"))
        y, x, w, cols, pptr, row_scale, zcorr, x_inv, x_scale = fl.args
        acc = b.alloca(self.acc_t.element, size=i64(p.rows_padded))
        if self.is_float:
            codes = b.alloca(f32, size=i64(p.x_len))
            with counted_loop(b, 0, p.x_len, name="copy") as c:
                inside = b.icmp_signed("<", c, i64(p.cols))
                safe = b.select(inside, c, i64(0))
                v = load(b, x, f32, safe, align=4)
                store(b, b.select(inside, v, f32(0.0)), codes, c, align=4)
        else:
            codes = self.quantize_into(b, x, x_inv)
        b.call(core, [acc, self.prepare_x(b, codes), w, cols, pptr])
        with counted_loop(b, 0, p.rows, name="out") as r:
            a = load(b, acc, self.acc_t.element, r, align=4)
            if not self.is_float:
                a = b.sitofp(b.sub(a, load(b, zcorr, i32, r, align=4)), f32)
                a = b.fmul(a, b.fmul(load(b, row_scale, f32, r, align=4), x_scale))
            store(b, a, y, r, align=4)
        b.ret_void()

        # benchmark loop
        lp = function(m, f"{s.name}_loop", void, [i64] + [ptr] * 7 + [f32, f32])
        b = ir.IRBuilder(lp.append_basic_block("entry"))
        with counted_loop(b, 0, lp.args[0], name="rep"):
            b.call(fl, list(lp.args[1:]))
        b.ret_void()

    def quantize_into(self, b: ir.IRBuilder, x, x_inv):
        """Stored activation codes (zero-padded to x_len) of float x, saturating, half-to-even."""
        s, p = self.spec, self.p
        if s.dtype == "int8":
            lo, hi, zp = (-128.0, 127.0, 128) if s.x_signed else (0.0, 255.0, 0)
        else:
            lo, hi, zp = -32768.0, 32767.0, 0
        codes = b.alloca(self.elem, size=i64(p.x_len))
        with counted_loop(b, 0, p.cols, name="quant") as c:
            v = clamp(b, b.fmul(load(b, x, f32, c, align=4), x_inv), lo, hi)
            q = b.add(b.fptosi(round_half_even(b, v), i32), i32(zp))
            store(b, b.trunc(q, self.elem), codes, c, align=self.esize)
        with counted_loop(b, p.cols, p.x_len, name="pad") as c:
            store(b, ir.Constant(self.elem, zp), codes, c, align=self.esize)
        return codes


def build_module(spec: KernelSpec, packed: Packed, gen) -> ir.Module:
    """A module holding one kernel's core and entry points."""
    m = ir.Module(name=spec.name)
    e = SpmvEmitter(spec, packed, gen, m)
    e.emit_entries(e.emit_core())
    return m
