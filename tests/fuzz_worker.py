"""The fuzzing worker: runs generated cases of one target in this process and reports each.

    python tests/fuzz_worker.py TARGET SEED COUNT [FIRST]

Case i of a target is generated from the seed (SEED, i) alone, so `FIRST=i COUNT=1` replays it.
Before a case it prints `start i description`, after it `ok i` or `fail i reason` (flushed), so
the harness (tests/test_fuzz.py) can name the case that was running when the process died of a
signal or hung. A case passes when the call returns a result within the documented tolerance
or raises the documented jitvoc exception; anything else fails.
"""
import dataclasses
import io
import json
import os
import sys
import tempfile
import traceback
import zipfile

import numpy as np

import jitvoc
import jitvoc.audio
from jitvoc import isa
from jitvoc.errors import InputError, JitvocError, ModelFileError, UnsupportedCPU
from jitvoc.layout import BLOCKS
from jitvoc.model import digest, random_model
from jitvoc.reference import scan as ref_scan
from jitvoc.reference.matvec import matvec_float, matvec_quantized
from jitvoc.reference.vocoder import ReferenceEngine

EPS32 = float(np.finfo(np.float32).eps)
TINY = dict(hidden=32, density=0.25, sample_rate=16000, n_mels=8, cond_channels=8)
WORK = tempfile.mkdtemp(prefix="jitvoc-fuzz-")


class Failure(Exception):
    """A result outside the documented behaviour."""


def expect(condition, message):
    if not condition:
        raise Failure(message)


# --- shared generators -----------------------------------------------------------------------------
def odd_values(rng, shape):
    """float32 values of a random character: normal, huge, tiny, integers, zeros or mixed."""
    kind = rng.integers(6)
    scale = [1.0, 1e30, 1e-30, 1.0, 0.0, 1.0][kind]
    v = rng.standard_normal(shape) * scale
    if kind == 3:
        v = np.rint(v * 100)
    if kind == 5:
        v *= 10.0 ** rng.integers(-20, 20, shape)
    with np.errstate(over="ignore"):
        return v.astype(np.float32)


