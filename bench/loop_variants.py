"""In-loop kernel variants of the vocoder timed alternately in one process (CPU time): which
kernel choice is fastest on this CPU generation, in the loop rather than alone.

    python bench/loop_variants.py DTYPE B ROUNDS SAMPLES VARIANT...

Each VARIANT (a name of VARIANTS; the first is the base the others are paired with, list
"base" and "base2" to see the noise; "defaults" is the planners' choice as measured on Zen 4,
without this generation's isa.KERNEL_CHOICES) is a JitEngine for random_model(896) at 24 kHz (the
`jitvoc bench vocoder` model) whose planner constants were patched while it was planned, in a
kernel cache of its own (the plan cache keys on the code, not on the constants). B = 1 times
`generate` of SAMPLES samples, B > 1 `generate_batch` of B streams of SAMPLES // B. The samples
of every variant are checked equal to the first's; the order of the variants rotates every round
and is reversed every other. Prints per variant the median µs per stream-sample and the paired
ratio base / variant (median over rounds, with its quartiles): above 1, the variant is faster.
"""
import os
import sys
import tempfile
import time

import numpy as np

from jitvoc import isa
from jitvoc.bench.vocoder import MODEL, conditioning_rows
from jitvoc.calibration import calibrate
from jitvoc.engine import GenState
from jitvoc.engine_jit import JitEngine
from jitvoc.model import random_model
from jitvoc.plan import matvec as mv_plan
from jitvoc.plan import vocoder as voc_plan


def no_permutes(*args, **kwargs) -> int:
    """plan.matvec.permute_window patched: table gathers everywhere."""
    return 0


# the planners' defaults, measured on Zen 4, whatever this generation measured (isa.KERNEL_CHOICES)
DEFAULTS = {(isa, "KERNEL_CHOICES"): {}}
# name -> {(module, constant): value} patched while the variant's engine is planned: "base" is
# this tree's choice for this generation, the others force what they name
VARIANTS = {
    "base": {}, "base2": {}, "defaults": DEFAULTS,
    **{f"idx u{u}a{a}": {**DEFAULTS, (mv_plan, "INLINE_KERNEL"): ("idx", u, a)}
       for u, a in ((1, 2), (2, 2), (4, 1), (4, 4), (8, 2), (8, 4))},
    **{f"grouped a{a}": {**DEFAULTS, (mv_plan, "INLINE_KERNEL"): ("grouped", 1, a)}
       for a in (2, 4)},
    "baked a2": {**DEFAULTS, (mv_plan, "INLINE_KERNEL"): ("baked", 1, 2)},
    "tables": {**DEFAULTS, (mv_plan, "permute_window"): no_permutes},
    # the loop of B > 1 streams
    **{f"B idx u{u}": {**DEFAULTS, (voc_plan, "STREAMS_KERNEL"): {"variant": "idx", "unroll": u}}
       for u in (1, 2, 4, 8)},
    "B grouped": {**DEFAULTS, (voc_plan, "STREAMS_KERNEL"): {"variant": "grouped", "unroll": 1}},
    "B a2": {**DEFAULTS, (mv_plan, "VECTORS_ACCUMULATORS"): 2},
    "B shuffles": {**DEFAULTS, (mv_plan, "PERMUTE_WORDS_BYTES"): 0},
    # B-vector cores building each panel's words per group of vectors in registers, not once
    # per row block (isa.ROW_BLOCK_WORDS, read when the core is emitted)
    "B register words": {**DEFAULTS, (isa, "ROW_BLOCK_WORDS"): {}},
}


def build(name: str, model, dtype: str, B: int, cache_root: str) -> JitEngine:
    patch = VARIANTS[name]
    saved = {key: getattr(*key) for key in patch}
    os.environ["JITVOC_CACHE"] = os.path.join(cache_root, name.replace(" ", "_"))
    for (module, constant), value in patch.items():
        setattr(module, constant, value)
    try:
        engine = JitEngine(model, None, dtype, vectors=B)
    finally:
        for (module, constant), value in saved.items():
            setattr(module, constant, value)
    kernels = sorted({p.spec.name for p in engine.plan.plans.values()})
    print(f"{name}: {', '.join(kernels)}", flush=True)
    return engine


def main():
    dtype, B, rounds, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    names = sys.argv[5:]
    model = calibrate(random_model(**MODEL))
    K = conditioning_rows(model, n)
    with tempfile.TemporaryDirectory(prefix="jitvoc-loop-variants-") as cache_root:
        engines = {name: build(name, model, dtype, B, cache_root) for name in names}
        times = timed(engines, model, K, B, n, rounds)
    print(f"{dtype} B = {B}: {rounds} rounds of {n} samples, samples identical, "
          f"load average {os.getloadavg()[0]:.1f}")
    base = np.array(times[names[0]])
    for name in names:
        q1, med, q3 = np.percentile(base / np.array(times[name]), [25, 50, 75])
        print(f"{name:>12}: {np.median(times[name]):.3f} µs  paired {med:.3f} "
              f"[{q1:.3f}, {q3:.3f}]")


def timed(engines: dict, model, K, B: int, n: int, rounds: int) -> dict:
    """name -> CPU µs per stream-sample of each round; exits if a variant's samples differ
    from the first's."""
    names = list(engines)

    def run(name):
        states = [GenState.initial(model.hidden) for _ in range(B)]
        t0 = time.thread_time()
        if B == 1:
            out = [engines[name].generate(K, 0, n, states[0], 0)]
        else:
            out = engines[name].generate_batch([K] * B, [n // B] * B, states, list(range(B)))
        return (time.thread_time() - t0) / (n // B * B) * 1e6, out
    first = run(names[0])[1]
    for name in names[1:]:
        if not all(np.array_equal(a, b) for a, b in zip(first, run(name)[1])):
            sys.exit(f"{name}: samples differ from {names[0]}'s")
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order if r % 2 == 0 else order[::-1]:
            times[name].append(run(name)[0])
    return times


if __name__ == "__main__":
    main()
