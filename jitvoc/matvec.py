"""build_matvec: a compiled y ≈ W x for one matrix on one CPU generation (the run stage)."""
from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

from . import cpu as cpu_mod
from . import config, decisions, jit, native
from .contracts import SPMV, SPMV_LOOP, SPMV_RAW, SPMV_VECTORS
from .emit.spmv import build_module, stack_bytes
from .errors import InputError
from .layout import padded
from .plan import matvec as planner
from .plan.matvec import kernel_index
from .quant import ACTIVATION_BITS, FixedPoint, zero_correction
from .spec import DTYPES, VARIANTS

MAX_VECTORS = 64   # B: the kernel unrolls its vectors, and its stack buffers grow with B
STACK_LIMIT = 2 << 20   # bytes of stack buffers a kernel call may take (threads' stacks are small)


class MatVec:
    """A compiled matrix-vector product. Call it with a float32 vector, or for a kernel of
    B > 1 vectors (``vectors``) with x of shape [B, cols] (one vector per row): y is then
    [B, rows], ``y[v] ≈ W @ x[v]``, and one activation format (from max |x| over all B,
    unless x_format is given) serves every vector.

    Attributes: ``spec`` (the kernel's name, e.g. ``spmv_s8u8_16x1_avx512vnni_idx_u8a4_...``:
    its LLVM symbol, cache key and benchmark label), ``kernel`` (the KernelSpec it names),
    ``ir`` and ``asm`` (strings, built on first access), ``plan``. ``raw(codes)`` is the integer
    entry point.
    """

    def __init__(self, plan: planner.Plan, gen, x_format: FixedPoint | None = None):
        self.plan, self.kernel, self.gen = plan, plan.spec, gen
        self.spec = plan.spec.name   # the kernel's name: symbol, cache key, benchmark label
        self.rows, self.cols = plan.w_codes.shape
        self.vectors = plan.spec.vectors
        self.x_format = x_format   # None: chosen per call from max |x| (int kernels)
        _check_stack(plan, gen)
        p = plan.packed
        self._w, self._cols, self._ptr = p.weights, kernel_index(plan), p.panel_ptr
        self._row_scale = padded(plan.row_scale.astype(np.float32), p.rows_padded)
        self._zcorr = {}
        self._no_zcorr = np.zeros(p.rows_padded, np.int32)
        self._lib = jit.load(self.kernel.name, self._module, gen)
        self._runnable = cpu_mod.runnable(gen)
        self._fn, self._raw, self._loop = (
            native.function(self._lib.address(e.symbol(self.kernel.name)), e)
            for e in ((SPMV, SPMV_RAW, SPMV_LOOP) if self.vectors == 1 else
                      (SPMV_VECTORS[SPMV], SPMV_VECTORS[SPMV_RAW], SPMV_VECTORS[SPMV_LOOP])))

    def _module(self):
        return build_module(self.kernel, self.plan.packed, self.gen)

    @functools.cached_property
    def ir(self) -> str:
        return str(self._module())

    @functools.cached_property
    def asm(self) -> str:
        return jit.assembly(self._module(), self.gen)

    def __repr__(self):
        return f"<MatVec {self.kernel.name} on {self.gen.name}>"

    def with_vectors(self, vectors: int) -> "MatVec":
        """This kernel for `vectors` vectors per call: the same packed layout, variant, unroll
        and accumulator sets, so that each vector gets the bits this kernel gives it (float32
        sums in the order those fix; the planner's own choice for another B may sum otherwise)."""
        spec = dataclasses.replace(self.kernel, vectors=vectors)
        return MatVec(dataclasses.replace(self.plan, spec=spec), self.gen, self.x_format)

    # --- calling ---------------------------------------------------------------------------------
    def _require_runnable(self):
        if not self._runnable:
            cpu_mod.require_runnable(self.gen)

    def format_for(self, x: np.ndarray) -> FixedPoint:
        if self.x_format is not None:
            return self.x_format
        bits = ACTIVATION_BITS[self.kernel.dtype]
        return FixedPoint.covering(float(np.abs(x).max()), bits, signed=self.kernel.x_signed)

    @property
    def _x_shape(self) -> tuple:
        return (self.cols,) if self.vectors == 1 else (self.vectors, self.cols)

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != self._x_shape:
            what = (f"a vector of length {self.cols}" if self.vectors == 1
                    else f"of shape {self._x_shape} ({self.vectors} vectors)")
            raise InputError(f"x must be {what}, got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InputError("x holds NaN or infinite values")
        return x

    def _args(self, x):
        """The float entry point's arguments after y (y is added by the caller)."""
        if self.kernel.dtype == "float32":   # float kernels read no zero-point corrections
            zc, inv, scale = self._no_zcorr, 1.0, 1.0
        else:
            fmt = self.format_for(x)
            zc = self.zcorr(fmt)
            inv, scale = 2.0 ** fmt.frac, fmt.scale
        keep = (x, zc)
        ptrs = [native.ptr(a) for a in (x, self._w, self._cols, self._ptr, self._row_scale, zc)]
        return keep, ptrs, inv, scale

    def zcorr(self, fmt: FixedPoint) -> np.ndarray:
        """Per-row zero-point corrections, padded to whole row blocks (cached per zero point)."""
        if fmt.zero_point not in self._zcorr:
            self._zcorr[fmt.zero_point] = padded(zero_correction(self.plan.w_codes, fmt),
                                                  self.plan.packed.rows_padded)
        return self._zcorr[fmt.zero_point]

    def __call__(self, x) -> np.ndarray:
        self._require_runnable()
        x = self._check_x(x)
        y = np.empty(self._x_shape[:-1] + (self.rows,), dtype=np.float32)
        keep, ptrs, inv, scale = self._args(x)
        self._fn(native.ptr(y), *ptrs, inv, scale)
        del keep
        if not np.isfinite(y).all():
            raise InputError(f"W @ x overflows float32 in {np.count_nonzero(~np.isfinite(y))} "
                             f"rows (|x| up to {np.abs(x).max():.3g}); scale W or x down")
        return y

    def raw(self, x_codes) -> np.ndarray:
        """Accumulators (int32, or float32 for float kernels) for stored activation codes
        (shaped as x: [cols], or [B, cols])."""
        self._require_runnable()
        p = self.plan.packed
        dtype = {"int8": np.uint8, "int16": np.int16, "float32": np.float32}[self.kernel.dtype]
        x_codes = np.asarray(x_codes)
        if x_codes.shape != self._x_shape or x_codes.dtype != dtype:
            raise InputError(f"raw() takes {dtype.__name__} codes of shape {self._x_shape}, "
                             f"got {x_codes.dtype} {x_codes.shape}")
        lead = self._x_shape[:-1]
        xp = np.zeros(lead + (p.x_len,), dtype=dtype)
        xp[..., :self.cols] = x_codes
        acc = np.empty(lead + (p.rows_padded,),
                       dtype=np.float32 if dtype is np.float32 else np.int32)
        self._raw(native.ptr(acc), native.ptr(xp), native.ptr(self._w), native.ptr(self._cols),
                  native.ptr(self._ptr))
        return acc[..., :self.rows]

    def entry(self, x_format: FixedPoint | None = None) -> tuple[int, dict]:
        """For generated code that calls this kernel (jitvoc.cellrun): the float entry point's
        address (contracts.SPMV) and its arrays by argument name (W, index, panel_ptr,
        row_scale, zcorr for `x_format`), alive as long as this MatVec."""
        zcorr = self._no_zcorr if x_format is None else self.zcorr(x_format)
        arrays = {"W": self._w, "index": self._cols, "panel_ptr": self._ptr,
                  "row_scale": self._row_scale, "zcorr": zcorr}
        return self._lib.address(self.kernel.name), arrays

    def time_call(self, x, repeats: int = 7, min_seconds: float = 0.02) -> float:
        """Median ns per call of the float entry point, timed in a native loop in CPU time of
        the calling thread (the loop is one thread: another process on a shared core does not
        count)."""
        self._require_runnable()
        x = self._check_x(x)
        y = np.empty(self._x_shape[:-1] + (self.rows,), dtype=np.float32)
        keep, ptrs, inv, scale = self._args(x)
        args = [native.ptr(y), *ptrs, inv, scale]
        n = 1
        while True:  # calibrate the loop count
            t0 = time.thread_time()
            self._loop(n, *args)
            dt = time.thread_time() - t0
            if dt >= min_seconds / 4 or n >= 1 << 24:
                break
            n *= 4
        n = max(1, int(n * (min_seconds / 4) / max(dt, 1e-9)) * 4 // 4 or 1)
        times = []
        for _ in range(repeats):
            t0 = time.thread_time()
            self._loop(n, *args)
            times.append((time.thread_time() - t0) / n)
        del keep
        return float(np.median(times) * 1e9)


def build_matvec(W, dtype: str = "int8", cpu=None, block=None, autotune: bool = False,
                 mask=None, x_format: FixedPoint | None = None, variant=None,
                 isa=None, vectors: int = 1, inline: bool = False, x_stride: int = 0) -> MatVec:
    """Compile y ≈ W @ x for float32 vectors x on a CPU generation.

    dtype: "int8" (int8 weights with per-row scales, uint8 activations), "int16" or "float32".
    cpu: a generation name (see `jitvoc info`), else $JITVOC_CPU, else the host.
    block: (rows, cols) of the sparse blocks, or None to let the planner choose.
    autotune: time the candidate kernels and keep the fastest (the decision is cached on disk).
    x_format: a fixed activation format; by default each call picks one from max |x|.
    vectors: B, the vectors per call (x [B, cols] -> y [B, rows], each weight loaded once for
    all B); autotune takes B = 1.
    inline: the kernel is called inside a fused loop (a compiled cell's): the planner's
    kernel for that (plan.matvec.INLINE_KERNEL, as the vocoder loop's cores).
    x_stride: the distance of a gathering kernel's shifted tables (0: its own x_len), for a
    kernel that reads another kernel's tables from a column on (a compiled cell's shared
    codes, as the vocoder loop's O1 and O3 read R's).
    """
    _check_arguments(dtype, block, autotune, x_format, variant, isa)
    if not isinstance(x_stride, (int, np.integer)) or isinstance(x_stride, bool) or x_stride < 0:
        raise InputError(f"x_stride must be a non-negative int, got {x_stride!r}")
    if not (isinstance(vectors, (int, np.integer)) and not isinstance(vectors, bool)
            and 1 <= vectors <= MAX_VECTORS) or (autotune and vectors != 1):
        raise InputError(f"vectors must be an int in [1, {MAX_VECTORS}] (1 with autotune), "
                         f"got {vectors!r}")
    gen = cpu_mod.resolve(cpu)
    w = planner.check_matrix(W)
    if mask is None:
        mask = w != 0
    else:
        mask = np.asarray(mask)
        if mask.shape != w.shape or not (np.issubdtype(mask.dtype, np.number)
                                         or mask.dtype == bool):
            raise InputError(f"mask must be a numeric or boolean array of W's shape {w.shape}, "
                             f"got {mask.dtype} {mask.shape}")
        mask = mask != 0
        w = np.where(mask, w, np.float32(0))
    w_codes, row_scale = planner.quantize_weights(w, dtype)
    x_signed = True if x_format is None else x_format.signed
    if autotune:
        cpu_mod.require_runnable(gen)
        key = decisions.matrix_key(w_codes, mask, dtype, gen, x_signed)
        decision = decisions.cached_decision(key)
        plan = decision and planner.decided_plan(decision, w_codes, row_scale, mask, dtype, gen,
                                                 x_signed)
        if plan:
            return MatVec(plan, gen, x_format)
        best = tune(planner.candidates(w_codes, row_scale, mask, dtype, gen, x_signed), gen,
                    x_format)
        decisions.store_decision(key, best.kernel)
        return best
    plan = planner.build_plan(w_codes, row_scale, mask, dtype, gen, block=block, isa_name=isa,
                              variant=variant, x_signed=x_signed, vectors=int(vectors),
                              inline=inline, x_stride=int(x_stride))
    if variant == "baked":
        size = planner.baked_instructions(mask, plan.spec.block, dtype, plan.spec.isa,
                                          gen) * vectors
        if size > planner.BAKE_LIMIT:
            raise InputError(f"variant='baked' would unroll about {size} instructions, over the "
                             f"compile budget of {planner.BAKE_LIMIT}; use 'grouped' or 'idx'")
    return MatVec(plan, gen, x_format)


def _check_arguments(dtype, block, autotune, x_format, variant, isa) -> None:
    """Type and value checks of build_matvec's options (W, mask and cpu are checked later)."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if block is not None and not (isinstance(block, (tuple, list)) and len(block) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
            for v in block)):
        raise InputError(f"block must be None or (rows, cols) of positive ints, got {block!r}")
    if not isinstance(autotune, bool):
        raise InputError(f"autotune must be True or False, got {autotune!r}")
    if variant is not None and variant not in VARIANTS:
        raise InputError(f"variant must be None or one of {VARIANTS}, got {variant!r}")
    if isa is not None and not isinstance(isa, str):
        raise InputError(f"isa must be None or a template name, got {isa!r}")
    if x_format is None:
        return
    if not isinstance(x_format, FixedPoint):
        raise InputError(f"x_format must be None or a jitvoc.FixedPoint, got {x_format!r}")
    if dtype == "float32":
        raise InputError("x_format applies to int8 and int16 kernels only; float32 takes x as is")
    if x_format.bits != ACTIVATION_BITS[dtype]:
        raise InputError(f"x_format {x_format.name} has {x_format.bits} bits; {dtype} kernels "
                         f"take {ACTIVATION_BITS[dtype]}-bit activations")
    if dtype == "int16" and not x_format.signed:
        raise InputError("int16 kernels take signed activations; x_format must be signed")


def _check_stack(plan, gen) -> None:
    need = stack_bytes(plan.spec, plan.packed, gen)
    if need > STACK_LIMIT:
        raise InputError(f"a {plan.spec.rows}x{plan.spec.cols} matrix needs {need / 2**20:.1f} "
                         f"MiB of stack buffers per call (kernel {plan.spec.name}), over jitvoc's "
                         f"limit of {STACK_LIMIT >> 20} MiB; split it into smaller matrices")


def tune(plans, gen, x_format=None, x=None) -> MatVec:
    """Compile every candidate, time each in its native loop, return the fastest."""
    results = []
    for plan in plans:
        mv = MatVec(plan, gen, x_format)
        xv = x if x is not None else np.random.default_rng(0).standard_normal(mv.cols)
        results.append((mv.time_call(xv.astype(np.float32)), mv))
        config.debug(1, f"autotune {mv.spec}: {results[-1][0]:.0f} ns")
    results.sort(key=lambda r: r[0])
    return results[0][1]
