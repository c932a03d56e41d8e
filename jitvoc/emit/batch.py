"""Emit the batched generation loop: B independent streams advanced per step (VocoderPlan with
vectors = B -> llvmlite.ir), one function (contracts.LOOP_GENERATE_BATCH):

    N_generate_batch(out i16*, n i64, t0 i64, lens i64*, K ptr*, h f32*, cf i32*, s f32*,
                     seeds u32*, params ptr*)

Each step runs the single-stream loop's sample (emit.loop) for every stream: the five products
as B-vector kernels (each weight panel loaded once for all B; their input, the B vectors
interleaved: the codes of h that the GRU update keeps per stream, as the single loop does,
for R and for O1/O3 when their format is R's, else quantized stream by stream), and between
them, stream by stream, the frame rows, the GRU update, the draws and the output sample, by
the single-stream emitters pointed at the stream's buffers (`_view`). So stream v computes
exactly what the single-stream loop computes for it alone: the products are bit-exact per
vector, the rest is the same code.

Streams share t0 and the step (sample t0 + i of every stream at step i, so frames start
together); each has its own K (the table `K`), state (h, cf, s rows, as the single loop's),
seed and length: at steps i >= lens[v] stream v is left out (no update, no output), so its
state stops at sample t0 + lens[v] and its K needs only the rows of its own length. Its
products still run (on its frozen h): the B-vector kernels have B lanes.
"""
from __future__ import annotations

import types

from llvmlite import ir

from ..contracts import LOOP_GENERATE_BATCH, MATRIX_ARRAYS, SPMV_CORE, SPMV_VECTORS
from ..layout import CACHE_LINE
from ..wavernn import BY_NAME, NAMES
from . import draw, spmv
from .irutil import alloca, call, counted_loop, define, f32, gep, i16, i32, i64, load, ptr, store
from .loop import LoopEmitter


