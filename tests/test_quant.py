"""Quantization formats: validated on creation, saturating, and safe for every SIMD path."""
import numpy as np
import pytest

from jitvoc.errors import InputError
from jitvoc.quant import (INT8_WEIGHTS, INT16_WEIGHTS, INT32_MAX, FixedPoint, RowScaled,
                          covering_fracs)


def test_fixed_point_validates():
    with pytest.raises(InputError, match="bits"):
        FixedPoint(12, 4)
    with pytest.raises(InputError, match="fractional"):
        FixedPoint(8, 40)
    with pytest.raises(InputError, match="limit"):
        RowScaled(8, 200)


def test_saturates_and_rounds_half_to_even():
    f = FixedPoint(8, 0)
    assert f.quantize(np.array([1e9, -1e9, 0.5, 1.5, -2.5])).tolist() == [127, -128, 0, 2, -2]
    u = FixedPoint(8, 0, signed=False)
    assert u.quantize(np.array([-3.0, 300.0])).tolist() == [0, 255]
    assert f.stored(np.array([-128.0, 127.0])).tolist() == [0, 255]   # zero point 128


def test_covering_format():
    f = FixedPoint.covering(0.9, 8)
    assert f.qmax * f.scale >= 0.9 and f.qmax * f.scale / 2 < 0.9
    with pytest.raises(InputError):
        FixedPoint.covering(float("nan"), 8)


@pytest.mark.parametrize("bits, signed", [(8, True), (8, False), (16, True)])
def test_covering_fracs_agree_with_covering(bits, signed):
    """The vectorised rule gives FixedPoint.covering's format for every value, powers of two
    and the edges of each format's range included."""
    g = np.random.default_rng(0)
    values = np.concatenate([[0.0, 2.0 ** -40, 1.0, 127.0, 128.0, 255.0, 32767.0, 1e9],
                             2.0 ** np.arange(-30, 30), np.nextafter(2.0 ** np.arange(-30, 30), 0),
                             10.0 ** g.uniform(-6, 8, 4000)])
    fracs = covering_fracs(values, bits, signed)
    assert fracs.tolist() == [FixedPoint.covering(v, bits, signed).frac for v in values]
    with pytest.raises(InputError, match="range of inf"):
        covering_fracs(np.array([1.0, np.inf]), bits, signed)
    with pytest.raises(InputError, match="exceed the widest"):
        covering_fracs(np.array([1e30]), bits, signed)


def test_int8_pairs_never_saturate_int16():
    """pmaddubsw adds two u8*s8 products into int16: the worst case must fit."""
    assert 2 * 255 * INT8_WEIGHTS.limit <= 32767


def test_int16_rows_cannot_overflow_int32():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 896)).astype(np.float32)
    codes, scale = INT16_WEIGHTS.quantize(w)
    assert np.abs(codes.astype(np.int64)).sum(axis=1).max() * 32768 <= INT32_MAX
    assert np.abs(codes).max() <= 32767
    assert np.allclose(codes * scale[:, None], w, atol=scale.max())


def test_weight_quantization_error_bounded_by_half_step():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 40)).astype(np.float32)
    codes, scale = INT8_WEIGHTS.quantize(w)
    assert np.abs(codes).max() <= 64
    assert np.all(np.abs(codes * scale[:, None] - w) <= scale[:, None] / 2 + 1e-7)
    z, s = INT8_WEIGHTS.quantize(np.zeros((2, 3)))
    assert not z.any() and np.all(s == 1)
