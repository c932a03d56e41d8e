"""Bounded .npy reading: the header is parsed and checked before any array is allocated, and
exactly the bytes it promises are read (a header may claim terabytes; a file may be short)."""
import math
from dataclasses import dataclass

import numpy as np

MAX_HEADER = 10_000   # bytes of .npy header accepted
_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}


class NpyError(ValueError):
    """A .npy stream whose header cannot be used (the caller names the file)."""


@dataclass(frozen=True)
class Header:
    shape: tuple
    dtype: np.dtype
    fortran: bool
    offset: int            # where the data starts

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_header(f) -> Header:
    """The header of the .npy stream `f` (positioned at its start); NpyError if unusable."""
    try:
        version = np.lib.format.read_magic(f)
        if version not in _READERS:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = _READERS[version](f, max_header_size=MAX_HEADER)
        offset = f.tell()
    except Exception as e:  # an untrusted header: any parsing failure means a corrupt stream
        raise NpyError(f"no valid .npy header ({type(e).__name__}: {e})") from None
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
        raise NpyError(f"dtype {dtype}; expected plain numbers")
    return Header(tuple(shape), dtype, fortran, offset)


def array_from(data: bytes, header: Header) -> np.ndarray:
    """The array `header` describes from exactly its data bytes (a private, writable copy)."""
    if len(data) != header.nbytes:
        raise NpyError(f"{len(data)} data bytes, but the header promises {header.nbytes}")
    a = np.frombuffer(data, header.dtype)
    if header.fortran:
        return a.reshape(header.shape[::-1]).T.copy()
    return a.reshape(header.shape).copy()
