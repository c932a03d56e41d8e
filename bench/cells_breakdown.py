"""Where a compiled cell's time goes, in µs per step: the whole run, the Python of run()
(checking the inputs, the pointer table: run() less its native call), its hoisted product's
B-vector kernel and its recurrent product's kernel, each alone in its native loop, and the
rest of the native loop (the element-wise pass, an integer cell's scaling of the input rows,
the state copies). CPU time of this process, medians of rounds.

    python bench/cells_breakdown.py [--hidden 512] [--steps 1000] [--rounds 7]
    python bench/cells_breakdown.py --trees OLD_TREE NEW_TREE [--rounds 9]

For the cells of `jitvoc bench cells` (random weights, input size = hidden): LSTM and GRU,
dense float32 and 90% block-sparse int8. With --trees: each case compiled from two source trees
(loaded as bench/side_by_side.py loads them), run() and step() timed alternately, old then new,
per round, and their outputs checked bit for bit.

    python bench/cells_breakdown.py --vocoder [--dtype int8,int16] [--samples 12000] [--rounds 9]
                                    [--batch B]

With --vocoder: where a sample's time goes in the engine's compiled WaveRNN cell
(JitEngine.generate, random_model(896) at 24 kHz, the `jitvoc bench vocoder` model). Beside the
cell, variants of its emitter (emit.cell.CellEmitter) with one part left out, each compiled
into a cache folder of its own: the GRU update (both halves: h' = h), the two draws (a fixed
class), O1..O4, R (a product left out: its output zeroed once before the loop, not read
undefined), and inside the GRU update its two divisions (emitted as multiplications: what a
division-free update could save at most, its values wrong); inside O1..O4 the quantization of
O2's and O4's inputs (the relu outputs of O1 and O3: their kernels read their input buffers as
they are, values wrong: what requantizing in O1's and O3's epilogues could save at most);
inside the draws their max (taken as the first logit) and their exponentials (p = l − max l):
what folding them into O2's and O4's epilogues or cheaper ones could save at most, and their
chains of scalar additions (Σp, the prefix over the block sums and the running sum inside the
chosen block; Σp by a tree instead, the class taken from ξ·Σp's bits): what drawing B
streams' chains in the lanes of a vector could save at most; the draws' values wrong. All are
timed alternately (CPU time of this thread, medians of rounds; the order reversed every other
round); a part costs the cell's time minus its variant's; "the rest" is what remains (the
conditioning rows, the quantization of the products' inputs, the decoding of the sample, the
loop). A second line gives each part per round (the whole's time less that of
the variant timed in the same round) as its median [quartiles], and the whole's range (5th
percentile to the slowest round): on a VM shared with other benchmarks, paired rounds drift
less than medians taken apart. The bound: the non-zero MACs per sample over the dense int8
roofline of `jitvoc bench kernels`, measured in the same run. With --batch B > 1: the same for
the engine of B streams (JitEngine(vectors=B), the cell in emit.cell's streams mode),
generate_batch of B streams of --samples // B each, per stream-sample ("the rest" includes the
interleaving of each product's input for its B-vector kernel).

    python bench/cells_breakdown.py --calls TREE [TREE ...] [--rounds 7]

With --calls: the Python around one JitEngine.generate call of each source tree (loaded as
bench/side_by_side.py loads them), random_model(896), int8, n = 0: per round and tree the
median CPU time (of this thread) of 200 calls; the trees alternate; medians of the rounds.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from side_by_side import import_tree

from llvmlite import ir

import jitvoc
from jitvoc.bench import kernels as bench_kernels
from jitvoc.bench.cells import CELLS, random_weights
from jitvoc.bench.vocoder import MODEL, conditioning_rows
from jitvoc.emit import draw, irutil, mathfn, spmv
from jitvoc.emit.cell import CellEmitter
from jitvoc.engine import GenState
from jitvoc.engine_jit import JitEngine
from jitvoc.plan.cell import HOIST_VECTORS

CASES = (("lstm", 1.0, "float32"), ("lstm", 0.1, "int8"), ("gru", 1.0, "float32"),
         ("gru", 0.1, "int8"))


def kernel_time(kernel, rounds: int, calls: int = 1000) -> float:
    """µs per call of a kernel's float entry point in its native loop (as MatVec.time_call,
    but on CPU time): the median of rounds."""
    g = np.random.default_rng(2)
    x = np.tanh(g.standard_normal((kernel.vectors, kernel.cols))).astype(np.float32)
    x = x[0] if kernel.vectors == 1 else x
    y = np.empty((kernel.vectors, kernel.rows), np.float32)
    keep, ptrs, inv, scale = kernel._args(x)
    times = []
    for _ in range(rounds):
        t = time.process_time()
        kernel._loop(calls, jitvoc.native.ptr(y), *ptrs, inv, scale)
        times.append((time.process_time() - t) / calls * 1e6)
    del keep
    return statistics.median(times)


def case(name, density, dtype, args) -> str:
    cell = CELLS[name](args.hidden, args.hidden)
    runner = jitvoc.compile_cell(cell, random_weights(cell, density), dtype=dtype)
    x = {"x": np.random.default_rng(1).standard_normal((args.steps, args.hidden))
         .astype(np.float32)}
    native_loop, inside = runner._run, []

    def timed(*call):   # the native call, timed from within run()
        t = time.process_time()
        native_loop(*call)
        inside.append(time.process_time() - t)
    runner._run = timed
    runner.run(x)
    times, pythons = [], []
    for _ in range(args.rounds):
        t = time.process_time()
        runner.run(x)
        times.append((time.process_time() - t) / args.steps * 1e6)
        pythons.append(times[-1] - inside[-1] / args.steps * 1e6)
    run, python = statistics.median(times), statistics.median(pythons)
    kernels = runner.kernels()
    hoisted = kernel_time(kernels[runner.plan.hoisted[0].label][0], args.rounds) / HOIST_VECTORS
    recurrent = kernel_time(kernels[runner.plan.products[0].label][0], args.rounds)
    return (f"{name} {dtype:<7} density {density:.1f}: run {run:.2f} = python {python:.2f} + "
            f"hoisted {hoisted:.2f} + recurrent {recurrent:.2f} + rest "
            f"{run - python - hoisted - recurrent:.2f}")


def trees(args) -> None:
    """run() (µs per step) and step() (µs per call) of each case, old tree against new."""
    runners = {}
    for tree in args.trees:
        import_tree(tree)
        from jitvoc.bench import cells as tree_cells   # the tree's, as import_tree left jitvoc
        for name, density, dtype in CASES:
            cell = tree_cells.CELLS[name](args.hidden, args.hidden)
            weights = tree_cells.random_weights(cell, density)
            runners[tree, name, dtype] = tree_cells.compile_cell(cell, weights, dtype=dtype)
    x = np.random.default_rng(1).standard_normal((args.steps, args.hidden)).astype(np.float32)
    for name, density, dtype in CASES:
        old, new = (runners[t, name, dtype] for t in args.trees)
        same = [np.array_equal(a["h"], b["h"]) for a, b in
                ((old.run({"x": x})[0], new.run({"x": x})[0]),
                 (old.step({"x": x[0]})[0], new.step({"x": x[0]})[0]))]
        times = {}
        for _ in range(args.rounds):
            for tree, r in zip(("old", "new"), (old, new)):
                times.setdefault((tree, "run"), []).append(_cpu(lambda: r.run({"x": x}))
                                                           / args.steps)
                times.setdefault((tree, "step"), []).append(
                    _cpu(lambda: [r.step({"x": row}) for row in x[:50]]) / 50)
        m = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        print(f"{name} {dtype:<7} density {density:.1f}: run {m['old', 'run']:.2f} -> "
              f"{m['new', 'run']:.2f} µs/step, step {m['old', 'step']:.1f} -> "
              f"{m['new', 'step']:.1f} µs/call, bits {'equal' if all(same) else 'DIFFER'}")


def _cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


PARTS = ("GRU update", "draws", "O1..O4", "R")
DIVISIONS = "GRU divisions"   # a variant inside "GRU update": its divisions as multiplications
# Variants inside "O1..O4" and "draws" (the module's docstring): what each leaves out
INNER = {"relu inputs' codes": "O2's and O4's input codes", "draws' max": "the draws' max",
         "draws' exponentials": "their exponentials", "draws' chains": "their chains"}


def _zeroed(self, product) -> None:
    """A product left out: its output (rows_padded floats, per stream) zeroed once, in the
    entry block."""
    entry = ir.IRBuilder()
    entry.position_before(self.entry.terminator)
    for j in range(0, self.kernels[product.label].packed.rows_padded * self.streams):
        irutil.store(entry, irutil.f32(0.0), self.y[product.label], j)


def _omitting(part: str | None) -> dict:
    """CellEmitter's methods replaced to leave `part` out (PARTS), by name."""
    gru = CellEmitter._gru
    if part == DIVISIONS:
        def multiplying(self, rule, shift):
            fdiv, ir.IRBuilder.fdiv = ir.IRBuilder.fdiv, ir.IRBuilder.fmul
            try:
                return gru(self, rule, shift)
            finally:
                ir.IRBuilder.fdiv = fdiv
        return {"_gru": multiplying}
    if part in INNER:
        return _inner(part)
    if part == "GRU update":
        return {"_gru": lambda self, rule, shift: self._value(rule.h, shift)}
    if part == "draws":
        return {"_draw": lambda self, d, t: self.b.store(irutil.i32(7), self._slot(d.label))}
    if part in ("O1..O4", "R"):
        def leaving_out(full):   # _product(p), or in streams mode _vector_product(p, t)
            def product(self, p, *step):
                is_r = p.weights[0] == "gru.R"
                return _zeroed(self, p) if is_r == (part == "R") else full(self, p, *step)
            return product
        return {name: leaving_out(vars(CellEmitter)[name])
                for name in ("_product", "_vector_product")}
    return {}


