"""Vectorisable exponentials and the GRU's gate arithmetic written in plain IR (no FMA, no libm
calls).

The same instruction sequence runs at any vector width, so every CPU generation computes the same
bits: only IEEE add, subtract, multiply, divide, compare, float-to-int conversion of in-range
values and integer operations. 2^t takes i = trunc(t·2²³) (t·2²³ clamped into int32):
n = i >> 23 is ⌊t⌋ and the low 23 bits of i under the exponent of 1.0 are g = 1 + t − n in
[1, 2); a polynomial gives q(g) ≈ 2^(g−1), and adding i's high bits (n·2²³) to q's bits
multiplies it by 2^n exactly while the result stays a normal float. The integer dtypes' gate
polynomials are monic, q(g) ≈ 2^(g−1)/κ (a leading 1 and zero coefficients cost no operation),
and κ rides on i as the integer shift = log₂κ·2²³ (Pow2Poly): one float multiplication and
addition fewer per exponential for the price of one integer addition, none where the caller
folds the shift into y (the vocoder loop, into its per-frame rows).
"""
from __future__ import annotations

from typing import NamedTuple

from llvmlite import ir

from .irutil import i32, repeated, vec
from .spmv import clamp as _clamp

LOG2E = 1.44269504088896341


class Pow2Poly(NamedTuple):
    """q(g) ≈ 2^(g−1)/κ on g in [1, 2): Horner coefficients (highest degree first) of a
    relative-error fit evaluated in float32, and shift = round(log₂κ·2²³), added to i =
    trunc(t·2²³) by the gates (gate_exp) so that q(g')·2^n' = 2^t. The softmax ignores the
    shift: κ cancels in p/Σp and in the draw's rule."""
    coefs: tuple
    shift: int = 0


# q(g) = 2^(g−1), κ = 1, with the maximum relative error ε over every float32 g.
# Degree 5, ε = 2.1e-7: the softmax of float32 draws (SOFTMAX_POLY).
EXP2_POLY = Pow2Poly((0.0018775946227833629, -0.00039860172546468675, 0.03864467144012451,
                      0.10783534497022629, 0.35375478863716125, 0.4982861280441284))
# The gates', per dtype of h. An error ε of e^-x moves σ by at most ε/4 and tanh by ε/2: kept
# well below the step of h's codes (int8 s8q7: 7.8e-3; int16 s16q15: 3.1e-5) and, for float32,
# near float rounding. int8: g² + β (one multiplication and one addition; ε = 1.96e-3, against
# 1.73e-3 of the full quadratic that took two of each); int16: g³ + γg + δ (two and two;
# ε = 9.5e-5, against 7.5e-5 of the full cubic that took three and three); float32: degree 4,
# ε = 2.8e-6. Each fit is a minimax of a·(monic) with κ = a; ε checked on every float32 g.
GATE_POLY = {"int8": Pow2Poly((1.0, 0.0, 2.014436960220337), -13348477),
             "int16": Pow2Poly((1.0, 0.0, 6.103984355926514, 6.003754138946533), -31140843),
             "float32": Pow2Poly((0.013534334488213062, -0.002125547965988517,
                                  0.1666126549243927, 0.31201812624931335,
                                  0.5099629759788513))}
# The draws' softmax, per dtype: int8 and int16 take the gates' polynomial (its error, at most
# 1.96e-3 relative in p, adds about ε²/2 to the KL of a draw: 2e-6 nats against int8's 5e-4);
# float32 keeps degree 5, so that its draws stay those of the reference.
SOFTMAX_POLY = {"int8": GATE_POLY["int8"], "int16": GATE_POLY["int16"], "float32": EXP2_POLY}
EXP_MIN = -87.3   # e^x of the softmax: x ≥ EXP_MIN keeps n ≥ −126, 2^n a normal float
# |t| of the gates' 2^t: σ(±60/log2 e = ±41.6) and tanh(±20.8) are 0, ±1 in float32, and
# (1 + 2^61)² stays finite
GATE_T = 60.0
# The gates' unit: y = GATE_UNIT·x is t·2²³ of e^-x = 2^t. The loop forms the gates'
# pre-activations in this unit (the factor rides on R's dequantization scale, bR + K_f, the
# inputs' table and K_f+1 − K_f), so no exponential starts with a multiplication.
GATE_UNIT = -LOG2E * 2.0 ** 23


