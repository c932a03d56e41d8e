"""The log-mel spectrogram that conditions every jitvoc model (docs/model.md, "Mel spectrogram").

Frame `f` of an utterance is the `n_fft`-sample window centred on sample `f*hop + hop//2`, so a
frame lines up with the `hop` samples the vocoder generates from it.
"""
import functools

import numpy as np

from .blas import blas_threads
from .errors import InputError

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_CONFIG = {"n_fft": 1024, "hop_length": 200, "win_length": 800, "n_mels": 80,
                  "fmin": 40.0, "fmax": 8000.0, "log_floor": 1e-5}
_BLOCK_FRAMES = 2048  # frames per FFT batch: bounds memory for long audio


def mel_spectrogram(audio, sample_rate, config=None) -> np.ndarray:
    """Log-mel spectrogram of mono `audio`: float32 [F, n_mels], F = ceil(len(audio) / hop).

    `audio` is 1-D int16 (scaled by 1/32768) or float (used as is, nominally in [-1, 1]).
    `config` is a dict like a model's "mel" entry (`model.mel_config`); without one, the
    16 kHz default of docs/model.md is used and `sample_rate` must be 16000.
    """
    cfg = check_config(sample_rate, config)
    x = _check_audio(audio)
    hop, n_fft = cfg["hop_length"], cfg["n_fft"]
    n_frames = -(-len(x) // hop)
    x = np.pad(x, (0, n_frames * hop - len(x)))
    # Frame f covers padded samples [f*hop + hop//2, + n_fft): centred on f*hop + hop//2 in x.
    x = np.pad(x, (n_fft // 2, n_fft // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[hop // 2::hop][:n_frames]
    window = _window(cfg["win_length"], n_fft)
    fbank_t = _filterbank_t(sample_rate, n_fft, cfg["n_mels"], cfg["fmin"], cfg["fmax"])
    out = np.empty((n_frames, cfg["n_mels"]), np.float32)
    with blas_threads(1):   # two OpenBLAS threads: twice the CPU time, no faster (2 cores)
        for i in range(0, n_frames, _BLOCK_FRAMES):
            mag = np.abs(np.fft.rfft(frames[i:i + _BLOCK_FRAMES] * window, axis=1))
            out[i:i + _BLOCK_FRAMES] = np.log(np.maximum(mag @ fbank_t, cfg["log_floor"]))
    return out


@functools.lru_cache(maxsize=8)
def _filterbank_t(sample_rate, n_fft, n_mels, fmin, fmax) -> np.ndarray:
    """mel_filterbank transposed, made once per configuration (read-only)."""
    fbank_t = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T
    fbank_t.flags.writeable = False
    return fbank_t


def mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax) -> np.ndarray:
    """Slaney-style filterbank, float64 [n_mels, n_fft//2 + 1]: triangles equally spaced on the
    Slaney mel scale (linear below 1 kHz, logarithmic above), each of unit area in Hz."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))


_F_SP, _MIN_LOG_HZ, _LOGSTEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP


def _hz_to_mel(hz):
    hz = np.asarray(hz, np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz < _MIN_LOG_HZ, hz / _F_SP, log_part)


def _mel_to_hz(mel):
    mel = np.asarray(mel, np.float64)
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel < _MIN_LOG_MEL, mel * _F_SP, log_part)


def _window(win_length, n_fft) -> np.ndarray:
    """Periodic Hann window of `win_length`, zero-padded on both sides to `n_fft` (centred)."""
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(hann, (left, n_fft - win_length - left))


def _check_audio(audio) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim != 1:
        raise InputError(f"audio must be 1-D (mono samples), got shape {a.shape}")
    if a.size == 0:
        raise InputError("audio is empty")
    if a.dtype == np.int16:
        return a.astype(np.float64) / 32768.0
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"audio must be int16 or float, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise InputError("audio holds NaN or infinite samples")
    return a.astype(np.float64)


def check_config(sample_rate, config) -> dict:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if config is None:
        if sample_rate != DEFAULT_SAMPLE_RATE:
            raise InputError(f"the default mel config is for {DEFAULT_SAMPLE_RATE} Hz audio, got "
                             f"{sample_rate} Hz: pass the model's mel config (model.mel_config)")
        return DEFAULT_CONFIG
    missing = sorted(set(DEFAULT_CONFIG) - set(config))
    if missing:
        raise InputError(f"mel config lacks {', '.join(missing)}")
    if "sample_rate" in config and config["sample_rate"] != sample_rate:
        raise InputError(f"mel config is for {config['sample_rate']} Hz audio, "
                         f"got {sample_rate} Hz")
    cfg = dict(config)
    if not cfg["fmax"] <= sample_rate / 2:
        raise InputError(f"mel fmax {cfg['fmax']} Hz is above the Nyquist frequency "
                         f"{sample_rate / 2} Hz of {sample_rate} Hz audio (wrong sample rate?)")
    if not 0 <= cfg["fmin"] < cfg["fmax"]:
        raise InputError(f"mel fmin {cfg['fmin']} must be in [0, fmax {cfg['fmax']})")
    if not 0 < cfg["win_length"] <= cfg["n_fft"] or cfg["hop_length"] <= 0 or cfg["n_mels"] <= 0:
        raise InputError(f"mel config needs 0 < win_length <= n_fft, hop_length > 0 and "
                         f"n_mels > 0, got {cfg}")
    if not cfg["log_floor"] > 0:
        raise InputError(f"mel log_floor must be positive, got {cfg['log_floor']}")
    return cfg
