"""The jitvoc model file (docs/model.md, "File format"): loading, validation, saving, and random
models for tests and benchmarks."""
import copy
import hashlib
import io
import json
import math
import os

import numpy as np

from . import pretrained, sparsepickle, wavernn
from .atomic import atomic_file
from .errors import InputError, ModelFileError
from .mel import DEFAULT_CONFIG, check_config
from .representation import Representation

FORMAT = "jitvoc-model"
VERSION = 1
ACTIVATIONS = ("relu", "tanh", "none")
UPSAMPLING = ("linear", "repeat")
# What a model file may ask for (docs/model.md, "Limits"): bounded memory and time at load and
# synthesis, whatever the file says.
LIMITS = {"hidden": 4096, "sample_rate": 192_000, "n_fft": 16384, "win_length": 16384,
          "hop_length": 4096, "n_mels": 512, "layers": 8, "kernel": 15, "channels": 1024}
MAX_META_BYTES = 1 << 20
MAX_MEMBERS = 64
MEL_24K = {"n_fft": 2048, "hop_length": 300, "win_length": 1200, "n_mels": 80,
           "fmin": 40.0, "fmax": 12000.0, "log_floor": 1e-5}


class Model:
    """A validated, read-only model: hyperparameters, float32 weights and uint8 0/1 masks.

    `weights` maps file keys ("gru.R", "cond.conv0.weight", ...) to float32 arrays, `masks` maps
    the sparse matrices' names (wavernn.NAMES) to uint8 arrays of the same shape; `meta` is the
    file's JSON metadata (without "sha256", which `save` computes), with "representation" always
    spelled out (absent in a file: linear, no pre-emphasis). Construction validates everything
    but the digest.
    """

    def __init__(self, weights: dict, masks: dict, meta: dict):
        self._validate({k: _frozen(v) for k, v in weights.items()},
                       {k: _frozen(v) for k, v in masks.items()}, meta)

    @classmethod
    def _owning(cls, weights: dict, masks: dict, meta: dict) -> "Model":
        """A Model of arrays that nothing else references (load_model's: read-only arrays of
        the bytes just decompressed, npy.array_from(frozen=True)), frozen in place instead of
        copied (the shipped model: 12 MB, ~10 ms), validated as __init__ validates."""
        model = cls.__new__(cls)
        model._validate({k: _frozen_in_place(v) for k, v in weights.items()},
                        {k: _frozen_in_place(v) for k, v in masks.items()}, meta)
        return model

    def _validate(self, weights: dict, masks: dict, meta: dict) -> None:
        """The construction: frozen arrays and a meta, checked."""
        self._meta = copy.deepcopy({k: v for k, v in meta.items() if k != "sha256"})
        self._weights, self._masks = weights, masks
        _check_meta(self._meta)
        self._representation = Representation.from_meta(self._meta.get("representation"))
        self._meta["representation"] = self._representation.to_meta()
        try:
            json.dumps(self._meta)
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"meta is not JSON-serializable: {e}") from None
        _check_structure(self._arrays(), self._meta)
        _check_values(self._weights, self._masks, self.hidden)
        self._digest = None   # the arrays' digest, computed once when asked for (load_model: read)

    @classmethod
    def _trusted(cls, dense: dict, matrices: bytes, order: tuple, meta: dict,
                 digest: str) -> "Model":
        """A Model of frozen arrays and a meta that a Model held before (from_compact),
        without validating them again. `dense`: the weights but the block-sparse matrices;
        `matrices`: those and their masks as `compact` pickled them, decoded at their first
        use (_weights, _masks: __getattr__); `order`: the weights' keys in their order."""
        model = cls.__new__(cls)
        model._meta, model._dense, model._digest = meta, dense, digest
        model._packed, model._order = matrices, order
        model._representation = Representation.from_meta(meta["representation"])
        return model

    def __getattr__(self, name):
        """_weights and _masks of a model from the cache (_trusted), its matrices decoded at
        their first use: a load whose plan comes from the cache never reads them (the shipped
        model: 2.4 of the 2.7 ms of decoding its cache entry, 12 MB of fresh pages;
        bench/README.md, tenth round). Threads that decode them at once set equal arrays."""
        if name not in ("_weights", "_masks") or "_packed" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        arrays = sparsepickle.loads(self._packed)
        for a in arrays.values():
            a.flags.writeable = False
        self._masks = {k: arrays.pop(f"{k}.mask") for k in wavernn.NAMES}
        self._weights = {k: arrays[k] if k in arrays else self._dense[k] for k in self._order}
        return self.__dict__[name]

    # Hyperparameters.
    hidden = property(lambda self: self._meta["hidden"], doc="H, the GRU state size")
    sample_rate = property(lambda self: self._meta["sample_rate"])
    mel_config = property(lambda self: dict(self._meta["mel"]), doc="a copy of the 'mel' entry")
    hop_length = property(lambda self: self._meta["mel"]["hop_length"])
    n_mels = property(lambda self: self._meta["mel"]["n_mels"])
    upsample = property(lambda self: self._meta["conditioning"]["upsample"])
    conditioning_layers = property(
        lambda self: copy.deepcopy(self._meta["conditioning"]["layers"]),
        doc="[{'name': 'cond.conv0', 'kernel': 5, 'activation': 'relu'}, ...]")
    representation = property(lambda self: self._representation,
                              doc="how the coarse/fine code maps to audio (a Representation)")
    meta = property(lambda self: copy.deepcopy(self._meta))

    # Arrays (read-only views; the dicts are copies).
    weights = property(lambda self: dict(self._weights))
    masks = property(lambda self: dict(self._masks))

    @property
    def dense_weights(self) -> dict:
        """The weights but the block-sparse matrices (wavernn.NAMES): the conditioning
        network's, the biases and gru.I; a model from the cache gives them without decoding
        its matrices."""
        if "_packed" in self.__dict__:
            return dict(self._dense)
        return {k: v for k, v in self._weights.items() if k not in wavernn.NAMES}

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the arrays' digest and the meta: what the model computes, for cache
        keys (equal models have equal fingerprints; any other change of weights or meta, the
        calibration included, changes it)."""
        meta = json.dumps(self._meta, sort_keys=True)
        return hashlib.sha256(f"{self._arrays_digest()}\0{meta}".encode("utf-8")).hexdigest()

    def _arrays(self) -> dict:
        """The arrays of the model file but its meta: the weights and "<matrix>.mask"."""
        return dict(self._weights, **{f"{k}.mask": v for k, v in self._masks.items()})

    def _arrays_digest(self) -> str:
        """digest() of the arrays, computed once (load_model: the file's, verified)."""
        if self._digest is None:
            self._digest = digest(self._arrays())
        return self._digest

    def matrices(self) -> dict:
        """name -> (weight, mask) for the block-sparse matrices gru.R and out.O1..O4."""
        return {k: (self._weights[k], self._masks[k]) for k in wavernn.NAMES}

    def __repr__(self):
        return (f"Model(hidden={self.hidden}, sample_rate={self.sample_rate}, "
                f"n_mels={self.n_mels}, hop_length={self.hop_length})")

    def save(self, path) -> None:
        """Write the model to `path` (.npz) atomically: a temporary file in the same directory
        replaces `path` only once it is complete."""
        path = os.fspath(path)
        arrays = self._arrays()
        meta = dict(self._meta, sha256=self._arrays_digest())
        arrays["meta"] = np.frombuffer(json.dumps(meta, indent=1).encode("utf-8"), np.uint8)
        with atomic_file(path, ModelFileError) as f:
            np.savez_compressed(f, **arrays)


def load_model(path, data: bytes | None = None) -> Model:
    """Load and fully validate a model file, given by its path or an installed model's name
    (jitvoc.pretrained); any problem raises ModelFileError naming the file. `data`: the file's
    bytes, already read (jitvoc.vocoder hashes them for its cache), parsed instead of the file.

    Resources are bounded before anything is decompressed or allocated: the metadata is read
    first and checked against LIMITS, then every member's .npy header against the shapes the
    metadata implies; only then are the arrays read, exactly as many bytes as their headers say.
    """
    path = os.fspath(pretrained.resolve(path))
    try:
        meta, arrays = _read_archive(path if data is None else io.BytesIO(data))
        if "sha256" not in meta:
            raise ModelFileError("meta has no 'sha256' digest")
        if digest(arrays) != meta["sha256"]:
            raise ModelFileError("sha256 digest mismatch: the arrays were modified or corrupted")
        masks = {k: arrays.pop(f"{k}.mask") for k in wavernn.NAMES}
        model = Model._owning(arrays, masks, meta)
        model._digest = meta["sha256"]   # verified above: no second pass over the arrays
        return model
    except ModelFileError as e:
        raise ModelFileError(f"model file {path}: {e}") from None


def digest(arrays: dict) -> str:
    """sha256 hex digest of every array but 'meta', in sorted key order (docs/model.md)."""
    h = hashlib.sha256()
    for key in sorted(k for k in arrays if k != "meta"):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}\0{a.dtype.str}\0{','.join(map(str, a.shape))}\0".encode("utf-8"))
        h.update(a)   # its bytes, not a copy of them (tobytes: 17 MB for the shipped model)
    return h.hexdigest()


