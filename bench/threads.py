"""One stream on T threads (JitEngine(threads=T)) against one thread, and where its time goes.

    python bench/threads.py compare DTYPE ROUNDS SAMPLES VARIANT...
    python bench/threads.py phases DTYPE SAMPLES [--private]
    python bench/threads.py barrier ROUNDS SAMPLES

random_model(896) at 24 kHz (the `jitvoc bench vocoder` model), `generate` of SAMPLES samples
from silence. `compare`: each VARIANT is "T:MATRIX,MATRIX..." (the threads and the matrices
whose rows they share out, plan.vocoder.SPLIT; the others every thread computes whole; each in
a kernel cache of its own, made here), timed
against T = 1 in paired rounds (order reversed every other round), the samples checked equal to
T = 1's; prints per variant the median wall µs per sample and the paired ratio T = 1 / variant,
over all rounds and over the quiet ones (other processes took under 10 ms of CPU per timed run,
from /proc/stat), and how much of a core other processes took meanwhile. `phases`: the loop of
2 threads with every barrier timed (llvm.readcyclecounter, TSC cycles, a kernel cache of its
own): per thread and barrier site the cycles per sample spent working since the previous
barrier and waiting in this one; with --private, each worker given its own copies of what the
threads share (values wrong: what the work costs when no data crosses cores). `barrier`: the
2-thread loop against the same loop with every barrier emitted five times: the cost of one
barrier with nothing to wait for.
"""
import ctypes
import os
import sys
import tempfile
import time

import numpy as np
from llvmlite import ir

from jitvoc.bench.vocoder import MODEL, conditioning_rows
from jitvoc.calibration import calibrate
from jitvoc.emit import cell as emit_cell
from jitvoc.emit.irutil import declare_intrinsic, gep, i64
from jitvoc.engine import GenState
from jitvoc.engine_jit import JitEngine
from jitvoc.layout import aligned
from jitvoc.model import random_model
from jitvoc.native import ffi
from jitvoc.plan import vocoder as voc_plan

MODEL_ = calibrate(random_model(**MODEL))
SITES = 32   # barrier sites counted per thread (the loop of the vocoder has 9)


