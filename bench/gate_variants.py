"""The GRU update of the engine's WaveRNN cell against variants of it (issue 14, sixth round:
fixed-point gates; twelfth round: the AVX2 sweep; bench/README.md), in µs per sample of CPU time.

    python bench/gate_variants.py [--dtype int8] [--samples 12000] [--rounds 31]
                                  [--only NAME,NAME,...]

random_model(896) at 24 kHz, one stream (the model of bench/cells_breakdown.py --vocoder). Each
variant replaces emit.cell.CellEmitter._gru (the rule's update, both halves) on the 16-lane
blocks of its sweeps, or patches other emitter methods and constants (AVX2 below), while an
engine is built, each engine in a cache folder of its own; all are timed alternately (the order
rotated every round and reversed every other), and a variant's update costs its median less that
of "no update" (h' = h). Printed per variant: the median and the 5th percentile of the rounds
(on a VM shared with other benchmarks the low percentile moves less: contention only adds time),
the update's cost by either (less "no update"'s), and the median over rounds of float's time
over the variant's (above 1: faster). The variants marked "same bits" have their samples and
final h compared with float's (a difference stops the script). `--only` times "float", "no
update" and the variants named. The variants:

- float: the engine's update as it is (docs/model.md, "The GRU step");
- fixed: a timing prototype of fixed-point gates (int8 only; left out on a host without
  AVX-512BW and VL): the
  pre-activations formed as today (float32, gate units), clamped and converted to int32
  t·2²³ (t = −x log₂e, the polynomial's shift taken back off), narrowed to t·2¹¹; σ =
  1/(1 + 2^t) from a 32-entry word table over t in [−16, 16) with linear interpolation (vpermi2w
  for the entry and its slope, vpmulhrsw); r ∘ a_e in float (r from Q15); tanh z = 2σ(2z) − 1
  from the same table; the blend in Q14, h' = e + mulhrs(u, h − e); h' back to float32 (h is a
  float32 state and its codes are taken from the float). Its probabilities differ from the
  float update's (printed: teacher-forced, max |Δp| and mean KL);
- fixed, shift folded: as fixed, the polynomial's shift assumed folded into the frame rows;
- fixed, 16-bit in and out: the prototype with the pre-activations' inputs (R's rows, the frame
  rows, ke, dk, the I columns) and h read as 16-bit words (their arrays' bytes, values wrong),
  the sums in words (`vpmulhrsw` for I x̂ and α dk), and h' left 16-bit (its word under the
  exponent of 0.5, a normal float, for the store and h's codes): a bound on what the
  update would cost once R's epilogue, the loop's rows and h were 16-bit;
- floor: only what any gate arithmetic pays while the update's inputs and h stay float32: the
  three pre-activations' sums, each clamped and converted to int32, h converted in, one value
  converted back (values wrong);
- sums only: the three pre-activations' sums, added into h' (values wrong);
- only R's rows and h loaded: the float update with the frame rows, ke, dk and the I columns as
  constants (the same arithmetic, fewer loads; values wrong);
- loads in L1: the float update with every load from a 64-lane window of its array (values
  wrong);
- prefetch: the float update with a prefetch 128 floats ahead beside each load.

The twelfth round's, for the AVX2 sweep (two 8-lane ymm halves per 16-lane block, 16
registers):

- no divisions, no exponentials: the float update with its two divisions as multiplications,
  or its three exponentials as the conversion alone and g (values wrong, normal floats: what
  they cost at most);
- frame rows / I columns / R's rows and h in L1: as "loads in L1", for one group of loads only
  (the per-frame rows, ke and dk; the I columns; R's rows and h);
- interleaved frame data (same bits): the per-frame rows, ke, dk and a copy of the I columns'
  rows, written when the frame's rows are, in one stack array laid out by 16-lane blocks
  (each block's 13-16 vectors in a row: one sequential stream instead of 13-16);
- two sweeps (same bits): the three pre-activations' sums (u, r; a_e and v_e apart) stored by
  a first sweep into a stack array, the rest by the second from there;
- integer lower clamp (same bits for non-NaN pre-activations): each exponential's y clamped
  from above as a float, converted, then clamped from below as an integer (vpmaxsd instead of
  vmaxps: off the two pipes that multiply and divide);
- blocks 1 to 6, blocks 14, 8 lanes (same bits): emit.cell.SWEEP_BLOCKS 1 to 6 or 14
  instead of 7 (fewer or more values in flight, fewer or more spills), or emit.cell.V = 8 (one
  ymm per value, 7 blocks).
"""
import argparse
import os
import sys
import statistics
import tempfile
import time

