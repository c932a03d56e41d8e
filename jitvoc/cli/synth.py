"""`jitvoc synth [MODEL] MEL.npy -o out.wav` and `jitvoc resynth [MODEL] in.wav -o out.wav`
(MODEL: a file or an installed model's name; default: the installed default model)."""
import os
import sys
import time

import numpy as np

from .. import pretrained
from ..audio import read_wav, write_wav_atomic
from ..errors import JitvocError
from ..mel import mel_spectrogram
from ..vocoder import BACKENDS, DTYPES, load

CHUNK_FRAMES = 16  # mel frames streamed at a time; the progress bar moves per chunk


def register(sub) -> None:
    for name, func, summary, input_help in (
            ("synth", _synth, "vocode a log-mel spectrogram (.npy) into a WAV file",
             "log-mel spectrogram, float [frames, n_mels] (.npy, from jitvoc.mel_spectrogram)"),
            ("resynth", _resynth, "re-synthesize a WAV file through its log-mel spectrogram",
             "16-bit mono WAV at the model's sample rate")):
        p = sub.add_parser(name, help=summary, description=summary)
        p.add_argument("model", nargs="?", default=pretrained.DEFAULT,
                       help=f"model file (.npz) or installed model name (`jitvoc models`; "
                            f"default {pretrained.DEFAULT})")
        p.add_argument("input", help=input_help)
        p.add_argument("-o", "--output", required=True, help="output WAV file (written atomically)")
        p.add_argument("--cpu", help="CPU generation to compile for (default: this host)")
        p.add_argument("--dtype", choices=DTYPES,
                       help="arithmetic of the JIT engine (default int8); reference: float32 only")
        p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
        p.add_argument("--backend", choices=BACKENDS, default="jit",
                       help="jit (default) or reference (slow float32 NumPy oracle)")
        p.set_defaults(func=func)


def _synth(args) -> int:
    vocoder = load(args.model, cpu=args.cpu, dtype=args.dtype, backend=args.backend)
    mel = _read_mel(args.input)
    _vocode(vocoder, mel, args, n_samples=len(mel) * vocoder.hop_length)
    return 0


def _resynth(args) -> int:
    vocoder = load(args.model, cpu=args.cpu, dtype=args.dtype, backend=args.backend)
    audio, rate = read_wav(args.input)
    if rate != vocoder.sample_rate:
        raise JitvocError(f"{args.input} is {rate} Hz but the model is for "
                          f"{vocoder.sample_rate} Hz; resample it first (jitvoc does not)")
    if len(audio) == 0:
        raise JitvocError(f"{args.input} holds no samples")
    mel = mel_spectrogram(audio, rate, vocoder.model.mel_config)
    _vocode(vocoder, mel, args, n_samples=len(audio))  # trimmed to the input's length
    return 0


def _vocode(vocoder, mel, args, n_samples) -> None:
    """Stream `mel` through `vocoder`, write the first `n_samples` samples, report timing."""
    chunks = (mel[i:i + CHUNK_FRAMES] for i in range(0, len(mel), CHUNK_FRAMES))
    progress = _Progress(len(mel) * vocoder.hop_length)
    start = time.perf_counter()
    pieces = []
    try:
        for piece in vocoder.stream(chunks, seed=args.seed):
            pieces.append(piece)
            progress.update(len(piece))
    finally:
        progress.close()
    wall = time.perf_counter() - start
    audio = np.concatenate(pieces)[:n_samples]
    write_wav_atomic(args.output, audio, vocoder.sample_rate)
    duration = len(audio) / vocoder.sample_rate
    print(f"wrote {os.path.abspath(args.output)}: {duration:.2f} s of audio at "
          f"{vocoder.sample_rate} Hz, synthesized in {wall:.2f} s = {duration / wall:.1f}x "
          f"realtime (real-time factor {wall / duration:.3f}; {args.backend} backend, "
          f"{vocoder.dtype}{'' if vocoder.cpu is None else ', cpu ' + str(vocoder.cpu)})")


def _read_mel(path) -> np.ndarray:
    try:
        mel = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise JitvocError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        raise JitvocError(f"{path}: not a readable .npy array: {e}") from None
    if not isinstance(mel, np.ndarray):
        raise JitvocError(f"{path}: an .npz archive; expected one .npy array")
    return mel


class _Progress:
    """A one-line progress bar on stderr, shown only on a terminal and after the first second."""

    def __init__(self, total, out=None):
        out = sys.stderr if out is None else out
        self.total, self.done, self.out = max(total, 1), 0, out
        self.start = self.last = time.perf_counter()
        self.enabled, self.shown = out.isatty(), False

    def update(self, n) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and now - self.start > 1.0 and (now - self.last > 0.1 or
                                                        self.done >= self.total):
            frac = min(self.done / self.total, 1.0)
            self.out.write(f"\r[{'#' * int(30 * frac):<30}] {100 * frac:5.1f}%  "
                           f"{now - self.start:.0f} s")
            self.out.flush()
            self.last, self.shown = now, True

    def close(self) -> None:
        if self.shown:
            self.out.write("\n")
            self.out.flush()
