"""`jitvoc synth [MODEL] MEL.npy -o out.wav`, `jitvoc resynth [MODEL] in.wav -o out.wav` and
`jitvoc corpus [MODEL] INPUT... -o OUTDIR [--ray]` (MODEL: a file or an installed model's name;
default: the installed default model). With several inputs, a folder or a list file, synth and
resynth write one WAV per input into the folder -o names, on --jobs processes (jitvoc.corpus)."""
import logging
import os
import time


from .. import corpus, pretrained
from ..audio import SUBTYPES, check_output, write_audio
from ..calibration import calibrate
from ..engine import MAX_STREAMS
from ..errors import InputError, JitvocError
from ..progress import progress_bar
from ..vocoder import DTYPES, MEL_LAYOUTS, load, read_model

log = logging.getLogger("jitvoc")

SYNTH = ("Vocode a log-mel spectrogram into a mono WAV file. The spectrogram is a .npy array "
         "of float log-mels as jitvoc.mel_spectrogram computes them, [frames, n_mels] by "
         "default; --mel-layout mels-frames takes librosa's and torchaudio's [n_mels, frames].")
RESYNTH = ("Re-synthesize an audio file through its log-mel spectrogram: a round trip that "
           "shows what the model makes of real audio. Any format soundfile reads is accepted "
           "(WAV of any common bit depth, FLAC, OGG); several channels are mixed down and other "
           "sample rates resampled to the model's, each with a one-line note.")
MANY = ("Several inputs, folders (searched recursively) or --list make a corpus run: one WAV "
        "per input goes into the folder -o names, keeping each input's path relative to its "
        "folder or list, on --jobs processes, with a progress bar over the corpus; a file that "
        "fails is reported and the others go on (exit status 1 at the end).")
CORPUS = ("Vocode a corpus: .npy log-mels as jitvoc synth does and audio files as jitvoc "
          "resynth does, one WAV each into the folder -o names, on every core of this machine "
          "or, with --ray, on a Ray cluster (pip install 'jitvoc[ray]'; docs/corpus.md).")
KINDS = {"synth": ("mel",), "resynth": ("audio",), "corpus": ("mel", "audio")}
BACKENDS = ("jit", "reference")   # --backend: the JIT engine, or the oracle's (_engine)
BATCH_NOTE = ("files generated together per process (default 1): B streams per step of one "
              "compiled loop share every weight load, the same outputs faster; a batch's files "
              "are of similar sizes (longest first)")


def register(sub) -> None:
    for name, summary, description, input_help in (
            ("synth", "vocode a log-mel spectrogram (.npy) into a WAV file", f"{SYNTH} {MANY}",
             "the log-mel spectrograms (.npy) or folders of them; '-' reads one from stdin"),
            ("resynth", "re-synthesize an audio file through its log-mel spectrogram",
             f"{RESYNTH} {MANY}",
             "the audio files or folders of them; '-' reads one from stdin"),
            ("corpus", "vocode a corpus of mels and audio files, here or on Ray", CORPUS,
             "the .npy mels, audio files and folders of them")):
        p = sub.add_parser(name, help=summary, description=description)
        p.add_argument("model", nargs="?", metavar="MODEL",
                       help=f"the model file (.npz) or an installed model's name (`jitvoc "
                            f"models`; default {pretrained.DEFAULT}). A lone argument is the "
                            f"input; of several, the first is the model if it names one")
        p.add_argument("inputs", nargs="*", metavar="INPUT", help=input_help)
        p.add_argument("-o", "--output", required=True,
                       help="the WAV file to write, or '-' for stdout; with several inputs the "
                            "folder to write into. A file is written atomically and only a "
                            "regular file other than the input is replaced")
        p.add_argument("--list", metavar="FILE",
                       help="a file naming inputs, one path a line, relative to its folder")
        p.add_argument("--jobs", type=int, metavar="N",
                       help="processes for several inputs: this one and N - 1 forked from it "
                            f"once the model is loaded (default: the usable cores, "
                            f"{corpus.usable_cores()} here); with --ray, Ray workers")
        p.add_argument("--batch", type=int, default=1, metavar="B", help=BATCH_NOTE)
        p.add_argument("--cpu", help="the CPU generation to compile for (default: "
                                      "$JITVOC_CPU, else this host)")
        p.add_argument("--dtype", choices=DTYPES,
                       help="the arithmetic of the JIT engine (default int8); the reference "
                            "backend takes float32 only")
        p.add_argument("--seed", type=int, default=0,
                       help="the sampling seed of every file, taken modulo 2**32 as the "
                            "generator's uint32 arithmetic takes it (default 0)")
        p.add_argument("--backend", choices=BACKENDS, default="jit",
                       help="jit (the default) or reference (the slow float32 NumPy oracle)")
        p.add_argument("--format", choices=tuple(SUBTYPES), default="int16",
                       help="the output samples: 16-bit PCM (int16, the default) or float32 "
                            "in [-1, 1]")
        if name != "resynth":
            p.add_argument("--mel-layout", choices=MEL_LAYOUTS, default=MEL_LAYOUTS[0],
                           help="frames-mels: [frames, n_mels] (the default); mels-frames: "
                                "[n_mels, frames] as librosa and torchaudio return it")
        if name == "corpus":
            p.add_argument("--ray", action="store_true",
                           help="run on Ray (a local instance, or the cluster --address names)")
            p.add_argument("--address", metavar="ADDR",
                           help="the Ray cluster to join, as ray.init(address=...) takes it "
                                "(default: $RAY_ADDRESS, else a new local instance)")
        p.set_defaults(func=_main, kinds=KINDS[name], command=name)