import numpy as np
from llvmlite import ir

import jitvoc
from jitvoc.bench.vocoder import MODEL, conditioning_rows
from jitvoc.cpu import host_features
from jitvoc.emit import cell as emit_cell
from jitvoc.emit import mathfn
from jitvoc.cells.rules import slice_of
from jitvoc.emit.cell import CellEmitter
from jitvoc.emit.irutil import (alloca, counted_loop, declare_intrinsic, gep, i32, i64, f32, ptr,
                                splat, vec)
from jitvoc.engine import GenState, conditioning
from jitvoc.engine_jit import JitEngine
from jitvoc.plan.cell import column_key, size_of

W = 16   # the sweeps' lanes (emit.cell.V)
I16 = ir.IntType(16)
FLOAT = {name: vars(CellEmitter)[name] for name in ("_gru", "_load", "_read", "_gate",
                                                    "_sweep", "_store_frame_rows")}


def _sigma_table(step: float = 1.0):
    """(entries, slopes) of σ = 1/(1 + 2^t) in Q15 at t = j·step, j in [−16, 16), in the
    order vpermi2w reads them by j's low 5 bits (j ≥ 0 first)."""
    j = np.arange(-16, 17)
    q = np.rint(32767 / (1 + 2.0 ** (j * step))).astype(np.int64)
    order = np.r_[16:32, 0:16]
    return [int(x) for x in q[:32][order]], [int(x) for x in np.diff(q)[order]]


TABLE, SLOPES = _sigma_table()


def _words(values):
    return ir.Constant(vec(I16, W), values)


def _ints(value, typ=i32):
    return ir.Constant(vec(typ, W), [value] * W)


def _sigma(e, i):
    """σ in Q15 (<16 x i16>) for i = t·2²³ (<16 x i32>, t clamped into [−16, 16))."""
    return _sigma_words(e, e.b.trunc(e.b.ashr(i, _ints(12)), vec(I16, W)))


def _sigma_words(e, q):
    """σ in Q15 (<16 x i16>) for q = t·2¹¹ (<16 x i16>)."""
    b, t16 = e.b, vec(I16, W)
    idx = b.ashr(q, _words([11] * W))
    frac = b.shl(b.and_(q, _words([0x7FF] * W)), _words([4] * W))  # Q15
    perm = declare_intrinsic(e.m, "llvm.x86.avx512.vpermi2var.hi.256", t16, [t16] * 3)
    y0 = b.call(perm, [_words(TABLE[:16]), idx, _words(TABLE[16:])])
    dy = b.call(perm, [_words(SLOPES[:16]), idx, _words(SLOPES[16:])])
    return b.add(y0, b.call(_mulhrs(e), [dy, frac]))


def _mulhrs(e):
    t16 = vec(I16, W)
    return declare_intrinsic(e.m, "llvm.x86.avx2.pmul.hr.sw", t16, [t16, t16])


def _to_int(e, y, limit: float, shift: int):
    """trunc(y) of y (gate units) clamped to ±limit·2²³, less `shift`."""
    b = e.b
    y = mathfn.clamp(b, y, -limit * 2.0 ** 23, limit * 2.0 ** 23 - 4096)
    i = b.fptosi(y, vec(i32, W))
    return b.add(i, _ints(-shift)) if shift else i


