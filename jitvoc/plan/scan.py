"""Plan a linear recurrence over [T, D]: serial or chunked parallel scan, chunking and time tile.

The parallel scan (Martin & Cundy 2018) splits T into chunks. Phase 1: chunk 0 runs the serial
kernel from the true initial state while every other chunk is reduced to its carry (Πλ, partial
state from zero); phase 2 scans the carries; phase 3 re-runs chunks 1.. from their carried states.
Chunk 0 is made longer than the rest so that phase 1 is balanced (a reduction costs about
REDUCE_COST of a serial pass). Large scans are bound by memory bandwidth and the parallel scan
makes ~1.5 passes over memory, so "auto" goes parallel only where it measured faster on this
host: on a small VM one core may already saturate memory. The planner runs nothing; the run stage
measures the speedup (jitvoc.recurrence.parallel_speedup, once per process) where
`may_go_parallel` says it matters, and passes it in.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .. import isa
from ..spec import ScanSpec

TILE_BYTES = 48 << 10          # λ, x and h rows of one time tile (large D) fit about in L1+L2
PARALLEL_MIN_ELEMENTS = 1 << 22  # below this, thread hand-offs cost more than they save (measured)
MIN_CHUNK_ROWS = 16
REDUCE_COST = 0.9               # a reduction pass relative to a serial pass, per row (measured)
PARALLEL_MARGIN = 0.9           # go parallel only when predicted at least 10% faster
STREAM_MIN_BYTES = 16 << 20    # h larger than this is written with non-temporal stores


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, kw_only=True)
class ScanPlan:
    """How to run one [T, D] recurrence; ``bounds`` are chunk edges (two = serial)."""
    T: int
    D: int
    serial: ScanSpec
    reduce: ScanSpec
    tile: int
    bounds: tuple
    threads: int

    @property
    def parallel(self) -> bool:
        return len(self.bounds) > 2

    @property
    def name(self) -> str:
        if not self.parallel:
            return self.serial.name
        return (self.serial.name.replace("_serial_", "_parallel_")
                + f"_c{len(self.bounds) - 1}_t{self.threads}")

    def with_threads(self, threads: int) -> "ScanPlan":
        """The same chunking run by another number of threads."""
        return dataclasses.replace(self, threads=max(1, threads))


def spec_for(kind: str, gen, stream: bool = False) -> ScanSpec:
    """The scan kernel of `kind` for a generation: its widest float vector (isa.SCAN_VECTORS)."""
    width, tag = isa.scan_vector(gen)
    return ScanSpec(kind=kind, width=width, isa=tag, stream=stream)


def tile_rows(D: int, spec: ScanSpec) -> int:
    """Rows per time tile: λ, x and h rows of about TILE_BYTES (kept in cache across the tile's
    column blocks)."""
    return max(1, TILE_BYTES // (12 * D))


def chunk_bounds(T: int, threads: int) -> tuple:
    """Chunk edges for `threads` workers: a longer chunk 0, then `threads` equal chunks."""
    n = threads
    k = -(-n // max(1, n - 1))              # reductions per worker in phase 1
    first = int(T * REDUCE_COST * k / (n + REDUCE_COST * k))
    rest = T - first
    edges = [0, first] + [first + (rest * i) // n for i in range(1, n + 1)]
    return tuple(sorted(set(edges)))


def may_go_parallel(T: int, D: int, threads: int) -> bool:
    """Whether "auto" could choose the parallel scan: then it needs the measured speedup."""
    return threads > 1 and T * D >= PARALLEL_MIN_ELEMENTS and T >= MIN_CHUNK_ROWS * (threads + 1)


def plan(T: int, D: int, gen, threads: int | None = None, mode: str = "auto",
         speedup: float | None = None) -> ScanPlan:
    """mode: "auto" (the planner's choice), "serial" or "parallel" (chunked for `threads`).
    `speedup`: how much faster the parallel scan ran on `threads` threads than the serial one
    on this host (None: not measured, so "auto" stays serial)."""
    if mode not in ("auto", "serial", "parallel"):
        raise ValueError(f"unknown scan mode {mode!r}")
    threads = max(1, threads or available_threads())
    reduce = spec_for("reduce", gen)
    stream = D % reduce.width == 0 and 4 * T * D >= STREAM_MIN_BYTES
    serial = spec_for("serial", gen, stream)
    tile = tile_rows(D, serial)
    if mode == "auto":
        pays = speedup is not None and speedup * PARALLEL_MARGIN > 1
        mode = "parallel" if may_go_parallel(T, D, threads) and pays else "serial"
    if mode == "serial" or T < 2:
        return ScanPlan(T=T, D=D, serial=serial, reduce=reduce, tile=tile, bounds=(0, T),
                        threads=1)
    bounds = chunk_bounds(T, max(2, threads))
    return ScanPlan(T=T, D=D, serial=serial, reduce=reduce, tile=tile, bounds=bounds,
                    threads=threads)
