"""The linear recurrence ``h_t = λ_t ⊙ h_{t-1} + x_t`` and its backward pass (the run stage).

    h = linear_recurrence(decays, impulses, initial_state=None, threads=None)
    dλ, dx, dh0 = linear_recurrence_backward(decays, h, initial_state, grad_h)

Arrays are float32 of shape [T, ...] (flattened to [T, D]); the state has shape [...].
Kernels come from jitvoc.emit.scan and run through cffi, which releases the GIL, so the chunks of
the parallel scan (jitvoc.plan.scan) run on real threads. jitvoc.reference.scan defines the
semantics.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import cpu as cpu_mod
from . import jit, native
from .contracts import SCAN
from .emit import scan as emit_scan
from .errors import InputError
from .plan import scan as plan_scan
from .spec import ScanSpec

_pool: ThreadPoolExecutor | None = None
_libraries: dict = {}   # keeps the machine code of every kernel handed out alive


@functools.lru_cache(maxsize=None)
def kernel(spec: ScanSpec, gen):
    """The cffi callable for `spec` compiled for `gen` (which the host must be able to run)."""
    cpu_mod.require_runnable(gen)
    lib = _libraries[(spec, gen)] = jit.load(spec.name, lambda: emit_scan.build(spec), gen)
    return native.function(lib.address(spec.name), SCAN)


def _workers(threads: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=max(threads, plan_scan.available_threads()),
                                   thread_name_prefix="jitvoc-scan")
    return _pool


def _parallel(jobs: list, threads: int) -> None:
    """Run (cost, thunk) jobs on `threads` workers, each taking a greedy share of the cost."""
    if threads <= 1 or len(jobs) <= 1:
        for _, job in jobs:
            job()
        return
    shares, loads = [[] for _ in range(threads)], [0.0] * threads
    for cost, job in sorted(jobs, key=lambda j: -j[0]):
        i = loads.index(min(loads))
        shares[i].append(job)
        loads[i] += cost
    futures = [_workers(threads).submit(lambda s=s: [job() for job in s]) for s in shares[1:] if s]
    for job in shares[0]:
        job()
    for f in futures:
        f.result()


def run(plan: plan_scan.ScanPlan, gen, lam: int, x: int, out: int, h0: np.ndarray,
        stride: int) -> np.ndarray:
    """Run a plan on raw addresses of row 0 (rows `stride` floats apart, stride may be < 0);
    returns the final state h[T-1]."""
    D, tile = plan.D, plan.tile
    spec = plan.serial
    if spec.stream and (out % (4 * spec.width) or D % spec.width):
        spec = dataclasses.replace(spec, stream=False)   # streaming stores need aligned rows
    serial = kernel(spec, gen)
    row = lambda base, t: base + 4 * stride * t  # noqa: E731
    state = np.array(h0, np.float32).reshape(D)
    if not plan.parallel:
        serial(lam, x, out, state.ctypes.data, plan.T, D, stride, tile)
        return state
    reduce = kernel(plan.reduce, gen)
    b = plan.bounds
    m = len(b) - 2                       # chunks after chunk 0
    A = np.ones((m, D), np.float32)
    carry = np.zeros((m + 1, D), np.float32)   # B of chunk i + 1, then the state after chunk i
    carry[0] = state
    # Phase 1: chunk 0 from h0 while the other chunks are reduced to (Πλ, state from zero).
    jobs = [(b[1], lambda: serial(lam, x, out, carry[0].ctypes.data, b[1], D, stride, tile))]
    for i in range(m):
        lo, hi = b[i + 1], b[i + 2]
        jobs.append((plan_scan.REDUCE_COST * (hi - lo), lambda lo=lo, hi=hi, i=i: reduce(
            row(lam, lo), row(x, lo), A[i].ctypes.data, carry[i + 1].ctypes.data, hi - lo, D,
            stride, tile)))
    _parallel(jobs, plan.threads)
    # Phase 2: scan the carries; carry[i] becomes the state entering chunk i + 1.
    for i in range(1, m + 1):
        carry[i] += A[i - 1] * carry[i - 1]
    # Phase 3: chunks 1.. from their carried states.
    jobs = []
    for i in range(m):
        lo, hi = b[i + 1], b[i + 2]
        jobs.append((hi - lo, lambda lo=lo, hi=hi, i=i: serial(
            row(lam, lo), row(x, lo), row(out, lo), carry[i].ctypes.data, hi - lo, D, stride,
            tile)))
    _parallel(jobs, plan.threads)
    return carry[m - 1]


def empty(shape) -> np.ndarray:
    """An uninitialised float32 array whose data is 64-byte aligned (for streaming stores)."""
    n = int(np.prod(shape))
    raw = np.empty(n + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip:skip + n].reshape(shape)


def _rows(a, name: str, shape=None) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        dtype = getattr(a, "dtype", type(a).__name__)
        raise InputError(f"{name} must be a float32 numpy array, got {dtype} "
                         f"(convert with .astype(np.float32))")
    if a.ndim < 1:
        raise InputError(f"{name} must have shape [T, ...], got a scalar")
    if shape is not None and a.shape != shape:
        raise InputError(f"{name} has shape {a.shape}, expected {shape}")
    return np.ascontiguousarray(a).reshape(a.shape[0], -1) if a.size else a.reshape(
        a.shape[0], int(np.prod(a.shape[1:])))


def _state(a, name: str, shape) -> np.ndarray:
    """The initial state as a contiguous float32 [D] (zeros when None)."""
    D = int(np.prod(shape))
    if a is None:
        return np.zeros(D, np.float32)
    a = np.asarray(a)
    if a.dtype != np.float32:
        raise InputError(f"{name} must be float32, got {a.dtype}")
    if a.shape != tuple(shape) and a.shape != (D,):
        raise InputError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    return np.ascontiguousarray(a).reshape(D)


def _require_finite(fn: str, **arrays) -> None:
    for name, a in arrays.items():
        bad = ~np.isfinite(a)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"{fn}: {name} holds NaN or inf (first at index {where})")


CALIBRATION_SHAPE = (1 << 16, 256)  # the scan timed serial and parallel by parallel_speedup


@functools.lru_cache(maxsize=None)
def parallel_speedup(threads: int) -> float:
    """How much faster the chunked parallel scan runs on `threads` threads than the serial
    kernel, measured once on this host (best of 5, a [65536, 256] scan, ~0.2 s;
    $JITVOC_SCAN_SPEEDUP overrides). Large scans are bound by memory, and whether the threads
    bring the bandwidth that pays for the extra pass differs from machine to machine."""
    if os.environ.get("JITVOC_SCAN_SPEEDUP"):
        return float(os.environ["JITVOC_SCAN_SPEEDUP"])
    gen = cpu_mod.resolve("native")
    T, D = CALIBRATION_SHAPE
    lam, x = np.full((T, D), 0.5, np.float32), np.ones((T, D), np.float32)
    out, h0 = empty((T, D)), np.zeros(D, np.float32)

    def best(p):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            run(p, gen, lam.ctypes.data, x.ctypes.data, out.ctypes.data, h0, D)
            times.append(time.perf_counter() - t)
        return min(times)
    serial = plan_scan.plan(T, D, gen, 1, "serial")
    parallel = plan_scan.plan(T, D, gen, threads, "parallel")
    best(parallel)  # warm up: compile, start the threads
    return best(serial) / best(parallel)


def auto_plan(T: int, D: int, gen, threads: int | None = None) -> plan_scan.ScanPlan:
    """The planner's choice for [T, D], with this host's parallel speedup measured where the
    choice depends on it."""
    threads = max(1, threads or plan_scan.available_threads())
    speedup = parallel_speedup(threads) if plan_scan.may_go_parallel(T, D, threads) else None
    return plan_scan.plan(T, D, gen, threads, speedup=speedup)


def _setup(cpu, T: int, D: int, threads, plan):
    gen = cpu_mod.resolve(cpu)
    cpu_mod.require_runnable(gen)
    if plan is None:
        plan = auto_plan(T, D, gen, threads)
    elif (plan.T, plan.D) != (T, D):
        raise InputError(f"plan is for [{plan.T}, {plan.D}], inputs are [{T}, {D}]")
    return gen, plan


def linear_recurrence(decays, impulses, initial_state=None, threads=None, *, cpu=None, plan=None,
                      out=None) -> np.ndarray:
    """h_t = decays_t ⊙ h_{t-1} + impulses_t for t = 0..T-1, with h_{-1} = initial_state (or 0).

    threads: the most threads to use (default: the cores available); plan: a ScanPlan to use
    instead of the planner's; out: a float32 C-contiguous array to write h into (it may be
    `impulses` itself: each row is read before it is overwritten).
    Raises InputError for NaN/inf inputs (found cheaply: they always reach the last row of h).
    """
    lam = _rows(decays, "decays")
    x = _rows(impulses, "impulses", decays.shape).reshape(lam.shape)
    T, D = lam.shape
    h0 = _state(initial_state, "initial_state", decays.shape[1:])
    if out is None:
        out = empty(decays.shape)
    elif out.shape != decays.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise InputError(f"out must be a C-contiguous float32 array of shape {decays.shape}")
    if T == 0 or D == 0:
        return out
    gen, plan = _setup(cpu, T, D, threads, plan)
    run(plan, gen, lam.ctypes.data, x.ctypes.data, out.ctypes.data, h0, D)
    if not np.isfinite(out.reshape(T, D)[-1]).all():   # NaN/inf never leave a column
        _require_finite("linear_recurrence", decays=decays, impulses=impulses,
                        initial_state=h0)
    return out


def linear_recurrence_backward(decays, h, initial_state, grad_h, threads=None, *, cpu=None):
    """Gradients (d decays, d impulses, d initial_state) of a loss given grad_h = dL/dh.

    The backward pass is the recurrence run in reverse: δ_t = grad_h_t + λ_{t+1} ⊙ δ_{t+1};
    then d impulses = δ, d λ_t = δ_t ⊙ h_{t-1}, d initial_state = λ_0 ⊙ δ_0.
    """
    lam = _rows(decays, "decays")
    hh = _rows(h, "h", decays.shape).reshape(lam.shape)
    g = _rows(grad_h, "grad_h", decays.shape).reshape(lam.shape)
    T, D = lam.shape
    h0 = _state(initial_state, "initial_state", decays.shape[1:])
    _require_finite("linear_recurrence_backward", decays=lam, h=hh, initial_state=h0,
                    grad_h=g)
    delta = empty((T, D))
    if T and D:
        delta[-1] = g[-1]
        if T > 1:
            gen, plan = _setup(cpu, T - 1, D, threads, None)
            # Reversed time s = 0..T-2 is row t = T-2-s; its decay is λ[t+1].
            run(plan, gen, lam[T - 1].ctypes.data, g[T - 2].ctypes.data,
                delta[T - 2].ctypes.data, delta[T - 1], -D)
    grad_lam = np.empty_like(delta)
    if T:
        np.multiply(delta[1:], hh[:-1], out=grad_lam[1:])
        np.multiply(delta[0], h0, out=grad_lam[0])
    grad_h0 = lam[0] * delta[0] if T else np.zeros(D, np.float32)
    shape = decays.shape
    return grad_lam.reshape(shape), delta.reshape(shape), grad_h0.reshape(shape[1:])
