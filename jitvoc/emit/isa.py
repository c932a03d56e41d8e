"""ISA backends: instantiate a kernels_templates/*.toml template for one CPU generation.

A backend emits one step of a panel product: ``acc[lanes] += Σ_g x[g] · w[lane, g]`` for
``g`` = 4 (u8 · s8, `dot4`) or 2 (s16 · s16, `dot2`), over as many native vectors as the panel
has lanes. The template names the *form* of the instruction sequence and its intrinsics per
vector width; the forms are the small functions below. Panels narrower than every native width
(1x1 blocks) use plain IR. Every intrinsic is checked against the generation's features before it
is emitted: asking for one the target lacks raises ISAError instead of crashing LLVM.
"""
from __future__ import annotations

from llvmlite import ir

from .. import templates
from ..errors import ISAError
from .irutil import declare_intrinsic, i16, i32, vec

# intrinsic -> alternative feature sets, any of which allows it
INTRINSIC_FEATURES = {
    "llvm.x86.sse2.pmadd.wd": [{"sse2"}],
    "llvm.x86.ssse3.pmadd.ub.sw.128": [{"ssse3"}],
    "llvm.x86.avx2.pmadd.ub.sw": [{"avx2"}],
    "llvm.x86.avx2.pmadd.wd": [{"avx2"}],
    "llvm.x86.avx512.pmaddubs.w.512": [{"avx512bw"}],
    "llvm.x86.avx512.pmaddw.d.512": [{"avx512bw"}],
    "llvm.x86.avx512.vpdpbusd.512": [{"avx512vnni"}],
    "llvm.x86.avx512.vpdpbusd.256": [{"avx512vnni", "avx512vl"}, {"avxvnni"}],
    "llvm.x86.avx512.vpdpbusd.128": [{"avx512vnni", "avx512vl"}, {"avxvnni"}],
    "llvm.x86.avx512.vpdpwssd.512": [{"avx512vnni"}],
    "llvm.x86.avx512.vpdpwssd.256": [{"avx512vnni", "avx512vl"}, {"avxvnni"}],
    "llvm.x86.avx512.vpdpwssd.128": [{"avx512vnni", "avx512vl"}, {"avxvnni"}],
    "llvm.x86.avx512.vpermi2var.qi.512": [{"avx512vbmi"}],
}

_PER_LANE = {"dot4": 4, "dot2": 2}


def available(gen) -> list[str]:
    """Names of the templates whose features `gen` has, best (highest preference) first."""
    ok = [t for t in templates.load_all().values() if set(t["requires"]) <= gen.features]
    return [t["name"] for t in sorted(ok, key=lambda t: -t["preference"])]


def best(gen) -> str:
    names = available(gen)
    if not names:
        raise ISAError(f"no kernel template fits CPU generation {gen.name!r}")
    return names[0]


class Backend:
    """A template bound to a generation and an llvmlite module."""

    def __init__(self, name: str, gen, module: ir.Module | None = None):
        """module: where intrinsics are declared; None for a backend only asked about widths."""
        all_t = templates.load_all()
        if name not in all_t:
            raise ISAError(f"unknown ISA backend {name!r}; templates: {', '.join(all_t)}")
        self.t = all_t[name]
        missing = set(self.t["requires"]) - gen.features
        if missing:
            raise ISAError(f"ISA backend {name!r} needs {', '.join(sorted(missing))}, "
                           f"which CPU generation {gen.name!r} lacks")
        self.name, self.gen, self.module = name, gen, module
        self.vector_bits = self.t["vector_bits"]

    # --- widths -------------------------------------------------------------------------------
    def width(self, kind: str, lanes: int) -> int:
        """The native int32 lanes per instruction for a panel of `lanes` rows (0: plain IR)."""
        table = self.t[kind]
        key = "dot" if "dot" in table else "madd_wd"
        widths = sorted((int(k) for k in table[key]), reverse=True)
        return next((w for w in widths if w <= lanes and lanes % w == 0), 0)

    def gather_window(self) -> int:
        """Bytes per window of the byte-permute gather, or 0 if this backend/CPU has none."""
        g = self.t.get("gather")
        if not g or not set(g["requires"]) <= self.gen.features:
            return 0
        return g["window"]

    def permute_window(self, b: ir.IRBuilder, lo, idx, hi):
        """64 bytes picked from the 128 bytes lo:hi by the low 7 bits of idx."""
        g = self.t["gather"]
        t = lo.type
        return b.call(self._intrinsic(g["permute"], t, [t, t, t]), [lo, idx, hi])

    def _intrinsic(self, name: str, ret, args):
        allowed = INTRINSIC_FEATURES.get(name)
        if allowed is None:
            raise ISAError(f"intrinsic {name} has no feature entry in jitvoc.emit.isa")
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
