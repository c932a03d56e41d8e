"""`jitvoc bench corpus`: one generated corpus vocoded with the batched engine for several B,
then by `jitvoc.corpus` with 1 and 2 worker processes, beside them by 1 and 2 independent
processes (each its own share of the corpus, nothing shared: what the machine gives), and
through Ray Data: with 1 and 2 workers on a local instance started before the timing ("Ray,
running"), and with 2 workers where each run starts its instance (`ray.init` timed: "Ray,
init in the run"), in one run.

The corpus is --files audio files of --seconds each (noise at the model's rate) and the model
a random_model(--hidden) at 24 kHz, saved with its activation ranges (jitvoc.calibrate) as
exported models are. Two figures per setup, x realtime, from one run of the whole corpus:
"whole", the corpus's audio over the run's wall time (model load, worker start-up, every file
written), and "steady", the audio of the files that arrive after each of the W workers has
delivered one (the W-th result) over the time from that result to the last: start-up and the
first files left out, the same accounting for processes and Ray (docs/corpus.md, Measuring).
Medians of rounds that time each setup once, the process and independent setups' rounds
before Ray's (a process running Ray's driver threads is not one to fork workers from). The
running instance is started once and warmed by one untimed run; its workers import the jitvoc
this process runs, and each run waits until the previous run's actors have given their CPUs
back.
Targets (issue 15):
2 processes at least 1.9x one, Ray on 2 workers within 15% of 2 processes; the independent
pair's ratio to one says what of the first target the machine allows (docs/corpus.md).

Batched generation first: the corpus's mels vocoded in this process by
Vocoder.synthesize_batch for each B of --batches (B = 1: synthesize per mel), samples/s of
CPU time (one thread: the machine's load does not count), medians of rounds that time every B
once (the order reversed every other round), each B's ratio to B = 1 as the ratio of the
medians and paired (the median of each round's ratio). Target (issue 15): B = 8 at least 1.5x
B = 1.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .. import corpus
from ..audio import write_audio
from ..calibration import calibrate
from ..errors import JitvocError
from ..model import random_model
from ..optional import require
from ..options import count, counts, positive_float
from ..vocoder import load
from . import report

# "independent": the machine's ceiling for "processes", W processes forked with the model
# loaded, each vocoding its own share of the corpus (_time_independent); "ray": a Ray instance
# started before the timing (a cluster user's run joins a running cluster); "ray+init":
# `ray.init` (a local instance's start) inside each timed run.
SETUPS = (("processes", 1), ("processes", 2), ("independent", 1), ("independent", 2),
          ("ray", 1), ("ray", 2), ("ray+init", 2))
LABELS = {"processes": "processes", "independent": "independent processes",
          "ray": "Ray, running", "ray+init": "Ray, init in the run"}
# Setups timed in the same rounds (one run of each a round), so that their ratios can also be
# paired round by round; the Ray setups' rounds come after, each kind in rounds of its own.
SAME_ROUNDS = ("processes", "independent")
# The ratios reported, numerator / denominator and what each says.
RATIOS = ((("processes", 2), ("processes", 1), "target >= 1.9x"),
          (("independent", 2), ("independent", 1), "what the machine's two cores give"),
          (("processes", 2), ("independent", 2), "corpus mode against the machine's ceiling"),
          (("processes", 1), ("independent", 1), "the same with one process"),
          (("ray", 2), ("processes", 2), "target >= 0.85"),
          (("ray+init", 2), ("processes", 2), "target >= 0.85"))


def add_arguments(p) -> None:
    p.add_argument("--files", type=count, default=32, help="files in the corpus (default 32)")
    p.add_argument("--seconds", type=positive_float, default=3.0,
                   help="seconds of audio per file (default 3)")
    p.add_argument("--hidden", type=int, default=896, help="the model's hidden size (default 896)")
    p.add_argument("--dtype", default="int8", help="int8 (default), int16 or float32")
    p.add_argument("--repeats", type=count, default=3, help="rounds (default 3)")
    p.add_argument("--no-ray", action="store_true", help="leave the Ray setups out")
    p.add_argument("--setups", default=",".join(f"{s}:{w}" for s, w in SETUPS),
                   help="the setups to time, comma-separated SETUP:WORKERS (default: all, "
                        "%(default)s)")
    p.add_argument("--batches", type=counts, default="1,2,4,8,16",
                   help="streams per step B to time, comma-separated (default 1,2,4,8,16; "
                        "'' for none)")
    p.add_argument("--batch-only", action="store_true",
                   help="time the batches only (no process or Ray setups)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the table as markdown")


def make_corpus(folder: Path, files: int, seconds: float, sample_rate: int) -> list:
    """`files` WAVs of `seconds` of noise each, in `folder`."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        noise = rng.standard_normal(int(seconds * sample_rate)) * 3000
        write_audio(folder / f"f{i:03d}.wav", noise.astype(np.int16), sample_rate)
    return corpus.collect([folder], ("audio",))


