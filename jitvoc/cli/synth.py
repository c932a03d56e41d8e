"""`jitvoc synth [MODEL] MEL.npy -o out.wav` and `jitvoc resynth [MODEL] in.wav -o out.wav`
(MODEL: a file or an installed model's name; default: the installed default model)."""
import io
import logging
import sys
import time

import numpy as np

from .. import npy, pretrained
from ..audio import SUBTYPES, check_output, read_audio, write_audio
from ..errors import JitvocError
from ..mel import mel_spectrogram
from ..progress import progress_bar
from ..vocoder import BACKENDS, DTYPES, MEL_LAYOUTS, load

CHUNK_FRAMES = 16  # mel frames streamed at a time; the progress bar moves per chunk
log = logging.getLogger("jitvoc")

SYNTH = ("Vocode a log-mel spectrogram into a mono WAV file. The spectrogram is a .npy array "
         "of float log-mels as jitvoc.mel_spectrogram computes them, [frames, n_mels] by "
         "default; --mel-layout mels-frames takes librosa's and torchaudio's [n_mels, frames].")
RESYNTH = ("Re-synthesize an audio file through its log-mel spectrogram: a round trip that "
           "shows what the model makes of real audio. Any format soundfile reads is accepted "
           "(WAV of any common bit depth, FLAC, OGG); several channels are mixed down and other "
           "sample rates resampled to the model's, each with a one-line note.")


def register(sub) -> None:
    for name, func, summary, description, input_help in (
            ("synth", _synth, "vocode a log-mel spectrogram (.npy) into a WAV file", SYNTH,
             "the log-mel spectrogram (.npy), or '-' to read it from stdin"),
            ("resynth", _resynth, "re-synthesize an audio file through its log-mel spectrogram",
             RESYNTH, "the audio file, or '-' to read it from stdin")):
        p = sub.add_parser(name, help=summary, description=description)
        p.add_argument("model", nargs="?", default=pretrained.DEFAULT,
                       help=f"the model file (.npz) or an installed model's name (`jitvoc "
                            f"models`; default {pretrained.DEFAULT})")
        p.add_argument("input", help=input_help)
        p.add_argument("-o", "--output", required=True,
                       help="the WAV file to write, or '-' for stdout. A file is written "
                            "atomically and only a regular file other than the input is "
                            "replaced")
        p.add_argument("--cpu", help="the CPU generation to compile for (default: this host)")
        p.add_argument("--dtype", choices=DTYPES,
                       help="the arithmetic of the JIT engine (default int8); the reference "
                            "backend takes float32 only")
        p.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")
        p.add_argument("--backend", choices=BACKENDS, default="jit",
                       help="jit (the default) or reference (the slow float32 NumPy oracle)")
        p.add_argument("--format", choices=tuple(SUBTYPES), default="int16",
                       help="the output samples: 16-bit PCM (int16, the default) or float32 "
                            "in [-1, 1]")
        if name == "synth":
            p.add_argument("--mel-layout", choices=MEL_LAYOUTS, default=MEL_LAYOUTS[0],
                           help="frames-mels: [frames, n_mels] (the default); mels-frames: "
                                "[n_mels, frames] as librosa and torchaudio return it")
        p.set_defaults(func=func)


def _synth(args) -> int:
    check_output(args.output, [args.input])
    vocoder = load(args.model, cpu=args.cpu, dtype=args.dtype, backend=args.backend)
    mel = vocoder.frames_first(_read_mel(args.input), args.mel_layout)
    _vocode(vocoder, mel, args, n_samples=len(mel) * vocoder.hop_length)
    return 0


def _resynth(args) -> int:
    check_output(args.output, [args.input])
    vocoder = load(args.model, cpu=args.cpu, dtype=args.dtype, backend=args.backend)
    audio, rate, notes = read_audio(args.input, vocoder.sample_rate)
    if notes:
        log.info(f"note: {args.input}: {', '.join(notes)}")
    if len(audio) == 0:
        raise JitvocError(f"{args.input} holds no samples")
    mel = mel_spectrogram(audio, rate, vocoder.model.mel_config)
    _vocode(vocoder, mel, args, n_samples=len(audio))  # trimmed to the input's length
    return 0


def _vocode(vocoder, mel, args, n_samples) -> None:
    """Stream `mel` through `vocoder`, write the first `n_samples` samples, report timing."""
    chunks = (mel[i:i + CHUNK_FRAMES] for i in range(0, len(mel), CHUNK_FRAMES))
    start = time.perf_counter()
    pieces = []
    with progress_bar(len(mel) * vocoder.hop_length, unit="sample", unit_scale=True) as bar:
        for piece in vocoder.stream(chunks, seed=args.seed):
            pieces.append(piece)
            bar.update(len(piece))
    wall = time.perf_counter() - start
    audio = np.concatenate(pieces)[:n_samples]
    write_audio(args.output, audio, vocoder.sample_rate, args.format)
    duration = len(audio) / vocoder.sample_rate
    where = "stdout" if args.output == "-" else args.output
    log.info(f"wrote {where}: {duration:.2f} s of audio at {vocoder.sample_rate} Hz "
             f"({args.format}), synthesized in {wall:.2f} s = {duration / wall:.1f}x realtime "
             f"(real-time factor {wall / duration:.3f}; {args.backend} backend, "
             f"{vocoder.dtype}{'' if vocoder.cpu is None else ', cpu ' + str(vocoder.cpu)})")


def _read_mel(path) -> np.ndarray:
    """The .npy array in `path` (or stdin), its header checked before anything is allocated."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise JitvocError(f"{path}: no such file") from None
    except OSError as e:
        raise JitvocError(f"{path}: cannot read it: {e}") from None
    stream = io.BytesIO(data)
    try:
        header = npy.read_header(stream)
        return npy.array_from(data[header.offset:], header)
    except npy.NpyError as e:
        raise JitvocError(f"{path}: not a readable .npy array: {e}") from None