def _patched(method, module, name: str, replacement):
    """method with module.name replaced by `replacement` while it emits."""
    def patched(self, *args):
        kept = getattr(module, name)
        setattr(module, name, replacement)
        try:
            return method(self, *args)
        finally:
            setattr(module, name, kept)
    return patched


def _inner(part: str) -> dict:
    """CellEmitter's methods replaced to leave out a part inside O1..O4 or the draws (INNER)."""
    if part == "draws' max":
        return {"_draw": _patched(CellEmitter._draw, mathfn, "fmax", lambda b, x, y: x)}
    if part == "draws' exponentials":
        return {"_draw": _patched(CellEmitter._draw, mathfn, "exp_nonpositive",
                                  lambda b, x, poly=None: x)}
    if part == "draws' chains":
        return {"_draw": _patched(CellEmitter._draw, draw, "draw", _chainless_draw)}

    def reading_as_is(full):   # _product(p) or _stream_input(k, p, rows, buf): relu inputs
        def method(self, *args):
            p = args[0] if len(args) == 1 else args[1]
            if p.source.op != "relu":
                return full(self, *args)
            if len(args) > 1:   # streams mode: the stream's row left as it is
                return None
            return _patched(full, spmv, "activations",   # float32 kernels read x in place
                            lambda k, b, x, x_inv, buf: x if buf is None else buf)(self, p)
        return method
    return {name: reading_as_is(vars(CellEmitter)[name]) for name in ("_product", "_stream_input")}


