"""The block-sparse layout: the one place that decides how a matrix is stored for the kernels.

A matrix W [rows, cols] is cut into blocks of ``bh x bw`` (e.g. 16x1, 8x4, 16x4, 4x4, 1x1; a dense
matrix is one block per row block, ``bw = cols``). A block is *present* if its mask has any
non-zero in it. The kernels consume **panels**: ``bh`` rows by ``group`` columns, where ``group``
is how many products one SIMD lane sums at once (4 for int8 · uint8, 2 for int16, 1 for float32).

Within each row block, the present blocks are taken in column order and their columns listed
one after another (``bw`` columns per block, padded past the matrix edge with zero weights); that
list is cut into panels of ``group`` columns (the last padded with zero weights, repeating its last
column). So

- ``bw % group == 0`` (16x4 int8, 16x1 float32, dense): each panel's columns are contiguous,
  ``c, c+1, …, c+group-1`` with ``c`` a multiple of ``group``: one aligned load of x;
- ``bw < group`` (16x1 int8 or int16, 1x1): a panel gathers ``group / bw`` blocks.

Arrays (all C-contiguous):

- ``weights`` [n_panels, bh, group]: panel p's row i, column j at ``weights[p, i, j]``; so one panel
  is ``bh`` lanes of ``group`` consecutive values, exactly what vpdpbusd / pmaddwd read.
- ``cols`` [n_panels, group] int32: the matrix column of each panel column.
- ``panel_ptr`` [row_blocks + 1] int32: the i-th stored row block, ``rb_order[i]``, owns panels
  ``panel_ptr[i] : panel_ptr[i+1]``. Row blocks are stored in order unless packed ``by_count``
  (sorted by panel count, for kernels that unroll each count once).

What an index-driven kernel reads per panel (``Packed.kernel_index()``): for contiguous panels the
first column (int32 [n_panels]); for gathering panels ``group`` uint16 offsets into the shifted
activation tables, ``j · stride + cols[p, j]`` (one 64-bit load per panel instead of four), where
the table stride is x_len unless the tables are shared with a wider matrix. On CPUs with byte
permutes (AVX-512 VBMI) gathering int8 kernels read ``Packed.permute_gathers().index`` instead
(see PermuteGathers).

Rows past ``rows`` (the last row block's padding) have zero weights; x is read up to
``x_len`` = padded columns, so callers pad x with zeros to that length.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .contracts import (PANEL_COLUMN, PANEL_OFFSET, PANEL_PTR, PERMUTE_GROUP, PERMUTE_PASS,
                        PERMUTE_SLOT)
from .errors import InputError

BLOCKS = ((16, 1), (8, 4), (16, 4), (4, 4), (1, 1))
CACHE_LINE = 64


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, eq=False)
class Packed:
    rows: int
    cols: int
    block: tuple            # (bh, bw)
    group: int
    dense: bool
    weights: np.ndarray     # [n_panels, bh, group]
    cols_idx: np.ndarray    # [n_panels, group] int32
    panel_ptr: np.ndarray   # [row_blocks + 1] int32, in storage order
    rb_order: np.ndarray    # [row_blocks] int32: the row block stored at each position

    @property
    def bh(self) -> int:
        return self.block[0]

    @property
    def row_blocks(self) -> int:
        return len(self.panel_ptr) - 1

    @property
    def n_panels(self) -> int:
        return len(self.weights)

    @property
    def rows_padded(self) -> int:
        return self.row_blocks * self.bh

    @property
    def contiguous(self) -> bool:
        return self.dense or self.block[1] % self.group == 0

    @property
    def x_len(self) -> int:
        col_blocks = _ceil(self.cols, self.block[1])
        return _ceil(col_blocks * self.block[1], self.group) * self.group

    def kernel_index(self, stride: int = 0) -> np.ndarray:
        """The per-panel index array an index-driven kernel reads (see the module docstring).
        `stride`: the distance between shifted tables when they are shared with a wider
        matrix (default x_len)."""
        if self.contiguous:
            return aligned(self.cols_idx[:, 0], PANEL_COLUMN)
        stride, limit = stride or self.x_len, int(np.iinfo(PANEL_OFFSET).max) + 1
        if stride < self.x_len or self.group * stride > limit:
            raise InputError(f"table stride {stride} must be in [{self.x_len}, "
                             f"{limit // self.group}]; use a block at least {self.group} wide")
        offsets = self.cols_idx + np.arange(self.group, dtype=np.int64) * stride
        return aligned(offsets, PANEL_OFFSET)

    def permute_gathers(self, window: int = 128) -> "PermuteGathers":
        """How kernels with byte permutes (AVX-512 VBMI) build the activation words of
        gathering panels; see PermuteGathers. Built once per window (planner and emitter share
        it)."""
        cache = self.__dict__.setdefault("_gathers", {})
        if window not in cache:
            cache[window] = PermuteGathers.build(self, window)
        return cache[window]

    def pattern_hash(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.cols_idx).tobytes())
        h.update(np.ascontiguousarray(self.panel_ptr).tobytes())
        h.update(np.ascontiguousarray(self.rb_order).tobytes())
        return h.hexdigest()[:10]


PERMUTE_SLACK = 16   # columns a group's first columns may spread over (see PermuteGathers)
# The most word slots byte-permute gathers may have: what a contracts.PERMUTE_SLOT holds. uint16
# slots, not int32: the panel loops read them beside the weights from L2, and half the bytes
# made random_model(896)'s int8 cell 3% faster (bench/README.md, "Eighth round: the weight
# stream").
PERMUTE_SLOTS = 1 << 8 * np.dtype(PERMUTE_SLOT).itemsize


def permute_slots_fit(n_panels: int) -> bool:
    """Whether n_panels gathering panels' words fit in PERMUTE_SLOTS slots (whole groups)."""
    return _ceil(n_panels, PERMUTE_GROUP) * PERMUTE_GROUP <= PERMUTE_SLOTS


