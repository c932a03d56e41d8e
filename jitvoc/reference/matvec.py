"""The semantics of jitvoc's matrix-vector kernels, in NumPy (the oracle for bit-exact tests).

Integer kernels: ``acc[r] = Σ_c w_codes[r, c] · x_codes[c]`` exactly in integers (int32 never
overflows, by the ranges of jitvoc.quant); the float entry point then returns
``y[r] = float32(acc[r] − zcorr[r]) · (float32(row_scale[r]) · float32(x_scale))`` where
``zcorr[r] = zero_point · Σ_c w_codes[r, c]``. Float kernels: ``y = W x`` in float32.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..quant import INT32_MAX, FixedPoint, zero_correction


def matvec_codes(w_codes: np.ndarray, x_codes: np.ndarray) -> np.ndarray:
    """int32 accumulators of integer weights times stored activation codes."""
    acc = w_codes.astype(np.int64) @ x_codes.astype(np.int64)
    if np.abs(acc).max(initial=0) > INT32_MAX:
        raise InputError("int32 accumulator overflow: the quantization ranges were violated")
    return acc.astype(np.int32)


def dequantize(acc: np.ndarray, zcorr: np.ndarray, row_scale: np.ndarray,
               x_scale: float) -> np.ndarray:
    scale = row_scale.astype(np.float32) * np.float32(x_scale)
    return (acc - zcorr).astype(np.float32) * scale


def matvec_quantized(w_codes, row_scale, x: np.ndarray, fmt: FixedPoint) -> np.ndarray:
    """What a quantized kernel's float entry point returns for float x."""
    acc = matvec_codes(w_codes, fmt.stored(x))
    return dequantize(acc, zero_correction(w_codes, fmt), row_scale, fmt.scale)


def matvec_float(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (w.astype(np.float64) @ x.astype(np.float64)).astype(np.float32)
