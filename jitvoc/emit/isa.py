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
from .irutil import declare_intrinsic, i16, i32, vec

_PER_LANE = {"dot4": 4, "dot2": 2}


class Backend:
    """A template bound to a generation and an llvmlite module."""

    def __init__(self, name: str, gen, module: ir.Module):
        """module: where intrinsics are declared."""
        self.t = isa.template(name, gen)
        self.name, self.gen, self.module = name, gen, module
        self.vector_bits = self.t["vector_bits"]

    def width(self, kind: str, lanes: int) -> int:
        """The native int32 lanes per instruction for a panel of `lanes` rows (0: plain IR)."""
        return isa.dot_width(self.name, self.gen, kind, lanes)

    def permute_window(self, b: ir.IRBuilder, lo, idx, hi):
        """64 bytes picked from the 128 bytes lo:hi by the low 7 bits of idx."""
        g = isa.gather(self.name, self.gen)
        t = lo.type
        return b.call(self._intrinsic(g["permute"], t, [t, t, t]), [lo, idx, hi])

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
