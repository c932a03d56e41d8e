"""Vectorisable exp, sigmoid and tanh written in plain IR (no FMA, no libm calls).

The same instruction sequence runs at any vector width, so every CPU generation computes the same
bits. exp is Cephes' expf: range reduction by ln 2 in two parts, a degree-6 polynomial, and the
power of two built in the exponent bits. Relative error about 2e-7 over the clamped range.
"""
from __future__ import annotations

from llvmlite import ir

from .irutil import f32, i32, vec

LOG2E = 1.44269504088896341
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4
EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
            1.6666665459e-1, 5.0000001201e-1)
EXP_MIN, EXP_MAX = -87.3, 88.3   # keeps 2^n a normal float
ROUND_MAGIC = 12582912.0


def _c(like, value):
    if isinstance(like.type, ir.VectorType):
        return ir.Constant(like.type, [value] * like.type.count)
    return ir.Constant(like.type, value)


def _int_type(like):
    if isinstance(like.type, ir.VectorType):
        return vec(i32, like.type.count)
    return i32


def fmin(b, x, y):
    return b.select(b.fcmp_ordered("<", x, y), x, y)


def fmax(b, x, y):
    return b.select(b.fcmp_ordered(">", x, y), x, y)


def exp(b: ir.IRBuilder, x):
    x = fmax(b, fmin(b, x, _c(x, EXP_MAX)), _c(x, EXP_MIN))
    n = b.fsub(b.fadd(b.fmul(x, _c(x, LOG2E)), _c(x, ROUND_MAGIC)), _c(x, ROUND_MAGIC))
    r = b.fsub(b.fsub(x, b.fmul(n, _c(x, LN2_HI))), b.fmul(n, _c(x, LN2_LO)))
    p = _c(x, EXP_POLY[0])
    for coef in EXP_POLY[1:]:
        p = b.fadd(b.fmul(p, r), _c(x, coef))
    p = b.fadd(b.fadd(b.fmul(p, b.fmul(r, r)), r), _c(x, 1.0))
    it = _int_type(x)
    two_n = b.bitcast(b.shl(b.add(b.fptosi(n, it), _c_int(it, 127)), _c_int(it, 23)), x.type)
    return b.fmul(p, two_n)


def _c_int(t, value):
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [value] * t.count)
    return ir.Constant(t, value)


def sigmoid(b: ir.IRBuilder, x):
    one = _c(x, 1.0)
    return b.fdiv(one, b.fadd(one, exp(b, b.fsub(_c(x, 0.0), x))))


SIGMOID_CLAMP = 40.0  # σ(±40) is 0 or 1 in float32; keeps (1 + e^40)² finite


def sigmoid_pair(b: ir.IRBuilder, x, y):
    """σ(x), σ(y) with one division: 1 / ((1 + e^-x)(1 + e^-y)) times the other factor."""
    def denominator(v):
        v = fmax(b, fmin(b, v, _c(v, SIGMOID_CLAMP)), _c(v, -SIGMOID_CLAMP))
        return b.fadd(_c(v, 1.0), exp(b, b.fsub(_c(v, 0.0), v)))
    dx, dy = denominator(x), denominator(y)
    inv = b.fdiv(_c(x, 1.0), b.fmul(dx, dy))
    return b.fmul(dy, inv), b.fmul(dx, inv)


def tanh(b: ir.IRBuilder, x):
    """2 σ(2x) − 1."""
    return b.fsub(b.fmul(_c(x, 2.0), sigmoid(b, b.fmul(x, _c(x, 2.0)))), _c(x, 1.0))


def relu(b: ir.IRBuilder, x):
    return fmax(b, x, _c(x, 0.0))
