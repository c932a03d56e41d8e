"""jitvoc.load(background=True): the engine built on a thread while the caller goes on; the
same samples, and the builder's errors raised by the first use that needs the engine."""
import threading

import numpy as np
import pytest

import jitvoc
from jitvoc.errors import InputError
from jitvoc.model import random_model
from jitvoc.reference.vocoder import ReferenceEngine

SR = 16000


@pytest.fixture(scope="module")
def raw():
    return random_model(hidden=32, density=0.25, sample_rate=SR, n_mels=8, cond_channels=8)


def mel_of(model, frames=40):
    rng = np.random.default_rng(frames)
    return (rng.standard_normal((frames, model.n_mels)) - 4).astype(np.float32)


def test_background_load_gives_the_same_vocoder(raw):
    model = jitvoc.calibrate(raw)
    now, later = jitvoc.load(model, dtype="int8"), jitvoc.load(model, dtype="int8",
                                                               background=True)
    assert later.ready() is later and repr(later) == repr(now) and later.dtype == "int8"
    assert np.array_equal(later.synthesize(mel_of(model), seed=3),
                          now.synthesize(mel_of(model), seed=3))


def test_load_returns_while_the_engine_is_built(raw):
    release = threading.Event()

    class Slow(ReferenceEngine):
        def __init__(self, model, cpu=None, dtype="float32"):
            assert release.wait(10)
            super().__init__(model, cpu, dtype)

    voc = jitvoc.load(raw, engine=Slow, background=True)   # would wait 10 s, then fail
    assert (voc.sample_rate, voc.n_mels, voc.hop_length) == (SR, 8, raw.hop_length)
    release.set()
    assert voc.backend == "reference"
    assert np.array_equal(voc.synthesize(mel_of(raw, 3), seed=1),
                          jitvoc.load(raw, engine=ReferenceEngine).synthesize(mel_of(raw, 3), 1))


def test_the_builders_error_is_raised_by_the_first_use(raw):
    voc = jitvoc.load(raw, dtype="int8", background=True)   # no calibration: refused
    for use in (lambda: voc.synthesize(mel_of(raw)), lambda: voc.dtype):
        with pytest.raises(InputError, match="no calibration.*jitvoc.calibrate"):
            use()
    with pytest.raises(InputError, match="float32, not int16"):
        jitvoc.load(raw, dtype="int16", engine=ReferenceEngine, background=True).cpu