def _main(args) -> int:
    if args.batch < 1:
        raise JitvocError(f"--batch must be at least 1, got {args.batch}")
    if args.batch > MAX_STREAMS:
        raise JitvocError(f"--batch must be at most {MAX_STREAMS}, got {args.batch}")
    if args.jobs is not None and args.jobs < 1:
        raise JitvocError(f"--jobs must be at least 1, got {args.jobs}")
    if getattr(args, "address", None) and not args.ray:
        raise JitvocError("--address names a Ray cluster: it needs --ray")
    model, inputs = _model_and_inputs(args)
    if not _is_corpus(args, inputs):
        if not inputs:
            raise JitvocError("no input given")
        return _single(args, model, inputs[0])
    if "-" in inputs:
        raise JitvocError("'-' (stdin) is for a single input, not for a corpus")
    _check_corpus_output(args.output, inputs)
    return _corpus(args, model, corpus.collect(inputs, args.kinds, args.list))


def _model_and_inputs(args) -> tuple[str, list]:
    """The model and the inputs among the positional arguments. With one, it is the input;
    with more, the first is the model if it names one (an .npz file, an installed model, or a
    bare name that is no file and has no input's suffix), else every one is an input."""
    paths = ([args.model] if args.model else []) + args.inputs
    if paths and (len(paths) > 1 or args.list) and _names_model(paths[0]):
        return paths[0], paths[1:]
    return pretrained.DEFAULT, paths


def _check_corpus_output(output, inputs) -> None:
    """Several inputs go to a folder: refuse an -o that names an audio file (not an existing
    folder), which most often means the first argument was meant as a model and is not one."""
    if output.lower().endswith(corpus.AUDIO_SUFFIXES) and not os.path.isdir(output):
        raise JitvocError(
            f"-o {output} names an audio file, but a corpus's outputs ({', '.join(inputs[:3])}"
            f"{', ...' if len(inputs) > 3 else ''}) go to a folder; a first argument is the "
            f"model only if it names one (an {pretrained.SUFFIX} file or an installed model)")


def _names_model(path) -> bool:
    suffixes = corpus.MEL_SUFFIXES + corpus.AUDIO_SUFFIXES
    return (path.endswith(pretrained.SUFFIX) or path in pretrained.names()
            or (pretrained.is_name(path) and not os.path.exists(path)
                and not path.lower().endswith(suffixes)))


def _is_corpus(args, inputs) -> bool:
    return (args.command == "corpus" or len(inputs) > 1 or args.list is not None
            or any(os.path.isdir(i) for i in inputs) or args.output.endswith(os.sep)
            or os.path.isdir(args.output))


