"""The user-facing vocoder: mel in, int16 audio out, one-shot or streamed.

The conditioning K is computed here, in NumPy, in fixed blocks of COND_BLOCK frames aligned to
frame 0 (jitvoc.engine.conditioning), for every backend and both paths: `stream` and
`synthesize` therefore feed the engine the same K, bit for bit, however the mel is chunked.
Its matrix products run on one BLAS thread: a second OpenBLAS thread, once woken, spun on the
other core through the whole synthesis (shipped model, int8: 3.9x realtime against 8.1x with
one thread, the same samples).
"""
import hashlib
import os
import threading

import numpy as np

from . import cache, pretrained
from .errors import InputError
from .blas import blas_threads
from .jit import code_fingerprint
from .model import Model, compact, from_compact, load_model
from .engine import (MAX_STREAMS, GenState, blockwise_conditioning, conditioning,
                     receptive_radius)

COND_BLOCK = 16  # frames of K per block; streaming latency is COND_BLOCK + look-ahead frames
DEFAULT_BATCH = 8    # streams per step of synthesize_batch and synthesize_folded
DEFAULT_OVERLAP = 4  # frames of overlap of synthesize_folded: 2 of warm-up, 2 of crossfade
PIECE_FRAMES = 128   # frames per engine call when synthesize reports progress
FIRST_SHARE = 16     # synthesize: 1/16 of K first (the engine takes ~24x the conditioning)
DTYPES = ("int8", "int16", "float32")
MEL_LAYOUTS = ("frames-mels", "mels-frames")   # jitvoc's [frames, n_mels]; librosa's transpose
MAX_CACHED_FILE = 1 << 28   # bytes: a larger model file is read by load_model alone, uncached


def load(path_or_model, cpu=None, dtype=None, engine=None, background=False) -> "Vocoder":
    """A Vocoder for a model: a file path, an installed model's name (jitvoc.pretrained, e.g.
    "multivoice_wavernn_16k"), or a Model.

    It runs the JIT engine (jitvoc.engine_jit.JitEngine) with `dtype` ("int8" when None, or
    "int16", "float32") on `cpu` (a CPU generation name; None: this host). `engine` is another
    engine class to run instead, given the model, cpu and dtype (its default when None), e.g.
    the float32 NumPy oracle jitvoc.reference.vocoder.ReferenceEngine (slow; for tests).

    With `background`, load returns once the model is read, and the engine is built (read from
    the cache, or compiled) on a thread while the caller goes on, reading its input and
    computing the mel, say (what `jitvoc synth` and `resynth` do). An error in building it (a
    CPU that cannot run the code, an integer dtype for a model without calibration, ...) is
    then raised, the same exception, by the first use that needs the engine: synthesize and
    the other syntheses, backend, dtype, cpu. A JIT engine built so starts quickly where its
    loop is not cached yet (JitEngine's quick_start: the first calls may run code compiled
    without LLVM's optimisation pipeline, the same samples, until the optimised loop is
    cached).
    """
    if engine is not None and not (isinstance(engine, type) and hasattr(engine, "generate")):
        raise InputError(f"engine must be an engine class (such as jitvoc.reference.vocoder."
                         f"ReferenceEngine), got {engine!r}")
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if isinstance(path_or_model, Model):
        model = path_or_model
    elif isinstance(path_or_model, (str, os.PathLike)):
        model = read_model(path_or_model)
    else:
        raise InputError(f"expected a model file path, an installed model name or a Model, "
                         f"got {type(path_or_model).__name__}")
    options = {} if dtype is None else {"dtype": dtype}
    if engine is None:
        from .engine_jit import JitEngine as engine
        options["quick_start"] = background

    def build():
        return engine(model, cpu=cpu, **options)
    return Vocoder(model, _InThread(build, "jitvoc-load") if background else build())


