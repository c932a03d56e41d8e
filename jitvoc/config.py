"""Settings that every stage reads, kept below all of them (it imports no other jitvoc module).

``JITVOC_DEBUG``: 1 prints plans, 2 compile timings, 3 the IR, 4 the optimised IR, 5 the assembly.
``JITVOC_CACHE``: the kernel cache folder, else platformdirs' user cache folder
(``$XDG_CACHE_HOME/jitvoc`` or ``~/.cache/jitvoc`` on Linux).
The compiler version (`compiler_version`): what the kernels and every cache key depend on.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path


def debug_level() -> int:
    try:
        return int(os.environ.get("JITVOC_DEBUG", "0"))
    except ValueError:
        return 0


def debug(level: int, *message) -> None:
    if debug_level() >= level:
        print("[jitvoc]", *message, file=sys.stderr)


def cache_dir() -> Path:
    """The configured kernel cache folder (it may not exist yet)."""
    configured = os.environ.get("JITVOC_CACHE")
    if configured:
        return Path(configured)
    import platformdirs
    return Path(platformdirs.user_cache_dir("jitvoc", appauthor=False))


@functools.lru_cache(maxsize=None)
def compiler_version() -> str:
    """The compiler the kernels, the kernel cache and the autotune decisions depend on: the
    llvmlite release, e.g. "llvmlite 0.50.0". A release is built against one LLVM, which its
    wheels bundle; asking for llvmlite's version loads no LLVM (only ``llvmlite.binding`` does,
    and only jitvoc.jit imports it, which reports the LLVM version itself for display)."""
    import llvmlite
    return f"llvmlite {llvmlite.__version__}"