def odd_array(rng, good_shape):
    """An array that is often, but not always, of `good_shape`, float and finite."""
    shape = tuple(good_shape)
    if rng.random() < 0.3:
        shape = tuple(int(rng.integers(0, 5)) for _ in range(rng.integers(0, 4)))
    a = odd_values(rng, shape)
    r = rng.random()
    if r < 0.1 and a.size:
        a.flat[rng.integers(a.size)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
    elif r < 0.2:
        return a.astype([np.float64, np.float16, np.int32, np.bool_, np.complex64][rng.integers(5)])
    elif r < 0.25:
        return a.tolist()
    return a


# --- model files -----------------------------------------------------------------------------------
class ModelFiles:
    def __init__(self):
        self.path = os.path.join(WORK, "base.npz")
        random_model(**TINY).save(self.path)
        self.bytes = open(self.path, "rb").read()
        with np.load(self.path) as npz:
            self.arrays = {k: npz[k] for k in npz.files}
        self.meta = json.loads(self.arrays.pop("meta").tobytes())

    def case(self, rng):
        kind = ["bytes", "truncate", "member", "meta", "array", "json"][rng.integers(6)]
        data = getattr(self, f"_{kind}")(rng)
        path = os.path.join(WORK, "case.npz")
        with open(path, "wb") as f:
            f.write(data)
        return kind, lambda: self.check(path)

    def check(self, path):
        try:
            model = jitvoc.load_model(path)
        except ModelFileError:
            return
        voc = jitvoc.load(model, engine=ReferenceEngine)
        mel = np.full((1, model.n_mels), -5.0, np.float32)
        out = voc.synthesize(mel, seed=0)
        expect(out.dtype == np.int16 and len(out) == model.hop_length, "wrong output")

    def _write(self, arrays, meta, fix_digest=True):
        if fix_digest:
            meta = dict(meta, sha256=digest(arrays))
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        return buf.getvalue()

    def _bytes(self, rng):
        data = bytearray(self.bytes)
        for _ in range(rng.integers(1, 9)):
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        return bytes(data)

    def _truncate(self, rng):
        return self.bytes[:rng.integers(len(self.bytes))]

    def _member(self, rng):
        src = zipfile.ZipFile(io.BytesIO(self.bytes))
        names = src.namelist()
        victim = names[rng.integers(len(names))]
        action = rng.integers(4)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
            for name in names:
                data = src.read(name)
                if name == victim and action == 0:
                    continue                                   # dropped
                if name == victim and action == 1:
                    data = rng.bytes(int(rng.integers(0, 200)))  # garbage
                if name == victim and action == 2:
                    name = victim[:-4] + ".bin"                  # not .npy
                dst.writestr(name, data)
            if action == 3:                                      # a header promising a lot
                hdr = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    hdr, {"descr": "<f4", "fortran_order": False,
                          "shape": (int(rng.integers(1, 2**40)),)})
                dst.writestr(victim, hdr.getvalue() + bytes(int(rng.integers(0, 1 << 16))))
        return buf.getvalue()

    def _meta(self, rng):
        meta = json.loads(json.dumps(self.meta))
        paths = list(_json_paths(meta))
        path = paths[rng.integers(len(paths))]
        values = [None, -1, 0, 1, 3, 10**9, 1e308, float("nan"), "x", [], {}, True, 2.5,
                  [[[[]]]], {"max": -1}]
        _set(meta, path, values[rng.integers(len(values))])
        return self._write(dict(self.arrays), meta)

    def _array(self, rng):
        arrays = dict(self.arrays)
        key = sorted(arrays)[rng.integers(len(arrays))]
        a = arrays[key]
        action = rng.integers(5)
        if action == 0:
            a = a.astype([np.float64, np.int8, np.float16, ">f4"][rng.integers(4)])
        elif action == 1:
            a = a.reshape(-1)[:max(0, a.size - int(rng.integers(1, 3)))]
        elif action == 2 and a.size:
            a = a.copy()
            values = [2, 7] if a.dtype.kind == "u" else [np.nan, np.inf, 2, 1e30]
            a.flat[rng.integers(a.size)] = values[rng.integers(len(values))]
        elif action == 3:
            a = np.zeros((0,) + a.shape[1:], a.dtype)
        else:
            arrays[f"extra{rng.integers(9)}"] = a
        arrays[key] = a
        return self._write(arrays, self.meta, fix_digest=rng.random() < 0.8)

    def _json(self, rng):
        text = bytearray(json.dumps(self.meta).encode())
        for _ in range(rng.integers(1, 4)):
            text[rng.integers(len(text))] = b'{}[]",:0123456789e-'[rng.integers(19)]
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(bytes(text), np.uint8), **self.arrays)
        return buf.getvalue()


def _json_paths(node, prefix=()):
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for k, v in items:
        yield from _json_paths(v, prefix + (k,))


def _set(node, path, value):
    if not path:
        return
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


# --- mel arrays ------------------------------------------------------------------------------------
class Mels:
    def __init__(self):
        self.voc = jitvoc.load(jitvoc.calibrate(random_model(**TINY)), dtype="int8")

    def case(self, rng):
        frames = int(rng.integers(0, 40))
        layout = ["frames-mels", "mels-frames", "bogus"][rng.integers(3)] \
            if rng.random() < 0.3 else "frames-mels"
        mel = odd_array(rng, (frames, self.voc.n_mels))
        if isinstance(mel, np.ndarray) and rng.random() < 0.2:
            mel = mel - 5   # plausible log-mels
        seed = int(rng.integers(-5, 2**33)) if rng.random() < 0.2 else 0
        return f"{np.shape(mel)} {getattr(mel, 'dtype', 'list')} {layout} seed {seed}", \
            lambda: self.check(mel, layout, seed, rng)

    def check(self, mel, layout, seed, rng):
        try:
            out = self.voc.synthesize(mel, seed=seed, layout=layout)
        except InputError:
            return
        shape = np.shape(mel)
        frames = shape[-2 if layout == "frames-mels" else -1]
        expect(out.dtype == np.int16 and out.shape == shape[:-2] + (frames * self.voc.hop_length,),
               f"output {out.dtype} {out.shape}")
        if len(shape) == 3:
            return
        cuts = np.sort(rng.integers(0, frames + 1, 3))
        pieces = np.split(np.asarray(mel, np.float32).reshape(frames, -1)
                          if layout == "frames-mels" else np.asarray(mel).T, cuts)
        streamed = np.concatenate(list(self.voc.stream(pieces, seed=seed)))
        expect(np.array_equal(streamed, out), "stream() differs from synthesize()")


