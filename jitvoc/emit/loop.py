"""Emit the fused WaveRNN generation loop (VocoderPlan -> llvmlite.ir), per docs/model.md.

The loop calls five matrix-vector cores (gru.R, out.O1..O4, as planned), each compiled in a
module of its own (core_modules: the compiler runs them in parallel) and reached through a
function pointer in `params`, and defines two functions (contracts.LOOP_GENERATE, LOOP_TEACHER):

    N_generate(out i16*, n i64, t0 i64, K f32*, h f32*, cf i32*, s f32*, seed u32, params ptr*)
    N_teacher(probs f32*, n i64, K f32*, c_prev i32*, f_prev i32*, c_cur i32*, h f32*, params ptr*)

Each sample runs the two passes with no Python in between: R h once for all 3H rows; the coarse
half of the GRU; O1, relu, O2 and a draw of c_t; then ĉ_t's input to the fine half, O3, relu, O4
and a draw of f_t. `h` (float32 [H]), `cf` (c_prev, f_prev) and `s` (float32 [2]: the
de-emphasis state s_{t-1} and the DC blocker's y_{t-1}) are the caller's state, updated in place;
the generator is counter-based (sample index t0 + i), so chunks join seamlessly. `params` is the
pointer table contracts.LOOP_PARAMS.

The output sample: the model's representation (compiled in: its decode tables base/step as
constants, its pre-emphasis α and DC blocker r) maps (c_t, f_t) to
e = base[c] + step[c]·((f + offset)·2⁻⁸), de-emphasis gives s = e + α·s_{t−1} (only when α ≠ 0),
the DC blocker y = (s − s_{t−1}) + r·y_{t−1} (only when r ≠ 0; else y = s), and the sample is
y·32768 clamped to the int16 range and rounded half to even by adding and subtracting 1.5·2²³:
no libm call, no FMA.

The draw: p = exp(l − max l) in 16 blocks of 16 classes; block sums by a fixed tree, the total
and the prefix over blocks in order; the class is the first whose running sum exceeds ξ·Σp.
Everything element-wise uses 16-wide vectors and no FMA: the same bits on every CPU generation.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..contracts import LOOP_GENERATE, LOOP_PARAMS, LOOP_TEACHER, MATRIX_ARRAYS, SPMV_CORE
from ..layout import CACHE_LINE
from ..plan.vocoder import VECTOR, VocoderPlan
from ..wavernn import BY_NAME, NAMES
from . import draw, mathfn, spmv
from .irutil import (alloca, call, counted_loop, define, f32, gep, i16, i32, i64, load, ptr,
                     signature, splat, store, vec)

V = VECTOR
GATE_CHUNKS = 4   # 16-row blocks of the GRU update computed together (4: 4% faster than 2)
V16 = vec(f32, V)
CORE_FN = signature(SPMV_CORE)


ENTRIES = ("generate", "teacher_forced")


def core_symbol_of(plan: VocoderPlan, m: str) -> str:
    return spmv.core_symbol(plan.plans[m].spec, True, True, BY_NAME[m].relu)


def core_modules(plan: VocoderPlan) -> list:
    """[(symbol, build)] of the cores the loop calls, one module each, in wavernn.NAMES order
    (matrices of one layout and epilogue share a core)."""
    def build(m):
        p = plan.plans[m]
        module = ir.Module(name=core_symbol_of(plan, m))
        spmv.emit_core(spmv.Kernel.of(p.spec, p.packed, plan.gen, module), True, True,
                       BY_NAME[m].relu, internal=False)
        return module
    firsts = {}
    for m in NAMES:
        firsts.setdefault(core_symbol_of(plan, m), m)
    return [(sym, lambda m=m: build(m)) for sym, m in firsts.items()]


class LoopEmitter:
    def __init__(self, plan: VocoderPlan):
        self.plan = plan
        self.m = ir.Module(name=plan.name)
        self.H, self.H2, self.G = plan.hidden, plan.hidden // 2, 3 * plan.hidden
        self.mv = {n: spmv.Kernel.of(p.spec, p.packed, plan.gen, self.m)
                   for n, p in plan.plans.items()}
        # the network inputs x̂ = q/127.5 − 1 of the classes, in gate units (mathfn.GATE_UNIT)
        self.scaled = self._table("scaled", (np.arange(256) / 127.5 - 1) * mathfn.GATE_UNIT)
        base, step = plan.representation.segments()
        self.base, self.step = self._table("base", base), self._table("step", step)
        self.quantized_h = plan.plans["gru.R"].spec.dtype != "float32"
        self.poly = mathfn.GATE_POLY[plan.plans["gru.R"].spec.dtype]
        self.softmax_poly = mathfn.SOFTMAX_POLY[plan.dtype]
        # R h + bR in gate units straight from R's epilogue: its dequantization scale carries
        # the factor (float32 kernels have none: the gates multiply)
        self.a_unit = self.quantized_h

    def _table(self, name, values):
        """An internal constant float32 [256] array of the module."""
        t = ir.GlobalVariable(self.m, ir.ArrayType(f32, 256), name=f"{self.plan.name}_{name}")
        t.initializer = ir.Constant(ir.ArrayType(f32, 256),
                                    [float(v) for v in np.asarray(values, np.float32)])
        t.global_constant, t.linkage = True, "internal"
        return t

    def build(self, entries=ENTRIES) -> ir.Module:
        for entry in entries:
            self._function(teacher=entry == "teacher_forced")
        return self.m

    # --- the function ----------------------------------------------------------------------------
    def _function(self, teacher: bool):
        """One entry point: generate (sampling) or teacher_forced (the given samples)."""
        fn, a = define(self.m, LOOP_TEACHER if teacher else LOOP_GENERATE, self.plan.name)
        b = self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.p = self._params(a.params)
        self.h, self.K = a.h, a.K
        self._scratch()
        self.pbuf = alloca(b, f32, 256)
        self.prefix = alloca(b, f32, 16)
        c_prev, f_prev = b.alloca(i32), b.alloca(i32)
        s_prev, self.y_prev = b.alloca(f32), b.alloca(f32)
        slots = (c_prev, f_prev, s_prev)
        if not teacher:
            self._load_state(a, slots)
        with counted_loop(b, 0, a.n, name="sample") as i:
            self._sample(a, i, teacher, slots)
        if not teacher:
            self._store_state(a, slots)
        b.ret_void()

    def _params(self, params) -> dict:
        """The entries of `params` (contracts.LOOP_PARAMS), loaded, by name."""
        return {key: load(self.b, params, CORE_FN.as_pointer() if key.endswith(".core") else ptr,
                          LOOP_PARAMS.slot(key), align=8, elem_type=ptr)
                for key in LOOP_PARAMS.names}

    def _scratch(self):
        """The buffers of one call, allocated once: R's output, the bias (+ K) of the gates,
        the other matrices' outputs and the activation buffers (codes of h, kept up to date)."""
        b = self.b
        rows = {m: p.packed.rows_padded for m, p in self.plan.plans.items()}
        self.a = alloca(b, f32, rows["gru.R"], align=CACHE_LINE)
        self.bias_k = alloca(b, f32, rows["gru.R"], align=CACHE_LINE)   # bR (+ K_f: u, r)
        self.ke = alloca(b, f32, self.H, align=CACHE_LINE)              # K_f of the e rows
        if self.plan.upsample == "linear":
            self.dk = alloca(b, f32, self.G, align=CACHE_LINE)          # K_f+1 − K_f
        with counted_loop(b, self.G, rows["gru.R"], name="pad_bias") as j:  # padding rows
            store(b, f32(0.0), self.bias_k, j, align=4)
        self.y = {m: alloca(b, f32, rows[m], align=CACHE_LINE) for m in NAMES[1:]}
        shared = self.plan.shared
        reach = max([0] + [off + self.mv[m].x_pad for m, off in shared.items()])
        self.xbuf = {m: spmv.xin_buffer(e, b, reach if m == "gru.R" else 0)
                     for m, e in self.mv.items() if m not in shared}
        if self.quantized_h:
            self._h_codes(reach)

    def _h_codes(self, reach: int):
        """The codes of h for R (and O1/O3 when shared) at the start of a call."""
        b, r = self.b, self.mv["gru.R"]
        if reach > r.x_pad:  # the part only O3 reads past R's own padding: zeros
            with counted_loop(b, r.x_pad, reach, name="clear") as c:
                spmv.put_codes(r, b, self.xbuf["gru.R"], c, i32(0))
        spmv.activations(r, b, self.h, self._x_inv("gru.R"), self.xbuf["gru.R"])

    def _load_state(self, a, slots):
        """The previous samples (cf) and the output filter's state (s) of a generate call."""
        b, (c_prev, f_prev, s_prev) = self.b, slots
        b.store(load(b, a.cf, i32, 0, align=4), c_prev)
        b.store(load(b, a.cf, i32, 1, align=4), f_prev)
        b.store(load(b, a.s, f32, 0, align=4), s_prev)
        b.store(load(b, a.s, f32, 1, align=4), self.y_prev)

    def _store_state(self, a, slots):
        b, (c_prev, f_prev, s_prev) = self.b, slots
        store(b, b.load(c_prev), a.cf, 0, align=4)
        store(b, b.load(f_prev), a.cf, 1, align=4)
        store(b, b.load(s_prev), a.s, 0, align=4)
        store(b, b.load(self.y_prev), a.s, 1, align=4)

    def _sample(self, a, i, teacher: bool, slots):
        """Sample i: R, then pass 1 (coarse half, O1, O2, c_t; ĉ_t does not reach it) and
        pass 2 (the fine half with ĉ_t, O3, O4, f_t)."""
        b, (c_prev, f_prev, _) = self.b, slots
        if teacher:
            b.store(load(b, a.c_prev, i32, i, align=4), c_prev)
            b.store(load(b, a.f_prev, i32, i, align=4), f_prev)
        alpha, k0 = self._frame_rows(i)
        self._matvec("gru.R", self.h, self.a)
        x0, x1 = self._scaled(b.load(c_prev)), self._scaled(b.load(f_prev))
        self._gates(0, x0, x1, f32(0.0), alpha, k0)
        c = self._coarse(a, i, teacher, self._output("out.O1", "out.O2", self.h))
        self._gates(1, x0, x1, self._scaled(c), alpha, k0)
        logits = self._output("out.O3", "out.O4", gep(b, self.h, f32, i64(self.H2)))
        self._fine(a, i, teacher, logits, c, slots)

    def _coarse(self, a, i, teacher: bool, logits):
        """c_t: the given one (its probabilities stored), else drawn."""
        b = self.b
        if not teacher:
            return self._draw(logits, draw.uniform(b, a.seed, b.add(a.t0, i), 0))
        c = load(b, a.c_cur, i32, i, align=4)
        self._softmax_into(logits, a.probs, b.mul(i, i64(2)))
        return c

    def _fine(self, a, i, teacher: bool, logits, c, slots):
        """f_t: its probabilities stored, else drawn, and the output sample written."""
        b, (c_prev, f_prev, s_prev) = self.b, slots
        if teacher:
            self._softmax_into(logits, a.probs, b.add(b.mul(i, i64(2)), i64(1)))
            return
        f = self._draw(logits, draw.uniform(b, a.seed, b.add(a.t0, i), 1))
        store(b, self._output_sample(c, f, s_prev), a.out, i, align=2)
        b.store(c, c_prev)
        b.store(f, f_prev)

    # --- pieces --------------------------------------------------------------------------------------
    def _x_inv(self, m):
        fmt = self.plan.formats.get(m)
        return f32(2.0 ** fmt.frac if fmt else 1.0)

    def _matvec(self, m: str, x, y):
        """y = epilogue(W_m x): dequantized, plus bias (and relu for O1/O3), x float at `x`.
        gru.R and shared O1/O3 read the codes of h kept by the GRU update instead of x."""
        b, e = self.b, self.mv[m]
        if not self.quantized_h or m not in ("gru.R", *self.plan.shared):
            xin = spmv.activations(e, b, x, self._x_inv(m), self.xbuf.get(m))
        else:
            xin = spmv.xin_at(self.mv["gru.R"], b, self.xbuf["gru.R"], self.plan.shared.get(m, 0))
        arrays = {a: self.p[f"{m}.{a}"] for a in MATRIX_ARRAYS}
        bias = self.bias_k if m == "gru.R" else self.p[BY_NAME[m].bias]   # R's: see _frame_rows
        call(b, SPMV_CORE, self.p[f"{m}.core"], y=y, xin=xin, **arrays,
             x_scale=self._x_scale(m), bias=bias)

    def _x_scale(self, m: str):
        """The dequantization scale of m's epilogue; R's carries the gates' unit when a_unit."""
        fmt = self.plan.formats.get(m)
        x_scale = fmt.scale if fmt else 1.0
        return f32(x_scale * mathfn.GATE_UNIT if m == "gru.R" and self.a_unit else x_scale)

    def _scaled(self, q):
        return load(self.b, self.scaled, f32, self.b.zext(q, i64), align=4)

    def _frame_rows(self, i):
        """α of sample i (float32) and its frame's K_f of the e rows in gate units (ke). At a
        frame's first sample, in gate units (mathfn.GATE_UNIT): the rows R's epilogue adds,
        bR + K_f for the u and r gates (bR alone for e: r multiplies only R h + bR there; for
        float32, whose R output is multiplied into gate units by the gates, bR + K_f as is),
        K_f of the e rows and K_f+1 − K_f: k_t is K_f + α (K_f+1 − K_f). 5 additions fewer per
        16 gate rows: the whole loop 3% (int8) and 7% (int16) faster, timed side by side. The
        exponentials' shift (mathfn.Pow2Poly, int8/int16) rides on the u and r rows (s) and on
        K_f of the e rows (s/2: E_e doubles it), so the gates add no integer."""
        b, hop, G, H = self.b, self.plan.hop, self.G, self.H
        frame, rem = b.udiv(i, i64(hop)), b.urem(i, i64(hop))
        k0 = gep(b, self.K, f32, b.mul(frame, i64(G)))
        unit = splat(b, f32(mathfn.GATE_UNIT), V)
        shift = self.poly.shift   # the exponentials' κ (mathfn.gate_exp, folded)
        with b.if_then(b.icmp_unsigned("==", rem, i64(0))):
            k1 = gep(b, self.K, f32, b.mul(b.add(frame, i64(1)), i64(G)))
            with counted_loop(b, 0, G, V, name="frame") as j:
                bias, ka = self._vload(self.p["gru.bR"], j), self._vload(k0, j)
                ur = b.icmp_signed("<", j, i64(2 * H))
                rows = b.select(ur, b.fadd(bias, ka), bias)
                rows = b.fmul(rows, unit) if self.a_unit else rows
                if shift:
                    rows = b.select(ur, b.fadd(rows, splat(b, f32(shift), V)), rows)
                b.store(rows, gep(b, self.bias_k, f32, j), align=4)
                if self.plan.upsample == "linear":
                    b.store(b.fmul(b.fsub(self._vload(k1, j), ka), unit),
                            gep(b, self.dk, f32, j), align=4)
            with counted_loop(b, 0, H, V, name="frame_e") as j:
                ke = b.fmul(self._vload(k0, b.add(j, i64(2 * H))), unit)
                if shift:
                    ke = b.fadd(ke, splat(b, f32(shift / 2), V))
                b.store(ke, gep(b, self.ke, f32, j), align=4)
        return b.fdiv(b.uitofp(rem, f32), f32(float(hop))), self.ke

    def _gates(self, half: int, x0, x1, x2, alpha, k0):
        """The GRU update of one half of h, in place, per docs/model.md: GATE_CHUNKS blocks of
        16 rows per trip, interleaved stage by stage so their dependency chains overlap."""
        b, H2, step = self.b, self.H2, GATE_CHUNKS * V
        splats = [splat(b, v, V) for v in (x0, x1, x2, alpha)]
        main = H2 // step * step
        with counted_loop(b, 0, main, step, name=f"gates{half}") as j:
            self._gate_rows(half, [b.add(j, i64(c * V)) for c in range(GATE_CHUNKS)], splats,
                            k0)
        for j in range(main, H2, V):
            self._gate_rows(half, [i64(j)], splats, k0)

    def _gate_rows(self, half, js, splats, k0):
        """Rows js .. js + 15 of each chunk: E_u = e^-x_u, E_r = e^-x_r, z = a_e / (1 + E_r) + v_e
        (r ∘ a_e with r = σ(x_r)), E_e = e^-2z, then the blend (mathfn.gru_blend), stage by
        stage over the chunks so that their dependency chains overlap. x_u, x_r and z are
        formed in gate units (mathfn.GATE_UNIT), so the exponentials take them as they are."""
        b, H2, poly = self.b, self.H2, self.poly
        pre = [self._preactivations(half, j, splats, k0) for j in js]
        e_u = [mathfn.gate_exp(b, b.fadd(au, vu), poly, shifted=True) for (au, vu), _, _ in pre]
        e_r = [mathfn.gate_exp(b, b.fadd(ar, vr), poly, shifted=True) for _, (ar, vr), _ in pre]
        one = ir.Constant(V16, [1.0] * V)
        z = [b.fadd(b.fdiv(ae, b.fadd(one, er)), ve) for (_, _, (ae, ve)), er in zip(pre, e_r)]
        e_e = [mathfn.gate_exp(b, zc, poly, squared=True, shifted=True) for zc in z]
        for j, eu, ee in zip(js, e_u, e_e):
            hrow = b.add(j, i64(half * H2))
            hn = mathfn.gru_blend(b, self._vload(self.h, hrow), eu, ee)
            b.store(hn, gep(b, self.h, f32, hrow), align=4)
            if self.quantized_h:  # R's codes of h_t (O1/O3 read them this very step)
                r = self.mv["gru.R"]
                spmv.put_codes(r, b, self.xbuf["gru.R"], hrow,
                               spmv.code(r, b, hn, self._x_inv("gru.R")))

    def _preactivations(self, half, j, splats, k0):
        """(a, v) of the u, r and e gates for 16 rows in gate units, a + v as docs/model.md has
        it: a = R h + bR + K_f and v = I x + α (K_f+1 − K_f) for u and r, a = R h + bR and
        v = I x + k_t for e (k0: K_f of the e rows). The coarse half leaves out I[:, 2] ĉ_t
        (zero there)."""
        b, H, H2 = self.b, self.H, self.H2
        x0v, x1v, x2v, av = splats
        out = []
        for g in range(3):  # u, r, e
            row = b.add(j, i64(g * H + half * H2))
            v = b.fadd(b.fmul(self._vload(self.p["gru.I0"], row), x0v),
                       b.fmul(self._vload(self.p["gru.I1"], row), x1v))
            if half:
                v = b.fadd(v, b.fmul(self._vload(self.p["gru.I2"], row), x2v))
            if g == 2:
                v = b.fadd(v, self._vload(k0, b.add(j, i64(half * H2))))
            if self.plan.upsample == "linear":
                v = b.fadd(v, b.fmul(av, self._vload(self.dk, row)))
            a = self._vload(self.a, row)
            out.append((a if self.a_unit else b.fmul(a, splat(b, f32(mathfn.GATE_UNIT), V)), v))
        return out

    def _output(self, o_hidden, o_out, y_half):
        """logits = O_out relu(O_hidden y + b_hidden) + b_out, in the y buffer of o_out."""
        z = self.y[o_hidden]
        self._matvec(o_hidden, y_half, z)        # relu(O y + b), fused
        logits = self.y[o_out]
        self._matvec(o_out, z, logits)           # O z + b, fused
        return logits

    def _vload(self, base, index):
        return self.b.load(gep(self.b, base, f32, index), typ=V16, align=4)

    def _softmax_into(self, logits, probs, row):
        b = self.b
        _, total = draw.exp_blocks(b, logits, self.pbuf, self.softmax_poly)
        inv = splat(b, total, V)
        for j in range(256 // V):
            p = b.fdiv(self._vload(self.pbuf, i64(V * j)), inv)
            b.store(p, gep(b, probs, f32, b.add(b.mul(row, i64(256)), i64(V * j))), align=4)

    def _draw(self, logits, xi):
        """The class (i32) of 256 logits for ξ (jitvoc.emit.draw)."""
        return draw.draw(self.b, logits, xi, self.pbuf, self.prefix, self.softmax_poly)

    def _output_sample(self, c, f, s_prev):
        """The int16 sample of classes (c, f), per the module docstring; advances s_prev (and
        y_prev)."""
        b, rep = self.b, self.plan.representation
        frac = b.fmul(b.fadd(b.uitofp(f, f32), f32(rep.fine_offset)), f32(2.0 ** -8))
        step = load(b, self.step, f32, b.zext(c, i64), align=4)
        s = b.fadd(load(b, self.base, f32, b.zext(c, i64), align=4), b.fmul(step, frac))
        if rep.preemphasis:
            s = b.fadd(s, b.fmul(f32(float(np.float32(rep.preemphasis))), b.load(s_prev, typ=f32)))
        y = self._dc_block(s, b.load(s_prev, typ=f32)) if rep.dc_block else s
        b.store(s, s_prev)
        return b.trunc(b.fptosi(_rint_int16(b, b.fmul(y, f32(32768.0))), i32), i16)

    def _dc_block(self, s, s_prev):
        """y = (s − s_prev) + r·y_prev, stored as the new y_prev."""
        b, r = self.b, f32(float(np.float32(self.plan.representation.dc_block)))
        y = b.fadd(b.fsub(s, s_prev), b.fmul(r, b.load(self.y_prev, typ=f32)))
        b.store(y, self.y_prev)
        return y

def _rint_int16(b, x):
    """x clamped to [−32768, 32767] and rounded half to even, as float32: adding 1.5·2²³ leaves
    no fraction bits (the sum lies in [2²³, 2²⁴)), so IEEE round-to-nearest-even does the work."""
    x = b.select(b.fcmp_ordered("<", x, f32(-32768.0)), f32(-32768.0), x)
    x = b.select(b.fcmp_ordered(">", x, f32(32767.0)), f32(32767.0), x)
    magic = f32(1.5 * 2.0 ** 23)
    return b.fsub(b.fadd(x, magic), magic)


def build_module(plan: VocoderPlan, entries=ENTRIES) -> ir.Module:
    """The fused loop's module with the given entry points (both by default; the engine compiles
    each on its own, teacher_forced only when first used)."""
    unknown = set(entries) - set(ENTRIES)
    if unknown:
        raise ValueError(f"unknown loop entry points {sorted(unknown)}; known: {ENTRIES}")
    return LoopEmitter(plan).build(entries)
