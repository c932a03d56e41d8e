"""CPU generations: what each LLVM CPU name offers (the table is jitvoc.isa.GENERATIONS), what this
host offers, and which can run here.

A generation is an LLVM CPU name (``x86-64-v3``, ``cascadelake``, ``znver4``, ... or ``native``).
Kernels can be compiled for any generation; running one is allowed only when the host has every
SIMD feature the generation implies, so a kernel never dies of SIGILL.

The choice is ``cpu=`` argument, else ``$JITVOC_CPU``, else ``native``.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from . import jit
from .config import compiler_version
from .errors import UnsupportedCPU
from .isa import GENERATIONS, SIMD_FEATURES
from .optional import require

# The default benchmark ladder, oldest first; `native` is appended.
LADDER = ("x86-64", "x86-64-v2", "haswell", "skylake-avx512", "cascadelake", "alderlake")


@dataclass(frozen=True)
class Generation:
    """A resolved CPU generation: what LLVM is told to target, and the SIMD features it implies."""
    name: str              # as the user named it ("native" stays "native")
    llvm_cpu: str          # the CPU name given to LLVM
    llvm_features: str     # the feature string given to LLVM ("" = implied by llvm_cpu)
    features: frozenset    # SIMD features (of SIMD_FEATURES) the generated code may use

    def has(self, *feature: str) -> bool:
        return all(f in self.features for f in feature)

    def missing_on_host(self) -> list[str]:
        return sorted(self.features - host_features())


@functools.lru_cache(maxsize=None)
def host_features() -> frozenset:
    """The SIMD features LLVM sees enabled on this host."""
    return frozenset(f for f, on in jit.host_feature_map().items() if on and f in SIMD_FEATURES)


@functools.lru_cache(maxsize=None)
def host_generation() -> Generation:
    features = jit.host_feature_map()
    feature_string = ",".join(("+" if on else "-") + f for f, on in sorted(features.items()))
    return Generation("native", jit.host_cpu_name(), feature_string, host_features())


def generation(name: str) -> Generation:
    """The generation called `name`; UnsupportedCPU if jitvoc has no table entry for it."""
    if name in ("native", "host"):
        return host_generation()
    if name not in GENERATIONS:
        raise UnsupportedCPU(
            f"unknown CPU generation {name!r}; known: native, {', '.join(sorted(GENERATIONS))}")
    return Generation(name, name, "", GENERATIONS[name])


def resolve(cpu: str | Generation | None = None) -> Generation:
    """cpu= argument, else $JITVOC_CPU, else the host."""
    if isinstance(cpu, Generation):
        return checked(cpu)
    if cpu is not None and not isinstance(cpu, str):
        raise UnsupportedCPU(f"cpu must be a generation name or a jitvoc.Generation, got {cpu!r}")
    return generation(cpu or os.environ.get("JITVOC_CPU") or "native")


def checked(gen: Generation) -> Generation:
    """A caller-made Generation, accepted only when LLVM's target and the features it claims
    are those of a known generation or of this host: any other combination could make LLVM
    abort, or pass the host check with code using features it did not declare."""
    host = host_generation()
    for known in [host] + [generation(name) for name in GENERATIONS]:
        if (gen.llvm_cpu, gen.llvm_features, gen.features) == (
                known.llvm_cpu, known.llvm_features, known.features):
            return gen
    raise UnsupportedCPU(
        f"Generation {gen.name!r} (LLVM CPU {gen.llvm_cpu!r}, features "
        f"{sorted(gen.features) if isinstance(gen.features, frozenset) else gen.features!r}) "
        f"matches no known generation; use jitvoc.cpu.generation(name) for one of: native, "
        f"{', '.join(sorted(GENERATIONS))}")


def runnable(gen: Generation) -> bool:
    return not gen.missing_on_host()


def require_runnable(gen: Generation) -> None:
    """Raise UnsupportedCPU unless this host can execute code built for `gen`."""
    missing = gen.missing_on_host()
    if missing:
        raise UnsupportedCPU(
            f"this host ({jit.host_cpu_name()}) cannot run code for CPU generation {gen.name!r}: "
            f"it lacks {', '.join(missing)}. Kernels for it can still be compiled and dumped "
            f"(jitvoc kernels --cpu {gen.name}).")


def runnable_generations() -> list[str]:
    return [name for name in GENERATIONS if runnable(generation(name))]


@functools.lru_cache(maxsize=None)
def _cpu_info() -> dict:
    """py-cpuinfo's description of the host (imported only here: `jitvoc info` needs it)."""
    return require("cpuinfo", "describing the host", "py-cpuinfo").get_cpu_info()


def cpuinfo_flags() -> list[str]:
    """The SIMD-related flags py-cpuinfo reports (its own names)."""
    flags = _cpu_info().get("flags", [])
    return sorted(f for f in flags if f.startswith(("sse", "ssse", "avx", "fma", "vnni")))


def describe_host() -> dict:
    """What `jitvoc info` prints: the host as py-cpuinfo and LLVM see it, and what it can run."""
    info = _cpu_info()
    return {
        "brand": info.get("brand_raw", "unknown"),
        "llvm_cpu": jit.host_cpu_name(),
        "llvm_version": ".".join(map(str, jit.llvm_version())),
        "compiler": compiler_version(),
        "llvm_simd_features": sorted(host_features()),
        "cpuinfo_simd_flags": cpuinfo_flags(),
        "runnable_generations": runnable_generations(),
        "not_runnable": {name: generation(name).missing_on_host()
                         for name in GENERATIONS if not runnable(generation(name))},
    }