class BatchLoopEmitter(LoopEmitter):
    """The LoopEmitter of a plan for B > 1 streams; the single-stream methods run per stream."""

    def build(self) -> ir.Module:
        fn, a = define(self.m, LOOP_GENERATE_BATCH, self.plan.name)
        b = self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.args, self.n_streams = a, self.plan.vectors
        self.p = self._params(a.params)
        self._batch_scratch()
        with counted_loop(b, 0, a.n, name="sample") as i:
            self._step(i)
        b.ret_void()
        return self.m

    def _batch_scratch(self):
        """The buffers of one call, allocated once: every stream's R output, gate bias (+ K),
        K_f of the e rows and K_f+1 − K_f, the other products' outputs, each product's input
        buffers, and the draws' scratch (shared: streams take turns)."""
        b, B = self.b, self.n_streams
        rows = {m: p.packed.rows_padded for m, p in self.plan.plans.items()}
        self.rows_r = rows["gru.R"]
        self.a_all = alloca(b, f32, B * self.rows_r, align=CACHE_LINE)
        self.bias_all = alloca(b, f32, B * self.rows_r, align=CACHE_LINE)
        with counted_loop(b, 0, B, name="pad_streams") as v:   # the padding rows' bias
            with counted_loop(b, self.G, self.rows_r, name="pad_bias") as j:
                store(b, f32(0.0), self.bias_all, b.add(b.mul(v, i64(self.rows_r)), j), align=4)
        self.ke_all = alloca(b, f32, B * self.H, align=CACHE_LINE)
        if self.plan.upsample == "linear":
            self.dk_all = alloca(b, f32, B * self.G, align=CACHE_LINE)
        self.y_all = {m: alloca(b, f32, B * rows[m], align=CACHE_LINE) for m in NAMES[1:]}
        self.rows = rows
        self.vbufs = {m: spmv.vector_buffers(e, b) for m, e in self.mv.items()}
        if self.quantized_h:
            self._h_codes_all()
        self.pbuf = alloca(b, f32, 256)
        self.prefix = alloca(b, f32, 16)
        self.alpha = b.alloca(f32)
        self.k0s = alloca(b, ptr, B, align=8)
        self.cs = alloca(b, i32, B, align=4)

    def _h_codes_all(self):
        """R's codes of every stream's h ([B, x_len] rows, as the GRU update keeps them), and
        the products that read them: R, and O1/O3 when their input format is R's."""
        b, r = self.b, self.mv["gru.R"]
        self.hcodes = alloca(b, r.elem, self.n_streams * r.packed.x_len, align=CACHE_LINE)
        with counted_loop(b, 0, self.n_streams, name="h_codes") as v:
            spmv.quantize(r, b, gep(b, self.args.h, f32, b.mul(v, i64(self.H))),
                          self._x_inv("gru.R"), self._codes_row(v), spmv.put_codes)
        spec, fmt = r.spec, self.plan.formats["gru.R"]
        self.read_codes = {m for m in ("gru.R", "out.O1", "out.O3")
                           if (self.mv[m].spec.dtype, self.mv[m].spec.x_signed,
                               self.plan.formats[m]) == (spec.dtype, spec.x_signed, fmt)}

    def _codes_row(self, v):
        r = self.mv["gru.R"]
        return gep(self.b, self.hcodes, r.elem, self.b.mul(v, i64(r.packed.x_len)))

    # --- one step --------------------------------------------------------------------------------
    def _step(self, i):
        """Sample t0 + i of every stream: R, pass 1 (coarse half, O1, O2, c_t), pass 2 (fine
        half with ĉ_t, O3, O4, f_t, the output), as the single-stream loop's _sample."""
        h = self.args.h
        self._streams(i, self._frame)
        self._products("gru.R", h, self.a_all)
        self._streams(i, lambda s: self._gates(0, *self._x(s), f32(0.0), *self._k(s)))
        self._batch_output("out.O1", "out.O2", h)
        self._streams(i, self._coarse_draw)
        self._streams(i, lambda s: self._gates(1, *self._x(s), self._scaled(self._c(s)),
                                               *self._k(s)))
        self._batch_output("out.O3", "out.O4", gep(self.b, h, f32, i64(self.H2)))
        self._streams(i, self._fine_draw)

    def _streams(self, i, body):
        """body(view) for every stream v still running at step i (i < lens[v])."""
        b = self.b
        with counted_loop(b, 0, self.n_streams, name="stream") as v:
            with b.if_then(b.icmp_signed("<", i, load(b, self.args.lens, i64, v, align=8))):
                body(self._view(v, i))

    def _view(self, v, i):
        """Point the single-stream emitters' buffers (h, R's output, the gate bias, K, ke, dk and
        the DC blocker's y_prev) at stream v's; returns v, i and its state slots c_prev, f_prev,
        s_prev (the single loop's)."""
        b, a = self.b, self.args

        def at(base, typ, n):
            return gep(b, base, typ, b.mul(v, i64(n)))
        self.h, self.a = at(a.h, f32, self.H), at(self.a_all, f32, self.rows_r)
        self.bias_k, self.K = at(self.bias_all, f32, self.rows_r), load(b, a.K, ptr, v, align=8)
        self.ke = at(self.ke_all, f32, self.H)
        if self.plan.upsample == "linear":
            self.dk = at(self.dk_all, f32, self.G)
        if self.quantized_h:   # the GRU update keeps the stream's codes of h
            self.xbuf = {"gru.R": self._codes_row(v)}
        cf, s = at(a.cf, i32, 2), at(a.s, f32, 2)
        self.y_prev = gep(b, s, f32, i64(1))
        return types.SimpleNamespace(v=v, i=i, c_prev=cf, f_prev=gep(b, cf, i32, i64(1)),
                                     s_prev=s)

    def _x(self, s):
        """x0, x1: the stream's previous sample (c, f), scaled."""
        b = self.b
        return self._scaled(b.load(s.c_prev, typ=i32)), self._scaled(b.load(s.f_prev, typ=i32))

    def _k(self, s):
        """α and K_f of the stream's frame (kept by _frame)."""
        return self.b.load(self.alpha), load(self.b, self.k0s, ptr, s.v, align=8)

    def _c(self, s):
        return load(self.b, self.cs, i32, s.v, align=4)

    def _frame(self, s):
        """The stream's frame rows (LoopEmitter._frame_rows), α and its K_f kept."""
        alpha, k0 = self._frame_rows(s.i)
        self.b.store(alpha, self.alpha)
        store(self.b, k0, self.k0s, s.v, align=8)

    def _uniform_of(self, s, k: int):
        b = self.b
        return draw.uniform(b, load(b, self.args.seeds, i32, s.v, align=4),
                            b.add(self.args.t0, s.i), k)

    def _coarse_draw(self, s):
        logits = self._stream_rows(self.y_all["out.O2"], "out.O2", s.v)
        store(self.b, self._draw(logits, self._uniform_of(s, 0)), self.cs, s.v, align=4)

    def _fine_draw(self, s):
        """f_t drawn, the output sample written, (c_t, f_t) the stream's previous sample."""
        b, c = self.b, self._c(s)
        logits = self._stream_rows(self.y_all["out.O4"], "out.O4", s.v)
        f = self._draw(logits, self._uniform_of(s, 1))
        at = b.add(b.mul(s.v, self.args.n), s.i)
        store(b, self._output_sample(c, f, s.s_prev), self.args.out, at, align=2, elem_type=i16)
        b.store(c, s.c_prev)
        b.store(f, s.f_prev)

    def _stream_rows(self, base, m, v):
        return gep(self.b, base, f32, self.b.mul(v, i64(self.rows[m])))

    # --- the products --------------------------------------------------------------------------
    def _products(self, m: str, x, y):
        """y[v] = epilogue(W_m x[v]) for the B streams (x rows: h's (stride H) for R, O1 and
        O3; the previous product's padded rows for O2 and O4), per LoopEmitter._matvec."""
        b, e = self.b, self.mv[m]
        if self.quantized_h and m in self.read_codes:   # h's codes, from the column m reads
            r = self.mv["gru.R"]
            codes = gep(b, self.hcodes, r.elem, i64(BY_NAME[m].state_offset(self.H)))
            xin = spmv.interleave(e, b, codes, e.packed.cols, r.packed.x_len, self.vbufs[m][1])
        else:
            stride = self.H if BY_NAME[m].reads_state else self.rows[BY_NAME[m].reads]
            xin = spmv.vector_activations(e, b, x, self._x_inv(m), stride, self.vbufs[m])
        arrays = {a: self.p[f"{m}.{a}"] for a in MATRIX_ARRAYS}
        bias = self.bias_all if m == "gru.R" else self.p[BY_NAME[m].bias]
        call(b, SPMV_VECTORS[SPMV_CORE], self.p[f"{m}.core"], y=y, xin=xin, **arrays,
             x_scale=self._x_scale(m), bias=bias)

    def _batch_output(self, o_hidden, o_out, x):
        """logits = O_out relu(O_hidden x + b_hidden) + b_out for every stream."""
        self._products(o_hidden, x, self.y_all[o_hidden])
        self._products(o_out, self.y_all[o_hidden], self.y_all[o_out])


def build_module(plan) -> ir.Module:
    return BatchLoopEmitter(plan).build()
