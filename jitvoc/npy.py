"""Bounded .npy reading: the header is parsed and checked before any array is allocated, and
exactly the bytes it promises are read (a header may claim terabytes; a file may be short)."""
import contextlib
import math
import zipfile
import zlib
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


def array_from(data: bytes, header: Header, frozen: bool = False) -> np.ndarray:
    """The array `header` describes from exactly its data bytes: a private, writable copy or,
    `frozen`, a read-only array of `data` itself (a Fortran-order one is copied to C order)."""
    if len(data) != header.nbytes:
        raise NpyError(f"{len(data)} data bytes, but the header promises {header.nbytes}")
    a = np.frombuffer(data, header.dtype)
    if header.fortran:
        a = a.reshape(header.shape[::-1]).T.copy()
        a.flags.writeable = not frozen
        return a
    a = a.reshape(header.shape)
    return a if frozen else a.copy()


_ENCRYPTED = 0x1   # a zip member's general-purpose flag bit 0 (APPNOTE 4.4.4)


class Archive:
    """An .npz archive read with bounds: `headers()` checks every member's .npy header (and that
    the member holds exactly what it promises) before `read()` allocates any array."""

    def __init__(self, path, max_members: int):   # path: a file's, or a binary file object
        self.max_members = max_members
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise NpyError("no such file") from None
        except (OSError, zipfile.BadZipFile, ValueError, EOFError,
                NotImplementedError) as e:   # the last: a zip version zipfile cannot read
            if _starts_like_npy(path):
                raise NpyError("a single .npy array, not an .npz archive") from None
            raise NpyError(f"not a readable .npz archive (truncated or corrupt?): {e}") \
                from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def headers(self) -> dict:
        """key (member name less ".npy") -> Header, for every member."""
        infos = self.zip.infolist()
        if len(infos) > self.max_members:
            raise NpyError(f"{len(infos)} members, over the limit of {self.max_members}")
        headers = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise NpyError(f"member {info.filename!r} is not a .npy array")
            if info.flag_bits & _ENCRYPTED:
                raise NpyError(f"member {info.filename!r} is encrypted")
            key = info.filename[:-4]
            if key in headers:
                raise NpyError(f"member {info.filename!r} appears twice")
            with self._member(info.filename) as f:
                headers[key] = header = read_header(f)
            if info.file_size != header.offset + header.nbytes:
                raise NpyError(f"member {info.filename!r} holds {info.file_size} bytes, but its "
                               f"header promises {header.offset + header.nbytes}")
        return headers

    def read(self, key: str, header: Header, frozen: bool = False) -> np.ndarray:
        """The member's array, reading exactly the bytes its (checked) header promises;
        `frozen`: read-only, not copied out of the bytes read (array_from)."""
        with self._member(f"{key}.npy", " is truncated or corrupt") as f:
            f.read(header.offset)
            return array_from(f.read(header.nbytes), header, frozen)

    @contextlib.contextmanager
    def _member(self, name: str, problem: str = ""):
        """The member open for reading; any failure an NpyError naming it."""
        try:
            with self.zip.open(name) as f:
                yield f
        except (NpyError, OSError, zipfile.BadZipFile, zlib.error, EOFError,
                NotImplementedError) as e:   # the last: an unknown compression method
            raise NpyError(f"member {name!r}{problem}: {e}") from None


def _starts_like_npy(source) -> bool:
    """Whether a path's file, or a file object (read from its start), begins as .npy does."""
    if hasattr(source, "read"):
        source.seek(0)
        return source.read(6) == b"\x93NUMPY"
    try:
        with open(source, "rb") as f:
            return f.read(6) == b"\x93NUMPY"
    except OSError:
        return False
