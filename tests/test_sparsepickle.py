"""jitvoc.sparsepickle: mostly-zero arrays stored as their non-zeros come back bit for bit."""
import pickle

import numpy as np

from jitvoc import sparsepickle


def _pruned(shape, density, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else \
        rng.integers(-128, 127, shape).astype(dtype)
    a[rng.random(shape) >= density] = 0
    return a


def test_arrays_come_back_bit_for_bit():
    f32 = np.dtype(np.float32)
    signed_zero = np.zeros((64, 128), np.float32)
    signed_zero[3, 5] = -0.0
    objs = {"sparse": _pruned((300, 200), 0.05, f32),
            "int8": _pruned((64, 128), 0.1, np.dtype(np.int8)),
            "dense": _pruned((64, 128), 0.9, f32), "small": _pruned((4, 4), 0.1, f32),
            "fortran": np.asfortranarray(_pruned((64, 128), 0.05, f32)),
            "signed zero": signed_zero, "empty": np.zeros((0, 5000), np.float32),
            "complex": np.zeros((64, 128), np.complex128),
            "record": np.zeros(5000, [("a", np.int32), ("b", np.float32)]),
            "nested": [(_pruned((100, 100), 0.02, f32), "meta", {"k": 1})]}
    back = sparsepickle.loads(sparsepickle.dumps(objs))
    assert back.keys() == objs.keys() and back["nested"][0][1:] == ("meta", {"k": 1})
    pairs = [(objs[k], back[k]) for k in objs if k != "nested"] + \
        [(objs["nested"][0][0], back["nested"][0][0])]
    for a, b in pairs:
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes("A") == b.tobytes("A")
    assert np.signbit(back["signed zero"][3, 5])
    assert back["fortran"].flags.f_contiguous


def test_a_pruned_matrix_is_stored_small():
    a = _pruned((2688, 896), 0.05, np.dtype(np.float32))
    assert len(sparsepickle.dumps(a)) < 0.15 * len(pickle.dumps(a, protocol=5))
    dense = _pruned((256, 256), 0.5, np.dtype(np.float32))
    assert len(sparsepickle.dumps(dense)) < 1.01 * len(pickle.dumps(dense, protocol=5))


def test_masks_are_stored_as_bits_and_come_back_bit_for_bit():
    rng = np.random.default_rng(1)
    masks = [(rng.random(shape) < density).astype(np.uint8)
             for shape, density in (((2688, 896), 0.05), ((448, 448), 0.9), ((5001,), 0.5))]
    not_mask = masks[1] * 2   # values 0 and 2: stored as non-zeros or whole, not as bits
    back = sparsepickle.loads(sparsepickle.dumps(masks + [not_mask]))
    for a, b in zip(masks + [not_mask], back):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        assert b.flags.writeable
    for a in masks:
        assert len(sparsepickle.dumps(a)) < a.size / 8 + 200
    assert len(sparsepickle.dumps(not_mask)) > not_mask.size / 2