def _chainless_draw(b, logits, xi, pbuf, prefix, poly):
    """draw.draw without its two chains: the block sums formed and added by a tree of depth 4
    (Σp's chain of 15 additions left out too), the class the low 8 bits of ξ·Σp's."""
    sums, _ = draw.exp_blocks(b, logits, pbuf, poly)
    while len(sums) > 1:
        sums = [b.fadd(x, y) for x, y in zip(sums[::2], sums[1::2])]
    return b.and_(b.bitcast(b.fmul(xi, sums[0]), irutil.i32), irutil.i32(255))


def vocoder_variant(model, dtype: str, part: str | None, streams: int) -> JitEngine:
    """The engine of `streams` streams with its cell emitted without `part` (None: whole), in a
    cache of its own."""
    replaced = _omitting(part)
    kept = {name: vars(CellEmitter)[name] for name in replaced}
    os.environ["JITVOC_CACHE"] = tempfile.mkdtemp(prefix="jitvoc-cells-breakdown-")
    try:
        for name, method in replaced.items():
            setattr(CellEmitter, name, method)
        return JitEngine(model, None, dtype, vectors=streams)
    finally:
        for name, method in kept.items():
            setattr(CellEmitter, name, method)


def vocoder(args) -> None:
    """The breakdown of the engine's cell, per (stream-)sample (see the module's docstring)."""
    model = jitvoc.calibrate(jitvoc.random_model(**MODEL))
    K, B = conditioning_rows(model, args.samples), args.batch
    n = args.samples // B
    engines = {(d, part): vocoder_variant(model, d, part, B) for d in args.dtype.split(",")
               for part in (None,) + PARTS + (DIVISIONS, *INNER)}
    times = {key: [] for key in engines}

    def run(engine):
        states = [GenState.initial(model.hidden) for _ in range(B)]
        if B == 1:
            return _cpu(lambda: engine.generate(K, 0, n, states[0], 0))
        return _cpu(lambda: engine.generate_batch([K] * B, [n] * B, states, list(range(B))))
    for r in range(args.rounds):   # the order reversed every other round
        for key in list(engines)[::-1] if r % 2 else engines:
            times[key].append(run(engines[key]) / (n * B) * 1e6)
    roof = bench_kernels.roofline(5)
    nnz = sum(int(np.count_nonzero(mask)) for _, mask in model.matrices().values())
    bound, rate = nnz / roof["gmacs"] / 1e3, model.sample_rate
    print(f"dense roofline {roof['gmacs']:.1f} GMAC/s ({roof['spec']}); {nnz} non-zero MACs "
          f"per sample: bound {bound:.3f} µs/sample = {1e6 / bound / rate:.1f}x realtime")
    for d in args.dtype.split(","):
        whole, rounds = statistics.median(times[d, None]), np.array(times[d, None])
        cost = {part: whole - statistics.median(times[d, part]) for part in PARTS}
        print(f"{d}{f' B={B}' if B > 1 else ''}: {whole:.3f} µs/sample ({1e6 / whole / rate:.1f}x realtime, "
              f"{bound / whole:.0%} of the bound): "
              + ", ".join(f"{k} {v:.3f}" for k, v in cost.items())
              + f", the rest {whole - sum(cost.values()):.3f}; of the GRU update, its "
              f"divisions {whole - statistics.median(times[d, DIVISIONS]):.3f}; "
              + ", ".join(f"{what} {whole - statistics.median(times[d, part]):.3f}"
                          for part, what in INNER.items()))
        paired = {part: np.percentile(rounds - np.array(times[d, part]), [25, 50, 75])
                  for part in PARTS + (DIVISIONS, *INNER)}
        print(f"{d}, per round (the whole less the variant in the same round): "
              f"{np.percentile(rounds, 5):.3f}-{rounds.max():.3f} µs/sample (5th percentile-max); "
              + ", ".join(f"{INNER.get(part, part)} {m:.3f} [{q1:.3f}, {q3:.3f}]"
                          for part, (q1, m, q3) in paired.items()))