def compact(model: Model) -> bytes:
    """The model pickled small (jitvoc.sparsepickle: a pruned matrix as the positions and
    values of its non-zeros, bit for bit), with the meta and the digest. For the shipped model
    (5% and 10% dense matrices) 4.5 MB instead of 17 MB: what jitvoc.vocoder caches per model
    file, faster to verify and to read back than the file is to decompress and check. The
    block-sparse matrices and their masks are a pickle of their own inside, which from_compact
    leaves to be decoded at their first use."""
    weights, masks = model._weights, model._masks
    dense = {k: a for k, a in weights.items() if k not in wavernn.NAMES}
    matrices = {k: weights[k] for k in wavernn.NAMES} | {f"{k}.mask": masks[k]
                                                        for k in wavernn.NAMES}
    return sparsepickle.dumps((model._meta, model._arrays_digest(), dense,
                               sparsepickle.dumps(matrices), tuple(weights)))


def from_compact(payload: bytes) -> Model:
    """The Model `compact` wrote, not validated again: only for a payload that jitvoc.cache
    verified (written by `compact` of a validated Model)."""
    meta, model_digest, dense, matrices, order = sparsepickle.loads(payload)
    for a in dense.values():
        a.flags.writeable = False
    return Model._trusted(dense, matrices, order, meta, model_digest)


