"""The fuzzing suite (issue 11, item 4): generated cases against model files, mel arrays, audio
files, build_matvec, linear_recurrence and the layers, and CPU generations.

Each target's cases run in a worker process (tests/fuzz_worker.py), so a crash or a hang is
caught and named: the suite fails on any signal, hang, exception other than the documented
jitvoc one, or result outside the documented tolerance. The default run takes about a minute;
JITVOC_FUZZ=N runs N times as many cases (and JITVOC_FUZZ_SEED another seed) for developers.
Replay one case: python tests/fuzz_worker.py TARGET SEED 1 CASE.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "fuzz_worker.py"
CASES = {"model": 1500, "mel": 500, "audio": 1500, "matvec": 80, "recurrence": 1000,
         "generation": 150}
SLOW = {"matvec"}   # compiles a kernel per case: 12 s of the default run
SCALE = int(os.environ.get("JITVOC_FUZZ") or 1)
SEED = int(os.environ.get("JITVOC_FUZZ_SEED") or 0)
SECONDS_PER_CASE = 20   # a worker silent for this long per remaining case has hung
MAX_TIMEOUT = 24 * 3600   # s (poll() takes at most 2^31 ms; JITVOC_FUZZ=100 asked 3e6 s)


def run_worker(target: str, count: int, tmp_path) -> tuple[list, int, str]:
    """(failures, cases run, stderr tail) of one worker run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JITVOC_CACHE=str(tmp_path / "cache"))
    try:
        r = subprocess.run([sys.executable, str(WORKER), target, str(SEED), str(count)],
                           capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=min(60 + SECONDS_PER_CASE * count, MAX_TIMEOUT))
        out, rc = r.stdout, r.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(), "hang"
        r = None
    failures, running, done = [], None, 0
    for line in out.splitlines():
        word, _, rest = line.partition(" ")
        if word == "start":
            running = rest
        elif word in ("ok", "fail"):
            done += 1
            if word == "fail":
                failures.append(f"{running}: {rest.partition(' ')[2]}")
            running = None
    if rc != 0:
        failures.append(f"{running or 'setup'}: worker ended with "
                        f"{'a hang' if rc == 'hang' else f'signal {-rc}' if rc < 0 else f'rc {rc}'}")
    return failures, done, (r.stderr[-2000:] if r is not None else "")


@pytest.mark.parametrize("target", [pytest.param(t, marks=pytest.mark.slow) if t in SLOW else t
                                    for t in CASES])
def test_fuzz(target, tmp_path):
    count = CASES[target] * SCALE
    failures, done, stderr = run_worker(target, count, tmp_path)
    print(f"fuzz {target}: {done} cases, {len(failures)} failures")
    assert not failures, "\n".join(failures[:20]) + "\n" + stderr
    assert done == count, stderr
