"""The per-ISA kernel templates in ``kernels_templates/`` (installed as ``jitvoc.kernels_templates``).

Each TOML file describes one instruction-set backend: the CPU features it needs, its vector width,
and which intrinsics implement each dot-product form. ``jitvoc.emit.isa`` instantiates them.
"""
from __future__ import annotations

import functools
import tomllib
from importlib import resources
from pathlib import Path


def _root() -> Path:
    """Installed: the package jitvoc.kernels_templates. Run from a source checkout without
    installing: the checkout's kernels_templates/ folder."""
    try:
        return Path(str(resources.files("jitvoc.kernels_templates")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "kernels_templates"


def files() -> list[Path]:
    paths = sorted(_root().glob("*.toml"))
    if not paths:
        raise FileNotFoundError(f"no kernel templates (*.toml) in {_root()}")
    return paths


@functools.lru_cache(maxsize=None)
def load_all() -> dict[str, dict]:
    """ISA name -> template dict, in file-name order."""
    out = {}
    for path in files():
        with open(path, "rb") as f:
            t = tomllib.load(f)
        out[t["name"]] = t
    return out
