"""ISA backends: a kernels_templates/*.toml template (read through jitvoc.isa) bound to one CPU
generation and an llvmlite module.

A backend emits one step of a panel product: ``acc[lanes] += Σ_g x[g] · w[lane, g]`` for
``g`` = 4 (u8 · s8, `dot4`) or 2 (s16 · s16, `dot2`), over as many native vectors as the panel
has lanes. The template names the *form* of the instruction sequence and its intrinsics per
vector width; the forms are the small functions below. Panels narrower than every native width
(1x1 blocks) use plain IR. Every intrinsic is checked against the generation's features before it
is emitted: asking for one the target lacks raises ISAError instead of crashing LLVM.
"""
from __future__ import annotations

from llvmlite import ir

from .. import isa
from ..errors import ISAError
from .irutil import declare_intrinsic, gep, i8, i16, i32, vec

_PER_LANE = {"dot4": 4, "dot2": 2}


class Backend:
    """A template bound to a generation and an llvmlite module."""

    def __init__(self, name: str, gen, module: ir.Module):
        """module: where intrinsics are declared."""
        self.t = isa.template(name, gen)
        self.name, self.gen, self.module = name, gen, module
        self.vector_bits = self.t["vector_bits"]
        self.gather = isa.gather(name, gen)   # the byte-permute gather (jitvoc.isa.GATHERS)

    def width(self, kind: str, lanes: int) -> int:
        """The native int32 lanes per instruction for a panel of `lanes` rows (0: plain IR)."""
        return isa.dot_width(self.name, self.gen, kind, lanes)

    def permute_window(self, b: ir.IRBuilder, lo, idx, hi, at):
        """64 bytes picked from the 128 bytes lo:hi (loaded from `at`) by the low 7 bits of
        idx (each below 128)."""
        g = self.gather
        if g is None:
            raise ISAError(f"ISA backend {self.name!r} has no byte-permute gather on CPU "
                           f"generation {self.gen.name!r}")
        t = lo.type
        if "permute" in g:
            return b.call(self._intrinsic(g["permute"], t, [t, t, t]), [lo, idx, hi])
        chunks = [b.load(gep(b, at, i8, 16 * k) if k else at, typ=vec(i8, 16), align=1)
                  for k in range(8)]
        both = ir.Constant(vec(i32, 32), [*range(16)] * 2)   # a chunk in both 128-bit lanes
        chunks = [b.shuffle_vector(c, ir.Constant(c.type, None), both) for c in chunks]
        halves = [self._shuffle_blend(b, g, chunks, b.shuffle_vector(
            idx, ir.Constant(t, None), ir.Constant(vec(i32, 32), [*range(32 * h, 32 * h + 32)])))
            for h in range(2)]
        return b.shuffle_vector(halves[0], halves[1], ir.Constant(vec(i32, 64), [*range(64)]))

    def _shuffle_blend(self, b: ir.IRBuilder, g: dict, chunks: list, idx):
        """32 bytes picked from 8 chunks of 16 bytes (each in both lanes) by idx: every chunk's
        byte idx % 16 by vpshufb, then the chunk named by bits 4, 5, 6 of idx chosen by a tree
        of 7 byte blends (vpblendvb on the top bit, the bit shifted there): per 32 bytes 8
        vpshufb, 7 vpblendvb, 3 shifts; the chunks broadcast-loaded (vbroadcasti128) once for
        both halves. On Zen 4 (ns per call, R 2688x896 at 5% idx u4a2, alternating) 3,035
        against 3,227 for 8 x (sub, saturating add of 0x70, vpshufb, or), 3,444 for 8 x (add,
        vpshufb, xor) of chunks XOR-ed with their next; the chunks split from 32-byte loads
        (vpermq) instead of broadcast-loaded: 3,213 against 3,055 in another run."""
        t = idx.type
        shuffle = self._intrinsic(g["shuffle"], t, [t, t])
        level = [b.call(shuffle, [c, idx]) for c in chunks]
        words = vec(i16, 16)
        for shift in (3, 2, 1):   # bits 4, 5, 6 to bit 7 (a byte's bit 7 after a shift of
            # its 16-bit word comes from the same byte)
            top = b.bitcast(b.shl(b.bitcast(idx, words), ir.Constant(words, [shift] * 16)), t)
            pick = b.icmp_signed("<", top, ir.Constant(t, [0] * 32))
            level = [b.select(pick, level[i + 1], level[i]) for i in range(0, len(level), 2)]
        return level[0]

    def _intrinsic(self, name: str, ret, args):
        allowed = isa.INTRINSIC_FEATURES.get(name)
        if allowed is None:
            raise ISAError(f"intrinsic {name} has no feature entry in jitvoc.isa")
        if not any(s <= self.gen.features for s in allowed):
            raise ISAError(f"{name} needs {' or '.join('+'.join(sorted(s)) for s in allowed)}, "
                           f"which CPU generation {self.gen.name!r} lacks")
        return declare_intrinsic(self.module, name, ret, args)

    # --- the step -----------------------------------------------------------------------------
    def dot(self, b: ir.IRBuilder, kind: str, acc, xword, w):
        """acc <W x i32> += per-lane dot products of the broadcast x word and weights w.

        xword: <W x i32> (each lane the same `group` activations); w: <W*group x i8|i16>.
        """
        width = acc.type.count
        table = self.t[kind]
        xv = b.bitcast(xword, w.type)
        form = table["form"]
        if form == "accumulate":
            fn = self._intrinsic(table["dot"][str(width)], acc.type, [acc.type, w.type, w.type])
            return b.call(fn, [acc, xv, w])
        if form == "maddubs":
            t16 = vec(i16, 2 * width)
            mub = self._intrinsic(table["maddubs"][str(width)], t16, [w.type, w.type])
            mwd = self._intrinsic(table["madd_wd"][str(width)], acc.type, [t16, t16])
            pairs = b.call(mub, [xv, w])
            ones = ir.Constant(t16, [1] * (2 * width))
            return b.add(acc, b.call(mwd, [pairs, ones]))
        if form == "madd":
            mwd = self._intrinsic(table["madd_wd"][str(width)], acc.type, [w.type, w.type])
            return b.add(acc, b.call(mwd, [xv, w]))
        if form == "widen_madd":
            return b.add(acc, self._widen_madd(b, table, xv, w, width))
        raise ISAError(f"template {self.name!r}: unknown form {form!r}")

    def _widen_madd(self, b, table, xv, w, width):
        """SSE2: zero-extend x, sign-extend w to int16, pmaddwd, then add neighbouring pairs."""
        n = 4 * width
        x16 = b.zext(xv, vec(i16, n))
        w16 = b.sext(w, vec(i16, n))
        t16, t32 = vec(i16, 2 * width), vec(i32, width)
        mwd = self._intrinsic(table["madd_wd"][str(width)], t32, [t16, t16])
        halves = []
        for h in range(2):
            idx = ir.Constant(vec(i32, 2 * width), list(range(h * 2 * width, (h + 1) * 2 * width)))
            xs = b.shuffle_vector(x16, x16, idx)
            ws = b.shuffle_vector(w16, w16, idx)
            halves.append(b.call(mwd, [xs, ws]))
        both = b.shuffle_vector(halves[0], halves[1],
                                ir.Constant(vec(i32, 2 * width), list(range(2 * width))))
        even = b.shuffle_vector(both, both, ir.Constant(vec(i32, width), list(range(0, 2 * width, 2))))
        odd = b.shuffle_vector(both, both, ir.Constant(vec(i32, width), list(range(1, 2 * width, 2))))
        return b.add(even, odd)


def generic_dot(b: ir.IRBuilder, kind: str, acc, xword, w):
    """Plain-IR fallback for panels narrower than any native vector (e.g. 1x1 blocks).

    acc <L x i32>, xword <L x i32>, w <L*group x i8|i16>; exact integer arithmetic.
    """
    lanes = acc.type.count
    per = _PER_LANE[kind]
    n = lanes * per
    xv = b.bitcast(xword, w.type)
    xe = b.zext(xv, vec(i32, n)) if kind == "dot4" else b.sext(xv, vec(i32, n))
    prod = b.mul(xe, b.sext(w, vec(i32, n)))
    out = acc
    for g in range(per):
        pick = b.shuffle_vector(prod, prod, ir.Constant(vec(i32, lanes), list(range(g, n, per))))
        out = b.add(out, pick)
    return out
