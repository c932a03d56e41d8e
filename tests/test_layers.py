"""GILR, SRU and LS-LSTM forward passes against their one-step-at-a-time NumPy references."""
import numpy as np
import pytest

from jitvoc.blas import blas_threads, thread_counts
from jitvoc.errors import InputError
from jitvoc.layers import GILR, LSLSTM, SRU
from jitvoc.reference.scan import layer_forward

LAYERS = {"gilr": GILR, "sru": SRU, "ls_lstm": LSLSTM}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("shape", [(1, 16), (37, 16), (300, 2, 16)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("threads", [1, 2])
def test_forward_matches_reference(name, shape, threads):
    d_in = shape[-1]
    layer = LAYERS[name].init(d_in, d_in if name == "sru" else 24, seed=1)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    got = layer.forward(x, threads=threads)
    want = layer_forward(layer, x)
    assert got.shape == want.shape == shape[:-1] + (layer.U.shape[1] if name != "sru" else d_in,)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_gilr_initial_state_and_long_sequence():
    layer = GILR.init(8, 32, seed=3)
    x = np.random.default_rng(4).standard_normal((5000, 8)).astype(np.float32)
    h0 = np.linspace(-1, 1, 32, dtype=np.float32)
    np.testing.assert_allclose(layer.forward(x, h0, threads=2), layer_forward(layer, x, h0),
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


def test_blas_threads_limits_and_restores():
    np.ones((2, 2)) @ np.ones((2, 2))   # BLAS loaded
    before = thread_counts()
    assert before
    with blas_threads(1):
        assert thread_counts() == [1] * len(before)
    assert thread_counts() == before


# --- found by the fuzzing suite (tests/test_fuzz.py) -------------------------------------------
@pytest.mark.parametrize("name", LAYERS)
def test_one_input_feature(name):
    """init(1, d) used to make U a vector (IndexError in forward)."""
    layer = LAYERS[name].init(1, 1 if name == "sru" else 5, seed=0)
    x = np.random.default_rng(0).standard_normal((9, 1)).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), layer_forward(layer, x),
                               rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", LAYERS)
def test_empty_sequence_and_bad_input(name):
    layer = LAYERS[name].init(4, 4, seed=0)
    empty = np.zeros((0, 4), np.float32)
    assert layer.forward(empty).shape == layer_forward(layer, empty).shape
    for bad in ([[1.0] * 4], np.zeros((3, 5), np.float32)):
        with pytest.raises(InputError):
            layer.forward(bad)


def test_sru_keeps_tanh_beside_large_inputs():
    """r ⊙ (tanh(c) − x) + x returned 0 instead of ±1 for |x| around 1e19."""
    layer = SRU.init(8, 8, seed=1)
    x = (np.random.default_rng(3).standard_normal((20, 8)) * 1e19).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), layer_forward(layer, x),
                               rtol=1e-4, atol=2e-5)
