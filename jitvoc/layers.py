"""Linear-recurrence layers of Martin & Cundy 2018: GILR, SRU and the linear-surrogate LSTM.

    layer = GILR.init(d_in, d, seed=0)
    h = layer.forward(x, threads=None)            # x: float32 [T, ..., d_in] -> [T, ..., d]
    h_ref = jitvoc.reference.scan.layer_forward(layer, x)   # the oracle, one step at a time

The input projections are matrix-matrix products over all timesteps: one per thread, each over
that thread's share of T with single-threaded BLAS, followed by the share's gates in
cache-sized blocks; the recurrence is jitvoc.linear_recurrence. Equations:
jitvoc.reference.scan.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np

from .blas import blas_threads
from .errors import InputError
from .plan.scan import available_threads
from .recurrence import empty, linear_recurrence

_pool: ThreadPoolExecutor | None = None


BLOCK_ROWS = 256   # elementwise work goes in blocks of rows that stay in cache


def _chunked(fn, T: int, threads: int, block: int | None = BLOCK_ROWS) -> None:
    """fn(lo, hi) over blocks of rows of [0, T), on `threads` threads (numpy releases the GIL);
    block=None: one call per thread with its whole share of rows."""
    global _pool
    edges = [T * i // threads for i in range(threads + 1)]

    def blocks(lo, hi):
        for start in range(lo, hi, block or max(hi - lo, 1)):
            fn(start, min(hi, start + (block or hi - lo)))
    if threads <= 1:
        blocks(0, T)
        return
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max(threads, available_threads()), "jitvoc-layers")
    list(_pool.map(blocks, edges[:-1], edges[1:]))


def _sigmoid(z, out):
    np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1
    out *= 0.5
    return out


def _check(x, d_in: int):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise InputError(f"x must be a float32 numpy array, got {getattr(x, 'dtype', type(x))}")
    if x.ndim < 2 or x.shape[-1] != d_in:
        raise InputError(f"x must have shape [T, ..., {d_in}], got {x.shape}")
    return x.reshape(-1, d_in)


class _Layer:
    """Layers keep their intermediate arrays (projections, gates) between calls of the same
    size: the first touch of fresh pages costs as much as the arithmetic at these sizes. So one
    layer object must not run forward() in two threads at once."""

    def _buffer(self, name: str, shape) -> np.ndarray:
        cache = self.__dict__.setdefault("_buffers", {})
        if name not in cache or cache[name].shape != tuple(shape):
            cache[name] = empty(shape)
        return cache[name]

    @classmethod
    def init(cls, d_in: int, d: int, seed: int = 0):
        """Random weights (uniform ±1/√fan_in), float32."""
        rng = np.random.default_rng(seed)
        arrays = {}
        for f in fields(cls):
            shape = cls._shape(f.name, d_in, d)
            scale = 1.0 / np.sqrt(shape[0] if len(shape) == 2 else d_in)   # 1/√fan_in
            arrays[f.name] = rng.uniform(-scale, scale, shape).astype(np.float32)
        return cls(**arrays)

    def _project_then(self, x2, W, threads: int, gates) -> None:
        """z = x2 W, then gates(z, lo, hi) over blocks of rows. Each of `threads` threads
        projects its share of the timesteps with one single-threaded matrix product, then runs
        their gates while z is fresh: no BLAS worker threads are left spinning on the cores
        the gate threads need (that cost GILR a third of its 2-thread speed here)."""
        z = self._buffer("projection", (len(x2), W.shape[1]))

        def share(lo, hi):
            np.matmul(x2[lo:hi], W, out=z[lo:hi])
            for start in range(lo, hi, BLOCK_ROWS):
                gates(z, start, min(hi, start + BLOCK_ROWS))
        with blas_threads(1):
            _chunked(share, len(x2), threads, block=None)


@dataclass(frozen=True, eq=False)
class GILR(_Layer):
    """Gated impulse linear recurrence: U, V [d_in, d]; b_g, b_i [d]."""
    U: np.ndarray
    V: np.ndarray
    b_g: np.ndarray
    b_i: np.ndarray

    @staticmethod
    def _shape(name, d_in, d):
        return (d_in, d) if name in ("U", "V") else (d,)

    @functools.cached_property
    def _W(self):
        return np.ascontiguousarray(np.concatenate([self.U, self.V], axis=1))

    def gates(self, x, threads: int, out=None):
        """(decays g, impulses (1 − g) ⊙ tanh(x V + b_i)) as [T·…, d]; the impulses go to
        `out` if given (forward scans them in place into h)."""
        x2 = _check(x, self.U.shape[0])
        T, d = len(x2), self.U.shape[1]
        g = self._buffer("g", (T, d))
        imp = empty((T, d)) if out is None else out.reshape(T, d)

        def rows(z, lo, hi):
            gr, ir = g[lo:hi], imp[lo:hi]
            _sigmoid(np.add(z[lo:hi, :d], self.b_g, out=gr), gr)
            np.tanh(np.add(z[lo:hi, d:], self.b_i, out=ir), out=ir)
            ir -= ir * gr                            # (1 − g) ⊙ i
        self._project_then(x2, self._W, threads, rows)
        return g, imp

    def forward(self, x, h0=None, threads=None, out=None):
        """h [T, ..., d]. `out`: a float32 C-contiguous array of that shape to write h into;
        reusing one between calls saves faulting in fresh memory (a third of the time here)."""
        _check(x, self.U.shape[0])
        threads = threads or available_threads()
        shape = x.shape[:-1] + (self.U.shape[1],)
        if out is not None and (out.shape != shape or out.dtype != np.float32
                                or not out.flags.c_contiguous):
            raise InputError(f"out must be a C-contiguous float32 array of shape {shape}")
        g, imp = self.gates(x, threads, out)
        imp = imp.reshape(shape)
        return linear_recurrence(g.reshape(shape), imp, h0, threads, out=imp)


@dataclass(frozen=True, eq=False)
class SRU(_Layer):
    """Simple recurrent unit (highway form, d_in = d): W, W_f, W_r [d, d]; b_f, b_r [d]."""
    W: np.ndarray
    W_f: np.ndarray
    W_r: np.ndarray
    b_f: np.ndarray
    b_r: np.ndarray

    @staticmethod
    def _shape(name, d_in, d):
        if d_in != d:
            raise InputError(f"SRU's highway connection needs d_in == d, got {d_in} and {d}")
        return (d, d) if name.startswith("W") else (d,)

    @functools.cached_property
    def _Wall(self):
        return np.ascontiguousarray(np.concatenate([self.W, self.W_f, self.W_r], axis=1))

    def forward(self, x, c0=None, threads=None):
        d = self.W.shape[1]
        x2 = _check(x, d)
        threads = threads or available_threads()
        T = len(x2)
        f, imp = self._buffer("f", (T, d)), self._buffer("impulse", (T, d))
        r = self._buffer("r", (T, d))

        def gates(z, lo, hi):
            _sigmoid(z[lo:hi, d:2 * d] + self.b_f, f[lo:hi])
            np.multiply(1 - f[lo:hi], z[lo:hi, :d], out=imp[lo:hi])
            _sigmoid(z[lo:hi, 2 * d:] + self.b_r, r[lo:hi])
        self._project_then(x2, self._Wall, threads, gates)
        shape = x.shape[:-1] + (d,)
        c = linear_recurrence(f.reshape(shape), imp.reshape(shape), c0, threads).reshape(-1, d)
        h = np.empty_like(c)

        def output(lo, hi):
            np.tanh(c[lo:hi], out=h[lo:hi])   # r ⊙ tanh(c) + (1 − r) ⊙ x as written: the
            h[lo:hi] *= r[lo:hi]              # shorter r ⊙ (tanh(c) − x) + x cancels tanh(c)
            h[lo:hi] += (1 - r[lo:hi]) * x2[lo:hi]   # away when |x| is large
        _chunked(output, len(c), threads)
        return h.reshape(shape)


@dataclass(frozen=True, eq=False)
class LSLSTM(_Layer):
    """Linear-surrogate (GILR-)LSTM: a GILR surrogate (U, V, b_g, b_i) and the cell's
    W [d_in + d, 4d], b [4d] over [x_t, s_{t-1}] for the gates f, i, o and candidate z."""
    U: np.ndarray
    V: np.ndarray
    b_g: np.ndarray
    b_i: np.ndarray
    W: np.ndarray
    b: np.ndarray

    @staticmethod
    def _shape(name, d_in, d):
        return {"U": (d_in, d), "V": (d_in, d), "W": (d_in + d, 4 * d), "b": (4 * d,)}.get(
            name, (d,))

    @functools.cached_property
    def _surrogate(self):
        return GILR(self.U, self.V, self.b_g, self.b_i)

    def forward(self, x, c0=None, threads=None):
        d_in, d = self.U.shape
        x2 = _check(x, d_in)
        threads = threads or available_threads()
        s = self._surrogate.forward(x, threads=threads)
        s_prev = np.zeros(s.shape, np.float32)
        s_prev[1:] = s[:-1]
        xs = np.concatenate([x2, s_prev.reshape(-1, d)], axis=1)
        T = len(xs)
        f, imp, o = (self._buffer(n, (T, d)) for n in ("f", "impulse", "o"))

        def gates(z, lo, hi):
            zz = z[lo:hi] + self.b
            _sigmoid(zz[:, :d], f[lo:hi])
            _sigmoid(zz[:, d:2 * d], imp[lo:hi])
            imp[lo:hi] *= np.tanh(zz[:, 3 * d:])
            _sigmoid(zz[:, 2 * d:3 * d], o[lo:hi])
        self._project_then(xs, self.W, threads, gates)
        shape = x.shape[:-1] + (d,)
        c = linear_recurrence(f.reshape(shape), imp.reshape(shape), c0, threads).reshape(-1, d)

        def output(lo, hi):
            np.tanh(c[lo:hi], out=c[lo:hi])
            c[lo:hi] *= o[lo:hi]
        _chunked(output, len(c), threads)
        return c.reshape(shape)
