"""Calling generated machine code from Python through cffi (the call releases the GIL)."""
from __future__ import annotations

import cffi
import numpy as np

ffi = cffi.FFI()


def function(address: int, signature: str):
    """A Python callable for the C function at `address`, e.g. signature 'void(void*, int32_t)'."""
    return ffi.cast(signature.replace("(", "(*)(", 1), address)


def ptr(array: np.ndarray):
    """A `void *` to an array's data (the array must stay alive during the call)."""
    return ffi.cast("void *", array.ctypes.data)
