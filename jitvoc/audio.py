"""Audio files in and out (soundfile; soxr for resampling).

Reading takes anything libsndfile reads (WAV of any common bit depth, FLAC, OGG, ...), mixes
several channels down to mono and resamples to the rate asked for, each change reported as a
note. Writing makes mono WAV, int16 PCM or float32 in [-1, 1], atomically (jitvoc.atomic).
The path "-" means stdin or stdout.
"""
import io
import os
import stat
import sys

import numpy as np

from .atomic import atomic_file
from .errors import InputError, JitvocError
from .optional import require

SUBTYPES = {"int16": "PCM_16", "float32": "FLOAT"}


def read_audio(path, sample_rate=None) -> tuple[np.ndarray, int, list[str]]:
    """(int16 mono samples, their rate, notes on what was changed) of an audio file or "-".

    With `sample_rate`, other rates are resampled to it (soxr, high quality)."""
    if path == "-":
        return decode_audio(sys.stdin.buffer.read(), "stdin", sample_rate)
    name = os.fspath(path)
    if not os.path.exists(name):
        raise JitvocError(f"{name}: no such file")
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise JitvocError(f"{name}: cannot read it: {e}") from None
    return decode_audio(data, name, sample_rate)


def decode_audio(data: bytes, name: str, sample_rate=None) -> tuple[np.ndarray, int, list[str]]:
    """read_audio for the bytes of an audio file; `name` names it in errors."""
    sf = require("soundfile", "reading and writing audio")
    source = io.BytesIO(data)
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as e:
        why = str(e).replace(repr(source), repr(name))   # name the file, not the buffer
        raise JitvocError(f"{name}: not a readable audio file ({why})") from None
    notes = []
    if data.shape[1] > 1:
        notes.append(f"mixed {data.shape[1]} channels down to mono")
    audio = data.mean(axis=1, dtype=np.float32)
    if sample_rate is not None and rate != sample_rate:
        if len(audio):
            audio = require("soxr", "resampling audio").resample(audio, rate, sample_rate, quality="HQ").astype(np.float32)
        notes.append(f"resampled from {rate} Hz to {sample_rate} Hz")
        rate = sample_rate
    return to_int16(audio), int(rate), notes


def to_int16(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] as int16 codes, rounded and saturated."""
    return np.clip(np.rint(audio * np.float32(32768)), -32768, 32767).astype(np.int16)


def check_output(path, inputs=()) -> None:
    """Refuse an output path that is not "-", a new path or a regular file, or that is one of
    `inputs` (the same file under any name)."""
    if path == "-":
        return
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        _check_output_folder(path)
        return
    if not stat.S_ISREG(st.st_mode):
        kind = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "a folder"
                if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device or special file")
        raise JitvocError(f"refusing to replace {path}: it is {kind}, not a regular file "
                          f"(use '-' for stdout)")
    for source in inputs:
        if source != "-" and os.path.exists(source) and os.path.samefile(path, source):
            raise JitvocError(f"refusing to write {path}: it is the input file {source}")


def _check_output_folder(path) -> None:
    """Refuse a new output path whose folder is missing or is not a folder, before any work."""
    folder = os.path.dirname(os.fspath(path)) or "."
    if not os.path.isdir(folder):
        why = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise JitvocError(f"cannot write {path}: {folder} {why}")


def make_output_folder(path, role: str) -> None:
    """Create the folder `path` (and its parents); refuse a path that exists and is not a
    folder, saying what the folder is for (`role`)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise JitvocError(f"{path} is not a folder: {role}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise JitvocError(f"cannot create the output folder {path}: {e}") from None


def write_audio(path, audio, sample_rate, sample_format="int16") -> None:
    """Write mono `audio` as WAV to `path` (atomically) or to stdout for "-": int16 input as
    16-bit PCM, or, with sample_format "float32", as float32 samples in [-1, 1]."""
    data = wav_bytes(audio, sample_rate, sample_format)
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_file(path, JitvocError) as f:
        f.write(data)


def wav_bytes(audio, sample_rate, sample_format="int16") -> bytes:
    """The WAV file that write_audio writes, as bytes."""
    audio = np.asarray(audio)
    if audio.dtype != np.int16 or audio.ndim != 1:
        raise InputError(f"audio must be 1-D int16, got {audio.dtype} {audio.shape}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if sample_format not in SUBTYPES:
        raise InputError(f"sample_format must be one of {tuple(SUBTYPES)}, got {sample_format!r}")
    data = audio if sample_format == "int16" else audio.astype(np.float32) / np.float32(32768)
    sf = require("soundfile", "reading and writing audio")
    buf = io.BytesIO()
    sf.write(buf, data, int(sample_rate), format="WAV", subtype=SUBTYPES[sample_format])
    return buf.getvalue()
