"""GILR, SRU and LS-LSTM forward passes against their one-step-at-a-time NumPy references."""
import numpy as np
import pytest

from jitvoc.errors import InputError
from jitvoc.layers import GILR, LSLSTM, SRU, blas_threads

LAYERS = {"gilr": GILR, "sru": SRU, "ls_lstm": LSLSTM}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("shape", [(1, 16), (37, 16), (300, 2, 16)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("threads", [1, 2])
def test_forward_matches_reference(name, shape, threads):
    d_in = shape[-1]
    layer = LAYERS[name].init(d_in, d_in if name == "sru" else 24, seed=1)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    got = layer.forward(x, threads=threads)
    want = layer.forward(x, reference=True)
    assert got.shape == want.shape == shape[:-1] + (layer.U.shape[1] if name != "sru" else d_in,)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_gilr_initial_state_and_long_sequence():
    layer = GILR.init(8, 32, seed=3)
    x = np.random.default_rng(4).standard_normal((5000, 8)).astype(np.float32)
    h0 = np.linspace(-1, 1, 32, dtype=np.float32)
    np.testing.assert_allclose(layer.forward(x, h0, threads=2), layer.forward(x, h0, reference=True),
                               rtol=1e-4, atol=2e-5)


def test_errors():
    with pytest.raises(InputError, match="d_in == d"):
        SRU.init(8, 16)
    layer = GILR.init(8, 4)
    with pytest.raises(InputError, match="float32"):
        layer.forward(np.zeros((3, 8)))
    with pytest.raises(InputError, match="shape"):
        layer.forward(np.zeros((3, 7), np.float32))
    x = np.zeros((3, 8), np.float32)
    x[1, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        layer.forward(x)


def test_blas_threads_restores():
    a = np.ones((64, 64), np.float32)
    with blas_threads(1):
        b = a @ a
    np.testing.assert_array_equal(b, a @ a)
