"""The specs the planners hand to the emitters: KernelSpec (one per matrix-vector kernel) and
ScanSpec (one per linear-recurrence kernel), frozen and hashable.

Its `name` is the LLVM symbol, the cache key, the pytest id and the benchmark label, e.g.
``spmv_s8u8_16x1_avx512vnni_idx_u4a2_2688x896`` (a block-sparse int8 kernel with uint8
activations, 16x1 blocks, AVX-512 VNNI, index-driven loop unrolled 4 times into 2 accumulators).
Kernels with the sparsity pattern compiled in (baked, grouped; index-driven ones with byte-permute
gathers may have their prologue's) end with the pattern's hash.
A kernel for B > 1 vectors (one weight load for all B) ends with ``_b{B}``.
"""
from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("int8", "int16", "float32")
VARIANTS = ("idx", "grouped", "baked", "dense")
_OPERANDS = {"int8": "s8u8", "int16": "s16s16", "float32": "f32f32"}
GROUP = {"int8": 4, "int16": 2, "float32": 1}   # products summed per int32/f32 lane


@dataclass(frozen=True, kw_only=True)
class KernelSpec:
    dtype: str              # int8 | int16 | float32
    block: tuple            # (bh, bw); dense kernels: (bh, 0)
    isa: str                # a template name in kernels_templates/
    variant: str            # idx | grouped | baked | dense (see jitvoc.emit.spmv)
    rows: int
    cols: int
    unroll: int = 4
    accumulators: int = 2
    pattern: str = ""       # hash of the sparsity pattern compiled in (baked, grouped; idx:
    # its byte-permute prologue's)
    x_signed: bool = True   # int8: activations carry a zero point of 128
    x_stride: int = 0       # gathering panels: stride of the shared activation tables (0: x_len)
    x_permute: int = 0      # gathering panels: byte-permute window (VBMI) instead of tables
    grouped_unroll: int = 0  # grouped: row blocks of up to this many panels are fully unrolled
    # (set by the planner from one constant, so it is not part of the name)
    vectors: int = 1        # B: the kernel multiplies the matrix by B vectors per call

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        needs = self.variant in ("baked", "grouped")
        if needs and not self.pattern or (
                self.pattern and not (needs or self.variant == "idx" and self.x_permute)):
            raise ValueError("baked and grouped kernels carry a pattern hash, index-driven ones "
                             "only with byte-permute gathers (their prologue), dense ones never")
        if self.unroll < 1 or self.accumulators < 1:
            raise ValueError("unroll and accumulators must be positive")
        if self.vectors < 1:
            raise ValueError("vectors must be positive")

    @property
    def group(self) -> int:
        return GROUP[self.dtype]

    @property
    def dense(self) -> bool:
        return self.variant == "dense"

    @property
    def family(self) -> str:
        """The short name: operation, operands, block and ISA (XNNPACK style)."""
        if self.dense:
            return f"gemv_{_OPERANDS[self.dtype]}_{self.block[0]}_{self.isa}"
        return f"spmv_{_OPERANDS[self.dtype]}_{self.block[0]}x{self.block[1]}_{self.isa}"

    @property
    def name(self) -> str:
        n = f"{self.family}_{self.variant}_u{self.unroll}a{self.accumulators}_{self.rows}x{self.cols}"
        if self.pattern:
            n += f"_{self.pattern}"
        if self.dtype == "int8" and not self.x_signed:
            n += "_xu"
        if self.x_stride:
            n += f"_s{self.x_stride}"
        if self.x_permute:
            n += f"_perm{self.x_permute}"
        if self.vectors > 1:
            n += f"_b{self.vectors}"
        return n

    def __str__(self) -> str:
        return self.name


SCAN_KINDS = ("serial", "reduce")
SCAN_BLOCK = 4  # vectors per register block of a scan kernel


@dataclass(frozen=True, kw_only=True)
class ScanSpec:
    """One scan kernel; ``name`` is its symbol, cache key, test id and benchmark label."""
    kind: str      # "serial" | "reduce"
    width: int     # floats per vector
    isa: str       # tag of the jitvoc.isa.SCAN_VECTORS row
    block: int = SCAN_BLOCK
    stream: bool = False   # serial only: non-temporal (cache-bypassing) vector stores of h

    def __post_init__(self):
        if self.kind not in SCAN_KINDS or (self.stream and self.kind != "serial"):
            raise ValueError(f"no scan kernel {self.kind!r} (stream={self.stream})")

    @property
    def name(self) -> str:
        return f"scan_f32_{self.kind}_v{self.width}_{self.isa}" + ("_nt" if self.stream else "")