def busy_seconds() -> float:
    """CPU seconds every process took so far (all but idle and iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def timed_run(engine, K, n: int) -> tuple:
    """(wall seconds of one generate of n samples, CPU seconds other processes took meanwhile)."""
    b, o = busy_seconds(), own_seconds()
    w = time.perf_counter()
    engine.generate(K, 0, n, GenState.initial(MODEL_.hidden), 0)
    w = time.perf_counter() - w
    return w, (busy_seconds() - b) - (own_seconds() - o)


def compare(dtype: str, rounds: int, n: int, variants: list) -> None:
    K = conditioning_rows(MODEL_, n)
    engines = {"T=1": JitEngine(MODEL_, None, dtype)}
    want = engines["T=1"].generate(K, 0, n, GenState.initial(MODEL_.hidden), 0)
    for v in variants:   # each in a kernel cache of its own: the plan's key holds no SPLIT
        threads, split = v.split(":")
        voc_plan.SPLIT = tuple(split.split(","))
        os.environ["JITVOC_CACHE"] = tempfile.mkdtemp(prefix="jitvoc-threads-")
        e = engines[v] = JitEngine(MODEL_, None, dtype, threads=int(threads))
        got = e.generate(K, 0, n, GenState.initial(MODEL_.hidden), 0)
        assert np.array_equal(got, want), f"{v}: samples differ from one thread's"
    runs = {k: [] for k in engines}
    for r in range(rounds):
        order = list(engines.items())
        for k, e in order if r % 2 == 0 else order[::-1]:
            runs[k].append(timed_run(e, K, n))
    others = np.sum([[x[1] for x in runs[k]] for k in runs], axis=0)
    walls = sum(np.array([x[0] for x in runs[k]]) for k in runs)
    quiet = np.flatnonzero(others < 0.01 * len(runs))
    print(f"{dtype}, {n} samples: other processes took {np.median(others / walls):.0%} of a "
          f"core meanwhile (median of {rounds} rounds); {len(quiet)} quiet rounds")
    for label, rows in (("all rounds", np.arange(rounds)), ("quiet rounds", quiet)):
        if not len(rows):
            continue
        base = np.array([runs["T=1"][i][0] for i in rows])
        for k in runs:
            w = np.array([runs[k][i][0] for i in rows])
            print(f"  {label:12s} {k:40s} {n / np.median(w):9.0f} samples/s "
                  f"{np.median(w) / n * 1e6:6.2f} µs/sample  x{np.median(base / w):.3f} (paired)")


def timed_barriers() -> None:
    """Patch the emitter: every barrier timed into a module global thr_stats [2, 2 x SITES]:
    the wait at site s in [s], the work since the previous barrier in [SITES + s]."""
    barrier = emit_cell.CellEmitter._barrier

    def timed(self):
        b = self.b
        if not hasattr(self, "stats"):
            typ = ir.ArrayType(i64, 2 * 2 * SITES)
            self.stats = ir.GlobalVariable(self.m, typ, name="thr_stats")
            self.stats.initializer = ir.Constant(typ, None)
            self.sites, self.last = 0, self._local(i64)
        clock = declare_intrinsic(self.m, "llvm.readcyclecounter", i64, [])
        t0 = b.call(clock, [])
        barrier(self)
        t1 = b.call(clock, [])

        def add(at, value):
            slot = gep(b, self.stats, i64, b.add(b.mul(self.tid, i64(2 * SITES)), i64(at)))
            slot.type = ir.PointerType()
            b.store(b.add(b.load(slot, typ=i64), value), slot)
        add(self.sites, b.sub(t1, t0))
        if self.sites:
            add(SITES + self.sites, b.sub(t0, b.load(self.last, typ=i64)))
        b.store(t1, self.last)
        self.sites += 1
    emit_cell.CellEmitter._barrier = timed


def privatize(engine) -> None:
    """Each worker of a 2-thread engine on its own copies of what the threads share."""
    team, cell = engine._generate.team, engine._cell
    for frame in team.frames[1:]:
        mine = {"shared": aligned(np.zeros(max(cell.shared, 1), np.uint8))}
        for name, size, dtype in cell.states:
            if name in cell.shared_states:
                mine |= {f"{k}.{name}": aligned(np.zeros(size, dtype)) for k in ("state", "next")}
        for key, array in mine.items():
            frame.arrays[key] = array
            frame.pointers[cell.params.slot(key)] = ffi.cast("void *", array.ctypes.data)


def phases(dtype: str, n: int, private: bool) -> None:
    os.environ["JITVOC_CACHE"] = tempfile.mkdtemp(prefix="jitvoc-threads-")
    timed_barriers()
    e = JitEngine(MODEL_, None, dtype, threads=2)
    if private:
        privatize(e)
    stats = np.ctypeslib.as_array((ctypes.c_int64 * (4 * SITES)).from_address(
        e._lib.address("thr_stats")))
    K = conditioning_rows(MODEL_, n)
    e.generate(K, 0, min(n, 2000), GenState.initial(MODEL_.hidden), 0)
    best = None
    for _ in range(5):
        stats[:] = 0
        w, _ = timed_run(e, K, n)
        if best is None or w < best[0]:
            best = (w, stats.copy() / n)
    w, s = best
    print(f"{dtype}, 2 threads{', private copies (values wrong)' if private else ''}: "
          f"{w / n * 1e6:.2f} µs/sample (best of 5); TSC cycles per sample by barrier site")
    for t in range(2):
        row = s[t * 2 * SITES:(t + 1) * 2 * SITES]
        used = int(np.flatnonzero(row[:SITES])[-1]) + 1
        print(f"  thread {t} work: {' '.join(f'{x:.0f}' for x in row[SITES:SITES + used])}"
              f"  total {row[SITES:].sum():.0f}")
        print(f"  thread {t} wait: {' '.join(f'{x:.0f}' for x in row[:used])}"
              f"  total {row[:SITES].sum():.0f}")


def barrier_cost(rounds: int, n: int) -> None:
    K = conditioning_rows(MODEL_, n)
    once = JitEngine(MODEL_, None, "int8", threads=2)
    os.environ["JITVOC_CACHE"] = tempfile.mkdtemp(prefix="jitvoc-threads-")
    barrier = emit_cell.CellEmitter._barrier
    emit_cell.CellEmitter._barrier = lambda self: [barrier(self) for _ in range(5)]
    five = JitEngine(MODEL_, None, "int8", threads=2)
    w1, w5 = [], []
    for _ in range(rounds):
        w1.append(timed_run(once, K, n)[0])
        w5.append(timed_run(five, K, n)[0])
    a, b = np.median(w1) / n * 1e9, np.median(w5) / n * 1e9
    barriers = len(voc_plan.vocoder_cell(once.plan)[0].barriers)
    print(f"int8, 2 threads: {a:.0f} ns/sample with {barriers} barriers a sample, {b:.0f} with "
          f"each five times: {(b - a) / (4 * barriers):.0f} ns per barrier")


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "compare":
        compare(args[0], int(args[1]), int(args[2]), args[3:])
    elif what == "phases":
        phases(args[0], int(args[1]), "--private" in args)
    else:
        barrier_cost(int(args[0]), int(args[1]))