def _c(like, value):
    if isinstance(like.type, ir.VectorType):
        return repeated(like.type, value)
    return ir.Constant(like.type, value)


def _int_type(like):
    if isinstance(like.type, ir.VectorType):
        return vec(i32, like.type.count)
    return i32


def fmax(b, x, y):
    return b.select(b.fcmp_ordered(">", x, y), x, y)


def clamp(b, x, lo, hi):
    return _clamp(b, x, _c(x, lo), _c(x, hi))


def _horner(b, g, coefs):
    """The polynomial at g; a leading 1 and zero coefficients take no operation."""
    p = None if coefs[0] == 1.0 else _c(g, coefs[0])
    for coef in coefs[1:]:
        p = g if p is None else b.fmul(p, g)
        if coef:
            p = b.fadd(p, _c(g, coef))
    return p


def _pow2_scaled(b, y, poly):
    """2^(y·2⁻²³)/κ for float y in [−126·2²³, 127·2²³] (the caller clamps), per the module
    docstring: one conversion, a polynomial and integer operations."""
    return _pow2_bits(b, b.fptosi(y, _int_type(y)), y.type, poly)


def _pow2_bits(b, i, ftype, poly):
    """2^(i·2⁻²³)/κ for int32 i in [−126·2²³, 127·2²³]: the low 23 bits make g, the rest 2^n."""
    g = b.bitcast(b.or_(b.and_(i, _c(i, 0x7FFFFF)), _c(i, 0x3F800000)), ftype)
    q = b.bitcast(_horner(b, g, poly.coefs), i.type)
    return b.bitcast(b.add(q, b.and_(i, _c(i, -0x800000))), ftype)


def exp_nonpositive(b: ir.IRBuilder, x, poly=EXP2_POLY):
    """e^x/κ for x ≤ 0 (the softmax's l − max l; κ of the poly, see Pow2Poly); the rounding of
    x·log2(e)·2²³ costs up to |x|·2⁻²⁴ relative (5e-6 at EXP_MIN), ample for the softmax."""
    x = b.select(b.fcmp_ordered("<", x, _c(x, EXP_MIN)), _c(x, EXP_MIN), x)
    return _pow2_scaled(b, b.fmul(x, _c(x, LOG2E * 2.0 ** 23)), poly)


def gate_exp(b: ir.IRBuilder, y, poly, squared: bool = False, shifted: bool = False):
    """E = 2^(y·2⁻²³) for the gates, y in gate units (GATE_UNIT·x gives e^-x) clamped to
    ±GATE_T·2²³; squared: E² = 2^(2y·2⁻²³), y clamped to ±GATE_T/2·2²³ and the integer
    trunc(y) doubled (one shift instead of a float multiplication); poly.shift added to it
    (κ of the poly: Pow2Poly), unless `shifted`: y holds it already (half of it when squared),
    folded into a bias by the caller."""
    lim = (GATE_T / 2 if squared else GATE_T) * 2.0 ** 23
    i = b.fptosi(clamp(b, y, -lim, lim), _int_type(y))
    i = b.shl(i, _c(i, 1)) if squared else i
    add = poly.shift and not shifted
    return _pow2_bits(b, b.add(i, _c(i, poly.shift)) if add else i, y.type, poly)


def gru_blend(b: ir.IRBuilder, h, e_u, e_e):
    """u ∘ h + (1 − u) ∘ tanh(z) with E_u = e^(−x_u) and E_e = e^(−2z), one division:
    u = 1/(1 + E_u), tanh z = (1 − E_e)/(1 + E_e), so the blend is
    (h (1 + E_e) + E_u (1 − E_e)) / ((1 + E_u)(1 + E_e)); both factors < 1 + 2^(GATE_T + 1)."""
    one = _c(h, 1.0)
    d_e = b.fadd(one, e_e)
    num = b.fadd(b.fmul(h, d_e), b.fmul(e_u, b.fsub(one, e_e)))
    return b.fdiv(num, b.fmul(b.fadd(one, e_u), d_e))
