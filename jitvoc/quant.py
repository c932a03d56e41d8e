"""Quantization formats, as types validated on creation.

Activations are fixed-point (`FixedPoint`: bits, fractional bits, signedness; power-of-two scale).
Weights are integers with one float scale per row (`RowScaled`).

The ranges are chosen so that no SIMD path can overflow or saturate internally, which makes every
CPU generation bit-identical for integer kernels:

- int8: activations are uint8 codes (signed values carry a zero point of 128, so s8 ∈ [-128, 127]
  is stored as s8 + 128 ∈ [0, 255]); weights are limited to [-64, 64]. pmaddubsw (SSSE3, AVX2,
  AVX-512BW) sums two u8·s8 products into int16 with saturation: 2 · 255 · 64 = 32640 ≤ 32767, so
  it never saturates and equals VNNI's vpdpbusd, which sums four products straight into int32.
  Cost: weights get 129 levels per row instead of 255 (one bit, about 6 dB of weight SNR).
- int16: activations int16, weights in [-32767, 32767] with a per-row scale chosen so that also
  Σ|w_q| · 32768 < 2³¹: the int32 accumulator can never overflow, whatever the input. Rows with
  many large weights lose the bits that this L1 bound takes (typically 1–3 for sparse rows).
- float32: no quantization.
Every narrowing conversion (float → code) rounds half to even and saturates; nothing wraps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point activation format: value = code · 2^-frac."""
    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self):
        if self.bits not in (8, 16):
            raise InputError(f"FixedPoint bits must be 8 or 16, got {self.bits}")
        if not -32 <= self.frac <= 32:
            raise InputError(f"FixedPoint fractional bits must be in [-32, 32], got {self.frac}")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def scale(self) -> float:
        """The value of one code step."""
        return 2.0 ** -self.frac

    @property
    def zero_point(self) -> int:
        """What the kernels add to a code to store it unsigned (int8 signed formats only)."""
        return 128 if (self.bits == 8 and self.signed) else 0

    @property
    def name(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.bits}q{self.frac}"

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Codes (int32), rounded half to even and saturated to [qmin, qmax]."""
        x = np.asarray(x, dtype=np.float32)
        clipped = np.clip(x * np.float32(2.0 ** self.frac), self.qmin, self.qmax)
        return np.rint(clipped).astype(np.int32)

    def stored(self, x: np.ndarray) -> np.ndarray:
        """What a kernel reads: uint8 codes + zero point for int8, int16 codes for int16."""
        q = self.quantize(x) + self.zero_point
        return q.astype(np.uint8 if self.bits == 8 else np.int16)

    @classmethod
    def covering(cls, max_abs: float, bits: int, signed: bool = True) -> "FixedPoint":
        """The format with the most fractional bits whose range still covers ±max_abs (one
        value; covering_fracs does many at once, by the same rule)."""
        if not math.isfinite(max_abs):
            raise InputError(f"cannot choose a fixed-point format for a range of {max_abs}")
        qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        if max_abs <= 0:
            return cls(bits, bits - 1 if signed else bits, signed)
        frac = math.floor(math.log2(qmax / max_abs))
        if frac < -32:
            raise InputError(f"values up to {max_abs:.3g} exceed the widest {bits}-bit format "
                             f"(±{qmax * 2.0 ** 32:.3g}); scale them down or use float32")
        return cls(bits, min(32, frac), signed)


def covering_fracs(max_abs: np.ndarray, bits: int, signed: bool = True) -> np.ndarray:
    """FixedPoint.covering's fractional bits for many ranges at once (int64, one per value;
    tests/test_quant.py checks they agree): the most whose range still covers ±max_abs, at
    most 32; a range of 0 gets bits − 1 (signed) or bits."""
    max_abs = np.asarray(max_abs, np.float64)
    bad = ~np.isfinite(max_abs)
    if bad.any():
        raise InputError(f"cannot choose a fixed-point format for a range of "
                         f"{max_abs[bad][0]}")
    qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    positive = max_abs > 0
    frac = np.floor(np.log2(qmax / np.where(positive, max_abs, 1.0))).astype(np.int64)
    if (frac[positive] < -32).any():
        worst = float(max_abs.max())
        raise InputError(f"values up to {worst:.3g} exceed the widest {bits}-bit format "
                         f"(±{qmax * 2.0 ** 32:.3g}); scale them down or use float32")
    return np.where(positive, np.minimum(32, frac), bits - 1 if signed else bits)


@dataclass(frozen=True)
class RowScaled:
    """Integer weights with one float32 scale per row: w ≈ code · scale[row]."""
    bits: int
    limit: int          # |code| ≤ limit
    l1_limit: int = 0   # if set, Σ|code| per row ≤ l1_limit (int32 safety for int16)

    def __post_init__(self):
        if self.bits not in (8, 16):
            raise InputError(f"RowScaled bits must be 8 or 16, got {self.bits}")
        if not 0 < self.limit < (1 << (self.bits - 1)):
            raise InputError(f"weight limit {self.limit} does not fit in int{self.bits}")

    @property
    def dtype(self):
        return np.int8 if self.bits == 8 else np.int16

    def quantize(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes, scales[rows]) with saturation; all-zero rows get scale 1."""
        w = np.asarray(w, dtype=np.float32)
        absw = np.abs(w)
        scale = absw.max(axis=1) / np.float32(self.limit)
        if self.l1_limit:  # rounding adds at most 1/2 per non-zero: leave room for it
            room = self.l1_limit - 0.5 * np.count_nonzero(w, axis=1)
            if np.any(room <= 0):
                raise InputError(f"rows with over {2 * self.l1_limit} non-zeros cannot be "
                                 f"quantized to int{self.bits} safely")
            l1 = absw.sum(axis=1, dtype=np.float64) / room
            scale = np.maximum(scale, l1.astype(np.float32) * np.float32(1 + 1e-6))
        scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
        codes = np.rint(np.clip(w / scale[:, None], -self.limit, self.limit))
        return codes.astype(self.dtype), scale


