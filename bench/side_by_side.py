"""Two source trees of jitvoc timed side by side in one process, for a machine shared with others.

    python bench/side_by_side.py OLD_TREE NEW_TREE [--dtype int8,int16,float32] [--samples N]
                                 [--batch 2,4,8,16]

Builds JitEngines for random_model(896) at 24 kHz (the `jitvoc bench vocoder` model) from each
tree (old first, its modules then dropped from sys.modules), then times `generate` of N samples
from silence alternately, old then new, per dtype and round; with --batch, the batched engines
(JitEngine(vectors=B)) instead: `generate_batch` of B streams of N // B samples each, timed per
stream-sample. Prints medians of the CPU time of
this thread (time.thread_time: time the scheduler gave to other processes does not count) and
of the wall time. Each tree keeps its own kernels (the cache key holds the emitter's sources).
"""
import argparse
import sys
import time
import types

import numpy as np


def import_tree(root: str | None) -> types.SimpleNamespace:
    """The jitvoc modules a benchmark needs, imported from the source tree at `root` (the
    jitvoc modules imported before are dropped first), or from sys.path as it is (None)."""
    if root is not None:
        for name in [k for k in sys.modules if k == "jitvoc" or k.startswith("jitvoc.")]:
            del sys.modules[name]
        sys.path.insert(0, root)
    try:
        import jitvoc
        assert root is None or jitvoc.__file__.startswith(root), jitvoc.__file__
        from jitvoc.bench import kernels
        from jitvoc.bench.vocoder import MODEL, conditioning_rows
        from jitvoc.engine import GenState
        from jitvoc.engine_jit import JitEngine
        from jitvoc.model import random_model
        try:
            from jitvoc.calibration import calibrate
        except ImportError:   # a tree from before it, whose engines measured the ranges at load
            def calibrate(model):
                return model
    finally:
        if root is not None:
            sys.path.remove(root)
    return types.SimpleNamespace(kernels=kernels, MODEL=MODEL, conditioning_rows=conditioning_rows,
                                 GenState=GenState, JitEngine=JitEngine,
                                 random_model=random_model, calibrate=calibrate)


def engines(root: str, cases, n: int):
    """run((dtype, B)) -> (cpu µs, wall µs) per stream-sample, for the tree at `root` (B = 1:
    `generate` of n samples; B > 1: `generate_batch` of B streams of n // B)."""
    jv = import_tree(root)
    MODEL, conditioning_rows, JitEngine = jv.MODEL, jv.conditioning_rows, jv.JitEngine
    random_model, GenState = jv.random_model, jv.GenState
    model = jv.calibrate(random_model(**MODEL))
    K = conditioning_rows(model, n)
    built = {(d, B): JitEngine(model, None, d, vectors=B) if B > 1 else JitEngine(model, None, d)
             for d, B in cases}

    def run(case):
        B = case[1]
        states = [GenState.initial(model.hidden) for _ in range(B)]
        c0, w0 = time.thread_time(), time.perf_counter()
        if B == 1:
            built[case].generate(K, 0, n, states[0], 0)
        else:
            built[case].generate_batch([K] * B, [n // B] * B, states, list(range(B)))
        done = n // B * B
        return (time.thread_time() - c0) / done * 1e6, (time.perf_counter() - w0) / done * 1e6
    for case in cases:
        run(case)   # warm up
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--dtype", default="int8,int16,float32")
    p.add_argument("--samples", type=int, default=24000)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--batch", default="1", help="streams per batch, comma-separated")
    args = p.parse_args()
    cases = [(d, int(B)) for d in args.dtype.split(",") for B in args.batch.split(",")]
    runs = {"old": engines(args.old, cases, args.samples),
            "new": engines(args.new, cases, args.samples)}
    times = {(tree, c): [] for tree in runs for c in cases}
    for _ in range(args.rounds):
        for c in cases:
            for tree, run in runs.items():
                times[tree, c].append(run(c))
    rate = 24000
    for c in cases:
        (oc, ow), (nc, nw) = (np.median(times[t, c], axis=0) for t in ("old", "new"))
        name = c[0] if c[1] == 1 else f"{c[0]} B={c[1]}"
        print(f"{name}: CPU µs/sample old {oc:.3f} new {nc:.3f} = x{oc / nc:.2f} "
              f"({1e6 / oc / rate:.1f}x -> {1e6 / nc / rate:.1f}x realtime at 24 kHz); "
              f"wall old {ow:.3f} new {nw:.3f} = x{ow / nw:.2f}")


if __name__ == "__main__":
    main()
