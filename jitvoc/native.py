"""Calling generated machine code from Python through cffi (the call releases the GIL)."""
from __future__ import annotations

import cffi
import numpy as np

from .contracts import EntryPoint

ffi = cffi.FFI()


def function(address: int, entry: EntryPoint):
    """A Python callable for the entry point at `address` (see jitvoc.contracts)."""
    return ffi.cast(entry.c_signature().replace("(", "(*)(", 1), address)


def ptr(array: np.ndarray):
    """A `void *` to an array's data (the array must stay alive during the call)."""
    return ffi.cast("void *", array.ctypes.data)
