"""Autotune decisions on disk (the run stage): which kernel won for a matrix on a generation.

The table is one cache entry (jitvoc.cache), keyed by the matrix's hash, the CPU and the compiler
version (jitvoc.config), and invalidated by any edit to the planner's code;
jitvoc.plan.matvec.decided_plan turns an entry back into a plan.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np

from . import cache, jit
from .config import compiler_version
from .spec import KernelSpec

DECISIONS = "autotune-decisions"   # the decision table's cache entry


def matrix_key(w_codes, mask, dtype, gen, x_signed) -> str:
    h = hashlib.sha256(np.ascontiguousarray(w_codes).tobytes())
    h.update(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    h.update(f"{w_codes.shape}{dtype}{x_signed}{gen.llvm_cpu}{gen.llvm_features}"
             f"{compiler_version()}".encode())
    return h.hexdigest()[:24]


def _decisions_key() -> bytes:
    return b"autotune decisions\0" + jit.code_fingerprint(__name__).encode()


def _decisions() -> dict:
    table = cache.read(DECISIONS, _decisions_key())
    if table is None:
        return {}
    try:
        decoded = json.loads(table)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def cached_decision(key: str) -> dict | None:
    return _decisions().get(key)


def store_decision(key: str, spec: KernelSpec) -> None:
    """Add a decision to the table, under a lock so concurrent tuners do not lose entries."""
    with cache.locked(DECISIONS):
        table = _decisions()
        table[key] = asdict(spec)
        cache.write(DECISIONS, _decisions_key(), json.dumps(table, indent=1).encode())