@dataclass(frozen=True, eq=False)
class PermuteGathers:
    """Byte-permute gathers: every gathering panel's activation word (its ``group`` codes, one
    byte each), built 16 panels at a time by ``vpermi2b`` from ``window`` (128) bytes of x.

    The panels are taken in a *gather order* that puts panels with nearby columns together
    (sorted by how many windows the panel alone needs, then by first column), cut into groups of
    16 (the last group padded). A group's 64 columns are covered greedily by *passes*: windows of
    x starting at the smallest column not yet covered (clamped to end at ``x_pad``); the first
    pass writes all 64 bytes, later ones only the bytes they cover. Groups are stored sorted by
    pass count. At 5% density or more a group typically needs one pass, where reading x in
    fixed windows would need ``x_len / 128`` (7 for 896 columns).

    Word slot ``slots[p]`` of the words array holds panel p's word (slot = position in the
    gather order, groups after sorting).

    ``index`` (uint8, what the kernel reads; cache-line aligned): ``slots`` as
    contracts.PERMUTE_SLOT (uint16: at most PERMUTE_SLOTS slots) [n_panels], zero-padded to a
    multiple of 64 bytes; then every group's first pass, one record
    each (group g's at a fixed place, so no group waits on another's fields); then the further
    passes, in group order. A record is a contracts.PERMUTE_PASS (128 bytes): byte indices,
    mask (later passes blend by it), window offset and, in first passes, how many passes follow
    and where the next is; zeros past them (records start on cache lines).

    Kernels read x padded with zeros to ``x_pad = max(x_len, window)`` bytes.
    """
    index: np.ndarray       # uint8, as above
    slots: np.ndarray       # int32 [n_panels] (in index as contracts.PERMUTE_SLOT)
    passes: np.ndarray      # int32 [n_groups] passes per group, in record order
    window: int
    x_pad: int

    @property
    def n_groups(self) -> int:
        return len(self.passes)

    def pass_offsets(self) -> list:
        """Per group, in record order, its passes: [(the byte offset of the pass record in
        ``index``, the offset of its window in x)], the first pass first (what a kernel with
        the pattern compiled in reads as constants)."""
        size = PERMUTE_PASS.size
        first = len(self.index) - size * int(self.passes.sum())
        further = first + size * self.n_groups
        f = PERMUTE_PASS.field("offset")
        out = []
        for g, count in enumerate(self.passes.tolist()):
            records = [first + size * g] + [further + size * j for j in range(count - 1)]
            further += size * (count - 1)
            out.append([(r, int(self.index[r + f.offset:r + f.offset + f.nbytes].view(f.dtype)[0]))
                        for r in records])
        return out

    @classmethod
    def build(cls, p: "Packed", window: int) -> "PermuteGathers":
        if p.group != 4 or p.contiguous:
            raise InputError("byte-permute gathers build 4-byte words of gathering panels")
        if not permute_slots_fit(p.n_panels):
            raise InputError(f"byte-permute gathers have at most {PERMUTE_SLOTS} word slots, "
                             f"{p.n_panels} panels need more")
        cols = p.cols_idx.astype(np.int64)
        x_pad = max(p.x_len, window)
        own = _window_counts(cols, window - PERMUTE_SLACK, x_pad)
        order = np.lexsort((cols[:, 0], own)) if len(cols) else np.zeros(0, np.int64)
        n_groups = _ceil(len(order), PERMUTE_GROUP)
        groups = [order[PERMUTE_GROUP * g:PERMUTE_GROUP * (g + 1)] for g in range(n_groups)]
        covers = [_cover(cols[g], window, x_pad) for g in groups]
        by_passes = sorted(range(n_groups), key=lambda g: len(covers[g]))   # stable
        slots = np.zeros(len(cols), dtype=np.int32)
        slot_size = np.dtype(PERMUTE_SLOT).itemsize
        head = _ceil(slot_size * len(cols), CACHE_LINE) * CACHE_LINE
        first = np.zeros((n_groups, PERMUTE_PASS.size), dtype=np.uint8)
        further = []
        next_at = head + n_groups * PERMUTE_PASS.size
        for new_g, g in enumerate(by_passes):
            slots[groups[g]] = PERMUTE_GROUP * new_g + np.arange(len(groups[g]), dtype=np.int32)
            byte_cols = np.full(64, -1, dtype=np.int64)
            byte_cols[:4 * len(groups[g])] = cols[groups[g]].reshape(-1)
            for i, offset in enumerate(covers[g]):
                inside = (byte_cols >= offset) & (byte_cols < offset + window)
                rec = first[new_g] if i == 0 else np.zeros(PERMUTE_PASS.size, dtype=np.uint8)
                PERMUTE_PASS.put(rec, "byte_index", np.where(inside, byte_cols - offset, 0))
                PERMUTE_PASS.put(rec, "mask", np.packbits(inside, bitorder="little").view("<u8"))
                PERMUTE_PASS.put(rec, "offset", offset)
                if i == 0:
                    PERMUTE_PASS.put(rec, "further", len(covers[g]) - 1)
                    PERMUTE_PASS.put(rec, "next_at", next_at)
                else:
                    further.append(rec)
            next_at += (len(covers[g]) - 1) * PERMUTE_PASS.size
        slot_bytes = np.zeros(head, dtype=np.uint8)
        slot_bytes[:slot_size * len(cols)] = slots.astype(PERMUTE_SLOT).view(np.uint8)
        index = np.concatenate([slot_bytes, first.reshape(-1)] + further)
        passes = np.array([len(covers[g]) for g in by_passes], dtype=np.int32)
        return cls(aligned(index), slots, passes, window, x_pad)


