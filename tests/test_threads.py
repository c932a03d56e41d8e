"""One stream on T threads (JitEngine(threads=T)): the samples of one thread, bit for bit, for
every dtype, T = 2 and 3, CPU generations, streaming calls of several lengths; clear errors, and
a loop whose worker never comes returns (a JitvocError), never hangs."""
import functools

import numpy as np
import pytest

import jitvoc
from jitvoc.emit import cell as emit_cell
from jitvoc.engine import GenState
from jitvoc.engine_jit import JitEngine
from jitvoc.errors import InputError, JitvocError
from jitvoc.model import random_model
from jitvoc.representation import Representation

from conftest import RUNNABLE, diagonal

FRAMES = (1, 3, 1, 2)   # streaming calls (frames each; the last 37 samples more)


@functools.cache
def make_model():
    return jitvoc.calibrate(random_model(hidden=128, density=0.2, output_density=0.3,
                                         sample_rate=16000, seed=2,
                                         representation=Representation("mulaw", 0.85, 0.995)))


@functools.cache
def engine(dtype, cpu, threads):
    return JitEngine(make_model(), cpu, dtype, threads=threads)


def conditioning(n):
    rng = np.random.default_rng(5)
    return rng.standard_normal((n // make_model().hop_length + 2, 3 * 128)).astype(np.float32)


def samples(e, seed):
    """Streaming calls of FRAMES (each from the state the last left; a call starts on a
    frame), joined."""
    lengths = [f * e.hop for f in FRAMES]
    lengths[-1] += 37
    K, state, out, t = conditioning(sum(lengths)), GenState.initial(128), [], 0
    for n in lengths:
        out.append(e.generate(K, t, n, state, seed))
        t += n
    return np.concatenate(out)


@pytest.mark.parametrize("dtype, threads, cpu", diagonal(["int8", "int16", "float32"], [2, 3],
                                                         RUNNABLE))
def test_samples_equal_one_thread(dtype, threads, cpu):
    for seed in (0, 7):
        np.testing.assert_array_equal(samples(engine(dtype, cpu, threads), seed),
                                      samples(engine(dtype, cpu, 1), seed))


def test_teacher_forced_equal_one_thread():
    audio = (np.sin(np.arange(900) / 9) * 9000).astype(np.int16)
    K = conditioning(len(audio))
    np.testing.assert_array_equal(engine("int8", None, 2).teacher_forced(K, audio),
                                  engine("int8", None, 1).teacher_forced(K, audio))


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2", 65])
def test_bad_threads(threads):
    with pytest.raises(InputError, match="threads"):
        JitEngine(make_model(), None, "int8", threads=threads)


def test_threads_and_vectors():
    with pytest.raises(InputError, match="one thread"):
        JitEngine(make_model(), None, "int8", threads=2, vectors=2)


def test_worker_that_never_comes(monkeypatch, tmp_path):
    """The caller's barrier gives up (spins, then yields, then the abort flag) and the call
    raises; the next call runs again."""
    monkeypatch.setenv("JITVOC_CACHE", str(tmp_path))
    monkeypatch.setattr(emit_cell, "YIELDS", 1000)
    e = JitEngine(make_model(), None, "int8", threads=2)
    team = e._generate.team
    run = team.run

    def caller_alone(n):
        team.jobs = []   # no worker is given the call
        try:
            run(n)
        finally:
            team.jobs = jobs
    jobs = team.jobs
    team.run = caller_alone
    with pytest.raises(JitvocError, match="did not finish"):
        e.generate(conditioning(400), 0, 400, GenState.initial(128), 0)
    team.run = run
    e.generate(conditioning(400), 0, 400, GenState.initial(128), 0)
