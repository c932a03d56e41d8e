"""The contracts between Python and the generated code, each declared once.

- Entry points: symbol suffix, argument names and types, in order. The emitter builds the IR
  function from the declaration (emit.irutil.define, call), the run stage its cffi call
  (native.function); every function returns void.
- Pointer tables: arrays of addresses the generated code reads by position (the loop's
  `params`), declared by name; the engine packs one from a dict.
- Packed arrays and records: the element types of the per-panel arrays and the fixed-size
  byte records (the byte-permute passes) that layout.py packs and the kernels read.

A use that does not match its declaration raises ContractError while the IR is built.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ContractError

PTR, ADDR, I64, U32, F32 = "ptr", "addr", "i64", "u32", "f32"   # ADDR: a pointer passed as an int
C_TYPES = {PTR: "void*", ADDR: "uintptr_t", I64: "int64_t", U32: "uint32_t", F32: "float"}


def _ptrs(*names: str) -> tuple:
    return tuple((n, PTR) for n in names)


@dataclass(frozen=True)
class EntryPoint:
    """A native function `prefix + suffix` returning void."""
    suffix: str
    args: tuple   # (name, type) pairs, in call order
    vectors: bool = False   # y and x (x_codes, xin) hold B vectors (see SPMV_VECTORS)

    @property
    def names(self) -> tuple:
        return tuple(n for n, _ in self.args)

    @property
    def types(self) -> tuple:
        return tuple(t for _, t in self.args)

    def symbol(self, prefix: str) -> str:
        return prefix + self.suffix

    def c_signature(self) -> str:
        return f"void({', '.join(C_TYPES[t] for t in self.types)})"

    def ordered(self, values: dict) -> list:
        """The values of a call, in declaration order; every argument named exactly once."""
        if set(values) != set(self.names):
            raise ContractError(f"entry point {self.suffix or '<spec name>'}{self.names}: "
                                f"missing {sorted(set(self.names) - set(values))}, "
                                f"unknown {sorted(set(values) - set(self.names))}")
        return [values[n] for n in self.names]


_MATRIX = _ptrs("W", "index", "panel_ptr")
# A matrix-vector kernel named N (see emit.spmv).
SPMV = EntryPoint("", _ptrs("y", "x") + _MATRIX + _ptrs("row_scale", "zcorr")
                  + (("x_inv_scale", F32), ("x_scale", F32)))
SPMV_RAW = EntryPoint("_raw", _ptrs("y", "x_codes") + _MATRIX)
SPMV_LOOP = EntryPoint("_loop", (("n", I64),) + SPMV.args)
SPMV_CORE = EntryPoint("_core", _ptrs("y", "xin") + _MATRIX + _ptrs("row_scale", "zcorr")
                       + (("x_scale", F32), ("bias", PTR)))
# The same entry points of a kernel for B > 1 vectors (KernelSpec.vectors): one activation
# format for all B; the float entry point's y is [B, rows] and x [B, cols], row-major; the raw
# one's y is [B, rows_padded] and x_codes [B, x_len]; the core's y and bias are [B, rows_padded]
# and xin holds the B vectors interleaved (see emit.spmv).
SPMV_VECTORS = {e: EntryPoint(e.suffix, e.args, vectors=True)
                for e in (SPMV, SPMV_RAW, SPMV_LOOP, SPMV_CORE)}
# The loop of a compiled cell named N (see emit.cell): n steps; `params` is the cell plan's
# pointer table (plan.cell.CellPlan.params: inputs, outputs, states, weights, scratch, kernels).
CELL_RUN = EntryPoint("_run", (("n", I64), ("params", PTR)))
# The same loop compiled for B streams (emit.cell, streams mode): n steps; lens int64 [B] (the
# steps of each stream, at most n); tables: B addresses of one CELL_RUN pointer table each.
CELL_RUN_STREAMS = EntryPoint("_run_streams", (("n", I64),) + _ptrs("lens", "tables"))
# A scan kernel (see emit.scan): addresses as integers, as the parallel scan computes them.
SCAN = EntryPoint("", tuple((n, ADDR) for n in ("lam", "x", "h", "state"))
                  + tuple((n, I64) for n in ("n", "ncols", "stride", "tile")))


@dataclass(frozen=True)
class PointerTable:
    """An array of addresses that generated code reads by position."""
    names: tuple

    def slot(self, name: str) -> int:
        if name not in self.names:
            raise ContractError(f"pointer table has no entry {name!r}")
        return self.names.index(name)

    def pack(self, addresses: dict) -> np.ndarray:
        """uint64 [len(names)]: the addresses in declaration order, every entry given once."""
        if set(addresses) != set(self.names):
            raise ContractError(f"pointer table: missing {sorted(set(self.names) - set(addresses))}"
                                f", unknown {sorted(set(addresses) - set(self.names))}")
        return np.array([addresses[n] for n in self.names], dtype=np.uint64)


MATRIX_ARRAYS = ("W", "index", "panel_ptr", "row_scale", "zcorr")   # per matrix, as SPMV_CORE


@dataclass(frozen=True)
class Field:
    name: str
    offset: int   # bytes from the record's start
    dtype: str    # NumPy dtype, little-endian
    count: int = 1

    @property
    def nbytes(self) -> int:
        return np.dtype(self.dtype).itemsize * self.count


@dataclass(frozen=True)
class Record:
    """A packed record of `size` bytes (zeros where no field is)."""
    name: str
    size: int
    fields: tuple

    def __post_init__(self):
        ends = 0
        for f in sorted(self.fields, key=lambda f: f.offset):
            if f.offset < ends or f.offset + f.nbytes > self.size:
                raise ContractError(f"record {self.name}: field {f.name} overlaps or overflows")
            ends = f.offset + f.nbytes

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise ContractError(f"record {self.name} has no field {name!r}")

    def put(self, record: np.ndarray, name: str, value) -> None:
        """Write a field into `record` (uint8 [size])."""
        f = self.field(name)
        data = np.asarray(value, dtype=f.dtype).reshape(-1)
        if data.size != f.count:
            raise ContractError(f"record {self.name}: field {name} takes {f.count} values")
        record[f.offset:f.offset + f.nbytes] = data.view(np.uint8)


# The per-panel arrays (layout.Packed.panel_ptr and kernel_index()), as NumPy dtypes.
PANEL_PTR = "<i4"      # the first panel of each stored row block, then the panel count
PANEL_COLUMN = "<i4"   # contiguous panels: the first column
PANEL_OFFSET = "<u2"   # gathering panels: `group` offsets into the shifted activation tables

PERMUTE_GROUP = 16   # panels per byte-permute group: 16 words of 4 bytes, one vpermi2b
PERMUTE_SLOT = "<u2"   # a panel's word slot, PERMUTE_GROUP per group in the index's head
# One pass of a byte-permute group (see layout.PermuteGathers).
PERMUTE_PASS = Record("permute pass", 128, (
    Field("byte_index", 0, "u1", 64),   # (column - offset) of each byte this pass covers
    Field("mask", 64, "<u8"),           # bit k: the pass covers byte k
    Field("offset", 72, "<i4"),         # the window is x[offset : offset + window]
    Field("further", 76, "<i4"),        # first passes: how many passes follow
    Field("next_at", 80, "<i4"),        # first passes: byte offset in the index of the next
))
