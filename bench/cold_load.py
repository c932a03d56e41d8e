"""A cold `jitvoc.load` of the shipped model in two source trees, alternately, for a shared machine.

    python bench/cold_load.py OLD_TREE NEW_TREE [--dtype int8] [--rounds 12] [--background]

Each round, for each tree in turn: a fresh interpreter (the interpreter itself, not a shim;
OPENBLAS_NUM_THREADS=1, bytecode cached outside the trees as bench/user_path.py caches it)
with an empty JITVOC_CACHE imports jitvoc and times `jitvoc.load("multivoice_wavernn_16k",
dtype=...)` alone: the model file read, planning, the loop's IR and its compile (what a first
run adds to a warm one, without the imports, the mel and the synthesis); with --background,
`jitvoc.load(..., background=True).ready()`, as `jitvoc resynth` loads (a quick start where a
core is free: the process then ends once its worker has cached the optimised loop). Prints, per tree, the
medians (and ranges) of that load's wall time, of the whole process's wall time and of its
CPU time with its children (the compile worker), and the load averages before and after.
A first round per tree, not counted, writes the bytecode.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CODE = "import time, jitvoc; t = time.perf_counter(); {load}; print(time.perf_counter() - t)"


def one(tree: str, dtype: str, pycache: str, background: bool = False) -> tuple:
    """(load wall s, process wall s, process + children CPU s) of one cold load in `tree`."""
    with tempfile.TemporaryDirectory(prefix="jitvoc-cold-load-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"PYTHONPATH": tree, "JITVOC_CACHE": cache, "OPENBLAS_NUM_THREADS": "1",
                "PYTHONPYCACHEPREFIX": os.path.join(pycache, tree.replace("/", "_"))}
        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        load = f"jitvoc.load('multivoice_wavernn_16k', dtype={dtype!r}" + (
            ", background=True).ready()" if background else ")")
        code = CODE.format(load=load)
        out = subprocess.run([sys.executable, "-c", code], env=env,
                             cwd=tempfile.gettempdir(), check=True, capture_output=True,
                             text=True).stdout
        wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return float(out.split()[-1]), wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs=2, metavar="TREE")
    p.add_argument("--dtype", default="int8")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--background", action="store_true", help="load(background=True).ready()")
    args = p.parse_args()
    trees = [os.path.abspath(t) for t in args.trees]
    print("load average before", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="jitvoc-pycache-") as pycache:
        for tree in trees:
            one(tree, args.dtype, pycache, args.background)
        runs = {t: [] for t in trees}
        for _ in range(args.rounds):
            for tree in trees:
                runs[tree].append(one(tree, args.dtype, pycache, args.background))
    for tree in trees:
        load, wall, cpu = zip(*runs[tree])
        print(f"{tree} {args.dtype}: load {statistics.median(load):.3f} s "
              f"({min(load):.3f}-{max(load):.3f}), process {statistics.median(wall):.3f} s, "
              f"CPU {statistics.median(cpu):.3f} s")
    print("load average after", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
