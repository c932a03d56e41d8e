"""Sample representations (docs/model.md, "Samples"): the decode tables against the reference's,
the linear code against format version 1, encode/decode round trips, and bad values."""
import os

import numpy as np
import pytest

from jitvoc.audio import read_audio
from jitvoc.errors import ModelFileError
from jitvoc.model import random_model
from jitvoc.reference.vocoder import ReferenceEngine, segments
from jitvoc.representation import Representation, decode

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ru_0749.wav")
ALL = [Representation("linear"), Representation("linear", 0.85), Representation("mulaw"),
       Representation("mulaw", 0.85), Representation("mulaw", 0.99)]
# max |decode(encode(x)) − x| in LSB on examples/ru_0749.wav (peak 15,313), as measured:
# 0, 2, 1, 2, 4 (linear 0.99: 9, the half-LSB error of e amplified by up to 1/(1 − α))
ROUND_TRIP_LSB = {("linear", 0.0): 0, ("linear", 0.85): 2, ("mulaw", 0.0): 1,
                  ("mulaw", 0.85): 2, ("mulaw", 0.99): 4}
DC_BLOCKED = Representation("mulaw", 0.85, 0.995)


@pytest.mark.parametrize("rep", ALL, ids=str)
def test_tables_match_the_reference(rep):
    base, step = rep.segments()
    ref_base, ref_step, ref_offset = segments(rep.code)
    assert base.dtype == step.dtype == np.float32
    np.testing.assert_array_equal(base, ref_base)
    np.testing.assert_array_equal(step, ref_step)
    assert rep.fine_offset == ref_offset
    assert base[0] == -1 and base[128] == 0 and base[255] + step[255] == 1
    np.testing.assert_array_equal(base[1:], base[:-1] + step[:-1])  # segments tile [-1, 1]


def test_linear_is_format_version_1():
    rep = Representation()
    c, f = np.divmod(np.arange(65536), 256)
    audio, s, _ = decode(rep, c, f)
    np.testing.assert_array_equal(audio, np.arange(65536) - 32768)
    enc_c, enc_f = rep.encode(audio)
    np.testing.assert_array_equal(enc_c, c)
    np.testing.assert_array_equal(enc_f, f)


@pytest.mark.parametrize("rep", ALL + [DC_BLOCKED, Representation("linear", 0.0, 0.9)], ids=str)
def test_decode_matches_the_reference_engine(rep):
    engine = ReferenceEngine(random_model(hidden=32, density=0.25, sample_rate=16000, n_mels=8,
                                          cond_channels=8, representation=rep))
    rng = np.random.default_rng(0)
    c, f = rng.integers(0, 256, 300), rng.integers(0, 256, 300)
    audio, s, y = decode(rep, c, f, s_prev=0.25, y_prev=-0.125)
    expected, s_ref, y_ref = [], np.float32(0.25), np.float32(-0.125)
    for ci, fi in zip(c, f):
        sample, s_ref, y_ref = engine.output_sample(int(ci), int(fi), s_ref, y_ref)
        expected.append(sample)
    np.testing.assert_array_equal(audio, expected)
    assert (s, y) == (s_ref, y_ref)
    assert rep.dc_block or y == -0.125  # without a DC blocker its state stays as it was


@pytest.mark.parametrize("rep", ALL, ids=str)
def test_round_trip(rep):
    x, _ = read_audio(EXAMPLE)[:2]
    c, f = rep.encode(x)
    assert c.min() >= 0 and c.max() <= 255 and f.min() >= 0 and f.max() <= 255
    y = decode(rep, c, f)[0]
    err = np.abs(y.astype(np.int64) - x)
    assert err.max() == ROUND_TRIP_LSB[rep.code, rep.preemphasis]
    assert abs(np.mean(y.astype(np.int64) - x)) < 1  # no DC offset


@pytest.mark.parametrize("rep", ALL, ids=str)
def test_silence(rep):
    c, f = rep.encode(np.zeros(100, np.int16))
    assert set(c) == {128} and set(f) == {0}
    # µ-law decodes (128, 0) half a fine step above 0 (3.4e-7), times up to 1/(1 − α) = 100
    assert np.abs(decode(rep, c, f)[0]).max() <= (1 if rep.code == "mulaw" else 0)


@pytest.mark.parametrize("entry, problem", [
    ({"code": "alaw"}, "code must be one of"),
    ({"code": "mulaw", "preemphasis": 1.0}, r"preemphasis must be a number in \[0, 0.99\]"),
    ({"preemphasis": -0.1}, "preemphasis must be a number"),
    ({"preemphasis": "0.9"}, "preemphasis must be a number"),
    ({"preemphasis": True}, "preemphasis must be a number"),
    ({"code": "mulaw", "gain": 2}, "keys 'code' and 'preemphasis'"),
    ({"dc_block": 1.0}, r"dc_block must be a number in \[0, 1\), got 1.0"),
    ({"dc_block": -0.5}, "dc_block must be a number"),
    ({"dc_block": "0.995"}, "dc_block must be a number"),
    ({"dc_block": False}, "dc_block must be a number"),
    ({"dc_block": float("nan")}, "dc_block must be a number"),
    ("mulaw", "must be an object"),
])
def test_bad_values(entry, problem):
    with pytest.raises(ModelFileError, match=problem):
        Representation.from_meta(entry)


def test_meta_round_trip():
    for rep in ALL + [DC_BLOCKED]:
        assert Representation.from_meta(rep.to_meta()) == rep
    assert Representation.from_meta(None) == Representation("linear", 0.0)
    assert DC_BLOCKED.to_meta() == {"code": "mulaw", "preemphasis": 0.85, "dc_block": 0.995}
    assert "dc_block" not in Representation("mulaw", 0.85, 0).to_meta()  # files stay as they were


def test_dc_block_leaves_the_codes_alone():
    x = read_audio(EXAMPLE)[0]
    for a, b in zip(DC_BLOCKED.encode(x), Representation("mulaw", 0.85).encode(x)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("step_lsb", [-100, 400])
def test_dc_block_removes_a_dc_step(step_lsb):
    """A DC step in s from the middle of the example on, as a drifting model makes: without the
    filter the mean of the rest (from 0.1 s after the step) moves by the step; with it, the
    rest's mean is that of the filtered recording without the step, near 0."""
    x = read_audio(EXAMPLE)[0]
    stepped = x.astype(np.int64)
    stepped[len(x) // 2:] += step_lsb
    rest = slice(len(x) // 2 + 1600, None)
    codes = DC_BLOCKED.encode(stepped.astype(np.int16))
    plain = decode(Representation("mulaw", 0.85), *codes)[0][rest].astype(np.int64)
    out = decode(DC_BLOCKED, *codes)[0][rest].astype(np.int64)
    unstepped = decode(DC_BLOCKED, *DC_BLOCKED.encode(x))[0][rest]
    assert abs(np.mean(plain - x[rest]) - step_lsb) < 1
    assert abs(np.mean(out - unstepped)) < 0.1
    assert abs(np.mean(out)) < 2   # as measured: −1.0 (the recording's own: −2.8)