def _load_args(args) -> dict:
    return {"cpu": args.cpu, "dtype": args.dtype, "engine": _engine(args.backend)}


def _engine(backend: str):
    """load(engine=) for --backend: None (the JIT engine) or the oracle's engine class,
    imported only then."""
    if backend == "jit":
        return None
    from ..reference.vocoder import ReferenceEngine
    return ReferenceEngine


def _calibrated(args, model):
    """The model (a path or name) as a Model calibrated for the JIT engine's integer dtypes
    when it has no calibration (measured once, here, not in every worker), else as given."""
    if args.backend != "jit" or args.dtype == "float32":
        return model
    return calibrate(read_model(model))


def _settings(args) -> corpus.Settings:
    return corpus.Settings(args.seed, args.format, getattr(args, "mel_layout", MEL_LAYOUTS[0]),
                           args.batch)


def _corpus(args, model, items) -> int:
    """Vocode every item into the folder args.output; 1 if any file failed."""
    on_ray = getattr(args, "ray", False)
    tally = corpus.Tally(len(items))
    from tqdm.contrib.logging import logging_redirect_tqdm
    with logging_redirect_tqdm():   # messages above the bar, not through it
        if on_ray:
            corpus.run_ray(_calibrated(args, model), items, args.output, _settings(args),
                           args.jobs, tally.add, address=args.address, **_load_args(args))
            how = f"Ray, {args.jobs} workers" if args.jobs else "Ray, a worker per CPU"
        else:
            jobs = min(args.jobs or corpus.usable_cores(), len(items))
            corpus.run(_calibrated(args, model), items, args.output, _settings(args), jobs,
                       tally.add, **_load_args(args))
            how = f"{jobs} process{'es' if jobs > 1 else ''}"
        return tally.finish(args.output, f"{how}, {args.backend} backend, "
                                         f"{args.dtype or 'int8'}")


def _single(args, model, source) -> int:
    """One input to one file (or stdout), streamed with a progress bar over its samples. The
    engine is built on a thread while the input is read and its mel computed."""
    kind = args.kinds[0]   # corpus runs are never single
    check_output(args.output, [source])
    vocoder = load(_calibrated(args, model), background=True, **_load_args(args))
    name = "stdin" if source == "-" else source
    try:
        mel, n_samples, notes = corpus.prepare(vocoder, kind, corpus.read_bytes(source), name,
                                               _settings(args).mel_layout)
        if notes:
            log.info(f"note: {source}: {', '.join(notes)}")
        _vocode(vocoder, mel, args, n_samples)
    except InputError as e:   # a bad mel: named as a corpus run names it
        raise InputError(f"{name}: {e}") from None
    return 0


def _vocode(vocoder, mel, args, n_samples) -> None:
    """Synthesize `mel` with a progress bar, write the first `n_samples` samples, report timing.
    (Streamed in 16-frame chunks, the conditioning between the engine's calls evicting its
    weights from L2, the warm command took 2.38 s of CPU on a 26 s input, int8, against
    2.33 s in pieces: medians of 5 alternating runs, the same output.)"""
    vocoder.ready()   # the engine built (on a thread, while the input was read): not timed
    start = time.perf_counter()
    with progress_bar(len(mel) * vocoder.hop_length, unit="sample", unit_scale=True) as bar:
        audio = vocoder.synthesize(mel, seed=args.seed, progress=bar.update)[:n_samples]
    wall = time.perf_counter() - start
    write_audio(args.output, audio, vocoder.sample_rate, args.format)
    duration = len(audio) / vocoder.sample_rate
    where = "stdout" if args.output == "-" else args.output
    log.info(f"wrote {where}: {duration:.2f} s of audio at {vocoder.sample_rate} Hz "
             f"({args.format}), synthesized in {wall:.2f} s = {duration / wall:.1f}x realtime "
             f"(real-time factor {wall / duration:.3f}; {args.backend} backend, "
             f"{vocoder.dtype}{'' if vocoder.cpu is None else ', cpu ' + str(vocoder.cpu)})")
