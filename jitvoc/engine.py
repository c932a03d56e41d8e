"""What every engine shares (the run stage's NumPy side): where a generation stands (GenState)
and the conditioning K that the engines read, with the frames of look-ahead it needs.

The engine interface is described in jitvoc.reference.vocoder (the oracle, ReferenceEngine) and
implemented by jitvoc.engine_jit.JitEngine; jitvoc.vocoder feeds both the same K.
"""
import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

MAX_STREAMS = 64   # streams of a batched engine (JitEngine(vectors=B); B-vector kernels go to 64)


@dataclass
class GenState:
    """Where a generation stands: the GRU state after sample t-1, the previous sample's coarse
    and fine classes, t, the index of the next sample (from the start of the utterance),
    s_prev, the de-emphasised value s_{t-1}, and y_prev, the DC blocker's output y_{t-1} (float32
    values; y_prev stays 0 without a DC blocker)."""
    h: np.ndarray  # float32 [H]
    c_prev: int = 128
    f_prev: int = 0
    t: int = 0
    s_prev: float = 0.0
    y_prev: float = 0.0

    @classmethod
    def initial(cls, hidden):
        """The state before the first sample: h = 0, silence (c = 128, f = 0), s = y = 0."""
        return cls(np.zeros(hidden, np.float32))

    def check_filters(self):
        """InputError unless the output filters' state (s_prev, y_prev) is finite."""
        if math.isfinite(self.s_prev) and math.isfinite(self.y_prev):   # np.isfinite: 1 µs
            return
        for name, what in (("s_prev", "de-emphasis"), ("y_prev", "DC blocker")):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise InputError(f"state.{name} ({what}) must be finite, got {v}")


def receptive_radius(model) -> int:
    """How many frames of look-ahead (and look-back) one row of K needs."""
    return sum((layer["kernel"] - 1) // 2 for layer in model.conditioning_layers)


def conditioning(model, mel, start=0, stop=None) -> np.ndarray:
    """Rows [start, stop) of K = conv_stack(mel) · Pᵀ + b: float32 [stop - start, 3H].

    `mel` is float32 [F, n_mels], the utterance's frames so far; every layer treats frames
    outside [0, F) as zero padding. The rows depend only on mel[start - R : stop + R]
    (R = receptive_radius(model)) and on whether that range reaches past the end, and the
    arithmetic depends only on (stop - start): the same call on a longer mel holding the same
    frames up to stop + R returns the same bits.
    """
    n = len(mel)
    stop = n if stop is None else stop
    radius = receptive_radius(model)
    w = model.dense_weights
    lo, hi = start - radius, stop + radius          # positions of x's first and past-last rows
    x = np.zeros((hi - lo, mel.shape[1]), np.float32)
    x[max(lo, 0) - lo:min(hi, n) - lo] = mel[max(lo, 0):min(hi, n)]
    for layer in model.conditioning_layers:
        weight, bias = w[layer["name"] + ".weight"], w[layer["name"] + ".bias"]
        r, rows = (layer["kernel"] - 1) // 2, x.shape[0] - (layer["kernel"] - 1)
        y = np.broadcast_to(bias, (rows, len(bias))).copy()
        for j in range(layer["kernel"]):         # y[p] += W[:, :, j] · x[p - r + j]
            y += x[j:j + rows] @ weight[:, :, j].T
        x = _activation(y, layer["activation"])
        lo, hi = lo + r, hi - r
        x[:max(0, -lo)] = 0                      # zero padding for the next layer
        x[max(0, n - lo):] = 0
    return x @ w["cond.proj"].T + w["gru.b"]


def blockwise_conditioning(model, mel, block, out, first=0, stop=None) -> np.ndarray:
    """K of the mel as blocks of `block` rows aligned to frame 0, blocks [first, stop) (stop
    None: to the end), written to their rows of out: the bits of conditioning(model, mel, s,
    min(s + block, F)) for each of their starts s.

    The full blocks go through each product together, as a stack (np.matmul makes the same
    BLAS call per block that a block alone makes); the last, shorter one alone."""
    n, radius, w = len(mel), receptive_radius(model), model.dense_weights
    stop = -(-n // block) if stop is None else stop
    full = min(n // block, stop)
    if full > first:
        padded = np.zeros((n + 2 * radius + block, mel.shape[1]), np.float32)
        padded[radius:radius + n] = mel
        starts = block * np.arange(first, full)[:, None]   # each block's first row (mel position)
        x = padded[starts + np.arange(block + 2 * radius)]  # [blocks, block + 2R, n_mels]
        lo = starts - radius
        for layer in model.conditioning_layers:
            x, lo = _stacked_layer(x, lo, n, layer, w), lo + (layer["kernel"] - 1) // 2
        rows = out[first * block:full * block].reshape(full - first, block, -1)
        np.matmul(x, w["cond.proj"].T, out=rows)
        rows += w["gru.b"]
    if n % block and first <= n // block < stop:
        out[full * block:n] = conditioning(model, mel, full * block, n)
    return out


def _stacked_layer(x, lo, n, layer, w) -> np.ndarray:
    """One layer of conditioning over a stack of blocks (x [blocks, rows, channels]; lo: each
    block's first row's position), as conditioning computes it for one."""
    weight, bias, k = w[layer["name"] + ".weight"], w[layer["name"] + ".bias"], layer["kernel"]
    rows = x.shape[1] - (k - 1)
    y = np.broadcast_to(bias, (len(x), rows, len(bias))).copy()
    for j in range(k):
        y += np.matmul(x[:, j:j + rows], np.ascontiguousarray(weight[:, :, j].T))
    y = _activation(y, layer["activation"])
    position = lo + (k - 1) // 2 + np.arange(rows)
    y[(position < 0) | (position >= n)] = 0          # zero padding for the next layer
    return y


def _activation(x, name):
    if name == "relu":
        return np.maximum(x, np.float32(0))
    if name == "tanh":
        return np.tanh(x)
    return x
