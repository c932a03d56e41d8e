"""Kernel variants of the benchmark matrices timed alternately in one process (CPU time).

    python bench/kernel_variants.py ROUNDS CONFIGS [MATRICES] [--trees TREE TREE ...]
                                    [--cpu GEN] [--macs N]

CONFIGS is a Python dict literal, name -> build_plan keywords (block, variant, unroll,
accumulators, permute, vectors) and dtype (default int8), e.g. '{"perm": dict(vectors=8),
"shuffles": dict(vectors=8, permute=False)}'; MATRICES a tuple of jitvoc.bench.kernels matrices,
`K.` names the module (default: R at 5% and O1/O3, `(R, O1)`; O2 is O2/O4; others as
`K.Matrix("GRU-A 5% 8x4", 1152, 384, 0.05, (8, 4))`). Each kernel runs in its native loop for
about --macs MACs per sample (default 2e7); every round times every kernel once
(time.thread_time, so time the scheduler gave to other processes does not count), in reversed
order every other round; prints medians of the ns per call and their spread (IQR / median), and
per matrix the paired ratio of every later config over the first (median and quartiles over the
rounds; above 1, the first is faster). --cpu: the generation to compile for (default native).

With --trees: every config compiled from each source tree (loaded as bench/side_by_side.py
loads them, each with its own kernels: the cache key holds the emitter's sources), their
outputs checked equal to the first tree's bit for bit, and per config and later tree the
paired ratio first / this tree over the rounds (median and quartiles; above 1, this tree is
faster).
"""
import argparse
import os
import time

import numpy as np

from side_by_side import import_tree


def ns_per_call(mv, x: np.ndarray, n: int, native) -> float:
    y = np.empty(x.shape[:-1] + (mv.rows,), dtype=np.float32)
    keep, ptrs, inv, scale = mv._args(mv._check_x(x))
    t0 = time.thread_time()
    mv._loop(n, native.ptr(y), *ptrs, inv, scale)
    del keep
    return (time.thread_time() - t0) / n * 1e9


def build(root, configs: dict, matrices: str, cpu: str, macs: float) -> dict:
    """(matrix label, config name) -> (MatVec, x, calls, native module, y) from the tree at
    `root` (None: sys.path as it is)."""
    jv = import_tree(root)
    from jitvoc import cpu as cpu_mod, native
    from jitvoc.matvec import MatVec
    K = jv.kernels
    R, O1, O2 = K.WAVERNN_R[1], K.MATRICES[6], K.MATRICES[7]  # noqa: F841 (names of MATRICES)
    gen = cpu_mod.resolve(cpu)
    built = {}
    for m in eval(matrices):
        w, mask = K.make_matrix(m)
        for name, kw in configs.items():
            kw = dict(kw)
            n, dtype = kw.get("vectors", 1), kw.pop("dtype", "int8")
            mv = MatVec(K._plan(w, mask, dtype, gen, **kw), gen)
            x = np.random.default_rng(1).standard_normal((n, m.cols) if n > 1 else m.cols)
            x = x.astype(np.float32)
            calls = max(1, int(macs / (m.rows * m.cols * m.density * n)))
            built[m.label, name] = (mv, x, calls, native, mv(x))
            print(f"{root or ''} {m.label} {name}: {mv.spec}", flush=True)
    return built


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rounds", type=int)
    p.add_argument("configs")
    p.add_argument("matrices", nargs="?", default="(R, O1)")
    p.add_argument("--trees", nargs="+", default=[None])
    p.add_argument("--cpu", default="native")
    p.add_argument("--macs", type=float, default=2e7)
    args = p.parse_args()
    configs = eval(args.configs)
    built = {(tree, *key): v for tree in args.trees
             for key, v in build(tree, configs, args.matrices, args.cpu, args.macs).items()}
    first = args.trees[0]
    for (tree, label, name), (*_, y) in built.items():
        if not np.array_equal(y, built[first, label, name][4]):
            raise SystemExit(f"{tree} {label} {name}: output differs from {first}'s")
    keys = list(built)
    times = {key: [] for key in keys}
    for r in range(args.rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            mv, x, calls, native, _ = built[key]
            times[key].append(ns_per_call(mv, x, calls, native))
    for (tree, label, name), t in times.items():
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        where = f" {tree}" if len(args.trees) > 1 else ""
        print(f"{label:>16} {name:>14}{where}: {med:9.0f} ns  spread {(q3 - q1) / med:.0%}")
    names = list(configs)
    for (tree, label, name), t in times.items():
        if name != names[0]:
            q1, med, q3 = np.percentile(np.array(t) / np.array(times[tree, label, names[0]]),
                                        [25, 50, 75])
            where = f" {tree}" if len(args.trees) > 1 else ""
            print(f"{label:>16} {name:>14}{where}: paired {name} / {names[0]} {med:.3f} "
                  f"[{q1:.3f}, {q3:.3f}]")
    for (tree, label, name), t in times.items():
        if tree != first:
            q1, med, q3 = np.percentile(np.array(times[first, label, name]) / np.array(t),
                                        [25, 50, 75])
            print(f"{label:>16} {name:>14} {tree}: paired {med:.3f} [{q1:.3f}, {q3:.3f}]")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
