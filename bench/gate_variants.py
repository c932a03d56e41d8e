"""The GRU update of the engine's WaveRNN cell against variants of it (issue 14, sixth round:
fixed-point gates; bench/README.md), in µs per sample of CPU time.

    python bench/gate_variants.py [--dtype int8] [--samples 12000] [--rounds 31]

random_model(896) at 24 kHz, one stream (the model of bench/cells_breakdown.py --vocoder). Each
variant replaces emit.cell.CellEmitter._gru (the rule's update, both halves) on the 16-lane
blocks of its sweeps while an engine is built, each engine in a cache folder of its own; all
are timed alternately (medians of rounds), and a variant's update costs its time less that of
"no update" (h' = h). The variants:

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
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from llvmlite import ir

import jitvoc
from jitvoc.bench.vocoder import MODEL, conditioning_rows
from jitvoc.cpu import host_features
from jitvoc.emit import mathfn
from jitvoc.cells.rules import slice_of
from jitvoc.emit.cell import CellEmitter
from jitvoc.emit.irutil import declare_intrinsic, gep, i32, i64, f32, ptr, vec
from jitvoc.engine import GenState, conditioning
from jitvoc.engine_jit import JitEngine
from jitvoc.plan.cell import column_key, size_of

W = 16   # the sweeps' lanes (emit.cell.V)
I16 = ir.IntType(16)
FLOAT = {name: vars(CellEmitter)[name] for name in ("_gru", "_load", "_read")}


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
}


def engine(model, dtype: str, gru, audio, mel):
    """The engine with `gru` as its update, in a cache of its own, and its teacher-forced
    probabilities on (audio, mel) (compiled meanwhile: that form is built at its first use)."""
    os.environ["JITVOC_CACHE"] = tempfile.mkdtemp(prefix="jitvoc-gate-variants-")
    CellEmitter._gru = gru
    try:
        e = JitEngine(model, None, dtype)
        K = conditioning(model, mel)
        return e, e.teacher_forced(np.concatenate([K, K[-1:]]), audio)
    finally:
        CellEmitter._gru = FLOAT["_gru"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="int8")
    p.add_argument("--samples", type=int, default=12000)
    p.add_argument("--rounds", type=int, default=31)
    args = p.parse_args()
    model = jitvoc.calibrate(jitvoc.random_model(**MODEL))
    audio = (np.sin(np.arange(4000) * 0.05) * 8000).astype(np.int16)
    mel = jitvoc.mel_spectrogram(audio, model.sample_rate, model.mel_config)
    audio = audio[:len(mel) * model.hop_length]
    fixed = {"avx512bw", "avx512vl"} <= host_features()
    built = {name: engine(model, args.dtype, gru, audio, mel) for name, gru in VARIANTS.items()
             if fixed or not name.startswith("fixed")}
    if fixed:
        pa, pb = built["float"][1], built["fixed"][1]
        kl = np.sum(pa * (np.log(pa + 1e-30) - np.log(pb + 1e-30)), axis=-1)
        print(f"{args.dtype}: fixed against float, teacher-forced: max |Δp| "
              f"{np.abs(pa - pb).max():.3g}, mean KL {kl.mean():.3g} nats")
    K, times = conditioning_rows(model, args.samples), {name: [] for name in built}
    for _ in range(args.rounds):
        for name, (e, _) in built.items():
            state = GenState.initial(model.hidden)
            t = time.process_time()
            e.generate(K, 0, args.samples, state, 0)
            times[name].append((time.process_time() - t) / args.samples * 1e6)
    none = statistics.median(times["no update"])
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:<28} {m:.3f} µs/sample, update {m - none:.3f}")


if __name__ == "__main__":
    main()
