"""The per-ISA kernel templates in ``kernels_templates/`` (installed as ``jitvoc.kernels_templates``).

Each TOML file describes one instruction-set backend: the CPU features it needs, its vector width,
and which intrinsics implement each dot-product form. ``jitvoc.emit.isa`` instantiates them.
"""
from __future__ import annotations

import functools
import tomllib
from importlib import resources
from pathlib import Path


def files() -> list[Path]:
    root = resources.files("jitvoc.kernels_templates")
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml"))


@functools.lru_cache(maxsize=None)
def load_all() -> dict[str, dict]:
    """ISA name -> template dict, in file-name order."""
    out = {}
    for path in files():
        with open(path, "rb") as f:
            t = tomllib.load(f)
        out[t["name"]] = t
    return out
