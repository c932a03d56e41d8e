"""The WaveRNN draw in IR (docs/model.md, "Sampling"), for any emitter: ξ from the counter-based
generator, then the class whose running sum of p = exp(l − max l) first exceeds ξ·Σp, the sums
formed by blocks of 16 classes so that every vector width gives the same bits (block sums by a
fixed halving tree, Σp and the prefix over blocks in block order, then the running sum inside
the chosen block in index order). 16-wide vectors, no FMA.

The compiled cells' `sample` (jitvoc.emit.cell, the vocoder's among them) draw with it.
"""
from __future__ import annotations

from llvmlite import ir

from . import mathfn
from .irutil import f32, gep, i32, i64, load, splat, store, vec

V = 16                 # lanes, and classes per block
CLASSES = V * V        # a draw's logits: 16 blocks of 16
V16 = vec(f32, V)


def _tree(b, v, combine):
    """Reduce a <16 x float> by halving (combine(lo, hi)): a fixed order at every width."""
    n = v.type.count
    while n > 1:
        n //= 2
        lo = b.shuffle_vector(v, v, ir.Constant(vec(i32, n), list(range(n))))
        hi = b.shuffle_vector(v, v, ir.Constant(vec(i32, n), list(range(n, 2 * n))))
        v = combine(lo, hi)
    return b.extract_element(v, i32(0))


def _tree_sums(b, vs):
    """The vector of [_tree(b, v, b.fadd) for v in vs] (as many vectors as lanes): the same
    additions, two vectors at a time (the draw's block sums)."""
    n = vs[0].type.count
    while len(vs) > 1:
        w = len(vs)
        k = n // w
        half = [g * w + i for g in range(k) for i in range(w // 2)]
        lo = ir.Constant(vec(i32, n), half + [n + x for x in half])
        hi = ir.Constant(vec(i32, n), [x + w // 2 for x in half] + [n + x + w // 2 for x in half])
        vs = [b.fadd(b.shuffle_vector(x, y, lo), b.shuffle_vector(x, y, hi))
              for x, y in zip(vs[::2], vs[1::2])]
    return vs[0]


def _vload(b, base, index):
    return b.load(gep(b, base, f32, index), typ=V16, align=4)


def exp_blocks(b, logits, pbuf, poly):
    """p = exp(l − max l) of 256 logits into pbuf; returns the 16 block sums and their total."""
    blocks = [_vload(b, logits, i64(V * j)) for j in range(V)]
    mx = blocks
    while len(mx) > 1:   # a tree (max is exact)
        mx = [mathfn.fmax(b, x, y) for x, y in zip(mx[::2], mx[1::2])]
    mxv = splat(b, _tree(b, mx[0], lambda x, y: mathfn.fmax(b, x, y)), V)
    ps = [mathfn.exp_nonpositive(b, b.fsub(v, mxv), poly) for v in blocks]
    for j, p in enumerate(ps):
        b.store(p, gep(b, pbuf, f32, i64(V * j)), align=4)
    block_sums = _tree_sums(b, ps)
    sums = [b.extract_element(block_sums, i32(j)) for j in range(len(ps))]
    total = sums[0]
    for s in sums[1:]:
        total = b.fadd(total, s)
    return sums, total


def draw(b, logits, xi, pbuf, prefix, poly):
    """The class (i32) of 256 logits for ξ: pbuf holds 256 floats, prefix 16 (scratch)."""
    sums, total = exp_blocks(b, logits, pbuf, poly)
    thr = b.fmul(xi, total)
    run, block = f32(0.0), i32(0)
    for j, s in enumerate(sums):   # exclusive prefixes; block = #{j: inclusive prefix ≤ thr}
        store(b, run, prefix, j, align=4)
        run = b.fadd(run, s)
        block = b.add(block, b.zext(b.fcmp_ordered("<=", run, thr), i32))
    full = b.icmp_unsigned("==", block, i32(V))
    jb = b.select(full, i32(V - 1), block)
    run = load(b, prefix, f32, b.zext(jb, i64), align=4)
    base = b.mul(b.zext(jb, i64), i64(V))
    k = i32(0)
    for i in range(V):
        run = b.fadd(run, load(b, pbuf, f32, b.add(base, i64(i)), align=4))
        k = b.add(k, b.zext(b.fcmp_ordered("<=", run, thr), i32))
    k = b.select(b.icmp_unsigned("==", k, i32(V)), i32(V - 1), k)
    cls = b.add(b.mul(jb, i32(V)), k)
    return b.select(full, i32(CLASSES - 1), cls)


def uniform(b, seed, t, k: int):
    """ξ = ((hash(2t + k + 1 XOR seed·0x9E3779B9) >> 9) + ½)·2⁻²³ (uint32 arithmetic; exact in
    float32, never 0 or 1) for the i32 seed, the i64 sample index t and the pass k."""
    x = b.add(b.shl(b.trunc(t, i32), i32(1)), i32(k + 1))
    x = b.xor(x, b.mul(seed, i32(0x9E3779B9 - (1 << 32))))
    x = b.xor(x, b.lshr(x, i32(16)))
    x = b.mul(x, i32(0x7FEB352D))
    x = b.xor(x, b.lshr(x, i32(15)))
    x = b.mul(x, i32(0x846CA68B - (1 << 32)))
    x = b.xor(x, b.lshr(x, i32(16)))
    return b.fmul(b.fadd(b.uitofp(b.lshr(x, i32(9)), f32), f32(0.5)), f32(2.0 ** -23))
