"""`jitvoc bench [all|kernels|vocoder|scan|synth|corpus|cells]`: benchmarks, one thread, on every CPU generation this
host can run (the ladder x86-64 ... native by default), with NumPy, SciPy and PyTorch as peers."""
from __future__ import annotations

import argparse
import shlex
import sys
import time

from .. import cpu as cpu_mod
from .. import isa
from ..audio import check_output
from ..bench import cells as bench_cells
from ..bench import corpus as bench_corpus
from ..bench import kernels as bench_kernels
from ..bench import report
from ..bench import scan as bench_scan
from ..bench import synth as bench_synth
from ..bench import vocoder as bench_vocoder
from ..errors import JitvocError, UnsupportedCPU
from ..options import count
from ..progress import Steps

QUICK_LADDER = ("x86-64", "native")

# subcommands that take their own options, after them: (name, module, help, description)
OWN_COMMANDS = (
    ("scan", bench_scan, "linear-recurrence scan throughput",
     "Measure the throughput of the linear-recurrence scan over a grid of lengths T and widths "
     "D, and of a GILR layer's forward pass."),
    ("synth", bench_synth, "the whole user path (jitvoc resynth) vs the engine alone",
     "Time the path a user runs (load, mel, conditioning, generation, int16 out) on the default "
     "model and a held-out sentence, with the engine alone beside it, and the command line's "
     "cold and warm runs."),
    ("corpus", bench_corpus, "a corpus batched (B streams), on 1 and 2 processes and on Ray",
     "Vocode one generated corpus with the batched engine for B = 1, 2, 4, 8, 16 (samples/s of "
     "CPU time, one thread), then with 1 and 2 worker processes, 1 and 2 independent processes "
     "(the machine's ceiling) and through Ray Data with 1 and 2 workers, and compare their "
     "realtime factors."),
    ("cells", bench_cells, "compiled LSTM and GRU cells vs PyTorch eager and TorchScript",
     "Time compiled LSTM and GRU cells (hidden 512 and 1024, dense and 90% block-sparse, "
     "float32 and int8, 1,000 steps, one thread) against PyTorch eager and TorchScript with "
     "the same weights."),
)
OWN_OPTIONS = tuple(name for name, *_ in OWN_COMMANDS)


def _common(p, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--cpu", default=d(None), metavar="GEN,...|all",
                   help="CPU generations, comma-separated; 'all' = every known generation this "
                        "host can run (default: the ladder " + ", ".join(cpu_mod.LADDER)
                        + ", native, skipping those this host cannot run; --quick: x86-64, native)")
    p.add_argument("--dtype", default=d(None), metavar="DTYPE,...",
                   help="int8, int16, float32 (default: all three; --quick: int8)")
    p.add_argument("--quick", action="store_true", default=d(False),
                   help="a small run (< 1 min): fewer generations, matrices and repeats")
    p.add_argument("--repeats", type=count, default=d(None), help="repeats per figure")
    p.add_argument("--json", default=d(None), metavar="FILE", help="write every record as JSON")
    p.add_argument("--markdown", default=d(None), metavar="FILE", help="write the tables as markdown")
    p.add_argument("--plot", default=d(None), metavar="FILE.png",
                   help="realtime factor and GMAC/s-vs-density panels (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", default=d(False),
                   help="no progress display on stderr")


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark kernels and the vocoder on CPU generations",
                       description=(
                           "Benchmark the kernels and the vocoder on one thread, on every CPU "
                           "generation this host can run (the ladder x86-64 ... native by "
                           "default), with NumPy, SciPy and PyTorch as peers. The options "
                           "below may come before or after kernels, vocoder or all; scan has "
                           "its own options, which come after 'scan'."))
    _common(p, suppress=False)
    p.set_defaults(func=_run, what="all")
    bsub = p.add_subparsers(dest="bench_command", metavar="{all,kernels,vocoder,scan,synth,corpus,cells}")
    for name, summary, description in (
            ("all", "kernels and vocoder (the default)",
             "Run the kernel and the vocoder benchmarks."),
            ("kernels", "matrix-vector kernels vs the dense roofline and peers",
             "Time the matrix-vector kernels against the dense roofline and against NumPy and "
             "SciPy CSR on the same matrices."),
            ("vocoder", "samples/s and realtime factor of the generation loop",
             "Measure the samples per second and the realtime factor of the generation loop, "
             "beside the NumPy reference and PyTorch eager.")):
        q = bsub.add_parser(name, help=summary, description=description)
        _common(q, suppress=True)
        q.set_defaults(what=name)
    for name, module, summary, description in OWN_COMMANDS:
        q = bsub.add_parser(name, help=summary, description=description)
        module.add_arguments(q)
        q.set_defaults(func=lambda args, run=module.run: _exit_status(run(args)))


def _exit_status(result) -> int:
    """synth and corpus return an exit status; scan and cells their records (success)."""
    return result if isinstance(result, int) else 0