def _cover(cols: np.ndarray, window: int, x_pad: int) -> list:
    """Window offsets covering the columns `cols` greedily: each starts at the smallest column
    not yet covered, moved back so that it ends by x_pad."""
    cols = np.sort(cols, axis=None)
    offsets, i = [], 0
    while i < len(cols):
        offset = min(int(cols[i]), x_pad - window)
        offsets.append(offset)
        i = int(np.searchsorted(cols, offset + window))
    return offsets


def _window_counts(cols: np.ndarray, window: int, x_pad: int) -> np.ndarray:
    """len(_cover(row, window, x_pad)) of every row of `cols` [panels, group], all rows at
    once (one np.unique per panel took ~20 ms of a cold load): walking a row's columns in
    order, a column at or past the end of the last window opens the next."""
    counts = np.zeros(len(cols), dtype=np.int64)
    end = np.full(len(cols), -1, dtype=np.int64)
    for c in np.sort(cols, axis=1).T:
        opens = c >= end
        counts += opens
        end = np.where(opens, np.minimum(c, x_pad - window) + window, end)
    return counts


def aligned(a, dtype=None) -> np.ndarray:
    """`a` as a C-contiguous array that starts on a cache line (copied unless it already is
    one). Every array a kernel reads goes through here: a 64-byte panel that straddles two
    cache lines costs two L1 accesses, and measured 1.35x the time per call (R at 5%)."""
    a = np.asarray(a, dtype=dtype)
    if a.flags.c_contiguous and a.ctypes.data % CACHE_LINE == 0:
        return a
    raw = np.empty(a.nbytes + CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def padded(a: np.ndarray, n: int, dtype=None) -> np.ndarray:
    """A per-row vector (scales, corrections, biases) zero-padded to n = rows_padded entries
    (cache-line aligned)."""
    out = aligned(np.zeros(n, dtype=dtype or a.dtype))
    out[:len(a)] = a
    return out


_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}   # by block width