# --- audio files -------------------------------------------------------------------------------------
class AudioFiles:
    FORMATS = [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"),
               ("WAV", "PCM_U8"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")]

    def case(self, rng):
        import soundfile as sf
        fmt, subtype = self.FORMATS[rng.integers(len(self.FORMATS))]
        rate = [8000, 16000, 22050, 44100, 48000][rng.integers(5)]
        channels, n = int(rng.integers(1, 4)), int(rng.integers(0, 4000))
        audio = np.clip(rng.standard_normal((n, channels)) * 0.3, -1, 1)
        buf = io.BytesIO()
        sf.write(buf, audio, rate, format=fmt, subtype=subtype)
        data, mutated = bytearray(buf.getvalue()), rng.random() < 0.6
        if mutated:
            if rng.random() < 0.5 and data:   # a raw file of 0 frames has no bytes to cut
                data = data[:rng.integers(len(data))]
            for _ in range(rng.integers(0, 6) if data else 0):   # none to change either
                data[rng.integers(len(data))] = rng.integers(256)
        path = os.path.join(WORK, "case.audio")
        with open(path, "wb") as f:
            f.write(data)
        return (f"{fmt} {subtype} {rate} Hz x{channels} {n} frames mutated={mutated}",
                lambda: self.check(path, n, rate, mutated))

    def check(self, path, n, rate, mutated):
        try:
            audio, got_rate, _ = jitvoc.audio.read_audio(path, sample_rate=16000)
        except JitvocError:
            expect(mutated, "an intact file was refused")
            return
        expect(audio.dtype == np.int16 and audio.ndim == 1 and got_rate == 16000,
               f"read {audio.dtype} {audio.shape} at {got_rate}")
        if not mutated:
            expect(abs(len(audio) - n * 16000 / rate) <= 2, f"{len(audio)} samples for {n}")


# --- build_matvec ------------------------------------------------------------------------------------
class Matvec:
    def case(self, rng):
        rows, cols = int(rng.integers(1, 130)), int(rng.integers(1, 300))
        if rng.random() < 0.1:
            cols = int(rng.integers(300, 5000))
        dtype = ["int8", "int16", "float32"][rng.integers(3)]
        block = None if rng.random() < 0.5 else BLOCKS[rng.integers(len(BLOCKS))]
        variant = None if rng.random() < 0.6 else \
            ["idx", "grouped", "baked", "dense"][rng.integers(4)]
        w = odd_values(rng, (rows, cols)) * (rng.random((rows, cols)) < rng.random())
        x = odd_values(rng, cols)
        return (f"{rows}x{cols} {dtype} block={block} variant={variant}",
                lambda: self.check(w, x, dtype, block, variant))

    def check(self, w, x, dtype, block, variant):
        try:
            mv = jitvoc.build_matvec(w, dtype, block=block, variant=variant)
            y = mv(x)
        except JitvocError:
            return
        if dtype == "float32":
            bound = (w.shape[1] + 2) * EPS32 * (np.abs(w).astype(np.float64) @ np.abs(x)) + 1e-30
            err = np.abs(y.astype(np.float64) - matvec_float(w, x))
            expect(np.all(err <= bound) or not np.isfinite(bound).all(), "float error over bound")
        else:
            want = matvec_quantized(mv.plan.w_codes, mv.plan.row_scale, x, mv.format_for(x))
            expect(np.array_equal(y, want), "integer kernel differs from the reference")


# --- linear_recurrence and layers --------------------------------------------------------------------
def magnitudes(decays, impulses, h0):
    """The recurrence of magnitudes that bounds a scan's error, with 0 · inf taken as 0: a zero
    decay passes nothing of a magnitude that overflowed float64 (the reference's product is NaN
    there, and a NaN bound failed every later step: JITVOC_FUZZ=20, seed 1, case 8779)."""
    h, prev = np.empty_like(impulses), h0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(len(impulses)):
            prev = h[t] = np.where(decays[t] == 0, 0.0, decays[t] * prev) + impulses[t]
    return h


class Recurrence:
    def case(self, rng):
        T, D = int(rng.integers(0, 300)), int(rng.integers(0, 70))
        if rng.random() < 0.5:
            lam = rng.uniform(0, 1.2, (T, D)).astype(np.float32)
            x = rng.standard_normal((T, D)).astype(np.float32)
            h0 = rng.standard_normal(D).astype(np.float32) if rng.random() < 0.5 else None
        else:
            lam, x, h0 = odd_array(rng, (T, D)), odd_array(rng, (T, D)), odd_array(rng, (D,))
        threads = None if rng.random() < 0.5 else int(rng.integers(-1, 4))
        layer = ["gilr", "sru", "ls_lstm", None][rng.integers(4)]
        desc = f"T{T} D{D} threads={threads} layer={layer}"
        return desc, lambda: self.check(lam, x, h0, threads, layer, rng)

    def check(self, lam, x, h0, threads, layer, rng):
        if layer:
            return self.check_layer(layer, rng, threads)
        try:
            h = jitvoc.linear_recurrence(lam, x, h0, threads=threads)
        except InputError:
            return
        lam, x = np.asarray(lam, np.float64), np.asarray(x, np.float64)
        columns = int(np.prod(lam.shape[1:]))   # as reshape(T, -1), which fails for T = 0
        lam2, x2 = lam.reshape(len(lam), columns), x.reshape(len(x), columns)
        h0v = np.zeros(lam2.shape[1]) if h0 is None else np.asarray(h0, np.float64).reshape(-1)
        want = ref_scan.linear_recurrence(lam2, x2, h0v)
        bound = magnitudes(np.abs(lam2), np.abs(x2), np.abs(h0v))
        h = h.reshape(want.shape)
        # the rounding bound, plus what float32's gradual underflow (steps of 2^-149) can add
        # and the recurrence then amplifies
        underflow = magnitudes(np.abs(lam2), np.full(lam2.shape, 2.0 ** -147), np.zeros_like(h0v))
        within = np.abs(h - want) <= 4 * EPS32 * max(len(lam), 1) * bound + underflow
        # float32 semantics: once a state's magnitude may have passed float32's range, it is
        # inf (or NaN after a zero decay) from there on
        overflowed = ~(np.maximum.accumulate(bound, axis=0) <= np.finfo(np.float32).max) \
            & ~np.isfinite(h)
        expect(np.all(within | overflowed), "scan error over bound")

    def check_layer(self, name, rng, threads):
        from jitvoc.layers import GILR, LSLSTM, SRU
        cls = {"gilr": GILR, "sru": SRU, "ls_lstm": LSLSTM}[name]
        d_in = int(rng.integers(1, 20))
        layer = cls.init(d_in, d_in if name == "sru" else int(rng.integers(1, 20)), seed=1)
        x = odd_array(rng, (int(rng.integers(0, 50)), d_in))
        try:
            got = layer.forward(x, threads=threads)
        except InputError:
            return
        x64 = np.asarray(x, np.float64)
        want = ref_scan.layer_forward(layer, x64)
        close = np.abs(got - want) <= 1e-4 * np.abs(want) + 2e-5 + rounding(layer, x64, d_in)
        expect(close.all() or not np.isfinite(want).all(), "layer differs from its reference")


def rounding(layer, x, d_in):
    """A bound on float32 rounding in a layer's outputs [T, d]: each step's products reach about
    d_in eps32 of |x_t| @ |W| (plus |W| of LSLSTM's state input, |s| < 1), summed in another
    order than the reference's (one matrix product over all steps, whose BLAS kernel differs
    between CPUs); the state carries them on (decays below 1), SRU's highway term times |x_t|.
    With |x| up to 1e19 here, that is far more than any rtol."""
    d = layer.U.shape[1] if hasattr(layer, "U") else layer.W.shape[1]
    shape, x = x.shape[:-1] + (d,), np.abs(x.reshape(-1, d_in))
    per_step = np.zeros(d)
    scale = np.zeros((d_in, d))
    for f in dataclasses.fields(layer):
        w = np.abs(np.asarray(getattr(layer, f.name), np.float64))
        if w.ndim == 2:   # [d_in (+ d), k d]: each of the k gates' columns
            scale += w[:d_in].reshape(d_in, -1, d).sum(axis=1)
            per_step += w[d_in:].sum(axis=0).reshape(-1, d).sum(axis=0)
    steps = (x @ scale + per_step) * 2 * (d_in + d) * EPS32
    highway = x.max(axis=1, keepdims=True, initial=0)
    return (np.cumsum(steps, axis=0) + steps * highway).reshape(shape)


# --- CPU generations ---------------------------------------------------------------------------------
class Generations:
    W = np.random.default_rng(0).standard_normal((20, 33)).astype(np.float32)
    X = np.random.default_rng(1).standard_normal(33).astype(np.float32)

    def case(self, rng):
        names = sorted(isa.GENERATIONS) + ["native", "pentium9", "", "x86-64 ", "znver99"]
        name = names[rng.integers(len(names))]
        if rng.random() < 0.5:
            return f"generation {name!r}", lambda: self.check(name)
        feats = frozenset(rng.choice(isa.SIMD_FEATURES + ("bogus",),
                                     int(rng.integers(0, 6)), replace=False).tolist())
        flags = ",".join(f"{'+-'[rng.integers(2)]}{f}" for f in sorted(feats))
        gen = jitvoc.Generation("custom", name or "x86-64", flags if rng.random() < 0.5 else "",
                                feats)
        return f"custom {gen}", lambda: self.check(gen)

    def check(self, gen):
        dtype = "int8"
        try:
            mv = jitvoc.build_matvec(self.W, dtype, cpu=gen)
            y = mv(self.X)
        except (UnsupportedCPU, jitvoc.ISAError):
            return
        want = matvec_quantized(mv.plan.w_codes, mv.plan.row_scale, self.X, mv.format_for(self.X))
        expect(np.array_equal(y, want), f"{mv.spec} differs from the reference")


TARGETS = {"model": ModelFiles, "mel": Mels, "audio": AudioFiles, "matvec": Matvec,
           "recurrence": Recurrence, "generation": Generations}


def main(target, seed, count, first=0):
    os.environ.setdefault("JITVOC_CACHE", os.path.join(WORK, "cache"))
    fuzzer = TARGETS[target]()
    for i in range(first, first + count):
        rng = np.random.default_rng([seed, i])
        description, run = fuzzer.case(rng)
        print(f"start {i} {description}", flush=True)
        try:
            run()
        except Failure as e:
            print(f"fail {i} {e}", flush=True)
            continue
        except Exception as e:  # any other exception is a finding
            if os.environ.get("JITVOC_FUZZ_TRACE"):
                traceback.print_exc()
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"fail {i} {type(e).__name__}: {str(e)[:200]} "
                  f"({os.path.basename(where.filename)}:{where.lineno})", flush=True)
            continue
        print(f"ok {i}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4
         else 0)