def random_model(hidden=896, density=0.05, block=(16, 1), output_density=0.10, sample_rate=24000,
                 seed=0, n_mels=80, cond_channels=128, representation=None) -> Model:
    """A model with random weights and the structure of a trained one, for tests and benchmarks.

    Each gate matrix of gru.R ([H, H] each) is block-magnitude-pruned to `density`, out.O1..O4
    to `output_density`, all with blocks of `block` = (rows, columns). Weights are scaled so
    the gates and output distributions are neither saturated nor trivial. `representation`
    (a Representation; None: linear) goes into the meta as is.
    """
    if sample_rate not in (16000, 24000):
        raise InputError(f"random_model has mel configs for 16000 and 24000 Hz, not {sample_rate}")
    if hidden <= 0 or hidden % 2:
        raise InputError(f"hidden must be positive and even, got {hidden}")
    if not (0 < density <= 1 and 0 < output_density <= 1):
        raise InputError(f"densities must be in (0, 1], got {density} and {output_density}")
    rng = np.random.default_rng(seed)
    H, h2, C = hidden, hidden // 2, cond_channels
    mel = dict(DEFAULT_CONFIG if sample_rate == 16000 else MEL_24K, n_mels=n_mels)
    layers = [{"name": "cond.conv0", "kernel": 5, "activation": "relu"},
              {"name": "cond.conv1", "kernel": 3, "activation": "relu"}]
    meta = {"format": FORMAT, "version": VERSION, "hidden": H, "sample_rate": sample_rate,
            "mel": mel, "conditioning": {"layers": layers, "upsample": "linear"},
            "provenance": {"kind": "random", "seed": seed},
            "representation": (representation or Representation()).to_meta()}

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    # Log-mels are O(10) (ln 1e-5 = -11.5 for silence): the small first-layer gain keeps
    # the conditioning K at O(1).
    w = {"cond.conv0.weight": normal((C, n_mels, 5), 0.3 / np.sqrt(n_mels * 5)),
         "cond.conv0.bias": normal(C, 0.1),
         "cond.conv1.weight": normal((C, C, 3), np.sqrt(2 / (C * 3))),
         "cond.conv1.bias": normal(C, 0.1),
         "cond.proj": normal((3 * H, C), 0.5 / np.sqrt(C)),
         "gru.bR": normal(3 * H, 0.1), "gru.b": normal(3 * H, 0.1),
         "gru.I": normal((3 * H, 3), 0.5),
         "out.b1": normal(h2, 0.1), "out.b3": normal(h2, 0.1),
         "out.b2": normal(256, 0.1), "out.b4": normal(256, 0.1)}
    for g in range(3):  # the coarse half of every gate does not see c_t
        w["gru.I"][g * H:g * H + h2, 2] = 0
    masks = {}
    gates = [_pruned(rng, (H, H), density, block, gain=1.0) for _ in range(3)]
    w["gru.R"] = np.concatenate([g[0] for g in gates])
    masks["gru.R"] = np.concatenate([g[1] for g in gates])
    for name, shape, gain in (("out.O1", (h2, h2), 1.5), ("out.O2", (256, h2), 3.0),
                              ("out.O3", (h2, h2), 1.5), ("out.O4", (256, h2), 3.0)):
        w[name], masks[name] = _pruned(rng, shape, output_density, block, gain)
    return Model(w, masks, meta)


