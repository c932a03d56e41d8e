"""Where a stream-sample's time goes in the batched loop, and how far it is from the dense roofline.

    python bench/breakdown.py [--dtype int8,int16] [--trees OLD_TREE NEW_TREE ...] [--batch B]

The single-stream engine runs the compiled WaveRNN cell: its breakdown is
`python bench/cells_breakdown.py --vocoder`.

For random_model(896) at 24 kHz (the `jitvoc bench vocoder` model) it builds, besides the loop,
variants with one part emitted as nothing: the GRU update (both halves), the two draws (a fixed
class), O1..O4. All are timed alternately (CPU time of this thread, medians of rounds); a part
costs the full loop's time minus its variant's. "R and the rest" is what remains: the R product,
the conditioning rows, the quantization of h, the loop itself. The bound is the non-zero MACs
per sample over the dense int8 roofline of `jitvoc bench kernels`, measured in the same run.
With --trees, the variants of every source tree are built (bench/side_by_side.py's
import_tree) and all timed alternately in one process: old and new parts side by side.
Each variant compiles into a cache folder of its own (they share the loop's name).
The batched loop (emit.batch) runs B > 1 streams of --samples each; the figures are per
stream-sample ("R and the rest" includes the interleaving of each product's input).
"""
import argparse
import os
import tempfile
import time

import numpy as np

from side_by_side import import_tree

PARTS = ("GRU update", "draws", "O1..O4")


def variant(jv, model, dtype: str, omit: str | None, streams: int):
    """The batched JitEngine of the tree's modules `jv` with part `omit` emitted as nothing."""
    L = jv.batch.BatchLoopEmitter
    product = "_products"
    own = {k: vars(L).get(k) for k in ("_gates", "_draw", product)}   # None: inherited
    full_product = getattr(L, product)
    if omit == "GRU update":
        L._gates = lambda self, *a: None
    elif omit == "draws":
        L._draw = lambda self, logits, xi: jv.loop.i32(7)
    elif omit == "O1..O4":
        setattr(L, product, lambda self, m, x, y: full_product(self, m, x, y)
                if m == "gru.R" else None)
    os.environ["JITVOC_CACHE"] = tempfile.mkdtemp(prefix="jitvoc-breakdown-")
    try:
        return jv.JitEngine(model, None, dtype, vectors=streams)
    finally:
        for k, v in own.items():
            if v is not None:
                setattr(L, k, v)
            elif k in vars(L):
                delattr(L, k)


def timers(jv, dtypes, n: int, streams: int) -> dict:
    """{(dtype, part or None): run() -> CPU µs per stream-sample} for the tree's modules `jv`."""
    model = jv.calibrate(jv.random_model(**jv.MODEL))
    K = jv.conditioning_rows(model, n)

    def timer(engine):
        def run():
            states = [jv.GenState.initial(model.hidden) for _ in range(streams)]
            t0 = time.thread_time()
            engine.generate_batch([K] * streams, [n] * streams, states, list(range(streams)))
            return (time.thread_time() - t0) / n / streams * 1e6
        return run
    return {(d, part): timer(variant(jv, model, d, part, streams)) for d in dtypes
            for part in (None,) + PARTS}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="int8,int16")
    p.add_argument("--samples", type=int, default=12000)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--trees", nargs="+", default=[None])
    p.add_argument("--batch", type=int, default=8, help="B > 1 streams (default 8)")
    args = p.parse_args()
    if args.batch < 2:
        p.error("--batch takes B > 1; one stream's breakdown: bench/cells_breakdown.py --vocoder")
    dtypes = args.dtype.split(",")
    runs, roof, model = {}, None, None
    for tree in args.trees:
        jv = import_tree(tree)
        runs[tree] = timers(jv, dtypes, args.samples, args.batch)
        if roof is None:   # measured while this tree's modules are the imported ones
            roof, model = jv.kernels.roofline(5), jv.random_model(**jv.MODEL)
    times = {(tree, key): [] for tree in runs for key in runs[tree]}
    for _ in range(args.rounds):
        for tree, keyed in runs.items():
            for key, run in keyed.items():
                times[tree, key].append(run())
    nnz = sum(int(np.count_nonzero(mask)) for _, mask in model.matrices().values())
    bound = nnz / roof["gmacs"] / 1e3
    rate = model.sample_rate
    print(f"dense roofline {roof['gmacs']:.1f} GMAC/s ({roof['spec']}); {nnz} non-zero MACs per "
          f"sample: bound {bound:.3f} µs/sample = {1e6 / bound / rate:.1f}x realtime")
    for tree in runs:
        for d in dtypes:
            full = float(np.median(times[tree, (d, None)]))
            cost = {part: full - float(np.median(times[tree, (d, part)])) for part in PARTS}
            print(f"{tree + ' ' if tree else ''}{d}: {full:.3f} µs/sample "
                  f"({1e6 / full / rate:.1f}x realtime, {bound / full:.0%} of the bound): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in cost.items())
                  + f", R and the rest {full - sum(cost.values()):.3f}")


if __name__ == "__main__":
    main()
