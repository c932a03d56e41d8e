"""Pickles whose mostly-zero NumPy arrays are stored as the flat positions and values of their
non-zero elements: the one helper for the cache entries that hold models and vocoder plans.

A pruned model's matrices are 5-10% dense; their dense copies (a plan's quantized weights
included) made the shipped model's float32 plan entry 13 MB, hashed, read and copied at every
`jitvoc.load`. An array is stored so when it has at least MIN_SIZE elements and at most a
quarter of them are non-zero (as bits: -0.0 is non-zero, kept); it comes back bit for bit.
A uint8 array of zeros and ones (a mask) of at least MIN_SIZE elements is stored as one bit
an element, whatever its density (the shipped model's masks: 919 kB as non-zeros, 380 kB so),
and comes back without a scatter. Other objects (other dtypes, views that are not
C-contiguous) are pickled as pickle does.
"""
import io
import pickle

import numpy as np

MIN_SIZE = 4096
MAX_DENSITY = 0.25


def dumps(obj) -> bytes:
    """pickle.dumps(obj) (the highest protocol), sparse arrays compact."""
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return out.getvalue()


def loads(payload: bytes):
    """The object `dumps` wrote (a plain pickle: only for verified payloads)."""
    return pickle.loads(payload)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        if (type(obj) is not np.ndarray or obj.size < MIN_SIZE or obj.dtype.kind not in "biuf"
                or obj.dtype.itemsize not in (1, 2, 4, 8) or not obj.flags.c_contiguous):
            return NotImplemented
        flat = obj.reshape(-1)
        if flat.dtype == np.uint8 and flat.max() <= 1:   # a mask: one bit an element
            return bit_array, (obj.shape, np.packbits(flat))
        where = np.flatnonzero(flat.view(f"u{flat.dtype.itemsize}") != 0)
        if len(where) > MAX_DENSITY * flat.size:
            return NotImplemented
        where = where.astype(np.uint32 if flat.size < 2**32 else np.int64)
        return sparse_array, (obj.shape, obj.dtype.str, where, flat[where])


def sparse_array(shape, dtype, where, values) -> np.ndarray:
    """The array of `shape` that is `values` at the flat positions `where`, zero elsewhere."""
    out = np.zeros(shape, dtype)
    out.reshape(-1)[where] = values
    return out


def bit_array(shape, bits) -> np.ndarray:
    """The uint8 array of `shape` whose elements (0 or 1) are `bits` (np.packbits)."""
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape)
