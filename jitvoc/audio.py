"""16-bit PCM mono WAV files (stdlib `wave`). No resampling, no channel mixing: a file that
is not 16-bit mono PCM is an error."""
import os
import wave

import numpy as np

from .atomic import atomic_file
from .errors import InputError, JitvocError


def read_wav(path) -> tuple:
    """(int16 [n] samples, sample rate) of a 16-bit PCM mono WAV file."""
    path = os.fspath(path)
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate, n = (w.getnchannels(), w.getsampwidth(), w.getframerate(),
                                        w.getnframes())
            if width != 2:
                raise JitvocError(f"{path}: {8 * width}-bit samples; jitvoc reads 16-bit PCM only")
            if channels != 1:
                raise JitvocError(f"{path}: {channels} channels; jitvoc reads mono files only")
            data = w.readframes(n)
    except FileNotFoundError:
        raise JitvocError(f"{path}: no such file") from None
    except (wave.Error, EOFError, OSError) as e:
        raise JitvocError(f"{path}: not a readable PCM WAV file "
                          f"({str(e) or type(e).__name__})") from None
    if len(data) != 2 * n:
        raise JitvocError(f"{path}: truncated: the header promises {n} samples, "
                          f"the file holds {len(data) // 2}")
    return np.frombuffer(data, "<i2").astype(np.int16), rate


def write_wav_atomic(path, audio, sample_rate) -> None:
    """Write int16 mono `audio` to `path`; a temporary file in the same directory replaces
    `path` only when complete, so an error or Ctrl-C never leaves a half-written file."""
    audio = np.asarray(audio)
    if audio.dtype != np.int16 or audio.ndim != 1:
        raise InputError(f"audio must be 1-D int16, got {audio.dtype} {audio.shape}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    with atomic_file(path, JitvocError) as f:
        with wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            w.writeframes(audio.astype("<i2").tobytes())