def _time_run(setup, workers, model, items, out, dtype) -> tuple[float, list, float]:
    """(wall seconds, [seconds from the start at which each result arrived], CPU seconds of a
    whole run: of this process and its worker processes, or of this process and the local Ray
    instance's processes until the run's actors have ended) of one corpus run; every file
    must succeed."""
    failed, stamps = [], []

    def report_(result):
        stamps.append(time.perf_counter() - start)
        if result.error:
            failed.append(result.error)
    if setup == "processes":   # the workers have ended, and been waited for, at the return
        cpu, start = sum(os.times()[:4]), time.perf_counter()
        corpus.run(model, items, out, jobs=workers, report=report_, dtype=dtype)
        wall, cpu = time.perf_counter() - start, sum(os.times()[:4]) - cpu
    else:
        if setup == "ray":
            _wait_for_ray_cpus()
        with _TreeCpu() as tree:
            start = time.perf_counter()
            if setup == "ray+init":
                _start_ray()
            corpus.run_ray(model, items, out, workers=workers, report=report_, dtype=dtype)
            wall = time.perf_counter() - start
            _wait_for_ray_cpus()   # not timed: the actors' end (their CPU counts)
        cpu = tree.seconds
        if setup == "ray+init":
            _ray().shutdown()
    if failed:
        raise RuntimeError(f"bench corpus: files failed: {failed[:3]}")
    return wall, stamps, cpu


