"""The model file: round trip, and every way a file can be broken raising ModelFileError."""
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jitvoc.errors import InputError, ModelFileError
from jitvoc.model import Model, digest, load_model, random_model
from jitvoc.wavernn import NAMES
from jitvoc.representation import Representation

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model():
    return random_model(hidden=32, density=0.25, sample_rate=16000, n_mels=20, cond_channels=8)


@pytest.fixture
def saved(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    return path


def file_arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads(arrays.pop("meta").tobytes())


def write(path, arrays, meta, fix_digest=True):
    """Write a (possibly broken) model file, with a digest matching its arrays by default."""
    if fix_digest:
        meta = dict(meta, sha256=digest(arrays))
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def broken(saved, tmp_path, change, fix_digest=True):
    arrays, meta = file_arrays(saved)
    change(arrays, meta)
    path = tmp_path / "broken.npz"
    write(path, arrays, meta, fix_digest)
    return path


def test_round_trip(model, saved, tmp_path):
    loaded = load_model(saved)
    assert loaded.meta == model.meta
    for k, w in model.weights.items():
        np.testing.assert_array_equal(loaded.weights[k], w)
        assert loaded.weights[k].dtype == np.float32
    for k, (w, m) in loaded.matrices().items():
        np.testing.assert_array_equal(m, model.masks[k])
        assert m.dtype == np.uint8 and w.shape == m.shape
    assert (loaded.hidden, loaded.sample_rate, loaded.hop_length, loaded.n_mels) == \
        (32, 16000, 200, 20)
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind


def test_file_holds_no_pickle(saved):
    with zipfile.ZipFile(saved) as z:
        assert all(name.endswith(".npy") for name in z.namelist())
    arrays, _ = file_arrays(saved)  # allow_pickle=False
    assert all(a.dtype != object for a in arrays.values())


def test_model_is_read_only(model):
    with pytest.raises(ValueError):
        model.weights["gru.R"][0, 0] = 1
    with pytest.raises(AttributeError):
        model.hidden = 64


def test_loaded_model_is_read_only(saved):
    """load_model freezes the arrays it read in place (Model._owning), masks included."""
    loaded = load_model(saved)
    for arrays in (loaded.weights, loaded.masks):
        for a in arrays.values():
            with pytest.raises(ValueError):
                a.reshape(-1)[0] = 1


def test_save_is_atomic(model, saved, monkeypatch):
    before = saved.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(saved)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def test_not_found(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "nope.npz")


def test_truncated(saved, tmp_path):
    path = tmp_path / "cut.npz"
    path.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=r"cut\.npz.*truncated or corrupt"):
        load_model(path)


def test_corrupt_bytes(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as z:  # garble the middle of the compressed gru.R
        info = z.getinfo("gru.R.npy")
    middle = info.header_offset + 100 + info.compress_size // 2
    data[middle:middle + 64] = bytes(64)
    path = tmp_path / "garbled.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError,
                       match=r"garbled\.npz: member 'gru\.R\.npy' is truncated or corrupt"):
        load_model(path)


