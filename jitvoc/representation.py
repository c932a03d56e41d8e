"""How a model's 16-bit coarse/fine code maps to audio (docs/model.md, "Samples").

The network always predicts a coarse class c and a fine class f, both in [0, 255]. What the pair
means is the model file's `meta.representation`:

    {"code": "linear" | "mulaw", "preemphasis": α, "dc_block": r}
                                            absent: linear, α = 0; "dc_block" absent: r = 0

* the code maps (c, f) to a pre-emphasised value e in [-1, 1]:
      e = base[c] + step[c] · ((f + offset) · 2⁻⁸)            (float32, no FMA)
  - "linear": base[c] = c/128 − 1, step[c] = 1/128, offset 0: e·32768 = 256c + f − 32768,
    the 16-bit linear sample of format version 1, bit for bit;
  - "mulaw": the coarse byte is an 8-bit µ-law sample (µ = 255): base[c] = expand(c/128 − 1),
    step[c] = base[c + 1] − base[c] (base[256] = 1), and the fine byte refines it linearly
    inside that segment, decoded at the middle of its 1/256 (offset ½).
* de-emphasis turns e back into audio: s_t = e_t + α·s_{t−1} (float32, s_{−1} = 0);
* with r ≠ 0 a DC blocker follows: y_t = (s_t − s_{t−1}) + r·y_{t−1} (float32, y_{−1} = 0),
  otherwise y_t = s_t; the output sample is rint(y_t · 32768) clipped to the int16 range.

Encoding (teacher forcing, training) runs in float64 on the int16 recording: z = s/32768,
e_t = z_t − α·z_{t−1} (z_{−1} = 0), clipped to [-1, 1]. "mulaw": c is the segment that holds e
and f its position inside the segment, both by floor (f decodes to the middle of its part).
"linear": u = 256c + f is e·32768 + 32768 rounded to the nearest integer (half up), which
decodes with offset 0: exact without pre-emphasis (e·32768 is an integer), zero-mean with it
(a floor would bias s by −½/(1 − α) LSB). Silence is (c, f) = (128, 0) in both codes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ModelFileError

CODES = ("linear", "mulaw")
MU = 255.0
MAX_PREEMPHASIS = 0.99   # α < 1: the de-emphasis filter 1 / (1 − α z⁻¹) stays stable
KEYS = ("code", "preemphasis", "dc_block")


@dataclass(frozen=True)
class Representation:
    code: str = "linear"
    preemphasis: float = 0.0
    dc_block: float = 0.0   # r of the DC blocker (1 − z⁻¹) / (1 − r z⁻¹); 0: none

    def __post_init__(self):
        if self.code not in CODES:
            raise ModelFileError(f"representation code must be one of {CODES}, got {self.code!r}")
        a = self.preemphasis
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= MAX_PREEMPHASIS:
            raise ModelFileError(f"representation preemphasis must be a number in "
                                 f"[0, {MAX_PREEMPHASIS}], got {a!r}")
        object.__setattr__(self, "preemphasis", float(a))
        r = self.dc_block
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
            raise ModelFileError(f"representation dc_block must be a number in [0, 1), got {r!r}")
        object.__setattr__(self, "dc_block", float(r))

    @classmethod
    def from_meta(cls, entry) -> "Representation":
        """The representation of a model file's meta entry (None: linear, no pre-emphasis)."""
        if entry is None:
            return cls()
        if not isinstance(entry, dict) or set(entry) - set(KEYS):
            raise ModelFileError(f"representation must be an object with keys 'code' and "
                                 f"'preemphasis' (and optionally 'dc_block'), got {entry!r}")
        return cls(entry.get("code", "linear"), entry.get("preemphasis", 0.0),
                   entry.get("dc_block", 0.0))

    def to_meta(self) -> dict:
        """The meta entry; "dc_block" only when there is one (files without it stay as they are)."""
        meta = {"code": self.code, "preemphasis": self.preemphasis}
        return dict(meta, dc_block=self.dc_block) if self.dc_block else meta

    @property
    def fine_offset(self) -> float:
        """Where inside its 1/256 of the segment a fine class decodes (0: bottom, ½: middle)."""
        return 0.0 if self.code == "linear" else 0.5

    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(base, step), float32 [256] each: the decode tables of the module docstring."""
        if self.code == "linear":
            return (np.arange(256) / 128.0 - 1.0).astype(np.float32), np.full(256, 1 / 128, np.float32)
        edges = _expand(np.arange(257) / 128.0 - 1.0)
        base = edges[:256].astype(np.float32)
        top = np.append(base[1:], np.float32(1.0))
        return base, (top - base).astype(np.float32)

    def encode(self, audio) -> tuple[np.ndarray, np.ndarray]:
        """int16 audio [T] -> (c, f), int64 [T] each, in [0, 255]."""
        z = np.asarray(audio, np.int16).astype(np.float64) / 32768.0
        e = z.copy()
        if self.preemphasis:
            e[1:] -= self.preemphasis * z[:-1]
        e = np.clip(e, -1.0, 1.0)
        if self.code == "linear":
            u = np.clip(np.floor((e + 1.0) * 32768.0 + 0.5), 0, 65535).astype(np.int64)
            return u // 256, u % 256
        y = np.sign(e) * np.log1p(MU * np.abs(e)) / np.log1p(MU)
        c = np.clip(np.floor((y + 1.0) * 128.0), 0, 255).astype(np.int64)
        base, step = self.segments()
        frac = (e - base[c].astype(np.float64)) / step[c].astype(np.float64)
        f = np.clip(np.floor(frac * 256.0), 0, 255).astype(np.int64)
        return c, f


def _expand(y) -> np.ndarray:
    """µ-law expansion of y in [-1, 1] (float64)."""
    y = np.asarray(y, np.float64)
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU


def decode(rep: Representation, c, f, s_prev=0.0, y_prev=0.0) -> tuple[np.ndarray, float, float]:
    """(c, f) codes -> (int16 audio, the de-emphasis state s and the DC-blocker state y after the
    last sample), exactly as the engines compute it (float32, one sample at a time). For tests
    and measurements."""
    base, step = rep.segments()
    c, f = np.asarray(c, np.int64), np.asarray(f, np.int64)
    frac = (f.astype(np.float32) + np.float32(rep.fine_offset)) * np.float32(2.0 ** -8)
    e = base[c] + step[c] * frac
    alpha, r = np.float32(rep.preemphasis), np.float32(rep.dc_block)
    s, y = np.float32(s_prev), np.float32(y_prev)
    out = np.empty(len(e), np.float32)
    for t, et in enumerate(e):
        s_new = et + alpha * s
        if r:
            y = (s_new - s) + r * y
        out[t], s = (y if r else s_new), s_new
    pcm = np.clip(np.rint(out * np.float32(32768.0)), -32768, 32767).astype(np.int16)
    return pcm, float(s), float(y)
