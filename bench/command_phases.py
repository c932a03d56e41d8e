"""Where a warm `jitvoc resynth` spends its time, phase by phase, for two trees side by side.

    python bench/command_phases.py OLD_TREE NEW_TREE [--rounds 12] [--wav FILE] [--dtype int8]

A tree is a source checkout or a folder `pip install --no-deps --target DIR .` made (as a
user's installed package): it runs as PYTHONPATH with this interpreter (a clean venv's, for
the figures of an installed package), its bytecode cached (PYTHONPYCACHEPREFIX, written by a
first run that is not counted) and a kernel cache of its own, filled first (warm). Per round
and tree, alternately: the command as the console script runs it, timed from outside (wall,
and CPU of the process), then again under a tracer (`--child`) that stamps the phases: the
interpreter and site (CPU before the tracer's first line), the imports up to the parser
(self CPU of every module, summed by package), the model read, the input read and its mel,
the engine from the cache (on its thread, while the input is read), the wait for it, the
conditioning, the generation, the WAV write and the exit (interpreter finalization). Prints a
markdown table of medians in ms. The tracer adds its own CPU (a wrapper around every import
and stamped call): compare the trees' rows, and take totals from the untraced command.
"""
import _thread
import os
import sys
import time

T0_CPU, T0_REAL = time.process_time(), time.time()


def _child(out: str, argv: list) -> None:
    """The command `jitvoc ARGV` in this process, its phases stamped into the JSON file `out`."""
    import importlib._bootstrap as bootstrap
    t0, main_thread = time.perf_counter(), _thread.get_ident()
    imports, stacks, calls, marks = {}, {}, [], {}
    find_and_load = bootstrap._find_and_load

    def traced_import(name, import_):   # self CPU: less the imports made meanwhile
        c0, stack = time.thread_time(), stacks.setdefault(_thread.get_ident(), [])
        stack.append(0.0)
        try:
            return find_and_load(name, import_)
        finally:
            inner, cpu = stack.pop(), time.thread_time() - c0
            imports[name] = imports.get(name, 0.0) + cpu - inner
            if stack:
                stack[-1] += cpu
    bootstrap._find_and_load = traced_import

    def wrap(owner, attr, label):
        fn = getattr(owner, attr)

        def timed(*a, **k):
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                calls.append((label, _thread.get_ident() == main_thread,
                              time.perf_counter() - w, time.thread_time() - c))
        setattr(owner, attr, timed)

    def mark(name):
        marks[name] = (time.perf_counter() - t0, time.process_time())

    mark("start")
    import jitvoc.cli as cli
    run = cli._run

    def traced_run(args, parser):
        mark("imported")
        from jitvoc import corpus, engine_jit, vocoder
        from jitvoc.cli import synth
        for owner, attr, label in (
                (synth, "read_model", "model read"), (synth, "load", "load"),
                (corpus, "prepare", "input read + mel"), (vocoder.Vocoder, "ready", "wait"),
                (vocoder, "blockwise_conditioning", "conditioning"),
                (engine_jit.JitEngine, "__init__", "engine"),
                (engine_jit.JitEngine, "generate", "generation"),
                (synth, "write_audio", "WAV write")):
            wrap(owner, attr, label)
        mark("patched")
        try:
            return run(args, parser)
        finally:
            mark("ran")
    cli._run = traced_run
    sys.argv[:] = ["jitvoc"] + argv
    try:
        code = cli.main()
    finally:
        end_real, end_cpu = time.time(), time.process_time()
        import json
        with open(out, "w") as f:
            json.dump({"t0_real": T0_REAL, "t0_cpu": T0_CPU, "end_real": end_real,
                       "end_cpu": end_cpu, "marks": marks, "imports": imports,
                       "calls": calls}, f)
    sys.exit(code)


# packages whose imports get a row of their own (with their private modules); the rest:
# the standard library, or other
IMPORT_GROUPS = ("numpy", "llvmlite", "jitvoc", "soundfile", "threadpoolctl", "cffi")
PRIVATE = {"_soundfile": "soundfile", "_soundfile_data": "soundfile", "_cffi_backend": "cffi"}


def _import_group(module: str) -> str:
    top = module.split(".")[0]
    top = PRIVATE.get(top, top)
    if top in IMPORT_GROUPS:
        return top
    return "the standard library" if top in sys.stdlib_module_names else "other packages"