def read_model(path) -> Model:
    """jitvoc.model.load_model(path) (a file or an installed model's name) through the cache.

    The file is hashed (sha256, read in pieces: no copy of it is kept); a cache entry for
    exactly those bytes (and the code that reads models), verified as jitvoc.cache verifies
    every entry, gives the Model back from its compact form (model.compact) without
    decompressing, digesting and validating the arrays again: 45 of the 65 ms that load_model
    took for the shipped model. Else the file is read whole, and the validated Model parsed
    from those bytes is stored under their digest."""
    path = os.fspath(pretrained.resolve(path))
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_CACHED_FILE:
                return load_model(path)
            payload = cache.read(*_model_entry(hashlib.file_digest(f, "sha256")))
        if payload is not None:
            return from_compact(payload)
        with open(path, "rb") as f:   # the bytes parsed are the bytes of the key
            data = f.read(MAX_CACHED_FILE + 1)
    except OSError:
        return load_model(path)   # which says what is wrong with the file
    if len(data) > MAX_CACHED_FILE:   # it grew
        return load_model(path)
    model = load_model(path, data)
    cache.write(*_model_entry(hashlib.sha256(data)), compact(model))
    return model


def _model_entry(file_hash) -> tuple:
    """(entry name, key) of the cached Model of the model file with this sha256."""
    key = b"\0".join([b"model", file_hash.hexdigest().encode(),
                      code_fingerprint(Model.__module__).encode()])
    return f"model-{hashlib.sha256(key).hexdigest()[:20]}.pkl", key


