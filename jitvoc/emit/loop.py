"""The hand-written WaveRNN sample's pieces (VocoderPlan -> llvmlite.ir), per docs/model.md, that
the batched loop (emit.batch: BatchLoopEmitter, a LoopEmitter) runs stream by stream. The
single-stream engine runs the WaveRNN cell instead (jitvoc.cells.wavernn, emit.cell); this module
goes when the batched loop is a cell too.

The pieces: the matrix cores (gru.R, out.O1..O4, as planned), each compiled in a module of its
own (core_modules: the compiler runs them in parallel) and reached through a function pointer in
`params` (contracts.LOOP_PARAMS); a frame's rows of the gates (_frame_rows); the GRU update of
one half of h (_gates); the draw (jitvoc.emit.draw); and the output sample: the model's
representation (compiled in: its decode tables base/step as constants, its pre-emphasis α and
DC blocker r) maps (c_t, f_t) to e = base[c] + step[c]·((f + offset)·2⁻⁸), de-emphasis gives
s = e + α·s_{t−1} (only when α ≠ 0), the DC blocker y = (s − s_{t−1}) + r·y_{t−1} (only when
r ≠ 0; else y = s), and the sample is y·32768 clamped to the int16 range and rounded half to
even by adding and subtracting 1.5·2²³: no libm call, no FMA. Everything element-wise uses
16-wide vectors and no FMA: the same bits on every CPU generation.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..contracts import LOOP_PARAMS, SPMV_CORE
from ..plan.vocoder import VECTOR, VocoderPlan
from ..wavernn import BY_NAME, NAMES
from . import draw, mathfn, spmv
from .irutil import counted_loop, f32, gep, i16, i32, i64, load, ptr, signature, splat, vec

V = VECTOR
GATE_CHUNKS = 4   # 16-row blocks of the GRU update computed together (4: 4% faster than 2)
V16 = vec(f32, V)
CORE_FN = signature(SPMV_CORE)


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

    def _params(self, params) -> dict:
        """The entries of `params` (contracts.LOOP_PARAMS), loaded, by name."""
        return {key: load(self.b, params, CORE_FN.as_pointer() if key.endswith(".core") else ptr,
                          LOOP_PARAMS.slot(key), align=8, elem_type=ptr)
                for key in LOOP_PARAMS.names}

    def _x_inv(self, m):
        fmt = self.plan.formats.get(m)
        return f32(2.0 ** fmt.frac if fmt else 1.0)

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

    def _vload(self, base, index):
        return self.b.load(gep(self.b, base, f32, index), typ=V16, align=4)

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
