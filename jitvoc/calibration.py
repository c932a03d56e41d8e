"""The calibration step (a tool: it runs the NumPy oracle, which production code never imports).

The integer plans need max |input| of the matrices that read relu outputs (O2 and O4) for their
fixed-point formats. An exported model carries them in its meta (``quantization.
activation_ranges``, measured on training audio); for any other model, `calibrate` measures them
on a short teacher-forced run of the float oracle over a synthetic chirp, with margin, and
returns the model with them in its meta, which jitvoc.load and `jitvoc kernels` then read as data:

    model = jitvoc.calibrate(jitvoc.random_model(hidden=64))
    voc = jitvoc.load(model, dtype="int8")
"""
from __future__ import annotations

import numpy as np

from .config import debug
from .engine_jit import RELU_READERS, calibration_of
from .mel import mel_spectrogram
from .model import Model
from .wavernn import BY_NAME

CALIBRATION_FRAMES = 16  # frames of a synthetic chirp for models without a calibration,
CALIBRATION_SAMPLES = 4800  # fewer (2 at least) where that many frames exceed these samples
MARGIN = 1.5   # the measured peaks times this: the chirp is not the model's real input


def calibrate(model: Model) -> Model:
    """`model` itself if it carries activation ranges for every relu reader, else a copy with
    them measured (once: the copy carries them) in meta quantization.activation_ranges."""
    if calibration_of(model) is not None:
        return model
    debug(1, "model has no calibration: measuring relu ranges on a synthetic signal")
    meta = model.meta   # a copy
    q = meta.setdefault("quantization", {})
    q["activation_ranges"] = {**q.get("activation_ranges", {}),
                              **{name: {"max": peak} for name, peak in _measure(model).items()}}
    return Model(model.weights, model.masks, meta)


def _measure(model) -> dict:
    """The peaks of the relu readers' inputs on a short teacher-forced oracle run over a chirp,
    times MARGIN. The oracle is imported here: a calibrated model (the shipped ones) needs
    none of it."""
    from .reference.vocoder import teacher_forced_states
    sr, hop = model.sample_rate, model.hop_length
    frames = min(CALIBRATION_FRAMES, max(2, CALIBRATION_SAMPLES // hop))   # bounded time
    t = np.arange(frames * hop) / sr
    audio = (8000 * np.sin(2 * np.pi * (100 + 3000 * t) * t)).astype(np.int16)
    h = teacher_forced_states(model, mel_spectrogram(audio, sr, model.mel_config), audio)
    return {m: float(_output(model, h, BY_NAME[BY_NAME[m].reads]).max()) * MARGIN
            for m in RELU_READERS}


def _output(model, h, matrix) -> np.ndarray:
    """What a matrix that reads the state computes over the states h: bias added, relu'd if it
    has one."""
    w, half = model.weights, model.hidden // 2
    lo = matrix.state_offset(model.hidden)
    x = h[:, lo:lo + half] if matrix.reads_half else h
    z = x @ w[matrix.name].T + w[matrix.bias]
    return np.maximum(z, 0) if matrix.relu else z