class Vocoder:
    """Synthesis with one model and one engine. Attributes: model, sample_rate, n_mels,
    hop_length, dtype, cpu (None for the reference engine), backend (the engine's: "jit",
    "reference")."""

    def __init__(self, model: Model, engine):
        """`engine`: the engine, or an _InThread building it (load(background=True))."""
        self.model, self._built = model, engine
        self.sample_rate, self.n_mels = model.sample_rate, model.n_mels
        self.hop_length = model.hop_length
        self._batch_engines = {}   # B -> the batched engine (synthesize_batch)

    def ready(self) -> "Vocoder":
        """This vocoder once its engine is built (load(background=True): waits for it, or
        raises its builder's error)."""
        if isinstance(self._built, _InThread):
            self._built = self._built.result()
        return self

    @property
    def _engine(self):
        return self.ready()._built

    @property
    def backend(self) -> str:
        return self._engine.backend

    @property
    def dtype(self) -> str:
        return self._engine.dtype

    @property
    def cpu(self):
        return self._engine.cpu

    def __repr__(self):
        return (f"Vocoder({self.model!r}, backend={self.backend!r}, dtype={self.dtype!r}, "
                f"cpu={self.cpu!r})")

    def synthesize(self, mel, seed=0, layout="frames-mels", progress=None) -> np.ndarray:
        """int16 audio [F * hop] for a log-mel [F, n_mels] (jitvoc.mel_spectrogram).

        layout "mels-frames" takes the transpose, [n_mels, F], as librosa and torchaudio lay
        out spectrograms. In either layout a 3-D array is a batch of equal-length mels:
        the result is then [batch, F * hop], every item drawn with `seed`. `progress`, if
        given, is called with the number of samples each piece adds (the same samples).

        The JIT engine gets the K blocks of `stream` in two calls: the first frames', while a
        thread computes the rest of K, then the rest (one call per block ran 4% slower: the
        conditioning between calls evicted the weights from L2), or with `progress` one call
        per PIECE_FRAMES frames; the reference engine holds k_t for every sample of a call, so
        it goes block by block, as `stream`."""
        mel = np.asarray(mel)
        if mel.ndim == 3:
            if len(mel) == 0:
                raise InputError("the batch of mels is empty")
            return np.stack([self.synthesize(m, seed, layout, progress) for m in mel])
        mel = self._check_mel(self.frames_first(mel, layout))
        pieces = []
        for piece in self._pieces(mel, seed, in_pieces=progress is not None):
            pieces.append(piece)
            if progress is not None:
                progress(len(piece))
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _pieces(self, mel, seed, in_pieces: bool):
        """The samples of a checked mel: the reference engine's by `stream`'s blocks, the JIT
        engine's in a first piece (_first_piece) and one call for the rest or, `in_pieces`,
        one call per PIECE_FRAMES frames."""
        if self.backend != "jit":
            yield from self.stream([mel], seed)
            return
        hop, n = self.hop_length, len(mel) * self.hop_length
        state = GenState.initial(self.model.hidden)
        K, first = self._first_piece(mel, seed, state)
        if len(first):
            yield first
        step = PIECE_FRAMES * hop if in_pieces else n
        for t0 in range(state.t, n, step):
            yield self._engine.generate(K[t0 // hop:], t0, min(step, n - t0), state, seed)

    def _first_piece(self, mel, seed, state) -> tuple:
        """(K of the whole mel, as _conditioning computes it; the samples of its first frames,
        `state` advanced past them). A mel of two blocks or more has its first blocks' K
        computed here (1/FIRST_SHARE of them, at least one) and their frames generated (the
        native loop releases the GIL) while a thread computes the rest of K: the
        conditioning off the critical path, the same bits. Both under one BLAS thread limit
        (a process-wide setting: entered once, left when both are done)."""
        if len(mel) < 2 * COND_BLOCK:
            return self._conditioning(mel), np.empty(0, np.int16)
        ahead = max(1, len(mel) // COND_BLOCK // FIRST_SHARE)
        K = np.empty((len(mel) + 1, 3 * self.model.hidden), np.float32)
        with blas_threads(1):
            rest = _InThread(lambda: blockwise_conditioning(self.model, mel, COND_BLOCK, K,
                                                            first=ahead), "jitvoc-conditioning")
            try:
                blockwise_conditioning(self.model, mel, COND_BLOCK, K, stop=ahead)
                first = self._engine.generate(K, 0, (ahead * COND_BLOCK - 1) * self.hop_length,
                                              state, seed)
            finally:
                rest.join()
        rest.result()
        K[-1] = K[-2]
        return K, first

    def synthesize_batch(self, mels, seeds=0, batch=DEFAULT_BATCH,
                         layout="frames-mels") -> list:
        """One int16 array per mel of `mels` (a sequence of log-mels, each [F_i, n_mels]; any
        lengths), each exactly `synthesize(mels[i], seeds[i], layout)`.

        `seeds`: one int for every mel, or one per mel. `batch`: B, the streams generated
        together by the batched engine (compiled once per B, on first use): every weight panel
        is loaded once per step for all B. The conditioning runs per mel; the mels are then
        taken longest first, B at a time, so that the streams of a batch end close together
        (a finished stream leaves its batch; its lane idles until the batch ends). batch=1, or
        the reference backend, runs `synthesize` per mel."""
        _check_batch(batch)
        mels = [self._check_mel(self.frames_first(m, layout)) for m in mels]
        seeds = self._seeds(seeds, len(mels))
        if self.backend != "jit" or batch == 1 or len(mels) <= 1:
            return [self.synthesize(m, sd) for m, sd in zip(mels, seeds)]
        Ks = [self._conditioning(m) for m in mels]
        lengths = [len(m) * self.hop_length for m in mels]
        return self._generate_batches(Ks, lengths, seeds, batch)

    def synthesize_folded(self, mel, seed=0, batch=DEFAULT_BATCH, segment_frames=None,
                          overlap_frames=DEFAULT_OVERLAP, layout="frames-mels") -> np.ndarray:
        """int16 audio [F * hop] of one long mel, generated as overlapping segments in one
        batch (opt-in: it trades a little quality for speed; `synthesize` is the exact one).

        The mel's conditioning is computed whole; segment j owns frames [j·S, (j+1)·S)
        (S = segment_frames; by default the mel split into `batch` segments) and starts
        `overlap_frames` (O) early, from silence with seed + j. Where segment j+1 overlaps
        segment j's end, its first O/2 frames (the warm-up from silence) are dropped and the
        next O − O/2 frames crossfade at equal power (gains √(½(1 ± t)), squares summing to 1),
        as fatchord's WaveRNN folds: no click (tests/test_batch.py), but each seam is the
        meeting of two streams that did not hear each other: not the samples of one
        stream."""
        _check_batch(batch)
        mel = self._check_mel(self.frames_first(mel, layout))
        if not (isinstance(overlap_frames, int) and overlap_frames >= 2):
            raise InputError(f"overlap_frames must be an int >= 2, got {overlap_frames!r}")
        seg = segment_frames or max(-(-len(mel) // batch), 2 * overlap_frames)
        if not (isinstance(seg, int) and seg >= 2 * overlap_frames):
            raise InputError(f"segment_frames must be an int >= 2 * overlap_frames "
                             f"({2 * overlap_frames}), got {segment_frames!r}")
        K = self._conditioning(mel)
        spans = fold_spans(len(mel), seg, overlap_frames)
        hop = self.hop_length
        audio = self._generate_batches([K[a:e + 1] for a, e in spans],
                                       [(e - a) * hop for a, e in spans],
                                       [(int(seed) + j) & 0xFFFFFFFF for j in range(len(spans))],
                                       batch)
        return crossfade_unfold(audio, [a * hop for a, _ in spans], overlap_frames * hop,
                                len(mel) * hop)

    def _conditioning(self, mel) -> np.ndarray:
        """K of a whole mel, as synthesize feeds the JIT engine: F + 1 rows (K_F := K_{F-1}),
        the bits of `stream`'s blocks, computed together (28 -> 14 ms of CPU for 5.3 s of
        the shipped model: bench/README.md)."""
        K = np.empty((len(mel) + 1, 3 * self.model.hidden), np.float32)
        with blas_threads(1):
            blockwise_conditioning(self.model, mel, COND_BLOCK, K)
        K[-1] = K[-2]
        return K

    def _generate_batches(self, Ks, lengths, seeds, batch) -> list:
        """The streams (K, length, seed) generated B = `batch` at a time, longest first."""
        if batch == 1 or self.backend != "jit" or len(Ks) == 1:
            return [self._engine.generate(K, 0, n, GenState.initial(self.model.hidden), sd)
                    for K, n, sd in zip(Ks, lengths, seeds)]
        engine = self._batch_engine(batch)
        order = sorted(range(len(Ks)), key=lambda j: -lengths[j])
        out = [None] * len(Ks)
        for g in range(0, len(order), batch):
            group = order[g:g + batch]
            states = [GenState.initial(self.model.hidden) for _ in group]
            for j, a in zip(group, engine.generate_batch([Ks[j] for j in group],
                                                         [lengths[j] for j in group], states,
                                                         [seeds[j] for j in group])):
                out[j] = a
        return out

    def prepare_batch(self, batch: int) -> "Vocoder":
        """Build now the engine that synthesize_batch(..., batch=B) runs (it is built at its
        first use otherwise), e.g. before forking workers that are to inherit it."""
        _check_batch(batch)
        if batch > 1 and self.backend == "jit":
            self._batch_engine(batch)
        return self

    def _batch_engine(self, batch):
        """The batched engine for B = `batch` streams (compiled, or loaded from the cache, on
        first use)."""
        if batch not in self._batch_engines:
            from .engine_jit import JitEngine
            e = self._engine
            self._batch_engines[batch] = JitEngine(self.model, cpu=e.gen, dtype=e.dtype,
                                                   vectors=batch)
        return self._batch_engines[batch]

    @staticmethod
    def _seeds(seeds, n) -> list:
        if np.ndim(seeds) == 0:
            return [seeds] * n
        seeds = list(seeds)
        if len(seeds) != n:
            raise InputError(f"seeds must be one int or one per mel: {len(seeds)} seeds for "
                             f"{n} mels")
        return seeds

    def frames_first(self, mel, layout) -> np.ndarray:
        """`mel` in jitvoc's [frames, n_mels] layout, given in `layout` (MEL_LAYOUTS)."""
        if layout not in MEL_LAYOUTS:
            raise InputError(f"layout must be one of {MEL_LAYOUTS}, got {layout!r}")
        mel = np.asarray(mel)
        if layout == "frames-mels":
            return mel
        if mel.ndim != 2 or mel.shape[0] != self.n_mels:
            raise InputError(f"a mels-frames mel must be [{self.n_mels}, frames], "
                             f"got shape {mel.shape}")
        return mel.T

    def stream(self, mel_chunks, seed=0):
        """Yield int16 chunks for an iterable of mel chunks [F_i, n_mels] (F_i may be 0).

        Concatenated, the chunks are exactly `synthesize(concatenated mel, seed)`. Audio of a
        frame is held back until the frames its conditioning looks ahead to have arrived
        (COND_BLOCK + receptive radius + 1 frames at most) or the iterator ends.
        """
        cond = _Conditioner(self.model)
        state = GenState.initial(self.model.hidden)
        pending = np.empty((0, 3 * self.model.hidden), np.float32)  # K rows from state.t's frame

        def generate(final):
            nonlocal pending
            for block in cond.blocks(final):
                pending = np.concatenate([pending, block])
                if final and cond.rows_done == cond.n_frames:  # K_F := K_{F-1}
                    pending = np.concatenate([pending, pending[-1:]])
                n_samples = (len(pending) - 1) * self.hop_length
                yield self._engine.generate(pending, state.t, n_samples, state, seed)
                pending = pending[-1:]

        for chunk in mel_chunks:
            cond.push(self._check_mel(chunk, allow_empty=True))
            yield from generate(final=False)
        if cond.n_frames == 0:
            raise InputError("mel is empty (0 frames)")
        yield from generate(final=True)

    def teacher_forced(self, audio, mel) -> np.ndarray:
        """P(c_t), P(f_t) given the true previous samples: float32 [T, 2, 256] for int16
        `audio` of T samples, (F - 1) * hop < T <= F * hop, and its log-mel [F, n_mels]."""
        mel = self._check_mel(mel)
        audio = np.asarray(audio)
        if audio.dtype != np.int16 or audio.ndim != 1:
            raise InputError(f"audio must be 1-D int16, got {audio.dtype} {audio.shape}")
        hop = self.hop_length
        if not (len(mel) - 1) * hop < len(audio) <= len(mel) * hop:
            raise InputError(f"{len(audio)} samples do not match {len(mel)} mel frames of "
                             f"hop {hop}")
        cond = _Conditioner(self.model)
        cond.push(mel)
        K = np.concatenate(list(cond.blocks(final=True)))
        return self._engine.teacher_forced(np.concatenate([K, K[-1:]]), audio)

    def _check_mel(self, mel, allow_empty=False) -> np.ndarray:
        mel = np.asarray(mel)
        if mel.ndim != 2 or mel.shape[1] != self.n_mels:
            raise InputError(f"mel must be [frames, {self.n_mels}], got shape {mel.shape}")
        if not np.issubdtype(mel.dtype, np.floating):
            raise InputError(f"mel must be a float array, got dtype {mel.dtype}")
        if len(mel) == 0 and not allow_empty:
            raise InputError("mel is empty (0 frames)")
        with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
            mel = mel.astype(np.float32)
        if not np.isfinite(mel).all():
            raise InputError("mel holds NaN or infinite values")
        return mel


class _InThread(threading.Thread):
    """fn() on a thread of its own; result() waits for it and returns its value, or raises
    the exception it raised (the same object: a jitvoc error stays one)."""

    def __init__(self, fn, name: str):
        super().__init__(name=name, daemon=True)
        self._fn, self._value, self._error = fn, None, None
        self.start()

    def run(self):
        try:
            self._value = self._fn()
        except BaseException as e:   # handed to the waiting thread by result()
            self._error = e

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _check_batch(batch) -> None:
    if not (isinstance(batch, int) and 1 <= batch <= MAX_STREAMS):
        raise InputError(f"batch must be an int from 1 to {MAX_STREAMS}, got {batch!r}")


def fold_spans(frames: int, segment: int, overlap: int) -> list:
    """[(first, end)) frames of each segment of Vocoder.synthesize_folded: segment j owns
    [j·segment, (j+1)·segment) and starts `overlap` frames early (j > 0)."""
    return [(max(0, a - overlap), min(frames, a + segment)) for a in range(0, frames, segment)]


def crossfade_unfold(segments, starts, overlap: int, total: int) -> np.ndarray:
    """The segments (int16, segment j from sample starts[j]) joined: over each overlap of
    `overlap` samples, the next segment's first half is dropped and its second half
    crossfades in at equal power (see Vocoder.synthesize_folded)."""
    out = np.zeros(total, np.float64)
    silence = overlap // 2
    t = np.linspace(-1.0, 1.0, overlap - silence)
    fade_in, fade_out = np.sqrt(0.5 * (1 + t)), np.sqrt(0.5 * (1 - t))
    for j, (seg, a) in enumerate(zip(segments, starts)):
        seg = seg.astype(np.float64)
        if j == 0:
            out[a:a + len(seg)] = seg
            continue
        fade = slice(a + silence, a + overlap)
        out[fade] = out[fade] * fade_out + seg[silence:overlap] * fade_in
        out[a + overlap:a + len(seg)] = seg[overlap:]
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


class _Conditioner:
    """Mel frames in, K rows out, in blocks [b * COND_BLOCK, (b + 1) * COND_BLOCK) computed
    only once every frame they depend on is known (or the mel has ended).

    Only a window of frames is kept: those from `first` = rows_done − radius on, which the rows
    still to compute can read; so a stream of any length takes bounded memory. Conditioning a
    window from frame `first` gives the same bits as the whole mel: the rows depend only on the
    frames within the radius, and the window still starts at frame 0 while rows_done < radius.
    """

    def __init__(self, model):
        self.model, self.radius = model, receptive_radius(model)
        self._mel = np.empty((COND_BLOCK, model.n_mels), np.float32)
        self.n_frames, self.rows_done = 0, 0  # frames received, rows of K computed
        self.first = 0                        # the frame at self._mel[0]

    def push(self, chunk):
        if self.n_frames + len(chunk) - self.first > len(self._mel):
            self._drop_used_frames()
        held = self.n_frames - self.first
        if held + len(chunk) > len(self._mel):  # grow geometrically
            grown = np.empty((2 * (held + len(chunk)), self.model.n_mels), np.float32)
            grown[:held] = self._mel[:held]
            self._mel = grown
        self._mel[held:held + len(chunk)] = chunk
        self.n_frames += len(chunk)

    def _drop_used_frames(self):
        keep = max(self.first, self.rows_done - self.radius)
        held = self.n_frames - keep
        self._mel[:held] = self._mel[keep - self.first:self.n_frames - self.first]
        self.first = keep

    def blocks(self, final):
        """Yield the K blocks that can be computed now; with `final`, all that remain."""
        while self.rows_done < self.n_frames:
            start, stop = self.rows_done, self.rows_done + COND_BLOCK
            if not final and stop + self.radius > self.n_frames:
                return
            self.rows_done = stop = min(stop, self.n_frames)
            with blas_threads(1):
                block = conditioning(self.model, self._mel[:self.n_frames - self.first],
                                     start - self.first, stop - self.first)
            yield block
