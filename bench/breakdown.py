"""Where a sample's time goes in the fused loop, and how far it is from the dense roofline.

    python bench/breakdown.py [--dtype int8,int16] [--batch B]

For random_model(896) at 24 kHz (the `jitvoc bench vocoder` model) it builds, besides the loop,
variants with one part emitted as nothing: the GRU update (both halves), the two draws (a fixed
class), O1..O4. All are timed alternately (CPU time of this thread, medians of rounds); a part
costs the full loop's time minus its variant's. "R and the rest" is what remains: the R product,
the conditioning rows, the quantization of h, the loop itself. The bound is the non-zero MACs
per sample over the dense int8 roofline of `jitvoc bench kernels`, measured in the same run.
Each variant compiles into a cache folder of its own (they share the loop's name).
With --batch B > 1 the batched loop (emit.batch) is taken apart the same way, B streams of
--samples each, and the figures are per stream-sample ("R and the rest" then includes the
interleaving of each product's input).
"""
import argparse
import os
import tempfile
import time

import numpy as np

from jitvoc.bench import kernels as bench_kernels
from jitvoc.bench.vocoder import MODEL, conditioning_rows
from jitvoc.emit import batch, loop
from jitvoc.engine_jit import JitEngine
from jitvoc.model import random_model
from jitvoc.engine import GenState

PARTS = ("GRU update", "draws", "O1..O4")


def variant(model, dtype: str, omit: str | None, streams: int = 1) -> JitEngine:
    L = loop.LoopEmitter if streams == 1 else batch.BatchLoopEmitter
    product = "_matvec" if streams == 1 else "_products"
    own = {k: vars(L).get(k) for k in ("_gates", "_draw", product)}   # None: inherited
    full_product = getattr(L, product)
    if omit == "GRU update":
        L._gates = lambda self, *a: None
    elif omit == "draws":
        L._draw = lambda self, logits, xi: loop.i32(7)
    elif omit == "O1..O4":
        setattr(L, product, lambda self, m, x, y: full_product(self, m, x, y)
                if m == "gru.R" else None)
    os.environ["JITVOC_CACHE"] = tempfile.mkdtemp(prefix="jitvoc-breakdown-")
    try:
        return JitEngine(model, None, dtype, vectors=streams)
    finally:
        for k, v in own.items():
            if v is not None:
                setattr(L, k, v)
            elif k in vars(L):
                delattr(L, k)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="int8,int16")
    p.add_argument("--samples", type=int, default=12000)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--batch", type=int, default=1, help="B streams: the batched loop")
    args = p.parse_args()
    dtypes = args.dtype.split(",")
    model = random_model(**MODEL)
    engines = {(d, part): variant(model, d, part, args.batch) for d in dtypes
               for part in (None,) + PARTS}
    K = conditioning_rows(model, args.samples)
    roof = bench_kernels.roofline(5)
    times = {key: [] for key in engines}
    for _ in range(args.rounds):
        for key, engine in engines.items():
            t0 = time.thread_time()
            _generate(engine, K, args.samples, args.batch)
            times[key].append((time.thread_time() - t0) / args.samples / args.batch * 1e6)
    nnz = sum(int(np.count_nonzero(mask)) for _, mask in model.matrices().values())
    bound = nnz / roof["gmacs"] / 1e3
    rate = model.sample_rate
    print(f"dense roofline {roof['gmacs']:.1f} GMAC/s ({roof['spec']}); {nnz} non-zero MACs per "
          f"sample: bound {bound:.3f} µs/sample = {1e6 / bound / rate:.1f}x realtime")
    for d in dtypes:
        full = float(np.median(times[d, None]))
        cost = {part: full - float(np.median(times[d, part])) for part in PARTS}
        print(f"{d}: {full:.3f} µs/sample ({1e6 / full / rate:.1f}x realtime, {bound / full:.0%} "
              f"of the bound): " + ", ".join(f"{k} {v:.3f}" for k, v in cost.items())
              + f", R and the rest {full - sum(cost.values()):.3f}")


def _generate(engine, K, n, streams):
    states = [GenState.initial(engine.model.hidden) for _ in range(streams)]
    if streams == 1:
        engine.generate(K, 0, n, states[0], 0)
    else:
        engine.generate_batch([K] * streams, [n] * streams, states, list(range(streams)))


if __name__ == "__main__":
    main()
