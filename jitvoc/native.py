"""Calling generated machine code from Python through cffi (the call releases the GIL).

The FFI is the one of cffi's C backend (`_cffi_backend.FFI`, as cffi's compiled modules have it),
which parses the C types written here (pointers, arrays, function pointers of the contracts)
itself: `cffi.FFI()` imports pycparser for them, 12-15 ms of every command's start."""
from __future__ import annotations

import _cffi_backend
import numpy as np

from .contracts import EntryPoint

ffi = _cffi_backend.FFI()


def function(address: int, entry: EntryPoint):
    """A Python callable for the entry point at `address` (see jitvoc.contracts)."""
    return ffi.cast(entry.c_signature().replace("(", "(*)(", 1), address)


def ptr(array: np.ndarray):
    """A `void *` to an array's data (the array must stay alive during the call)."""
    return ffi.cast("void *", array.ctypes.data)
