"""Kernel variants of the benchmark matrices timed alternately in one process (CPU time).

    python bench/kernel_variants.py ROUNDS CONFIGS [MATRICES]

CONFIGS is a Python dict literal, name -> build_plan keywords (block, variant, unroll,
accumulators, permute, vectors) and dtype (default int8), e.g. '{"perm": dict(vectors=8), "shuffles": dict(vectors=8,
permute=False)}'; MATRICES a tuple of jitvoc.bench.kernels matrices, `K.` names the module
(default: R at 5% and O1/O3, `(R, O1)`; O2 is O2/O4). Each kernel runs in its native loop for
about 2e7 MACs per sample; every round times every kernel once (time.thread_time, so time the
scheduler gave to other processes does not count); prints medians of the ns per call and their
spread (IQR / median). Native.
"""
import sys
import time

import numpy as np

from jitvoc import cpu as cpu_mod, native
from jitvoc.bench import kernels as K
from jitvoc.matvec import MatVec

R, O1, O2 = K.WAVERNN_R[1], K.MATRICES[6], K.MATRICES[7]


def ns_per_call(mv: MatVec, x: np.ndarray, n: int) -> float:
    y = np.empty(x.shape[:-1] + (mv.rows,), dtype=np.float32)
    keep, ptrs, inv, scale = mv._args(mv._check_x(x))
    t0 = time.thread_time()
    mv._loop(n, native.ptr(y), *ptrs, inv, scale)
    del keep
    return (time.thread_time() - t0) / n * 1e9


def main():
    rounds, configs = int(sys.argv[1]), eval(sys.argv[2])
    matrices = eval(sys.argv[3]) if len(sys.argv) > 3 else (R, O1)
    gen = cpu_mod.resolve("native")
    built = {}
    for m in matrices:
        w, mask = K.make_matrix(m)
        for name, kw in configs.items():
            kw = dict(kw)
            n, dtype = kw.get("vectors", 1), kw.pop("dtype", "int8")
            mv = MatVec(K._plan(w, mask, dtype, gen, **kw), gen)
            x = np.random.default_rng(1).standard_normal((n, m.cols) if n > 1 else m.cols)
            calls = max(1, int(2e7 / (m.rows * m.cols * m.density * n)))
            built[m.label, name] = (mv, x.astype(np.float32), calls)
            print(f"{m.label} {name}: {mv.spec}", flush=True)
    times = {key: [] for key in built}
    for _ in range(rounds):
        for key, (mv, x, calls) in built.items():
            times[key].append(ns_per_call(mv, x, calls))
    for (label, name), t in times.items():
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        print(f"{label:>16} {name:>14}: {med:9.0f} ns  spread {(q3 - q1) / med:.0%}")


if __name__ == "__main__":
    main()
