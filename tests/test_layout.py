"""The block-sparse layout: pack/unpack round trips and the index arrays kernels read."""
import numpy as np
import pytest

from jitvoc.contracts import PERMUTE_PASS, PERMUTE_SLOT
from jitvoc.errors import InputError
from jitvoc.layout import (BLOCKS, PERMUTE_SLOTS, _cover, _window_counts, block_mask, pack,
                           permute_slots_fit, unpack)

SLOT_BYTES = np.dtype(PERMUTE_SLOT).itemsize

SHAPES = {"37x29": (37, 29), "1x50": (1, 50), "50x1": (50, 1), "64x64": (64, 64)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("block", BLOCKS, ids=[f"{a}x{b}" for a, b in BLOCKS])
@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_round_trip(shape, block, group, dense):
    rng = np.random.default_rng(0)
    w = rng.integers(-5, 5, shape).astype(np.int8) * (rng.random(shape) < 0.2)
    p = pack(w, block, group, dense=dense)
    assert np.array_equal(unpack(p), w)
    assert p.weights.shape == (p.n_panels, p.bh, group)
    assert p.panel_ptr[-1] == p.n_panels
    assert p.x_len % group == 0 and p.x_len >= shape[1]


def test_panels_follow_present_blocks():
    w = np.zeros((32, 8), np.int8)
    w[0, 3] = w[5, 6] = 1          # row block 0: columns 3 and 6 (16x1 blocks)
    w[20, 1] = 1                   # row block 1: column 1
    p = pack(w, (16, 1), 4)
    assert list(p.panel_ptr) == [0, 1, 2]
    assert list(p.cols_idx[0]) == [3, 6, 6, 6]   # padded by repeating the last column...
    assert np.all(p.weights[0, :, 2:] == 0)      # ...with zero weights
    assert list(p.cols_idx[1]) == [1, 1, 1, 1]


def test_empty_row_blocks_and_all_zero():
    w = np.zeros((48, 16), np.float32)
    w[40, 3] = 2.0
    p = pack(w, (16, 1), 1)
    assert list(p.panel_ptr) == [0, 0, 0, 1]
    z = pack(np.zeros((20, 20), np.float32), (16, 1), 4)
    assert z.n_panels == 0 and np.array_equal(unpack(z), np.zeros((20, 20)))


def test_block_mask():
    m = np.zeros((17, 9), bool)
    m[16, 8] = True
    assert block_mask(m, (16, 4)).tolist() == [[False, False, False], [False, False, True]]


def test_kernel_index_gathering_offsets():
    w = np.zeros((16, 8), np.int8)
    w[0, [1, 2, 5, 7]] = 1
    p = pack(w, (16, 1), 4)
    assert p.kernel_index().tolist() == [[1, 2 + 8, 5 + 16, 7 + 24]]
    assert p.kernel_index(stride=10).tolist() == [[1, 12, 25, 37]]


def gather_words(g, x_codes: np.ndarray, n_panels: int) -> np.ndarray:
    """What a kernel's byte-permute prologue computes from PermuteGathers.index (its reading of
    the records, in NumPy): every word slot's 4 bytes."""
    rec, idx = PERMUTE_PASS.size, g.index
    x = np.zeros(g.x_pad + 64, np.uint8)   # the kernel's buffer: codes, then zeros
    x[:len(x_codes)] = x_codes
    field = lambda at: int(idx[at:at + 4].view("<i4")[0])
    firsts = -(-n_panels * SLOT_BYTES // 64) * 64   # after the slots, in whole cache lines
    words = np.zeros((g.n_groups, 64), np.uint8)
    for grp in range(g.n_groups):
        first = firsts + grp * rec
        passes = [first] + [field(first + 80) + j * rec for j in range(field(first + 76))]
        for i, off in enumerate(passes):
            window = x[field(off + 72):field(off + 72) + 128]
            picked = window[idx[off:off + 64] & 127]
            keep = np.unpackbits(idx[off + 64:off + 72], bitorder="little").astype(bool)
            words[grp] = picked if i == 0 else np.where(keep, picked, words[grp])
    return words.reshape(-1, 4)


@pytest.mark.parametrize("density", [0.02, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("cols", [3, 100, 130, 896, 1000])
def test_permute_gathers_round_trip(density, cols):
    """Every gathering panel's word, built the way the kernels build it, holds its columns'
    codes; sparse groups need few passes."""
    rng = np.random.default_rng(cols)
    w = (rng.random((96, cols)) < density).astype(np.int8)
    p = pack(w, (16, 1), 4)
    g = p.permute_gathers(128)
    x = rng.integers(0, 256, p.x_len).astype(np.uint8)
    words = gather_words(g, x, p.n_panels)
    assert np.array_equal(words[g.slots], x[p.cols_idx])
    assert len(set(g.slots.tolist())) == p.n_panels   # one slot per panel
    assert np.all(np.diff(g.passes) >= 0)            # groups sorted by pass count
    assert g.index.ctypes.data % 64 == 0
    if cols <= 128:
        assert set(g.passes.tolist()) <= {1}


def test_permute_gathers_slots_head_the_index():
    """The index starts with every panel's slot as a PERMUTE_SLOT (uint16), zero-padded to a
    cache line; a matrix has byte-permute gathers only while its slots fit that type."""
    rng = np.random.default_rng(5)
    p = pack((rng.random((96, 896)) < 0.05).astype(np.int8), (16, 1), 4)
    g = p.permute_gathers(128)
    head = g.index[:-(-p.n_panels * SLOT_BYTES // 64) * 64]
    assert SLOT_BYTES == 2 and PERMUTE_SLOTS == 65536
    assert np.array_equal(head[:p.n_panels * SLOT_BYTES].view(PERMUTE_SLOT), g.slots)
    assert not head[p.n_panels * SLOT_BYTES:].any()
    assert permute_slots_fit(PERMUTE_SLOTS - 15) and not permute_slots_fit(PERMUTE_SLOTS + 1)


def test_permute_gathers_pass_offsets_name_the_records():
    """pass_offsets (what kernels with the pattern compiled in read as constants) lists each
    group's records as the index chains them, with their windows."""
    rng = np.random.default_rng(3)
    p = pack((rng.random((96, 1000)) < 0.002).astype(np.int8), (16, 1), 4)
    g = p.permute_gathers(128)
    field = lambda at: int(g.index[at:at + 4].view("<i4")[0])
    firsts = -(-p.n_panels * SLOT_BYTES // 64) * 64
    offsets = g.pass_offsets()
    assert len(offsets) == g.n_groups and max(map(len, offsets)) > 1
    for grp, passes in enumerate(offsets):
        first = firsts + grp * PERMUTE_PASS.size
        records = [first] + [field(first + 80) + j * PERMUTE_PASS.size
                             for j in range(field(first + 76))]
        assert passes == [(r, field(r + 72)) for r in records]


def test_permute_gathers_passes_follow_the_columns():
    w = np.zeros((16, 300), np.int8)
    w[0, [1, 5, 130, 299]] = 1
    g = pack(w, (16, 1), 4).permute_gathers(128)
    assert g.passes.tolist() == [3]    # from 1 (1, 5), from 130, from 172 (ends at x_pad: 299)
    assert g.x_pad == 300
    records = g.index[64:].reshape(3, PERMUTE_PASS.size)     # after one 64-byte block of slots
    assert records[:, 72:76].copy().view("<i4").ravel().tolist() == [1, 130, 172]


def greedy_cover(cols, window: int, x_pad: int) -> list:
    """The windows' offsets, in plain Python: each opens at the first column the last one
    misses, moved back to end by x_pad."""
    offsets = []
    for c in sorted(set(int(c) for c in cols)):
        if not offsets or c >= offsets[-1] + window:
            offsets.append(min(c, x_pad - window))
    return offsets


def test_covers_are_greedy():
    """The windows of a group (_cover) and the number a panel alone needs (_window_counts,
    every panel at once) are those of the greedy cover of its columns: duplicates, windows
    clamped at x_pad and columns just past a window's end included."""
    rng = np.random.default_rng(7)
    for x_pad, window in ((300, 112), (128, 112), (1000, 128), (200, 16)):
        cols = rng.integers(0, x_pad, (500, 4))
        cols[:50, 1] = cols[:50, 0]                                          # a column twice
        cols[50:100, 1] = np.minimum(cols[50:100, 0] + window, x_pad - 1)   # at a window's end
        expected = [greedy_cover(c, window, x_pad) for c in cols]
        assert [_cover(c, window, x_pad) for c in cols] == expected
        assert _window_counts(cols, window, x_pad).tolist() == list(map(len, expected))


def test_bad_matrices():
    with pytest.raises(InputError, match="2-D"):
        pack(np.zeros(5), (16, 1), 4)
    with pytest.raises(InputError, match="empty"):
        pack(np.zeros((0, 4)), (16, 1), 4)