def call_timer(tree: str):
    """() -> the median CPU µs of 200 `generate` calls of n = 0, for the tree at `tree`."""
    jv = import_tree(tree)
    model = jv.calibrate(jv.random_model(**jv.MODEL))
    K, engine = jv.conditioning_rows(model, 2000), jv.JitEngine(model, None, "int8")

    def run() -> float:
        state, times = jv.GenState.initial(model.hidden), []
        for _ in range(200):
            t = time.thread_time_ns()
            engine.generate(K, 0, 0, state, 0)
            times.append(time.thread_time_ns() - t)
        return statistics.median(times) / 1e3
    return run


def calls(args) -> None:
    """The Python of a generate call per tree (see the module's docstring)."""
    runs = {tree: call_timer(tree) for tree in args.calls}
    times = {tree: [] for tree in runs}
    for _ in range(args.rounds):
        for tree, run in runs.items():
            times[tree].append(run())
    for tree, t in times.items():
        print(f"{tree}: {statistics.median(t):.1f} µs a call (rounds "
              f"{', '.join(f'{x:.1f}' for x in t)})")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--trees", nargs=2, metavar=("OLD", "NEW"), help="two source trees")
    p.add_argument("--vocoder", action="store_true", help="the engine's WaveRNN cell")
    p.add_argument("--dtype", default="int8,int16")
    p.add_argument("--samples", type=int, default=12000)
    p.add_argument("--batch", type=int, default=1, help="--vocoder: streams per batch")
    p.add_argument("--calls", nargs="+", metavar="TREE", help="a generate call's Python")
    args = p.parse_args()
    if args.calls:
        return calls(args)
    if args.vocoder:
        return vocoder(args)
    print(f"hidden {args.hidden}, {args.steps} steps: µs per step, medians of {args.rounds}")
    if args.trees:
        return trees(args)
    for name, density, dtype in CASES:
        print(case(name, density, dtype, args))


if __name__ == "__main__":
    main()
