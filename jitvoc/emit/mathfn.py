"""Vectorisable exp, sigmoid and tanh written in plain IR (no FMA, no libm calls).

The same instruction sequence runs at any vector width, so every CPU generation computes the same
bits. exp splits x·log2(e) into an integer and a fraction, evaluates 2^fraction with a degree-5
polynomial and builds 2^integer in the exponent bits.
"""
from __future__ import annotations

from llvmlite import ir

from .irutil import i32, vec

LOG2E = 1.44269504088896341
# 2^f on [-1/2, 1/2], degree 5, Chebyshev fit: relative error 2.5e-7 in float32
EXP2_POLY = (1.3400432653725147e-3, 9.676037356257439e-3, 5.550327152013779e-2,
             0.2402210682630539, 0.6931471824645996, 1.0000001192092896)
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
    """e^x = 2^n · 2^f with t = x·log2(e), n = round(t), f = t − n; the rounding of t costs up
    to |x|·2^-24 relative (4e-6 at the clamp), ample for gates and softmax."""
    x = fmax(b, fmin(b, x, _c(x, EXP_MAX)), _c(x, EXP_MIN))
    t = b.fmul(x, _c(x, LOG2E))
    n = b.fsub(b.fadd(t, _c(x, ROUND_MAGIC)), _c(x, ROUND_MAGIC))
    f = b.fsub(t, n)
    p = _c(x, EXP2_POLY[0])
    for coef in EXP2_POLY[1:]:
        p = b.fadd(b.fmul(p, f), _c(x, coef))
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