def block_mask(mask: np.ndarray, block: tuple) -> np.ndarray:
    """bool [row_blocks, col_blocks]: which blocks hold any non-zero of `mask`. A block row 1, 2,
    4 or 8 columns wide is read as one integer word (4-20x faster than any() over the block, on
    2688x896: planning a model for a dtype tries every block shape)."""
    bh, bw = block
    rows, cols = mask.shape
    padded = np.zeros((_ceil(rows, bh) * bh, _ceil(cols, bw) * bw), dtype=np.uint8)
    padded[:rows, :cols] = mask != 0
    if bw not in _WORDS:
        return padded.reshape(padded.shape[0] // bh, bh, -1, bw).any(axis=(1, 3))
    words = padded.view(_WORDS[bw]).reshape(padded.shape[0] // bh, bh, -1)
    return np.bitwise_or.reduce(words, axis=1) != 0


def pack(w: np.ndarray, block: tuple, group: int, mask: np.ndarray | None = None,
         dense: bool = False, by_count: bool = False) -> Packed:
    """Pack w (already quantized or float) into panels; `mask` (default w != 0) picks the blocks.

    dense=True stores every block of one `bh`-row block with implicit contiguous columns.
    by_count=True stores the row blocks sorted by panel count (stable), so that kernels can
    walk them in memory order with one fixed unrolled body per count.
    """
    w = np.asarray(w)
    if w.ndim != 2 or 0 in w.shape:
        raise InputError(f"expected a non-empty 2-D matrix, got shape {w.shape}")
    rows, cols = w.shape
    bh, bw = (block[0], _ceil(cols, group) * group) if dense else block
    if bh < 1 or bw < 1:
        raise InputError(f"invalid block {block}")
    if not dense and bw < group and group % bw:
        raise InputError(f"block width {bw} must divide the panel group {group}")
    blocks = (np.ones((_ceil(rows, bh), 1), dtype=bool) if dense
              else block_mask(w != 0 if mask is None else mask, (bh, bw)))
    row_blocks, col_blocks = blocks.shape
    wp = np.zeros((row_blocks * bh, _ceil(col_blocks * bw, group) * group), dtype=w.dtype)
    wp[:rows, :cols] = w
    panels_w, panels_c, ptr = [], [], [0]
    order = np.arange(row_blocks)
    if by_count:
        order = np.argsort(-(-blocks.sum(axis=1) * bw // group), kind="stable")
    for rb in order:
        colist = [c for cb in np.nonzero(blocks[rb])[0] for c in range(cb * bw, cb * bw + bw)]
        n_pad = -len(colist) % group
        colist += colist[-1:] * n_pad                  # repeat the last column, weight 0
        c = np.asarray(colist, dtype=np.int32).reshape(-1, group)
        vals = wp[rb * bh:(rb + 1) * bh, c.reshape(-1)]  # [bh, n_cols]
        if n_pad:
            vals[:, -n_pad:] = 0
        panels_w.append(vals.reshape(bh, len(c), group).transpose(1, 0, 2))
        panels_c.append(c)
        ptr.append(ptr[-1] + len(c))
    weights = (np.concatenate(panels_w) if panels_w
               else np.zeros((0, bh, group), dtype=w.dtype))
    cols_idx = np.concatenate(panels_c) if panels_c else np.zeros((0, group), dtype=np.int32)
    return Packed(rows, cols, (bh, bw), group, dense, aligned(weights), aligned(cols_idx),
                  aligned(ptr, PANEL_PTR), order.astype(np.int32))


def unpack(p: Packed) -> np.ndarray:
    """The dense [rows, cols] matrix a Packed holds (the inverse of pack on present blocks)."""
    out = np.zeros((p.rows_padded, p.x_len), dtype=p.weights.dtype)
    for i, rb in enumerate(p.rb_order):
        for q in range(p.panel_ptr[i], p.panel_ptr[i + 1]):
            for j, c in enumerate(p.cols_idx[q]):
                out[rb * p.bh:(rb + 1) * p.bh, c] += p.weights[q, :, j]
    return out[:p.rows, :p.cols]