class _TreeCpu:
    """CPU seconds of this process and its descendants while in the block (Linux /proc,
    sampled every 0.1 s from a thread: a Ray instance's processes, whose actors end before
    the block does and are not this process's children; at most 0.1 s of a process that
    ends is missed). The sampling thread's own CPU (1.4 ms a sample on a VM of 80 processes:
    1.4% of a core over the run, which a run of processes, timed by os.times, does not pay)
    is left out."""

    def __enter__(self):
        self.first = self._sample()
        self.last, self._stop = dict(self.first), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.last.update(self._sample())
        self.seconds = sum(t - self.first.get(pid, 0.0) for pid, t in self.last.items()) \
            - self.sampling

    def _run(self):
        start = time.thread_time()
        while not self._stop.wait(0.1):
            self.last.update(self._sample())
        self.sampling = time.thread_time() - start

    @staticmethod
    def _sample() -> dict:
        """{pid: utime + stime in seconds} of this process and its live descendants."""
        tick, parent, times = os.sysconf("SC_CLK_TCK"), {}, {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:   # ended meanwhile
                continue
            parent[int(pid)] = int(fields[1])
            times[int(pid)] = (int(fields[11]) + int(fields[12])) / tick
        tree, todo = {}, [os.getpid()]
        while todo:
            pid = todo.pop()
            tree[pid] = times.get(pid, 0.0)
            todo += [c for c, p in parent.items() if p == pid]
        return tree


def steady_speed(stamps, workers: int, seconds: float) -> float:
    """x realtime after start-up: the audio of the files that arrived after the `workers`-th
    (by then each worker has delivered one file, if dispatch is even) over the time from it
    to the last."""
    if len(stamps) <= workers:
        raise ValueError(f"bench corpus: the steady figure needs more files than workers "
                         f"({len(stamps)} files, {workers} workers)")
    return (len(stamps) - workers) * seconds / (stamps[-1] - stamps[workers - 1])


def measure(model, vocoder, items, seconds, setups, repeats, dtype, tmp) -> dict:
    """{(setup, workers): {"whole": [...], "steady": [...], "cpu": [...]}}: x realtime and CPU
    seconds per round, each round one run of the whole corpus per setup; the independent
    setups also each process's own seconds, the slower's and the faster's ("slower",
    "faster"). `vocoder`: `model` loaded, forked by the independent setups."""
    speeds = {s: {"whole": [], "steady": [], "cpu": []} for s in setups}
    for r in range(repeats):
        for setup, workers in setups:
            runs = speeds[(setup, workers)]
            if setup == "independent":
                wall, stamps, cpu, own = _time_independent(workers, vocoder, items)
                runs.setdefault("slower", []).append(max(own))
                runs.setdefault("faster", []).append(min(own))
            else:
                wall, stamps, cpu = _time_run(setup, workers, model, items,
                                              tmp / f"out-{setup}{workers}-{r}", dtype)
            runs["cpu"].append(cpu)
            runs["whole"].append(len(items) * seconds / wall)
            runs["steady"].append(steady_speed(stamps, workers, seconds))
    return speeds


def _time_independent(workers, vocoder, items) -> tuple[float, list, float, list]:
    """(wall seconds from the common start to the last process's end, [seconds from the start
    at which each file was vocoded], CPU seconds of the processes' work, [each process's own
    seconds]) of `workers` processes forked, as corpus.run forks its workers, from this one
    with `vocoder` loaded, each vocoding every `workers`-th item, one at a time, as a corpus
    worker does (corpus.vocode_files) but with no queue, no results sent, nothing written
    and nothing shared: what the machine gives W copies of the work, the ceiling of
    corpus.run on W processes. They start together at a barrier, after the forks."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    barrier, pipes = ctx.Barrier(workers), [ctx.Pipe(duplex=False) for _ in range(workers)]
    procs = [ctx.Process(target=_independent, args=(vocoder, items[i::workers], barrier, send),
                         daemon=True) for i, (_, send) in enumerate(pipes)]
    for proc in procs:
        proc.start()
    try:
        for _, send in pipes:
            send.close()   # this process's copy: a process that dies ends its pipe (EOFError)
        reports = [recv.recv() for recv, _ in pipes]
        for proc in procs:
            proc.join(timeout=10)
    except EOFError:
        raise RuntimeError("bench corpus: an independent process died") from None
    finally:
        corpus._stop(procs)
    failed = [e for report_ in reports for e in report_["failed"]]
    if failed:
        raise RuntimeError(f"bench corpus: files failed: {failed[:3]}")
    start = min(report_["start"] for report_ in reports)
    ends = [report_["stamps"][-1] - start for report_ in reports]
    stamps = sorted(t - start for report_ in reports for t in report_["stamps"])
    own = [report_["stamps"][-1] - report_["start"] for report_ in reports]
    return max(ends), stamps, sum(report_["cpu"] for report_ in reports), own


def _independent(vocoder, items, barrier, send) -> None:
    """An independent process: wait for the others, vocode `items` one at a time, then send
    {"start", "stamps" (perf_counter at each file's end), "cpu", "failed"}."""
    barrier.wait(timeout=60)   # a sibling that never comes breaks it: no hang
    start, cpu, stamps, failed = time.perf_counter(), time.process_time(), [], []
    for item in items:
        vocoded = corpus.vocode_files(vocoder, [item], corpus.Settings())[0]
        stamps.append(time.perf_counter())
        if isinstance(vocoded, Exception):
            failed.append(f"{item.source}: {vocoded}")
    send.send({"start": start, "stamps": stamps, "cpu": time.process_time() - cpu,
               "failed": failed})


def chosen_setups(args) -> list:
    """The (setup, workers) of --setups, in SETUPS's order, less Ray's with --no-ray; refused
    before any work where --files leaves a setup no steady figure (steady_speed)."""
    names = {f"{s}:{w}": (s, w) for s, w in SETUPS}
    unknown = [n for n in args.setups.split(",") if n and n not in names]
    if unknown:
        raise JitvocError(f"--setups: no setup {unknown[0]!r}; the setups are "
                          f"{', '.join(names)}")
    chosen = {names[n] for n in args.setups.split(",") if n}
    setups = [s for s in SETUPS if s in chosen and not (args.no_ray and s[0].startswith("ray"))]
    workers = max((w for _, w in setups), default=0)
    if not args.batch_only and args.files <= workers:
        raise JitvocError(f"--files: the steady figure needs more files than workers "
                          f"({args.files} files, {workers} workers)")
    return setups


def run(args) -> int:
    setups = chosen_setups(args)
    with tempfile.TemporaryDirectory(prefix="jitvoc-bench-corpus-") as name:
        tmp = Path(name)
        model = tmp / "model.npz"   # with its activation ranges, as exported models have
        calibrate(random_model(hidden=args.hidden, sample_rate=24000)).save(model)
        items = make_corpus(tmp / "in", args.files, args.seconds, 24000)
        batches, vocoder = args.batches, load(model, dtype=args.dtype)
        by_batch = measure_batches(vocoder, items, batches, args.repeats) if batches else {}
        batch_table = _batch_table(by_batch, args) if batches else None
        if batch_table:
            print(batch_table.text())
        speeds, loadavg = {}, os.getloadavg()[0]
        if not args.batch_only:
            corpus.run(model, items[:1], tmp / "warm", jobs=1, dtype=args.dtype)  # cached
            # The process setups first, the independent ones in the same rounds: they fork,
            # and a process running Ray's driver threads is not one to fork. Then the runs
            # that start Ray, then those on an instance started (and warmed by one untimed
            # run) beforehand.
            for kinds in (SAME_ROUNDS, ("ray+init",), ("ray",)):
                chosen = [s for s in setups if s[0] in kinds]
                if chosen and kinds == ("ray",):
                    _start_ray()
                    corpus.run_ray(model, items[:2], tmp / "warm-ray", workers=2,
                                   dtype=args.dtype)
                speeds |= measure(model, vocoder, items, args.seconds, chosen, args.repeats,
                                  args.dtype, tmp)
    tables, figures, by_pair, paired = [t for t in (batch_table,) if t], {}, {}, {}
    if speeds:
        table, figures, by_pair, paired = _table(speeds, args, (loadavg, os.getloadavg()[0]))
        print(table.text())
        tables.append(table)
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(t.markdown() for t in tables) + "\n")
    if args.json:
        report.write_json(args.json, {"figures": figures, "ratios": by_pair,
                                      "paired_ratios": paired, "speeds": {
            f"{s} {w}": runs for (s, w), runs in speeds.items()},
            "samples_per_s_by_batch": by_batch, "batch_ratios": {
                b: {"medians": m, "paired": pr} for b, (m, pr) in batch_ratios(by_batch).items()}})
    return 0


def measure_batches(vocoder, items, batches, repeats) -> dict:
    """{B: [samples/s of CPU time per round]}: the items' mels through synthesize_batch."""
    mels = [corpus.prepare(vocoder, item.kind, corpus.read_bytes(item.source), item.source,
                           "frames-mels")[0] for item in items]
    n = sum(len(m) for m in mels) * vocoder.hop_length
    for b in batches:   # compiled (or loaded) before any timing
        vocoder.synthesize_batch([m[:1] for m in mels[:2]], batch=b)
    out = {b: [] for b in batches}
    for r in range(repeats):   # the order reversed every other round: a drift hits every B
        for b in batches[::-1] if r % 2 else batches:
            start = time.process_time()
            vocoder.synthesize_batch(mels, batch=b)
            out[b].append(n / (time.process_time() - start))
    return out


def batch_ratios(by_batch) -> dict:
    """{B: (the ratio of B's median to B = 1's, the median of each round's own ratio)}: the
    second pairs the runs of one round, so that the machine's drift between rounds cancels."""
    if 1 not in by_batch:
        return {}
    base = by_batch[1]
    return {b: (float(np.median(v) / np.median(base)), report.paired_ratio(v, base))
            for b, v in by_batch.items()}


def _batch_table(by_batch, args):
    med, ratio = {b: float(np.median(v)) for b, v in by_batch.items()}, batch_ratios(by_batch)
    rows = [[b, f"{m:,.0f}", *([f"{x:.2f}" for x in ratio[b]] if ratio else ["", ""]),
             f"{m / 24000:.1f}",
             f"{100 * report.summary(by_batch[b])[1]:.0f}%"] for b, m in med.items()]
    notes = [f"{args.files} files x {args.seconds:g} s, random_model({args.hidden}) at 24 kHz, "
             f"{args.dtype}, native, one thread: Vocoder.synthesize_batch (conditioning "
             f"included); samples/s of CPU time, medians of {args.repeats} rounds (the order "
             f"of the B reversed every other round); paired: the median of each round's ratio"]
    if 8 in ratio:
        notes.append(f"B = 8 / B = 1: {ratio[8][0]:.2f}x, paired {ratio[8][1]:.2f}x "
                     f"(target >= 1.5x)")
    return report.Table("corpus: batched generation, one core",
                        ["B", "samples/s", "vs B = 1", "paired", "x realtime", "spread"], rows,
                        notes)


def _ray():
    require("ray.data", "the Ray setups (--no-ray leaves them out)", "'jitvoc[ray]'")
    return require("ray", "the Ray setups (--no-ray leaves them out)", "'jitvoc[ray]'")


def _start_ray() -> None:
    """A local Ray instance of (at most) 2 CPUs (corpus.init_ray, as `jitvoc corpus --ray`
    starts one); its workers import the jitvoc this process imports (a source tree on
    PYTHONPATH included), not another installed one: they inherit this process's environment,
    as those of `jitvoc corpus --ray` do. (Not a runtime_env: with one, every actor waited for
    a worker process started for it, while those the instance starts ahead went unused.)"""
    root = str(Path(__file__).resolve().parents[2])   # the folder holding jitvoc/
    if root not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)
    corpus.init_ray(num_cpus=min(2, corpus.usable_cores()))


def _wait_for_ray_cpus(timeout: float = 60.0) -> None:
    """Wait until every CPU of the Ray instance is free: a run's actors release theirs after
    the run returns, and a run started before that waits for them (or runs on fewer)."""
    ray = _ray()
    deadline = time.monotonic() + timeout
    total = ray.cluster_resources().get("CPU", 0)
    while ray.available_resources().get("CPU", 0) < total and time.monotonic() < deadline:
        time.sleep(0.05)


def _table(speeds, args, loadavg):
    med = {k: {kind: float(np.median(v)) for kind, v in runs.items() if v} for k, runs in
           speeds.items()}
    base = med.get(("processes", 1))
    rows, figures = [], {}
    for setup, workers in sorted(med, key=SETUPS.index):
        m = med[(setup, workers)]
        spread = report.summary(speeds[(setup, workers)]["steady"])[1]
        rows.append([LABELS[setup], workers, f"{m['whole']:.2f}",
                     f"{m['whole'] / base['whole']:.2f}" if base else "", f"{m['steady']:.2f}",
                     f"{m['steady'] / base['steady']:.2f}" if base else "",
                     f"{100 * spread:.0f}%", f"{m['cpu']:.2f}"])
        figures[f"{setup} {workers}"] = m
    by_pair, paired = ratios(med), paired_ratios(speeds)
    headers = ["setup", "workers", "whole x realtime", "vs 1 process", "steady x realtime",
               "vs 1 process", "spread", "CPU s"]
    return report.Table("corpus: jitvoc.corpus on processes and on Ray", headers, rows,
                        _notes(med, args, loadavg, by_pair, paired)), figures, by_pair, paired


def _name(setup, workers) -> str:
    return f"{LABELS[setup]}, {workers}" if setup.startswith("ray") else f"{setup} {workers}"


def ratios(med) -> dict:
    """{"whole" | "steady": {"A / B": the ratio of A's median to B's}} for each pair of
    RATIOS whose setups were both timed."""
    return {kind: {f"{_name(*a)} / {_name(*b)}": med[a][kind] / med[b][kind]
                   for a, b, _ in RATIOS if a in med and b in med}
            for kind in ("steady", "whole")}


def paired_ratios(speeds) -> dict:
    """ratios' pairs of setups timed in the same rounds (SAME_ROUNDS), each the median over
    the rounds of the round's ratio: the machine's drift between rounds cancels."""
    return {kind: {f"{_name(*a)} / {_name(*b)}": report.paired_ratio(speeds[a][kind],
                                                                       speeds[b][kind])
                   for a, b, _ in RATIOS if a in speeds and b in speeds
                   and {a[0], b[0]} <= set(SAME_ROUNDS)}
            for kind in ("steady", "whole")}


def _notes(med, args, loadavg, by_pair, paired) -> list:
    """The table's notes: what it measured, the CPU the second process or Ray adds, each
    independent process's own time, and the ratios among the setups timed (RATIOS)."""
    notes = [f"{args.files} files x {args.seconds:g} s of noise, random_model({args.hidden}) at "
             f"24 kHz, {args.dtype}, native; medians of {args.repeats} rounds; "
             f"{corpus.usable_cores()} usable cores; load average {loadavg[0]:.1f} at the start, "
             f"{loadavg[1]:.1f} at the end",
             "whole: the corpus's audio over the wall time of a whole run (load, worker "
             "start-up, files written; not the imports of this process); independent "
             "processes: W processes forked with the model loaded, each vocoding its own share "
             "of the corpus (no queue, no results, nothing written), timed from a common start "
             "to the last one's end: what the machine gives W copies of the work; Ray, "
             "running: on an instance started before the timing, warmed by one run; Ray, init "
             "in the run: ray.init (a local instance's start) timed too; steady: the audio of "
             "the files after the W-th result over the time from it to the last (start-up and "
             "first files left out); CPU s: "
             "of a whole run, in the bench process and its worker processes, or in the bench "
             "process and the local Ray instance's processes until the run's actors have "
             "ended, or of the independent processes' work (the machine's load does not count); "
             "paired: the median of each round's own ratio (setups timed in the same rounds)"]
    base, two = med.get(("processes", 1)), med.get(("processes", 2))
    if base and two:
        notes.append(f"CPU: 2 processes - 1: {two['cpu'] - base['cpu']:+.2f} s "
                     f"(what the second process costs beyond its share of the work)")
    alone, pair = med.get(("independent", 1)), med.get(("independent", 2))
    if alone and pair:
        notes.append(f"CPU: 2 independent - 1: {pair['cpu'] - alone['cpu']:+.2f} s (the same, "
                     f"of the machine)")
    if pair:
        notes.append(f"independent 2, each process's own time: the slower {pair['slower']:.2f} s, "
                     f"the faster {pair['faster']:.2f} s")
    notes += [f"CPU: {LABELS[ray]}, 2 workers - 2 processes: "
              f"{med[(ray, 2)]['cpu'] - two['cpu']:+.2f} s"
              for ray in ("ray", "ray+init") if (ray, 2) in med and two]
    why = {f"{_name(*a)} / {_name(*b)}": note for a, b, note in RATIOS}
    notes += [f"{kind}: {pair_}: {ratio:.2f}x"
              + (f", paired {paired[kind][pair_]:.2f}x" if pair_ in paired[kind] else "")
              + f" ({why[pair_]})"
              for kind, of_kind in by_pair.items() for pair_, ratio in of_kind.items()]
    return notes
