"""Settings that every stage reads, kept below all of them (it imports no other jitvoc module).

``JITVOC_DEBUG``: 1 prints plans, 2 compile timings, 3 the IR, 4 the optimised IR, 5 the assembly.
``JITVOC_CACHE``: the kernel cache folder, else platformdirs' user cache folder
(``$XDG_CACHE_HOME/jitvoc`` or ``~/.cache/jitvoc`` on Linux).

The LLVM version is not here: querying it loads ``llvmlite.binding`` (jitvoc.jit.llvm_version).
"""
from __future__ import annotations

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
