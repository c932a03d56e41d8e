"""The user path of two source trees of jitvoc side by side, for a machine shared with others.

    python bench/user_path.py OLD_TREE NEW_TREE [--dtype int8,int16,float32] [--wav FILE]
                              [--times N] [--rounds 3]

On the shipped model and a held-out sentence (examples/ru_0749.wav; --times N: played N times
over, a longer input), per dtype and round, for
each tree in turn: `python -m jitvoc resynth` with an empty cache (cold), twice with it filled
(warm), then one process of that tree timing, in 3 rounds, the user path (`jitvoc.load` +
read + mel + `synthesize`, int16 trimmed; load(background=True) where the tree has it, as its
`resynth` does), `jitvoc.load`, the mel, the conditioning (K) and `synthesize` of a loaded
vocoder alone, and the engine alone on the same K. Prints one JSON line per tree and dtype:
CPU-time medians (time.process_time in process; user + system of the command and its
children), the user path, synthesize and the engine also in wall time and in CPU time of the
main thread alone (`_wall`, `_main` keys: the threads' overlap shows there only; `main` is the
critical path where a free core runs the other threads, the wall time of an idle machine less
any wait for them), cold and warm also in wall seconds, and `fixed`, the warm
command's CPU time less the in-process user path (interpreter start-up, imports, the WAV
written).
Bytecode is cached outside the trees (PYTHONPYCACHEPREFIX), as an installed package has it, even
where PYTHONDONTWRITEBYTECODE is set, and written by a first round that is not counted.
"""
import argparse
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

MODEL = "multivoice_wavernn_16k"
SENTENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                        "ru_0749.wav")


def in_process(dtype: str, wav: str, rounds: int) -> dict:
    """CPU and wall seconds (medians) of the user path and its parts, in this process."""
    import jitvoc
    from jitvoc.audio import read_audio
    from jitvoc.bench.report import interleaved_medians
    from jitvoc.engine import GenState
    from jitvoc.mel import mel_spectrogram
    load_args = inspect.signature(jitvoc.load).parameters
    background = {"background": True} if "background" in load_args else {}

    def user():
        voc = jitvoc.load(MODEL, dtype=dtype, **background)
        audio, rate, _ = read_audio(wav, voc.model.sample_rate)
        mel = mel_spectrogram(audio, rate, voc.model.mel_config)
        return voc.synthesize(mel, seed=0)[:len(audio)]
    user()
    voc = jitvoc.load(MODEL, dtype=dtype)
    audio, rate, _ = read_audio(wav, voc.model.sample_rate)
    mel = mel_spectrogram(audio, rate, voc.model.mel_config)
    K, n = voc._conditioning(mel), len(mel) * voc.hop_length
    fns = {"user": user, "load": lambda: jitvoc.load(MODEL, dtype=dtype),
           "mel": lambda: mel_spectrogram(audio, rate, voc.model.mel_config),
           "conditioning": lambda: voc._conditioning(mel),
           "synthesize": lambda: voc.synthesize(mel, seed=0),
           "engine": lambda: voc._engine.generate(K, 0, n, GenState.initial(voc.model.hidden), 0)}
    return interleaved_medians(fns, rounds) | {"audio_s": len(audio) / rate}


def _env(tree: str, cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPATH": tree, "JITVOC_CACHE": cache,
                  "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(),
                                                      "jitvoc-pycache-" + tree.replace("/", "_"))}


def _command(tree: str, cache: str, args: list) -> tuple[float, float, str]:
    """(wall s, CPU s of the process and its children, stdout) of `python args` in `tree`."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    r = subprocess.run([sys.executable] + args, env=_env(tree, cache), cwd=tree, check=True,
                       capture_output=True, text=True)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, r.stdout


def one_round(tree: str, dtype: str, wav: str, cache: str) -> dict:
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    resynth = ["-m", "jitvoc", "resynth", wav, "-o", os.path.join(os.path.dirname(cache),
                                                                   "out.wav"), "--dtype", dtype]
    cold = _command(tree, cache, resynth)
    warm = [_command(tree, cache, resynth) for _ in range(2)]
    _, _, out = _command(tree, cache, [os.path.abspath(__file__), "--child", dtype, wav])
    return {"cold": cold[:2], "warm": [w[:2] for w in warm], "in": json.loads(out)}


def summary(tree: str, dtype: str, runs: list) -> dict:
    med = statistics.median
    inp = {k: med(r["in"][k] for r in runs) for k in runs[0]["in"]}
    warm_wall = med(w for r in runs for w, _ in r["warm"])
    warm_cpu = med(c for r in runs for _, c in r["warm"])
    cold_wall, cold_cpu = med(r["cold"][0] for r in runs), med(r["cold"][1] for r in runs)
    return {"tree": tree, "dtype": dtype, "audio_s": round(inp["audio_s"], 2),
            **{f"{k} ms": round(1e3 * inp[k], 1) for k in ("user", "load", "mel", "conditioning",
                                                           "synthesize", "engine", "user_wall",
                                                           "synthesize_wall", "engine_wall",
                                                           "user_main", "synthesize_main")},
            "user/engine": round(inp["user"] / inp["engine"], 3),
            "synthesize/engine": round(inp["synthesize"] / inp["engine"], 3),
            "user/engine wall": round(inp["user_wall"] / inp["engine_wall"], 3),
            "synthesize/engine wall": round(inp["synthesize_wall"] / inp["engine_wall"], 3),
            "user/engine main": round(inp["user_main"] / inp["engine"], 3),
            "synthesize/engine main": round(inp["synthesize_main"] / inp["engine"], 3),
            "cold s": round(cold_wall, 2), "warm s": round(warm_wall, 2),
            "cold/warm": round(cold_wall / warm_wall, 2), "cold CPU s": round(cold_cpu, 2),
            "warm CPU s": round(warm_cpu, 2), "CLI/engine": round(warm_cpu / inp["engine"], 2),
            "fixed CPU s": round(warm_cpu - inp["user"], 2)}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:   # --child DTYPE WAV [ROUNDS]: this tree, in process
        print(json.dumps(in_process(sys.argv[2], sys.argv[3], int((sys.argv[4:] or [3])[0]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs=2, metavar="TREE")
    p.add_argument("--dtype", default="int8,int16,float32")
    p.add_argument("--wav", default=SENTENCE)
    p.add_argument("--times", type=int, default=1, help="the input played N times over")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    trees, wav = [os.path.abspath(t) for t in args.trees], os.path.abspath(args.wav)
    with tempfile.TemporaryDirectory(prefix="jitvoc-user-path-") as tmp:
        if args.times > 1:
            import numpy as np
            import soundfile
            audio, rate = soundfile.read(wav, dtype="int16")
            wav = os.path.join(tmp, "input.wav")
            soundfile.write(wav, np.concatenate([audio] * args.times), rate, subtype="PCM_16")
        for j, tree in enumerate(trees):   # bytecode and page cache warm: cold = compiling
            one_round(tree, "int8", wav, os.path.join(tmp, f"{j}-warm-up", "cache"))
        for dtype in args.dtype.split(","):
            runs = {t: [] for t in trees}
            for i in range(args.rounds):
                for j, tree in enumerate(trees):
                    runs[tree].append(one_round(tree, dtype, wav,
                                                os.path.join(tmp, f"{j}-{dtype}-{i}", "cache")))
            for tree in trees:
                print(json.dumps(summary(tree, dtype, runs[tree])), flush=True)


if __name__ == "__main__":
    main()