def _fixed(folded: bool):
    def gru(e, rule, shift):
        if e.width != W or e.plan.dtype != "int8":
            return FLOAT["_gru"](e, rule, shift)
        b, s = e.b, 0 if folded else mathfn.GATE_POLY["int8"].shift
        (au, vu), (ar, vr), (ae, ve) = (e._gate(rule, g, shift) for g in range(3))
        u = _sigma(e, _to_int(e, b.fadd(au, vu), 15, s))
        r = _sigma(e, _to_int(e, b.fadd(ar, vr), 15, s))
        rf = b.fmul(b.sitofp(b.sext(r, vec(i32, W)), vec(f32, W)), _floats(2.0 ** -15))
        z = _to_int(e, b.fadd(b.fmul(ae, rf), ve), 7.5, s // 2)
        tanh = b.sub(_sigma(e, b.shl(z, _ints(1))), _words([16384] * W))   # Q14
        h = e._value(rule.h, shift)
        hq = b.trunc(b.fptosi(b.fmul(h, _floats(2.0 ** 14)), vec(i32, W)), vec(I16, W))
        out = b.add(tanh, b.call(_mulhrs(e), [u, b.sub(hq, tanh)]))
        return b.fmul(b.sitofp(b.sext(out, vec(i32, W)), vec(f32, W)), _floats(2.0 ** -14))
    return gru


def _floats(value):
    return ir.Constant(vec(f32, W), [value] * W)


def _words_at(e, base, shift: int):
    """16 words from element i + shift of a float array (its bytes reinterpreted)."""
    b = e.b
    at = gep(b, base, f32, b.add(e.i, i64(shift)))
    return b.load(at, typ=vec(I16, W), align=2)


def _scalar_word(e, value):
    """A float scalar's low 16 bits, in every lane (a stand-in for a 16-bit scalar)."""
    b = e.b
    if isinstance(value.type, ir.VectorType):
        value = b.extract_element(value, i32(0))
    word = b.trunc(b.bitcast(value, i32), I16)
    return b.shuffle_vector(b.insert_element(ir.Constant(vec(I16, W), None), word, i32(0)),
                            ir.Constant(vec(I16, W), None), ir.Constant(vec(i32, W), [0] * W))


def _terms16(e, node, shift: int):
    """The I x̂ terms (cells.rules) as words: each column's words times its class's word."""
    b = e.b
    if node.op in ("take", "ref"):
        base, offset = slice_of(e.cell, node)
        return _terms16(e, base, shift + offset)
    if node.op == "add":
        return b.add(*(_terms16(e, x, shift) for x in node.args))
    column, look = node.args
    words = _words_at(e, e.p[column_key(column)], shift)
    return b.call(_mulhrs(e), [words, _scalar_word(e, e._lookup(*look.args))])


def _bound(e, rule, shift):
    """The prototype with its inputs and h already 16-bit (their arrays' bytes read as words,
    values wrong) and h' left 16-bit (zero-extended into the float's bits): what the update
    would cost once R's epilogue, the frame rows, I and h were 16-bit."""
    if e.width != W or e.plan.dtype != "int8":
        return FLOAT["_gru"](e, rule, shift)
    b, length, mulhrs = e.b, size_of(rule.blend), _mulhrs(e)
    alpha = _scalar_word(e, e._value(rule.linear[2], 0))
    pre = []
    for g in range(3):
        acc = _words_at(e, e._product_at(rule.product), shift + rule.starts[g])
        v = b.add(_terms16(e, rule.terms[g], shift),
                  _words_at(e, e._slot((rule.blend, "rows")), shift + g * length))
        if g == 2:
            v = b.add(v, _words_at(e, e._slot((rule.blend, "ke")), shift))
        dk = _words_at(e, e._slot((rule.blend, "dk")), shift + g * length)
        pre.append((acc, b.add(v, b.call(mulhrs, [dk, alpha]))))
    u = _sigma_words(e, b.add(*pre[0]))
    r = _sigma_words(e, b.add(*pre[1]))
    z = b.add(b.call(mulhrs, [r, pre[2][0]]), pre[2][1])
    tanh = b.sub(_sigma_words(e, b.shl(z, _words([1] * W))), _words([16384] * W))
    h = _words_at(e, e._address(rule.h), shift)
    out = b.add(tanh, b.call(mulhrs, [u, b.sub(h, tanh)]))
    return b.bitcast(b.or_(b.zext(out, vec(i32, W)), _ints(0x3F000000)), vec(f32, W))


def _floor(e, rule, shift):
    if e.width != W:
        return FLOAT["_gru"](e, rule, shift)
    b = e.b
    (au, vu), (ar, vr), (ae, ve) = (e._gate(rule, g, shift) for g in range(3))
    iu, ir_, iz = (_to_int(e, b.fadd(a, v), 7.5, 0) for a, v in ((au, vu), (ar, vr), (ae, ve)))
    hq = b.fptosi(b.fmul(e._value(rule.h, shift), _floats(2.0 ** 14)), vec(i32, W))
    x = b.trunc(b.xor(b.xor(iu, ir_), b.xor(iz, hq)), vec(I16, W))
    return b.fmul(b.sitofp(b.sext(x, vec(i32, W)), vec(f32, W)), _floats(2.0 ** -30))


def _sums(e, rule, shift):
    if e.width != W:
        return FLOAT["_gru"](e, rule, shift)
    b = e.b
    (au, vu), (ar, vr), (ae, ve) = (e._gate(rule, g, shift) for g in range(3))
    x = b.fadd(b.fadd(b.fadd(au, vu), b.fadd(ar, vr)), b.fadd(ae, ve))
    return b.fadd(e._value(rule.h, shift), b.fmul(x, _floats(2.0 ** -60)))


def _constant_load(e, base, shift):
    e.__dict__["constants"] = e.__dict__.get("constants", 0) + 1
    value = 1.0 + 0.001 * (e.constants % 97)
    return ir.Constant(vec(f32, e.width), [value] * e.width) if e.width > 1 else f32(value)


def _window_load(e, base, shift):
    b = e.b
    typ = vec(f32, e.width) if e.width > 1 else f32
    at = b.add(b.and_(e.i, i64(63)), i64(shift))
    return b.load(gep(b, base, f32, at), typ=typ, align=4)


def _prefetching_load(e, base, shift):
    if e.width > 1:
        b = e.b
        fn = declare_intrinsic(e.m, "llvm.prefetch.p0", ir.VoidType(), [ptr, i32, i32, i32])
        b.call(fn, [gep(b, base, f32, b.add(e.i, i64(shift + 128))), i32(0), i32(3), i32(1)])
    return FLOAT["_load"](e, base, shift)


def _vector_read(e, base, shift, node):
    """_read with the emitter's own load for vectors (R's rows and h)."""
    if node.shape == ():
        return FLOAT["_read"](e, base, shift, node)
    return FLOAT["_load"](e, base, shift)


def _loading(load, read=None):
    """The float update with `load` for its loads (and `read` for R's rows and h)."""
    def gru(e, rule, shift):
        kept = {"_load": CellEmitter._load, "_read": CellEmitter._read}
        CellEmitter._load = load
        CellEmitter._read = read or CellEmitter._read
        try:
            return FLOAT["_gru"](e, rule, shift)
        finally:
            CellEmitter._load, CellEmitter._read = kept["_load"], kept["_read"]
    return gru


# --- the twelfth round's variants (AVX2) -------------------------------------------------------
def _no_divisions(e, rule, shift):
    fdiv, ir.IRBuilder.fdiv = ir.IRBuilder.fdiv, ir.IRBuilder.fmul
    try:
        return FLOAT["_gru"](e, rule, shift)
    finally:
        ir.IRBuilder.fdiv = fdiv


def _conversion_only(b, y, poly, squared=False, shifted=False):
    """mathfn.gate_exp as its conversion alone, the low 23 bits made g in [1, 2) (values wrong
    but normal floats: infinities, NaNs or subnormals would slow the divisions down)."""
    i = b.fptosi(y, mathfn._int_type(y))
    return b.bitcast(b.or_(b.and_(i, mathfn._c(i, 0x7FFFFF)), mathfn._c(i, 0x3F800000)), y.type)


def _windowed(caller: str):
    """_load with a 64-lane window (as "loads in L1") for the loads made by `caller` (the
    emitter method: _gate, the frame's rows; <lambda>, LEAVES' column; _read, R's rows and h)."""
    def load(e, base, shift):
        if sys._getframe(1).f_code.co_name == caller:
            return _window_load(e, base, shift)
        return FLOAT["_load"](e, base, shift)
    return load


def _terms_leaves(e, node, shift, out):
    """[(column, shift)] of a rule's terms (CellEmitter._gate_terms), in the order it adds them."""
    if node.op in ("take", "ref"):
        base, offset = slice_of(e.cell, node)
        return _terms_leaves(e, base, shift + offset, out)
    if node.op == "add":
        for x in node.args:
            _terms_leaves(e, x, shift, out)
        return out
    out.append((node.args[0], shift))
    return out


def _frame_parts(e, rule) -> list:
    """Per gate the interleaved frame data's parts of its I columns (after rows, ke, dk: 0-6)."""
    parts, at = [], 7
    for g in range(3):
        n = len(_terms_leaves(e, rule.terms[g], 0, []))
        parts.append(list(range(at, at + n)))
        at += n
    return parts


def _frame_at(e, rule, part: int, lane):
    """Where part `part` of lane `lane` (i64) lies in the rule's interleaved frame data (a stack
    array made at its first use): 16-lane blocks of all parts in a row."""
    b, frames = e.b, e.__dict__.setdefault("frames", {})
    count = _frame_parts(e, rule)[-1][-1] + 1
    if rule not in frames:
        with b.goto_block(e.entry):
            frames[rule] = alloca(b, f32, count * size_of(rule.blend), align=64)
    block = b.mul(b.and_(lane, i64(-W)), i64(count))
    return gep(b, frames[rule], f32, b.add(b.add(block, i64(part * W)), b.and_(lane, i64(W - 1))))


def _frame_load(e, rule, part: int, shift: int):
    typ = vec(f32, e.width) if e.width > 1 else f32
    return e.b.load(_frame_at(e, rule, part, e.b.add(e.i, i64(shift))), typ=typ, align=4)


def _interleaved_gate(e, rule, g: int, shift: int):
    """CellEmitter._gate reading the interleaved frame data (the same additions in the same
    order)."""
    b = e.b
    acc = e._value(rule.product, shift + rule.starts[g])
    a = b.fadd(acc, _frame_load(e, rule, g, shift))
    if e.plan.dtype == "float32":
        a = b.fmul(a, emit_cell._c(acc, mathfn.GATE_UNIT))
    parts = iter(_frame_parts(e, rule)[g])

    def terms(node):
        if node.op in ("take", "ref"):
            return terms(slice_of(e.cell, node)[0])
        if node.op == "add":
            return b.fadd(*(terms(x) for x in node.args))
        value = e._lookup(*node.args[1].args, mathfn.GATE_UNIT)
        return b.fmul(_frame_load(e, rule, next(parts), shift),
                      splat(b, value, e.width) if e.width > 1 else value)
    v = terms(rule.terms[g])
    if g == 2:
        v = b.fadd(v, _frame_load(e, rule, 3, shift))
    if rule.linear:
        v = b.fadd(v, b.fmul(e._value(rule.linear[2], 0), _frame_load(e, rule, 4 + g, shift)))
    return a, v


def _interleaved_frame_rows(e, rule):
    """CellEmitter._store_frame_rows storing into the interleaved frame data (its _slot and _put
    redirected: part 0-2 rows, 3 ke, 4-6 dk, by gate g of the index i + g·length it stores at),
    then the I columns' rows."""
    length, first = size_of(rule.blend), {"rows": 0, "ke": 3, "dk": 4}

    def put(value, part, index):
        g = 0 if index is e.i else index.operands[1].constant // length
        e.b.store(value, _frame_at(e, rule, part + g, e.i), align=4)
    e._slot, e._put = (lambda key: first[key[1]]), put
    try:
        FLOAT["_store_frame_rows"](e, rule)
    finally:
        del e._slot, e._put
    for g, parts in enumerate(_frame_parts(e, rule)):
        for part, (column, shift) in zip(parts, _terms_leaves(e, rule.terms[g], 0, [])):
            e.b.store(e._value(column, shift), _frame_at(e, rule, part, e.i), align=4)


def _two_sweeps(e, length: int, roots: list):
    """CellEmitter._sweep with the GRU rules' pre-activation sums stored by a first sweep (into
    a stack array per rule: a_u + v_u, a_r + v_r, a_e, v_e), the rest by the usual one."""
    b, rules = e.b, [e.plan.gru[n] for n, _, _ in roots if n in e.plan.gru]
    e.sums = {}
    for rule in rules:
        with b.goto_block(e.entry):
            e.sums[rule] = (alloca(b, f32, 4 * length, align=64), length)
    for start, stop, width, blocks in emit_cell._sweeps(length, emit_cell.SWEEP_BLOCKS):
        with counted_loop(b, start, stop, width * blocks, name=f"sums{length}") as i:
            e.width, stores = width, []
            for k in range(blocks):
                e.i, e.memo = b.add(i, i64(k * width)) if k else i, {}
                for rule in rules:
                    (au, vu), (ar, vr), (ae, ve) = (e._gate(rule, g, 0) for g in range(3))
                    stores += [(x, e.sums[rule][0], b.add(e.i, i64(j * length))) for j, x in
                               enumerate((b.fadd(au, vu), b.fadd(ar, vr), ae, ve))]
            for x, buf, at in stores:
                e._put(x, buf, at)
    try:
        FLOAT["_sweep"](e, length, roots)
    finally:
        e.sums = {}


def _from_sums(e, rule, shift):
    """CellEmitter._gru on the sums of _two_sweeps (the same operations after them)."""
    if rule not in e.__dict__.get("sums", {}):
        return FLOAT["_gru"](e, rule, shift)
    b, poly = e.b, mathfn.GATE_POLY[e.plan.dtype]
    buf, length = e.sums[rule]
    su, sr, ae, ve = (e._load(buf, shift + j * length) for j in range(4))
    e_u = mathfn.gate_exp(b, su, poly, shifted=True)
    e_r = mathfn.gate_exp(b, sr, poly, shifted=True)
    z = b.fadd(b.fdiv(ae, b.fadd(emit_cell._c(ae, 1.0), e_r)), ve)
    e_e = mathfn.gate_exp(b, z, poly, squared=True, shifted=True)
    return mathfn.gru_blend(b, e._value(rule.h, shift), e_u, e_e)


def _integer_lower_clamp(b, y, poly, squared=False, shifted=False):
    """mathfn.gate_exp with y clamped from above as a float, converted, then clamped from below
    as an integer: the same i for every y but NaN (trunc is monotone, the bounds integers; y
    below −2³¹ converts to INT_MIN, clamped up as before)."""
    lim = (mathfn.GATE_T / 2 if squared else mathfn.GATE_T) * 2.0 ** 23
    y = b.select(b.fcmp_ordered(">", y, mathfn._c(y, lim)), mathfn._c(y, lim), y)
    i = b.fptosi(y, mathfn._int_type(y))
    low = mathfn._c(i, -int(lim))
    i = b.select(b.icmp_signed("<", i, low), low, i)
    i = b.shl(i, mathfn._c(i, 1)) if squared else i
    add = poly.shift and not shifted
    return mathfn._pow2_bits(b, b.add(i, mathfn._c(i, poly.shift)) if add else i, y.type, poly)

VARIANTS = {
    "float": FLOAT["_gru"],
    "fixed": _fixed(folded=False),
    "fixed, shift folded": _fixed(folded=True),
    "fixed, 16-bit in and out": _bound,
    "floor": _floor,
    "sums only": _sums,
    "only R's rows and h loaded": _loading(_constant_load, _vector_read),
    "loads in L1": _loading(_window_load),
    "prefetch": _loading(_prefetching_load),
    "no update": lambda e, rule, shift: e._value(rule.h, shift),
    # the twelfth round's (AVX2): a function replaces CellEmitter._gru, a dict patches
    # {(owner, name): value} while the engine is built
    "no divisions": _no_divisions,
    "no exponentials": {(mathfn, "gate_exp"): _conversion_only},
    "frame rows in L1": _loading(_windowed("_gate")),
    "I columns in L1": _loading(_windowed("<lambda>")),
    "R's rows and h in L1": _loading(_windowed("_read")),
    "interleaved frame data": {(CellEmitter, "_gate"): _interleaved_gate,
                               (CellEmitter, "_store_frame_rows"): _interleaved_frame_rows},
    "two sweeps": {(CellEmitter, "_sweep"): _two_sweeps, (CellEmitter, "_gru"): _from_sums},
    "integer lower clamp": {(mathfn, "gate_exp"): _integer_lower_clamp},
    **{f"blocks {n}": {(emit_cell, "SWEEP_BLOCKS"): n} for n in (1, 2, 3, 4, 5, 6, 14)},
    "8 lanes": {(emit_cell, "V"): 8},
}
# the variants that compute the same samples as "float" (checked)
SAME_BITS = ("interleaved frame data", "two sweeps", "integer lower clamp",
             *(f"blocks {n}" for n in (1, 2, 3, 4, 5, 6, 14)), "8 lanes")


def engine(model, dtype: str, variant, audio, mel):
    """The engine with `variant` (a replacement of CellEmitter._gru, or a dict of patches) in a
    cache of its own, and its teacher-forced probabilities on (audio, mel) where `audio` is
    given (that form is compiled at its first use)."""
    patches = variant if isinstance(variant, dict) else {(CellEmitter, "_gru"): variant}
    kept = {key: getattr(*key) for key in patches}
    os.environ["JITVOC_CACHE"] = tempfile.mkdtemp(prefix="jitvoc-gate-variants-")
    for (owner, name), value in patches.items():
        setattr(owner, name, value)
    try:
        e = JitEngine(model, None, dtype)
        if audio is None:
            return e, None
        K = conditioning(model, mel)
        return e, e.teacher_forced(np.concatenate([K, K[-1:]]), audio)
    finally:
        for (owner, name), value in kept.items():
            setattr(owner, name, value)


def _generate(model, e, K, n: int):
    """(CPU µs per sample, samples, final h) of n samples from silence."""
    state = GenState.initial(model.hidden)
    t = time.process_time()
    out = e.generate(K, 0, n, state, 0)
    return (time.process_time() - t) / n * 1e6, out, state.h.copy()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="int8")
    p.add_argument("--samples", type=int, default=12000)
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--only", help="comma-separated variants (with float and no update)")
    args = p.parse_args()
    model = jitvoc.calibrate(jitvoc.random_model(**MODEL))
    audio = (np.sin(np.arange(4000) * 0.05) * 8000).astype(np.int16)
    mel = jitvoc.mel_spectrogram(audio, model.sample_rate, model.mel_config)
    audio = audio[:len(mel) * model.hop_length]
    fixed = {"avx512bw", "avx512vl"} <= host_features()
    names = [n for n in VARIANTS if fixed or not n.startswith("fixed")]
    if args.only:
        names = ["float", "no update"] + [n for n in args.only.split(",") if n in VARIANTS]
    built = {name: engine(model, args.dtype, VARIANTS[name],
                          audio if name in ("float", "fixed") else None, mel) for name in names}
    if "fixed" in built:
        pa, pb = built["float"][1], built["fixed"][1]
        kl = np.sum(pa * (np.log(pa + 1e-30) - np.log(pb + 1e-30)), axis=-1)
        print(f"{args.dtype}: fixed against float, teacher-forced: max |Δp| "
              f"{np.abs(pa - pb).max():.3g}, mean KL {kl.mean():.3g} nats")
    K, times = conditioning_rows(model, args.samples), {name: [] for name in built}
    _, samples, h = _generate(model, built["float"][0], K, args.samples)
    for name in SAME_BITS:
        if name in built:
            _, other, other_h = _generate(model, built[name][0], K, args.samples)
            if not (np.array_equal(samples, other) and np.array_equal(h, other_h)):
                sys.exit(f"{name}: samples differ from float's")
    for r in range(args.rounds):   # the order rotated every round, reversed every other
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order[::-1] if r % 2 else order:
            times[name].append(_generate(model, built[name][0], K, args.samples)[0])
    none, base = statistics.median(times["no update"]), np.array(times["float"])
    print(f"{args.dtype}: {args.rounds} rounds of {args.samples} samples, load average "
          f"{os.getloadavg()[0]:.1f}; same bits: "
          f"{', '.join(n for n in SAME_BITS if n in built) or '-'}")
    low = np.percentile(times["no update"], 5)
    for name, t in times.items():
        m, p5 = statistics.median(t), np.percentile(t, 5)
        print(f"{name:<28} {m:.3f} µs/sample (5th percentile {p5:.3f}), update {m - none:.3f} "
              f"({p5 - low:.3f}), float / variant {np.median(base / np.array(t)):.3f}")


if __name__ == "__main__":
    main()