OPTIONS = ("--cpu", "--dtype", "--quick", "--repeats", "--json", "--markdown", "--plot",
           "--no-progress")


def refuse_options_before(command, argv) -> None:
    """`bench --quick scan` would drop --quick: scan's and synth's options come after them."""
    bench = argv.index("bench")
    before = [a.split("=")[0] for a in argv[bench + 1:argv.index(command, bench)]
              if a.split("=")[0] in OPTIONS]
    if before:
        raise JitvocError(f"{', '.join(before)} before {command!r} would be ignored: {command} "
                          f"takes its own options, after {command!r} (jitvoc bench {command} "
                          f"--help)")


OUTPUT_OPTIONS = ("json", "markdown", "plot")   # the files a benchmark writes when it ends


def check_outputs(args) -> None:
    """Refuse an output file that cannot be written (its folder missing, a folder), before the
    minutes of measuring rather than after."""
    for option in OUTPUT_OPTIONS:
        if getattr(args, option, None) is not None:
            check_output(getattr(args, option))


def select_generations(spec: str | None, quick: bool) -> tuple[list, list[str]]:
    """(runnable Generations, notes on skipped ones). Named ones must exist and be runnable."""
    if spec and spec.strip() != "all":
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names:
            raise UnsupportedCPU(f"--cpu {spec!r} names no generation")
        gens = [cpu_mod.generation(n) for n in names]   # UnsupportedCPU for unknown names
        for g in gens:
            cpu_mod.require_runnable(g)
        return _unique(gens), []
    names = (list(isa.GENERATIONS) + ["native"] if spec
             else list(QUICK_LADDER if quick else cpu_mod.LADDER + ("native",)))
    gens, skipped = [], []
    for n in names:
        g = cpu_mod.generation(n)
        if cpu_mod.runnable(g):
            gens.append(g)
        else:
            skipped.append(f"skipped {n}: this host lacks {', '.join(g.missing_on_host())}")
    return _unique(gens), skipped


def _unique(gens):
    seen, out = set(), []
    for g in gens:
        if g.name not in seen:
            seen.add(g.name)
            out.append(g)
    return out


def _dtypes(spec):
    if not spec:
        return None
    out = tuple(d.strip() for d in spec.split(",") if d.strip())
    bad = [d for d in out if d not in bench_kernels.DTYPES]
    if bad or not out:
        raise JitvocError(f"--dtype: unknown {', '.join(bad) or spec!r}; "
                          f"choose from {', '.join(bench_kernels.DTYPES)}")
    return out


def _command(args) -> str:
    """The command line that reproduces this run (options in canonical form)."""
    parts = ["jitvoc", "bench", args.what]
    for opt in ("cpu", "dtype", "repeats", "json", "markdown", "plot"):
        if getattr(args, opt) is not None:
            parts += [f"--{opt}", str(getattr(args, opt))]
    if args.quick:
        parts.append("--quick")
    return " ".join(shlex.quote(p) for p in parts)


def _run(args) -> int:
    if args.plot:
        report.pyplot()   # fail before measuring, not after
    started = time.perf_counter()
    gens, skipped = select_generations(args.cpu, args.quick)
    dtypes = _dtypes(args.dtype)
    for note in skipped:
        print(f"jitvoc bench: {note}", file=sys.stderr)
    do_k, do_v = args.what in ("all", "kernels"), args.what in ("all", "vocoder")
    kcfg = bench_kernels.Config.make(gens, args.quick, dtypes, args.repeats) if do_k else None
    vcfg = bench_vocoder.Config.make(gens, args.quick, dtypes, args.repeats) if do_v else None
    total = (kcfg.steps() if kcfg else 0) + (vcfg.steps() if vcfg else 0)
    progress = Steps(total, enabled=not args.no_progress)
    records = []
    try:
        with report.single_threaded() as blas:
            if kcfg:
                records += bench_kernels.run(kcfg, progress)
            if vcfg:
                records += bench_vocoder.run(vcfg, progress)
    finally:
        progress.close()
    wall = time.perf_counter() - started
    tables = bench_kernels.tables(records) + bench_vocoder.tables(records)
    warning = report.spread_warning(records)
    notes = skipped + [f"generations: {', '.join(g.name for g in gens)} "
                       f"(native = LLVM {cpu_mod.host_generation().llvm_cpu})"]
    for t in tables:
        print(t.text() + "\n")
    for n in notes:
        print(n)
    print(f"wall time {wall:.1f} s")
    if warning:
        print(f"jitvoc bench: {warning}", file=sys.stderr)
    command = _command(args)
    env = report.environment(blas)
    if args.json:
        report.write_json(args.json, {"command": command, "environment": env, "wall_s": wall,
                                      "generations": [g.name for g in gens], "notes": notes,
                                      "warning": warning, "records": records})
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown(tables, env, command, wall,
                                    notes + ([warning] if warning else [])))
    if args.plot:
        report.plot(args.plot, records)
        print(f"wrote {args.plot}")
    return 0
