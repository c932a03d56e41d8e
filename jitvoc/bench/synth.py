"""`jitvoc bench synth`: the path a user runs, timed whole, with the engine alone beside it.

On the default installed model and a held-out sentence (examples/ru_0749.wav), per dtype:

- **user path**, in this process with the kernels cached: `jitvoc.load` (background=True:
  the engine built on a thread while the input is read), `read_audio`, `mel_spectrogram`,
  `Vocoder.synthesize` (conditioning and generation) and the int16 samples trimmed to the
  input, as `jitvoc resynth` does; no BLAS thread limit is set around it, so whatever the
  package does about BLAS threads is what gets timed;
- its parts: load, mel, synthesize (a loaded Vocoder: conditioning and generation, streamed as
  users get it), conditioning alone (K for the whole sentence) and the engine alone
  (`JitEngine.generate` over that K);
- **cold / warm**: `python -m jitvoc resynth` as a fresh process with an empty kernel cache
  (one run: every kernel compiled), then with that cache filled (median of repeats), jitvoc's
  bytecode compiled beforehand as an installed package has it (command_line): wall
  seconds (what the user waits), and the warm run's CPU time (user + system, its children
  included) against the engine's: `CLI/engine`, and `fixed`, the CPU time the command spends
  besides the in-process user path (interpreter start-up, imports, argument parsing, the WAV
  written).

In-process figures are medians over rounds that time each part once, of CPU time
(time.process_time: every thread of this process, so a spinning BLAS thread counts) and of
wall time (what the overlaps save: the engine built while the mel is computed, the rest of K
computed while the first frames are generated), and of the main thread's CPU time alone
(time.thread_time: the critical path where a free core runs the other threads, the wall
time of an idle machine less any wait for them); synthesize/engine and user/engine compare
with the engine alone.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import pretrained
from ..audio import read_audio
from ..engine import GenState
from ..mel import mel_spectrogram
from ..options import count
from ..vocoder import load
from . import report

ROOT = Path(__file__).resolve().parents[2]
SENTENCE = ROOT / "examples" / "ru_0749.wav"
DTYPES = ("int8", "int16", "float32")


def add_arguments(p) -> None:
    p.add_argument("--model", default=pretrained.DEFAULT,
                   help=f"model file or installed name (default: {pretrained.DEFAULT})")
    p.add_argument("--wav", default=str(SENTENCE),
                   help="audio file (default: the held-out sentence examples/ru_0749.wav)")
    p.add_argument("--dtype", default=",".join(DTYPES), help="dtypes, comma-separated")
    p.add_argument("--repeats", type=count, default=5, help="repeats per figure (default 5)")
    p.add_argument("--no-cold", action="store_true",
                   help="skip the cold and warm command-line runs (they take ~10 s per dtype)")
    p.add_argument("--markdown", metavar="FILE", help="write the table as markdown")


def user_path(model_path, wav, dtype: str) -> np.ndarray:
    """What `jitvoc resynth` computes, in this process: int16 samples for the sentence."""
    voc = load(model_path, dtype=dtype, background=True)
    audio, rate, _ = read_audio(wav, voc.model.sample_rate)
    mel = mel_spectrogram(audio, rate, voc.model.mel_config)
    return voc.synthesize(mel, seed=0)[:len(audio)]


def parts(model_path, wav, dtype: str, repeats: int) -> dict:
    """Seconds (medians) of the user path and of its parts."""
    user_path(model_path, wav, dtype)  # kernels compiled and cached, pages warm
    voc = load(model_path, dtype=dtype)
    audio, rate, _ = read_audio(wav, voc.model.sample_rate)
    mel = mel_spectrogram(audio, rate, voc.model.mel_config)

    def conditioning():
        return voc._conditioning(mel)   # K as synthesize computes it

    K = conditioning()
    n = len(mel) * voc.hop_length
    engine = voc._engine
    medians = report.interleaved_medians({
        "user_s": lambda: user_path(model_path, wav, dtype),
        "load_s": lambda: load(model_path, dtype=dtype),
        "mel_s": lambda: mel_spectrogram(audio, rate, voc.model.mel_config),
        "synthesize_s": lambda: voc.synthesize(mel, seed=0)[:len(audio)],
        "conditioning_s": conditioning,
        "engine_s": lambda: engine.generate(K, 0, n, GenState.initial(voc.model.hidden), 0)},
        repeats)
    return {**medians, "audio_s": len(audio) / rate, "samples": len(audio)}


def command_line(model_path, wav, dtype: str, repeats: int) -> dict:
    """`python -m jitvoc resynth` with an empty kernel cache (wall seconds), then warm (medians
    of wall and of CPU seconds, children included). The commands read jitvoc's bytecode as an
    installed package has it (pip compiles it at install): from a folder of their own
    (PYTHONPYCACHEPREFIX, even where PYTHONDONTWRITEBYTECODE is set), written by a first cold
    run that is not timed. A checkout run with PYTHONDONTWRITEBYTECODE (this project's VMs)
    compiled every jitvoc module it imports at every start: 0.04-0.05 s more warm, ~0.1 s
    more cold (the emit and plan modules), bench/README.md, branch cold14."""
    with tempfile.TemporaryDirectory(prefix="jitvoc-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        cmd = [sys.executable, "-m", "jitvoc", "resynth", str(model_path), str(wav),
               "-o", os.path.join(tmp, "out.wav"), "--dtype", dtype]

        def run(cache: str) -> tuple[float, float]:
            before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            subprocess.run(cmd, env=env | {"JITVOC_CACHE": os.path.join(tmp, cache)},
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
            return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        run("bytecode")   # cold too: every module a cold run imports, compiled to bytecode
        cold_s, _ = run("cache")
        warm = [run("cache") for _ in range(repeats)]
        return {"cold_s": cold_s, "warm_s": float(np.median([w for w, _ in warm])),
                "warm_cpu_s": float(np.median([c for _, c in warm]))}


def _row(dtype: str, r: dict, cold: bool) -> list:
    a, e, ew = r["audio_s"], r["engine_s"], r["engine_s_wall"]
    row = [dtype, f"{a / r['user_s_wall']:.1f}", f"{a / ew:.1f}",
           f"{r['user_s_wall'] / ew:.2f}", f"{r['user_s'] / e:.2f}",
           f"{r['user_s_main'] / e:.2f}",
           f"{r['synthesize_s_wall'] / ew:.2f}", f"{r['synthesize_s'] / e:.2f}"]
    row += [f"{1e3 * r[k]:.0f}" for k in ("user_s_wall", "engine_s_wall", "user_s", "load_s",
                                          "mel_s", "synthesize_s", "conditioning_s", "engine_s")]
    if cold:
        row += [f"{r['cold_s']:.2f}", f"{r['warm_s']:.2f}", f"{r['cold_s'] / r['warm_s']:.2f}",
                f"{r['warm_cpu_s']:.2f}", f"{r['warm_cpu_s'] / e:.2f}",
                f"{r['warm_cpu_s'] - r['user_s']:.2f}"]
    return row


def run(args) -> int:
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    rows = []
    for dtype in dtypes:
        r = parts(args.model, args.wav, dtype, args.repeats)
        if not args.no_cold:
            r.update(command_line(args.model, args.wav, dtype, args.repeats))
        rows.append(_row(dtype, r, not args.no_cold))
    headers = ["dtype", "user x realtime (wall)", "engine x realtime (wall)",
               "user/engine wall", "user/engine CPU", "user/engine main",
               "synthesize/engine wall",
               "synthesize/engine CPU", "user wall ms", "engine wall ms", "user ms", "load ms",
               "mel ms", "synthesize ms", "conditioning ms", "engine ms"] + \
        ([] if args.no_cold else ["cold CLI s", "warm CLI s", "cold/warm", "warm CLI CPU s",
                                  "CLI/engine", "CLI fixed CPU s"])
    notes = [f"{Path(args.model).name}, {Path(args.wav).name} ({r['audio_s']:.2f} s of audio); "
             f"medians of {args.repeats}, CPU time unless marked wall or main (the main "
             "thread's CPU time: the critical path on a free core); user = load (the engine "
             "built on a thread) + read + mel + synthesize (conditioning, generation) + int16 "
             "trimmed; synthesize = Vocoder.synthesize on a loaded vocoder; engine = "
             "JitEngine.generate over the whole K",
             "cold = `python -m jitvoc resynth` with an empty JITVOC_CACHE (one run), warm = "
             "the same command again (median); cold and warm in wall seconds; warm CLI CPU: "
             "user + system of the command; CLI fixed = warm CLI CPU - user"]
    table = report.Table("user path: jitvoc resynth", headers, rows, notes)
    print(table.text())
    if args.markdown:
        Path(args.markdown).write_text(table.markdown() + "\n")
    return 0
