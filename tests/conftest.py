"""Shared test settings: a private kernel cache, and the CPU generations this host can run."""
import itertools
import os
import tempfile

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
def private_cache():
    """Compile into a fresh cache, so the tests also exercise compiling (and never read a
    stale object from the user's cache)."""
    old = os.environ.get("JITVOC_CACHE")
    with tempfile.TemporaryDirectory(prefix="jitvoc-test-cache-") as d:
        os.environ["JITVOC_CACHE"] = d
        yield d
    if old is None:
        os.environ.pop("JITVOC_CACHE", None)
    else:
        os.environ["JITVOC_CACHE"] = old
