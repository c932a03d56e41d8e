"""Emit the linear-recurrence kernels ``h_t = λ_t ⊙ h_{t-1} + x_t`` (jitvoc.spec.ScanSpec ->
llvmlite.ir; jitvoc.plan.scan picks the vector width).

Both kinds share one signature (contracts.SCAN); rows are ``stride`` floats apart (negative strides
walk backwards in time, which the backward pass uses):

- ``serial(lam, x, h, state, n, ncols, stride, tile)``: ``h[t] = lam[t]·h[t-1] + x[t]`` for
  ``t < n`` with ``h[-1] = state``; on return ``state = h[n-1]`` (the serial kernel, and the
  parallel scan's final pass). ``stream`` variants write h with non-temporal stores and need
  h and every row 4·width-byte aligned (ncols a multiple of width);
- ``reduce(lam, x, A, B, n, ncols, stride, tile)``: folds n rows into the chunk carry,
  ``A ← A·Πλ``, ``B ← (the recurrence run from B)``; the caller starts from A = 1, B = 0.

SIMD across D: columns go in register blocks of ``block`` vectors, then block/2, ..., 1 vectors,
then a scalar tail, so any D works. Time runs in tiles of ``tile`` rows; inside a tile each
column block keeps its state in registers and the tile's rows stay in cache between blocks.
The reduce kernel flushes denormals to zero (Πλ of a long chunk underflows).
"""
from __future__ import annotations

from llvmlite import ir

from ..contracts import SCAN
from ..spec import ScanSpec
from .irutil import (counted_loop, declare_intrinsic, define, f32, gep, i32, i64, ptr, vec,
                     void)

MXCSR_FTZ_DAZ = 0x8040


class _Emitter:
    def __init__(self, spec: ScanSpec, module: ir.Module):
        self.spec = spec
        fn, a = define(module, SCAN, spec.name)
        for arg in fn.args[:4]:
            arg.add_attribute("noalias")
        self.lam, self.x, self.out, self.init = a.lam, a.x, a.h, a.state
        self.n, self.ncols, self.stride, tile = a.n, a.ncols, a.stride, a.tile
        self.module = module
        b = self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        w, nb = spec.width, spec.block
        vt = vec(f32, w) if w > 1 else f32
        # State slots (promoted to registers by SROA): [h or B] and, for reduce, [A].
        self.slots = {(t, j, s): b.alloca(t) for t in dict.fromkeys((vt, f32))
                      for j in range(nb) for s in "hA"}
        mxcsr = self._flush_denormals() if spec.kind == "reduce" else None
        self.tile = b.select(b.icmp_signed("<", tile, i64(1)), i64(1), tile)
        with counted_loop(b, 0, self.n, self.tile, name="tile") as t0:
            t1 = b.add(t0, self.tile)
            t1 = b.select(b.icmp_signed("<", t1, self.n), t1, self.n)
            c = i64(0)
            for count in _halvings(nb) if w > 1 else ():
                c = self._columns(t0, t1, c, vt, w, count)
            self._columns(t0, t1, c, f32, 1, 1)
        if spec.kind == "reduce":
            self._mxcsr("ldmxcsr", mxcsr)
        if spec.stream:   # order the streaming stores before whatever the caller does next
            b.call(declare_intrinsic(module, "llvm.x86.sse.sfence", void, []), [])
        b.ret_void()

    def _flush_denormals(self):
        """Set FTZ and DAZ (a chunk's Πλ underflows, and denormals are ~100x slower);
        returns the slot holding the caller's MXCSR, restored on return."""
        b = self.b
        old, new = b.alloca(i32), b.alloca(i32)
        self._mxcsr("stmxcsr", old)
        b.store(b.or_(b.load(old, typ=i32), i32(MXCSR_FTZ_DAZ)), new)
        self._mxcsr("ldmxcsr", new)
        return old

    def _mxcsr(self, op, slot):
        fn = declare_intrinsic(self.module, f"llvm.x86.sse.{op}", void, [ptr])
        self.b.call(fn, [slot])

    def _columns(self, t0, t1, c0, typ, width, count):
        """Column blocks of `count` × `width` floats from c0 while they fit; returns the next c."""
        b, step = self.b, width * count
        stop = b.add(b.sub(self.ncols, i64(step)), i64(1))
        with counted_loop(b, c0, stop, step, name=f"cols{step}") as c:
            self._block(t0, t1, c, typ, width, count)
        rest = b.sub(self.ncols, c0)
        return b.add(c0, b.mul(b.sdiv(rest, i64(step)), i64(step))) if step > 1 else self.ncols

    def _block(self, t0, t1, c, typ, width, count):
        b, serial = self.b, self.spec.kind == "serial"
        h = [self.slots[(typ, j, "h")] for j in range(count)]
        A = [self.slots[(typ, j, "A")] for j in range(count)]
        cols = [b.add(c, i64(j * width)) for j in range(count)]
        for j, col in enumerate(cols):   # state (and Πλ) before row t0
            b.store(self._load(self.init, col, typ), h[j])
            if not serial:
                b.store(self._load(self.out, col, typ), A[j])
        stream = serial and self.spec.stream and width > 1
        with counted_loop(b, t0, t1, name=f"t{width * count}") as t:
            row = b.mul(t, self.stride)
            lam_row, x_row = gep(b, self.lam, f32, row), gep(b, self.x, f32, row)
            for j, col in enumerate(cols):
                lam = self._load(lam_row, col, typ)
                state = self._fmuladd(lam, b.load(h[j], typ=typ), self._load(x_row, col, typ))
                b.store(state, h[j])
                if serial:
                    st = b.store(state, gep(b, gep(b, self.out, f32, row), f32, col),
                                 align=4 * width if stream else 4)
                    if stream:
                        st.set_metadata("nontemporal", self.module.add_metadata([i32(1)]))
                else:
                    b.store(b.fmul(lam, b.load(A[j], typ=typ)), A[j])
        for j, col in enumerate(cols):   # state (and Πλ) after row t1 - 1
            b.store(b.load(h[j], typ=typ), gep(b, self.init, f32, col), align=4)
            if not serial:
                b.store(b.load(A[j], typ=typ), gep(b, self.out, f32, col), align=4)

    def _load(self, base, col, typ):
        return self.b.load(gep(self.b, base, f32, col), typ=typ, align=4)

    def _fmuladd(self, a, b_, c):
        """a·b + c; LLVM fuses it into an FMA where the target has one."""
        suffix = f"v{a.type.count}f32" if isinstance(a.type, ir.VectorType) else "f32"
        fn = declare_intrinsic(self.module, f"llvm.fmuladd.{suffix}", a.type, [a.type] * 3)
        return self.b.call(fn, [a, b_, c])


def _halvings(n: int):
    while n >= 1:
        yield n
        n //= 2


def build(spec: ScanSpec) -> ir.Module:
    """An llvmlite module holding the one function ``spec.name``."""
    module = ir.Module(name=spec.name)
    _Emitter(spec, module)
    return module
