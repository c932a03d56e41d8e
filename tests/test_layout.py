"""The block-sparse layout: pack/unpack round trips and the index arrays kernels read."""
import numpy as np
import pytest

from jitvoc.errors import InputError
from jitvoc.layout import BLOCKS, block_mask, pack, unpack

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


def test_permute_index_records():
    w = np.zeros((16, 300), np.int8)
    w[0, [1, 130, 299, 5]] = 1
    p = pack(w, (16, 1), 4)
    rec = p.permute_index(128)
    n_win = 3
    assert rec.size == 64 + 8 * n_win
    assert rec[:4].tolist() == [1, 5, 130 - 128, 299 - 256]
    masks = rec[64:].view("<u8")
    assert masks.tolist() == [0b0011, 0b0100, 0b1000]


def test_bad_matrices():
    with pytest.raises(InputError, match="2-D"):
        pack(np.zeros(5), (16, 1), 4)
    with pytest.raises(InputError, match="empty"):
        pack(np.zeros((0, 4)), (16, 1), 4)
