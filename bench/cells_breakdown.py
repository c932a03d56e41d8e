"""Where a compiled cell's time goes, in µs per step: the whole run, the Python of run()
(checking the inputs, the pointer table: run() less its native call), its hoisted product's
B-vector kernel and its recurrent product's kernel, each alone in its native loop, and the
rest of the native loop (the element-wise pass, an integer cell's scaling of the input rows,
the state copies). CPU time of this process, medians of rounds.

    python bench/cells_breakdown.py [--hidden 512] [--steps 1000] [--rounds 7]

For the cells of `jitvoc bench cells` (random weights, input size = hidden): LSTM and GRU,
dense float32 and 90% block-sparse int8.
"""
import argparse
import statistics
import time

import numpy as np

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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    print(f"hidden {args.hidden}, {args.steps} steps: µs per step, medians of {args.rounds}")
    for name, density, dtype in CASES:
        print(case(name, density, dtype, args))


if __name__ == "__main__":
    main()