def _central_entry(data: bytes, name: str) -> int:
    """Where the central directory's entry of member `name` starts in a zip's bytes."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46:at + 46 + len(name)] != name.encode():
        at = data.index(b"PK\x01\x02", at + 4)
    return at


def _encrypted(entry: bytearray) -> None:
    entry[8] |= 0x01   # the general-purpose flags' bit 0 (APPNOTE 4.4.4)


def _version_10_9(entry: bytearray) -> None:
    entry[6:8] = (109).to_bytes(2, "little")   # version needed to extract: 10.9


@pytest.mark.parametrize("change, message", [
    (_encrypted, r"member 'gru\.b\.npy' is encrypted"),
    (_version_10_9, r"not a readable \.npz archive.*zip file version 10\.9")])
def test_zip_features_the_reader_lacks(saved, tmp_path, change, message):
    """A member marked encrypted, or a version of zip that zipfile cannot read (what the
    model fuzzer made of the shipped file): jitvoc's error, not zipfile's exception."""
    data = bytearray(saved.read_bytes())
    at = _central_entry(bytes(data), "gru.b.npy")
    entry = data[at:at + 46]
    change(entry)
    data[at:at + 46] = entry
    path = tmp_path / "odd.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_not_a_zip(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable .npz"):
        load_model(path)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ModelFileError, match="single .npy array"):
        load_model(tmp_path / "one.npy")


def test_pickled_array_refused(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: a.update({"gru.b": np.array([{}], dtype=object)}))
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(path)


def test_missing_key(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: a.pop("gru.R"))
    with pytest.raises(ModelFileError, match=r"broken\.npz.*missing key 'gru.R'"):
        load_model(path)


def test_missing_meta(saved, tmp_path):
    arrays, _ = file_arrays(saved)
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(ModelFileError, match="missing key 'meta'"):
        load_model(tmp_path / "x.npz")


def test_unexpected_key(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: a.update({"extra": np.zeros(1, np.float32)}))
    with pytest.raises(ModelFileError, match="unexpected key 'extra'"):
        load_model(path)


def test_wrong_shape(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: a.update({"gru.bR": np.zeros(97, np.float32)}))
    with pytest.raises(ModelFileError, match=r"'gru.bR' has wrong shape \(97,\), expected \(96,\)"):
        load_model(path)


def test_conv_chain_shape(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: a.update(
        {"cond.conv1.weight": np.zeros((8, 7, 3), np.float32)}))
    with pytest.raises(ModelFileError, match="'cond.conv1.weight' has wrong shape"):
        load_model(path)


def test_wrong_dtype(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: a.update({"gru.R": a["gru.R"].astype(np.float64)}))
    with pytest.raises(ModelFileError, match="'gru.R' has dtype float64"):
        load_model(path)


def test_future_version(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: m.update(version=2))
    with pytest.raises(ModelFileError, match="version 2 is newer than version 1"):
        load_model(path)


def test_format_tag(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: m.update(format="other"))
    with pytest.raises(ModelFileError, match="format tag"):
        load_model(path)


def test_bad_hyperparameter(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: m["conditioning"]["layers"][0].update(kernel=4))
    with pytest.raises(ModelFileError, match="kernel must be a positive odd integer"):
        load_model(path)


def test_nan_weight(saved, tmp_path):
    def poison(arrays, meta):
        rows, cols = np.nonzero(arrays["out.O1.mask"])
        arrays["out.O1"][rows[0], cols[0]] = np.nan
    with pytest.raises(ModelFileError, match="'out.O1' holds NaN or infinite"):
        load_model(broken(saved, tmp_path, poison))
    path = broken(saved, tmp_path, lambda a, m: a["gru.b"].__setitem__(0, np.inf))
    with pytest.raises(ModelFileError, match="'gru.b' holds NaN or infinite"):
        load_model(path)


def test_mask_violation(saved, tmp_path):
    def violate(arrays, meta):
        rows, cols = np.nonzero(arrays["gru.R.mask"] == 0)
        arrays["gru.R"][rows[0], cols[0]] = 0.5
    with pytest.raises(ModelFileError, match="'gru.R' is nonzero at 1 positions where its mask"):
        load_model(broken(saved, tmp_path, violate))


def test_mask_not_binary(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: a["out.O2.mask"].__setitem__((0, 0), 2))
    with pytest.raises(ModelFileError, match="'out.O2.mask' holds values other than 0 and 1"):
        load_model(path)


def test_coarse_rows_see_no_current_coarse(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: a["gru.I"].__setitem__((0, 2), 1.0))
    with pytest.raises(ModelFileError, match="column 2 is nonzero in coarse rows"):
        load_model(path)


def test_file_without_representation_is_linear(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: m.pop("representation"))
    assert "representation" not in file_arrays(path)[1]
    loaded = load_model(path)
    assert loaded.representation == Representation("linear", 0.0)
    assert loaded.meta["representation"] == {"code": "linear", "preemphasis": 0.0}


def test_representation_round_trip(tmp_path):
    rep = Representation("mulaw", 0.85)
    m = random_model(hidden=32, density=0.25, sample_rate=16000, n_mels=20, cond_channels=8,
                     representation=rep)
    m.save(tmp_path / "m.npz")
    assert file_arrays(tmp_path / "m.npz")[1]["representation"] == rep.to_meta()
    assert load_model(tmp_path / "m.npz").representation == rep


@pytest.mark.parametrize("entry, problem", [
    ({"code": "alaw", "preemphasis": 0.0}, "representation code must be one of"),
    ({"code": "mulaw", "preemphasis": 0.995}, "preemphasis must be a number in"),
    (["mulaw", 0.85], "representation must be an object"),
])
def test_bad_representation(saved, tmp_path, entry, problem):
    path = broken(saved, tmp_path, lambda a, m: m.update(representation=entry))
    with pytest.raises(ModelFileError, match=problem):
        load_model(path)


def test_digest_mismatch(saved, tmp_path):
    path = broken(saved, tmp_path, lambda a, m: a["gru.bR"].__setitem__(3, 1.0), fix_digest=False)
    with pytest.raises(ModelFileError, match="sha256 digest mismatch"):
        load_model(path)


def test_random_model_structure():
    H = 64
    m = random_model(hidden=H, density=0.1, output_density=0.2, sample_rate=24000, seed=3,
                     n_mels=16, cond_channels=8)
    assert m.meta["provenance"] == {"kind": "random", "seed": 3}
    assert (m.hop_length, m.mel_config["n_fft"], m.mel_config["fmax"]) == (300, 2048, 12000.0)
    for name, (w, mask) in m.matrices().items():
        blocks = mask.reshape(mask.shape[0] // 16, 16, mask.shape[1])
        assert (blocks == blocks[:, :1]).all(), f"{name} mask is not made of 16x1 blocks"
        assert not w[mask == 0].any()
    R_mask = m.masks["gru.R"]
    for g in range(3):
        assert R_mask[g * H:(g + 1) * H].mean() == pytest.approx(0.1, abs=0.01)
    assert m.masks["out.O2"].mean() == pytest.approx(0.2, abs=0.02)
    coarse = np.r_[0:H // 2, H:H + H // 2, 2 * H:2 * H + H // 2]
    assert not m.weights["gru.I"][coarse, 2].any() and m.weights["gru.I"][:, :2].all()
    assert set(m.masks) == set(NAMES)


def test_random_model_refuses_bad_block():
    with pytest.raises(InputError, match="does not tile"):
        random_model(hidden=40, n_mels=8, cond_channels=8)


def test_constructor_validates(model):
    weights = model.weights
    weights.pop("out.b4")
    with pytest.raises(ModelFileError, match="missing key 'out.b4'"):
        Model(weights, model.masks, model.meta)


# --- issue 11: bounded resources, and every failure a ModelFileError naming the field ----------
def npy_bytes(array=None, header=None) -> bytes:
    """A .npy member: `array` serialized, or a bare header dict (shape, fortran_order, descr)."""
    buf = io.BytesIO()
    if header is None:
        np.save(buf, array, allow_pickle=False)
    else:
        np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def rezip(saved, path, replace=None, add=None):
    """A copy of the saved model with members replaced or added (name -> bytes)."""
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, (replace or {}).get(info.filename, src.read(info)))
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return path


@pytest.mark.parametrize("field,change,message", [
    ("nested_json", None, "nested too deeply"),
    ("fmin_null", lambda m: m["mel"].update(fmin=None), "mel fmin must be a finite number"),
    ("quantization_number", lambda m: m.update(quantization=3),
     "'quantization' must be an object"),
    ("ranges_not_objects", lambda m: m.update(quantization={"activation_ranges": {"out.O2": 1}}),
     r"activation_ranges\['out.O2'\]"),
    ("hop_length_huge", lambda m: m["mel"].update(hop_length=10**7),
     "mel hop_length is 10000000, over jitvoc's limit of 4096"),
    ("n_fft_huge", lambda m: m["mel"].update(n_fft=10**7, win_length=10**7),
     "mel n_fft is 10000000, over jitvoc's limit"),
    ("hidden_huge", lambda m: m.update(hidden=10**6), "hidden is 1000000, over jitvoc's limit"),
    ("hidden_bool", lambda m: m.update(hidden=True), "hidden must be a positive integer"),
    ("too_many_layers", lambda m: m["conditioning"].update(
        layers=[{"name": f"cond.conv{i}", "kernel": 1, "activation": "relu"} for i in range(9)]),
     "9 conditioning layers, over the limit"),
])
def test_bad_metadata_is_a_model_file_error(saved, tmp_path, field, change, message):
    if field == "nested_json":
        arrays, _ = file_arrays(saved)
        path = tmp_path / "broken.npz"
        np.savez(path, meta=np.frombuffer(b"[" * 100_000 + b"]" * 100_000, np.uint8), **arrays)
    else:
        path = broken(saved, tmp_path, lambda a, m: change(m))
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_huge_npy_header_shape_is_refused_before_allocating(saved, tmp_path):
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    path = rezip(saved, tmp_path / "huge.npz", replace={"gru.b.npy": npy_bytes(header=header)})
    with pytest.raises(ModelFileError, match=r"'gru.b\.npy' holds \d+ bytes, but its header "
                                             r"promises 4398046511232"):
        load_model(path)


def test_huge_meta_is_refused(saved, tmp_path):
    header = {"descr": "|u1", "fortran_order": False, "shape": (2**33,)}
    path = rezip(saved, tmp_path / "huge.npz", replace={"meta.npy": npy_bytes(header=header)})
    with pytest.raises(ModelFileError, match="member 'meta.npy' holds .* promises 8589934"):
        load_model(path)
    arrays, meta = file_arrays(saved)
    padded = json.dumps(meta).encode() + b" " * (2 << 20)
    path = rezip(saved, tmp_path / "big.npz",
                 replace={"meta.npy": npy_bytes(np.frombuffer(padded, np.uint8))})
    with pytest.raises(ModelFileError,
                       match="'meta' holds 2\\d+ bytes, over the limit of 1048576"):
        load_model(path)


def test_member_that_is_not_npy(saved, tmp_path):
    path = rezip(saved, tmp_path / "extra.npz", add={"notes.txt": b"hello"})
    with pytest.raises(ModelFileError, match="member 'notes.txt' is not a .npy array"):
        load_model(path)
    path = rezip(saved, tmp_path / "garbage.npz", replace={"gru.b.npy": b"\x93NUMPY garbage"})
    with pytest.raises(ModelFileError, match="member 'gru.b.npy': no valid .npy header"):
        load_model(path)


BOMB = """
import resource, sys, numpy as np
from jitvoc import ModelFileError, load_model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(sys.argv[1])
except ModelFileError as e:
    print(e, file=sys.stderr)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) // 1024)