def phases(record: dict, spawned: float, cpu: float, wall: float) -> dict:
    """(CPU s, wall s or None) per phase of one traced run: `spawned`, time.time() before
    the process started; `cpu`, `wall`: the process's CPU seconds (rusage) and wall seconds."""
    marks, calls = record["marks"], record["calls"]

    def spent(label, main=True):
        own = [c for c in calls if c[0] == label and c[1] == main]
        return sum(c[3] for c in own), sum(c[2] for c in own)
    rows = {"interpreter + site": (record["t0_cpu"], record["t0_real"] - spawned),
            "imports to the parser": (marks["imported"][1] - record["t0_cpu"],
                                      marks["imported"][0])}
    groups = {}
    for module, self_cpu in record["imports"].items():
        group = _import_group(module)
        groups[group] = groups.get(group, 0.0) + self_cpu
    for group in IMPORT_GROUPS + ("the standard library", "other packages"):
        rows[f"&nbsp; imports of {group} (whole run)"] = (groups.get(group, 0.0), None)
    rows["model read"] = spent("model read")
    rows["load (the engine's thread started)"] = spent("load")
    rows["input read + mel"] = spent("input read + mel")
    rows["engine from the cache (its thread, meanwhile)"] = spent("engine", main=False)
    rows["wait for the engine"] = spent("wait")
    rows["conditioning (main thread + its thread)"] = (
        spent("conditioning")[0] + spent("conditioning", main=False)[0], None)
    rows["generation (the engine's calls)"] = spent("generation")
    rows["WAV write"] = spent("WAV write")
    rows["exit (interpreter finalization)"] = (cpu - record["end_cpu"],
                                               spawned + wall - record["end_real"])
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3:])
        return
    import argparse
    import json
    import resource
    import statistics
    import subprocess
    import tempfile
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs=2, metavar="TREE")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--wav", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "..", "examples", "ru_0749.wav"))
    p.add_argument("--dtype", default="int8")
    args = p.parse_args()
    trees = [os.path.abspath(t) for t in args.trees]
    console = "import sys; from jitvoc.cli import main; sys.argv[0] = 'jitvoc'; sys.exit(main())"
    with tempfile.TemporaryDirectory(prefix="jitvoc-phases-") as tmp:
        def env(j):
            e = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            return e | {"PYTHONPATH": trees[j], "JITVOC_CACHE": os.path.join(tmp, f"cache{j}"),
                        "PYTHONPYCACHEPREFIX": os.path.join(tmp, f"pyc{j}")}
        command = ["resynth", os.path.abspath(args.wav), "-o", os.path.join(tmp, "out.wav"),
                   "--dtype", args.dtype]
        traced = os.path.join(tmp, "phases.json")

        def timed(j, argv):
            before, spawned = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
            wall = time.perf_counter()
            subprocess.run([sys.executable] + argv, env=env(j), cwd=tmp, check=True,
                           stderr=subprocess.DEVNULL)
            wall, after = time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_CHILDREN)
            return spawned, wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        for j in range(2):   # bytecode written, kernels cached
            timed(j, ["-c", console] + command)
        runs = [[], []]
        for r in range(args.rounds):
            for j in (0, 1) if r % 2 == 0 else (1, 0):
                _, wall, cpu = timed(j, ["-c", console] + command)
                spawned, twall, tcpu = timed(j, [os.path.abspath(__file__), "--child", traced]
                                             + command)
                with open(traced) as f:
                    record = json.load(f)
                runs[j].append({"command (untraced)": (cpu, wall),
                                "command (traced)": (tcpu, twall)}
                               | phases(record, spawned, tcpu, twall))

        def cell(j, key, k):
            values = [r[key][k] for r in runs[j] if r[key][k] is not None]
            return f"{1e3 * statistics.median(values):.1f}" if values else ""
        print(f"| phase (ms, medians of {args.rounds}) | OLD CPU | OLD wall | NEW CPU | NEW wall |")
        print("|---|---:|---:|---:|---:|")
        for key in runs[0][0]:
            print(f"| {key} | {cell(0, key, 0)} | {cell(0, key, 1)} | {cell(1, key, 0)} "
                  f"| {cell(1, key, 1)} |")


if __name__ == "__main__":
    main()