def _pruned(rng, shape, density, block, gain):
    """Random [rows, cols] matrix, block-magnitude-pruned to `density` (at least one block),
    every nonzero row rescaled to L2 norm `gain`. Returns (float32 weight, uint8 mask)."""
    (rows, cols), (br, bc) = shape, block
    if rows % br or cols % bc:
        raise InputError(f"block {block} does not tile a {rows}x{cols} matrix")
    w = rng.standard_normal(shape)
    energy = (w.reshape(rows // br, br, cols // bc, bc) ** 2).sum(axis=(1, 3))
    keep = np.zeros(energy.size, bool)
    keep[np.argsort(energy, axis=None)[-max(1, round(density * energy.size)):]] = True
    mask = np.kron(keep.reshape(energy.shape), np.ones(block)).astype(np.uint8)
    w *= mask
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    w *= np.divide(gain, norms, out=np.zeros_like(norms), where=norms > 0)
    return w.astype(np.float32), mask


def _frozen(a) -> np.ndarray:
    return _frozen_in_place(np.array(a))  # a private copy


def _frozen_in_place(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _read_archive(path) -> tuple[dict, dict]:
    """(meta, arrays) of a model file, resources bounded as load_model describes."""
    from . import npy   # here: a warm load reads the model from the cache, not the file
    try:
        with npy.Archive(path, MAX_MEMBERS) as archive:
            headers = archive.headers()
            if "meta" not in headers:
                raise ModelFileError("missing key 'meta' (not a jitvoc model file?)")
            if headers["meta"].nbytes > MAX_META_BYTES:
                raise ModelFileError(f"'meta' holds {headers['meta'].nbytes} bytes, over the "
                                     f"limit of {MAX_META_BYTES}")
            meta = _parse_meta(archive.read("meta", headers.pop("meta")))
            _check_meta(meta)
            _check_structure(headers, meta)
            return meta, {k: archive.read(k, h, frozen=True) for k, h in headers.items()}
    except npy.NpyError as e:
        raise ModelFileError(str(e)) from None


def _parse_meta(raw) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"'meta' must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"'meta' is not UTF-8 JSON: {e}") from None
    except RecursionError:
        raise ModelFileError("'meta' JSON is nested too deeply") from None
    if not isinstance(meta, dict):
        raise ModelFileError("'meta' JSON is not an object")
    return meta


def _check_meta(meta) -> None:
    """Format tag, version and hyperparameters."""
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"format tag is {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"invalid format version {version!r}")
    if version > VERSION:
        raise ModelFileError(f"format version {version} is newer than version {VERSION}, the "
                             f"newest this jitvoc reads: upgrade jitvoc")
    for key in ("hidden", "sample_rate", "mel", "conditioning"):
        if key not in meta:
            raise ModelFileError(f"meta lacks {key!r}")
    hidden, sr = meta["hidden"], meta["sample_rate"]
    _check_int("hidden", hidden)
    if hidden % 2:
        raise ModelFileError(f"hidden must be even, got {hidden}")
    _check_int("sample_rate", sr)
    if not isinstance(meta["mel"], dict):
        raise ModelFileError("meta 'mel' is not an object")
    for key in ("n_fft", "hop_length", "win_length", "n_mels"):
        _check_int(f"mel {key}", meta["mel"].get(key), LIMITS[key])
    for key in ("fmin", "fmax", "log_floor"):
        value = meta["mel"].get(key)
        if not _is_number(value):
            raise ModelFileError(f"mel {key} must be a finite number, got {value!r}")
    try:
        check_config(sr, meta["mel"])
    except InputError as e:
        raise ModelFileError(str(e)) from None
    _check_quantization(meta.get("quantization", {}))
    cond = meta["conditioning"]
    if not isinstance(cond, dict) or not isinstance(cond.get("layers"), list):
        raise ModelFileError("meta 'conditioning' must hold a 'layers' list")
    if cond.get("upsample") not in UPSAMPLING:
        raise ModelFileError(f"upsample must be one of {UPSAMPLING}, got {cond.get('upsample')!r}")
    if len(cond["layers"]) > LIMITS["layers"]:
        raise ModelFileError(f"{len(cond['layers'])} conditioning layers, over the limit of "
                             f"{LIMITS['layers']}")
    for i, layer in enumerate(cond["layers"]):
        if not isinstance(layer, dict) or layer.get("name") != f"cond.conv{i}":
            raise ModelFileError(f"conditioning layer {i} must be named 'cond.conv{i}'")
        k = layer.get("kernel")
        _check_int(f"{layer['name']} kernel", k, LIMITS["kernel"])
        if k % 2 == 0:
            raise ModelFileError(f"{layer['name']}: kernel must be a positive odd integer, "
                                 f"got {k}")
        if layer.get("activation") not in ACTIVATIONS:
            raise ModelFileError(f"{layer['name']}: activation must be one of {ACTIVATIONS}, "
                                 f"got {layer.get('activation')!r}")
    Representation.from_meta(meta.get("representation"))  # raises ModelFileError


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(field: str, value, limit: int | None = None) -> None:
    """A positive integer (not a bool), at most `limit` (default: LIMITS[field])."""
    limit = LIMITS[field] if limit is None else limit
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelFileError(f"{field} must be a positive integer, got {value!r}")
    if value > limit:
        raise ModelFileError(f"{field} is {value}, over jitvoc's limit of {limit}")


def _check_quantization(q) -> None:
    """The optional calibration: activation_ranges[matrix]["max"] finite and non-negative."""
    if not isinstance(q, dict):
        raise ModelFileError(f"meta 'quantization' must be an object, got {q!r}")
    ranges = q.get("activation_ranges", {})
    if not isinstance(ranges, dict):
        raise ModelFileError(f"quantization activation_ranges must be an object, got {ranges!r}")
    for name, entry in ranges.items():
        peak = entry.get("max") if isinstance(entry, dict) else None
        if not _is_number(peak) or peak < 0:
            raise ModelFileError(f"quantization activation_ranges[{name!r}] must be an object "
                                 f"with a finite, non-negative 'max', got {entry!r}")


def _check_structure(arrays, meta) -> None:
    """Every key present (and no other), with its shape and dtype."""
    H, h2, n_mels = meta["hidden"], meta["hidden"] // 2, meta["mel"]["n_mels"]
    layers = meta["conditioning"]["layers"]
    expected = {"gru.R": (3 * H, H), "gru.bR": (3 * H,), "gru.b": (3 * H,), "gru.I": (3 * H, 3),
                "out.O1": (h2, h2), "out.O3": (h2, h2), "out.O2": (256, h2), "out.O4": (256, h2),
                "out.b1": (h2,), "out.b3": (h2,), "out.b2": (256,), "out.b4": (256,)}
    expected.update({f"{k}.mask": expected[k] for k in wavernn.NAMES})
    conv_keys = [f"{layer['name']}.{part}" for layer in layers for part in ("weight", "bias")]
    names = set(expected) | set(conv_keys) | {"cond.proj"}
    for problem, keys in (("missing", names - set(arrays)), ("unexpected", set(arrays) - names)):
        if keys:
            raise ModelFileError(f"{problem} key{'s' * (len(keys) > 1)} "
                                 f"{', '.join(map(repr, sorted(keys)))}")
    for key in sorted(names):
        want = np.uint8 if key.endswith(".mask") else np.float32
        if arrays[key].dtype != want:
            raise ModelFileError(f"{key!r} has dtype {arrays[key].dtype}, expected "
                                 f"{np.dtype(want)} (native little-endian)")
    channels = n_mels
    for layer in layers:  # conv shapes chain: [C_out, C_in, K]
        wk, bk = f"{layer['name']}.weight", f"{layer['name']}.bias"
        c_out = arrays[wk].shape[0] if arrays[wk].ndim == 3 else -1
        if c_out > LIMITS["channels"]:
            raise ModelFileError(f"{wk!r} has {c_out} output channels, over the limit of "
                                 f"{LIMITS['channels']}")
        expected[wk], expected[bk] = (c_out, channels, layer["kernel"]), (c_out,)
        channels = c_out
    expected["cond.proj"] = (3 * H, channels)
    for key in sorted(expected):
        if arrays[key].shape != expected[key]:
            raise ModelFileError(f"{key!r} has wrong shape {arrays[key].shape}, "
                                 f"expected {expected[key]}")


def _check_values(weights, masks, hidden) -> None:
    """Finite weights, 0/1 masks, zeros where masked, and the coarse rows of gru.I[:, 2] zero."""
    for key in sorted(weights):
        if not np.isfinite(weights[key]).all():
            raise ModelFileError(f"{key!r} holds NaN or infinite values")
    for key in wavernn.NAMES:
        if masks[key].max() > 1:   # uint8 (_check_structure): 0 and 1 only
            raise ModelFileError(f"'{key}.mask' holds values other than 0 and 1")
        bad = np.count_nonzero((masks[key] == 0) & (weights[key] != 0))
        if bad:
            raise ModelFileError(f"{key!r} is nonzero at {bad} positions where its mask is zero")
    h2 = hidden // 2
    coarse = np.concatenate([np.arange(g * hidden, g * hidden + h2) for g in range(3)])
    if np.any(weights["gru.I"][coarse, 2] != 0):
        raise ModelFileError("'gru.I' column 2 is nonzero in coarse rows (c_t would feed the "
                             "coarse half of the state)")
