"""A quick start (jit.load_parts(quick=True), JitEngine(quick_start=True), jitvoc.load(...,
background=True)): where the first part is not cached, this process first loads it compiled
without LLVM's optimisation pipeline, while the worker compiles it at -O3 and stores it; the
optimised object, read back from the cache, replaces the quick one between calls. The same
results either way, and the cache only ever holds the -O3 object."""
import ctypes
import multiprocessing

import numpy as np
import pytest

import jitvoc
from jitvoc import cache, cpu, jit
from jitvoc.model import random_model
from test_jit import TABLE, _builder


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JITVOC_CACHE", str(tmp_path))
    monkeypatch.setattr(jit, "QUICK_START_IDLE", 0)   # whatever this host's load


def table(lib, name) -> list:
    fn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(lib.address(name))
    return [fn(i) for i in range(len(TABLE))]


def quick_parts(tmp_path) -> list:
    names = [f"quick{i}_{tmp_path.name}" for i in range(2)]
    return [(name, _builder(name)) for name in names]


def test_the_quick_object_then_the_optimised_one_from_the_cache(tmp_path):
    gen = cpu.host_generation()
    parts = quick_parts(tmp_path)
    (first, _), (second, _) = parts
    lib = jit.load_parts(parts, gen, quick=True)
    job = lib._optimising[0]
    assert table(lib, first) == TABLE and table(lib, second) == TABLE
    quick_address = lib.address(first)
    job.worker.join(60)
    assert job.worker.exitcode == 0
    stored = cache.read(job.entry, job.key)
    assert stored == jit.compile_object(parts[0][1](), gen)   # what a plain load caches
    assert lib.upgrade() and lib.address(first) != quick_address
    assert table(lib, first) == TABLE and table(lib, second) == TABLE
    assert not lib.upgrade() and not lib._optimising


def test_a_second_load_waits_for_the_worker_and_compiles_nothing(tmp_path):
    gen = cpu.host_generation()
    parts = quick_parts(tmp_path)
    jit.load_parts(parts, gen, quick=True)
    announced = []
    again = jit.load_parts(parts, gen, announce=announced.append, quick=True)
    assert announced == [] and not again._optimising and table(again, parts[0][0]) == TABLE


def test_no_quick_start_without_a_free_core_or_a_cache(tmp_path, monkeypatch):
    gen = cpu.host_generation()
    monkeypatch.setattr(jit, "QUICK_START_IDLE", 1 << 20)
    parts = quick_parts(tmp_path)
    lib = jit.load_parts(parts, gen, quick=True)
    assert not lib._optimising and not lib.upgrade()
    assert all(cache.read(*entry_and_key(name, build, gen)) for name, build in parts)
    monkeypatch.setattr(jit, "QUICK_START_IDLE", 0)
    monkeypatch.setattr(cache, "usable_directory", lambda: None)
    other = [(f"{name}_uncached", _builder(f"{name}_uncached")) for name, _ in parts]
    assert not jit.load_parts(other, gen, quick=True)._optimising


def test_idle_cores_since_the_last_decision(monkeypatch):
    """The decision reads the CPUs' idle time since the last one (/proc/stat): both of two
    cores busy, no; one idle on average, yes; unreadable, no (and no interval after it)."""
    monkeypatch.setattr(jit, "QUICK_START_IDLE", 0.75)
    monkeypatch.setattr(jit.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(jit, "_cpu_since", (100, 1000))
    samples = iter([(100, 1400), (300, 1800), None, (400, 2000)])
    monkeypatch.setattr(jit, "_cpu_times", lambda: next(samples))
    assert [jit._quick_start_possible() for _ in range(4)] == [False, True, False, False]


def entry_and_key(name, build, gen) -> tuple:
    key = jit.cache_key(name, gen, build.__module__)
    return jit._entry_name(name, key), key


def _upgrade_in_child(lib, name, send):
    send.send((lib.upgrade(), lib.address(name), table(lib, name) == TABLE))


def test_a_forked_process_keeps_the_quick_code(tmp_path):
    """A process forked while the worker compiles (the corpus forks after its load) cannot wait
    for another process's child: it runs the quick code, the same results."""
    gen = cpu.host_generation()
    parts = quick_parts(tmp_path)
    lib = jit.load_parts(parts, gen, quick=True)
    fork = multiprocessing.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    lib._optimising[0].worker.join(60)   # stored, but not this child's to read
    child = fork.Process(target=_upgrade_in_child, args=(lib, parts[0][0], send))
    child.start()
    assert receive.recv() == (False, lib.address(parts[0][0]), True)
    child.join(60)
    assert child.exitcode == 0 and lib.upgrade()


def test_a_background_load_starts_quickly_with_the_same_samples():
    model = jitvoc.calibrate(random_model(hidden=32, density=0.25, sample_rate=16000,
                                          n_mels=8, cond_channels=8))
    mel = (np.random.default_rng(5).standard_normal((40, 8)) - 4).astype(np.float32)
    for dtype in ("int8", "float32"):
        quick = jitvoc.load(model, dtype=dtype, background=True)
        engine = quick.ready()._engine
        job = engine._lib._optimising[0]
        first = quick.synthesize(mel, seed=2)
        job.worker.join(60)
        plain = jitvoc.load(model, dtype=dtype)   # the cached -O3 loop, nothing compiled
        assert not plain._engine._lib._optimising
        assert np.array_equal(first, plain.synthesize(mel, seed=2))
        assert np.array_equal(quick.synthesize(mel, seed=2), first)   # upgraded meanwhile
        assert not engine._lib._optimising


def test_a_batched_engine_swaps_in_its_optimised_loop_too():
    from jitvoc.engine import GenState
    from jitvoc.engine_jit import JitEngine
    model = jitvoc.calibrate(random_model(hidden=32, density=0.25, sample_rate=16000,
                                          n_mels=8, cond_channels=8))
    K = np.random.default_rng(3).standard_normal((20, 96)).astype(np.float32)

    def run(engine):
        return engine.generate_batch([K, K], [800, 1000], [GenState.initial(32) for _ in "ab"],
                                     [1, 2])
    quick = JitEngine(model, dtype="int8", vectors=2, quick_start=True)
    first = run(quick)
    quick._lib._optimising[0].worker.join(60)
    plain = JitEngine(model, dtype="int8", vectors=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, run(plain)))
    assert all(np.array_equal(a, b) for a, b in zip(first, run(quick)))
    assert not quick._lib._optimising
