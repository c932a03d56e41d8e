"""Shared test settings: a private kernel cache, and the CPU generations this host can run."""
import itertools
import os

import pytest

from jitvoc import cpu

# One generation per ISA backend (sse2, ssse3, avx2, avx512bw, avx512vnni, avxvnni, VBMI) + host.
LADDER = ["x86-64", "core2", "haswell", "skylake-avx512", "cascadelake", "alderlake",
          "icelake-server", "native"]
RUNNABLE = [g for g in LADDER if cpu.runnable(cpu.generation(g))]


def _id(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


def diagonal(*axes):
    """The product of `axes` as pytest params. The cases of one diagonal (case i takes value
    i mod len of every axis) stay in the fast subset, so every value of every axis is tested;
    the rest are marked slow."""
    fast = {tuple(axis[i % len(axis)] for axis in axes) for i in range(max(map(len, axes)))}
    return [pytest.param(*case, id="-".join(map(_id, case)),
                         marks=() if case in fast else pytest.mark.slow)
            for case in itertools.product(*axes)]


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Compile into a fresh cache, so the tests also exercise compiling (and never read a
    stale object from the user's cache). The workers of one `pytest -n N` run share it (their
    base folders are siblings in the run's folder): each kernel compiles once per run, and the
    workers exercise the cache's concurrent writes, as corpus mode's do."""
    old = os.environ.get("JITVOC_CACHE")
    base = tmp_path_factory.getbasetemp()
    d = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jitvoc-cache"
    d.mkdir(exist_ok=True)
    os.environ["JITVOC_CACHE"] = str(d)
    yield str(d)
    if old is None:
        os.environ.pop("JITVOC_CACHE", None)
    else:
        os.environ["JITVOC_CACHE"] = old