def zero_correction(w_codes: np.ndarray, fmt: FixedPoint) -> np.ndarray:
    """Per row, zero_point · Σ_c w_codes[r, c]: what an integer kernel subtracts from its
    accumulator for activations stored with `fmt`'s zero point."""
    return (fmt.zero_point * w_codes.sum(axis=1, dtype=np.int64)).astype(np.int32)


def row_l1(codes: np.ndarray) -> np.ndarray:
    """Σ_c |codes[r, c]| per row, in int64 (what check_accumulators bounds)."""
    return np.abs(codes.astype(np.int64)).sum(axis=1)


def check_accumulators(l1: np.ndarray, dtype: str) -> None:
    """Refuse integer weights whose int32 accumulator could overflow for some input:
    |Σ_c w[r, c] · x[c]| ≤ Σ_c |w[r, c]| · max|x code| must stay ≤ 2³¹ − 1 in every row
    (`l1`: row_l1 of the whole matrix's codes, so that the worst row is named)."""
    if dtype not in X_CODE_MAX:
        return
    worst = int(l1.argmax())
    if l1[worst] * X_CODE_MAX[dtype] > INT32_MAX:
        raise InputError(
            f"row {worst} of the weights sums to {l1[worst]} in {dtype} codes: its int32 "
            f"accumulator could overflow (the limit is {INT32_MAX // X_CODE_MAX[dtype]}); "
            f"split the row or use float32")


# The formats each kernel dtype uses.
INT8_WEIGHTS = RowScaled(8, 64)
INT16_WEIGHTS = RowScaled(16, 32767, l1_limit=INT32_MAX // 32768)
WEIGHT_FORMATS = {"int8": INT8_WEIGHTS, "int16": INT16_WEIGHTS}
ACTIVATION_BITS = {"int8": 8, "int16": 16}
X_CODE_MAX = {"int8": 255, "int16": 32768}   # the largest |stored activation code|
