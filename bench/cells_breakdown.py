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
"""
import argparse
import statistics
import time

import numpy as np

from side_by_side import import_tree

import jitvoc
from jitvoc.bench.cells import CELLS, random_weights
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--trees", nargs=2, metavar=("OLD", "NEW"), help="two source trees")
    args = p.parse_args()
    print(f"hidden {args.hidden}, {args.steps} steps: µs per step, medians of {args.rounds}")
    if args.trees:
        return trees(args)
    for name, density, dtype in CASES:
        print(case(name, density, dtype, args))


if __name__ == "__main__":
    main()
