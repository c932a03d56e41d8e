"""Vectorisable exp and the GRU's gate arithmetic written in plain IR (no FMA, no libm calls).

The same instruction sequence runs at any vector width, so every CPU generation computes the same
bits: only IEEE add, subtract, multiply, divide, compare and integer shifts. 2^t splits t into
n = round(t) and f = t − n with one addition of a magic constant whose low mantissa bits then hold
127 + n (shifted into the exponent field: 2^n), and evaluates 2^f with a polynomial.
"""
from __future__ import annotations

from llvmlite import ir

from .irutil import i32, vec
from .spmv import ROUND_MAGIC, clamp as _clamp

LOG2E = 1.44269504088896341
# 2^f on [-1/2, 1/2], relative-error fits evaluated by Horner in float32 (coefficients highest
# degree first). Degree 5, max relative error 2.4e-7: the softmax of the draws. Degree 4, 2.7e-6:
# the gates, where it moves σ by at most 7e-7 and tanh by 1.4e-6 (an s16q15 step of h is 3.1e-5),
# two Horner steps per exponential fewer.
EXP2_POLY = (1.327646430581808e-3, 9.675540961325169e-3, 5.550713464617729e-2,
             0.24022120237350464, 0.6931469440460205, 1.0000001192092896)
EXP2_POLY_GATES = (9.57009382545948e-3, 5.591785907745361e-2, 0.240247443318367,
                   0.6931217908859253, 0.9999992847442627)
EXP_MIN, EXP_MAX = -87.3, 88.3   # keeps 2^n a normal float
# t + ROUND_MAGIC + 127 rounds t to an integer n (half to even) and leaves 127 + n in the low
# mantissa bits, exact for |t| < 2^22
ROUND_BIAS = ROUND_MAGIC + 127
# |t| of the gates' 2^t: σ(±60/log2 e = ±41.6) and tanh(±20.8) are 0, ±1 in float32, and
# (1 + 2^60)² stays finite
GATE_T = 60.0


def _c(like, value):
    if isinstance(like.type, ir.VectorType):
        return ir.Constant(like.type, [value] * like.type.count)
    return ir.Constant(like.type, value)


def _int_type(like):
    if isinstance(like.type, ir.VectorType):
        return vec(i32, like.type.count)
    return i32


def fmax(b, x, y):
    return b.select(b.fcmp_ordered(">", x, y), x, y)


def clamp(b, x, lo, hi):
    return _clamp(b, x, _c(x, lo), _c(x, hi))


def exp2(b: ir.IRBuilder, t, poly=EXP2_POLY):
    """2^t for t in [-126, 127] (the caller clamps): 2^n · p(f), n = round(t), f = t − n."""
    s = b.fadd(t, _c(t, ROUND_BIAS))
    f = b.fsub(t, b.fsub(s, _c(t, ROUND_BIAS)))
    p = _c(t, poly[0])
    for coef in poly[1:]:
        p = b.fadd(b.fmul(p, f), _c(t, coef))
    it = _int_type(t)
    two_n = b.bitcast(b.shl(b.bitcast(s, it), ir.Constant(it, [23] * t.type.count)
                            if isinstance(it, ir.VectorType) else ir.Constant(it, 23)), t.type)
    return b.fmul(p, two_n)


def exp(b: ir.IRBuilder, x):
    """e^x; the rounding of x·log2(e) costs up to |x|·2^-24 relative (4e-6 at the clamp), ample
    for the softmax."""
    return exp2(b, b.fmul(clamp(b, x, EXP_MIN, EXP_MAX), _c(x, LOG2E)))


def gate_exp(b: ir.IRBuilder, x, scale):
    """e^(scale·x) for the gates, with scale·x·log2(e) clamped to ±GATE_T."""
    return exp2(b, clamp(b, b.fmul(x, _c(x, scale * LOG2E)), -GATE_T, GATE_T), EXP2_POLY_GATES)


def gru_blend(b: ir.IRBuilder, h, e_u, e_e):
    """u ∘ h + (1 − u) ∘ tanh(z) with E_u = e^(−x_u) and E_e = e^(−2z), one division:
    u = 1/(1 + E_u), tanh z = (1 − E_e)/(1 + E_e), so the blend is
    (h (1 + E_e) + E_u (1 − E_e)) / ((1 + E_u)(1 + E_e)); both factors ≤ 1 + 2^GATE_T."""
    one = _c(h, 1.0)
    d_e = b.fadd(one, e_e)
    num = b.fadd(b.fmul(h, d_e), b.fmul(e_u, b.fsub(one, e_e)))
    return b.fdiv(num, b.fmul(b.fadd(one, e_u), d_e))