"""


@pytest.mark.slow
def test_zip_bomb_is_refused_without_decompressing(saved, tmp_path):
    """A 4 MB file used to reach 4.1 GB RSS before it was rejected: here 1 GB of zeros appended
    to a member compresses to about 1 MB, and the growth in peak memory is a few MiB."""
    arrays, _ = file_arrays(saved)
    bomb = npy_bytes(arrays["gru.R"]) + bytes(1 << 30)
    path = rezip(saved, tmp_path / "bomb.npz", replace={"gru.R.npy": bomb})
    assert path.stat().st_size < 4 << 20
    r = subprocess.run([sys.executable, "-c", BOMB, str(path)], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd="/")
    assert "member 'gru.R.npy' holds" in r.stderr, r.stderr
    assert int(r.stdout) < 20, f"peak memory grew by {r.stdout} MiB"


def test_unknown_compression_method(saved, tmp_path):
    """Found by fuzzing: a flipped byte naming an unknown method gave NotImplementedError."""
    data = bytearray(saved.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.index(signature) + offset
        data[at:at + 2] = (97).to_bytes(2, "little")
    path = tmp_path / "odd.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="compression method is not supported"):
        load_model(path)


@pytest.mark.parametrize("order", ["C", "F"])
def test_frozen_arrays_are_read_only_views_of_the_bytes(order):
    """npy.array_from(frozen=True), what load_model reads: the array, read-only, without a
    copy of the bytes (a Fortran-order one copied to C order, read-only too)."""
    from jitvoc import npy
    a = np.asarray(np.arange(12, dtype=np.float32).reshape(3, 4), order=order)
    buf = io.BytesIO()
    np.save(buf, a)
    raw = buf.getvalue()
    header = npy.read_header(io.BytesIO(raw))
    data = raw[header.offset:]
    for frozen in (False, True):
        b = npy.array_from(data, header, frozen)
        assert np.array_equal(a, b) and b.flags.writeable is not frozen
        assert np.shares_memory(b, np.frombuffer(data, np.uint8)) is (frozen and order == "C")
