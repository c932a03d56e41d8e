"""Corpus mode (issue 15, items 4 and 5): many inputs on every core, per-file errors, atomic
outputs, kernels compiled once, and the Ray Data pipeline on a local Ray instance."""
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import soundfile as sf

import jitvoc
from jitvoc import corpus
from jitvoc.bench.corpus import (_TreeCpu, _time_independent, batch_ratios, measure_batches,
                                 steady_speed)
from jitvoc.blas import thread_counts
from jitvoc.cli import main
from jitvoc.errors import JitvocError
from jitvoc.model import random_model

ROOT = Path(__file__).resolve().parent.parent
SR = 16000


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    model = random_model(hidden=32, density=0.25, sample_rate=SR, n_mels=8, cond_channels=8)
    jitvoc.calibrate(model).save(path)
    return path


def _corpus(folder: Path) -> Path:
    """Five short inputs: audio of several formats and rates in a nested folder, and mels."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    for i, n in enumerate((2000, 4100, 1500)):
        sf.write(folder / f"a{i}.wav", rng.standard_normal(n) * 0.1, SR, subtype="PCM_16")
    sf.write(folder / "sub" / "b.flac", rng.standard_normal(3000) * 0.1, 22050)
    np.save(folder / "sub" / "m.npy", rng.normal(-4, 2, (7, 8)).astype(np.float32))
    return folder


@pytest.fixture
def inputs(tmp_path):
    return _corpus(tmp_path / "in")


def cli(*argv) -> int:
    return main([str(a) for a in argv])


def single(model_path, command, source, out) -> bytes:
    """The single-file result: `jitvoc synth|resynth MODEL source -o out`."""
    assert cli(command, model_path, source, "-o", out) == 0
    return Path(out).read_bytes()


def test_collect_walks_folders_and_lists(inputs, tmp_path):
    items = corpus.collect([inputs])
    assert [(i.name, i.kind) for i in items] == [
        ("a0.wav", "audio"), ("a1.wav", "audio"), ("a2.wav", "audio"),
        ("sub/b.wav", "audio"), ("sub/m.wav", "mel")]
    assert [i.name for i in corpus.collect([inputs], kinds=("mel",))] == ["sub/m.wav"]
    (inputs / "list.txt").write_text("# two files\nsub/b.flac\n\na0.wav\n")
    listed = corpus.collect([], ("audio",), list_file=inputs / "list.txt")
    assert [(i.source, i.name) for i in listed] == [(str(inputs / "sub/b.flac"), "sub/b.wav"),
                                                    (str(inputs / "a0.wav"), "a0.wav")]


@pytest.mark.parametrize("make,message", [
    (lambda d: ([d / "x" / "a.wav", d / "y" / "a.wav"], None), "would both be written to a.wav"),
    (lambda d: ([d / "empty"], None), "no input files found"),
    (lambda d: ([], d / "missing.txt"), "missing.txt: no such list file"),
])
def test_collect_refuses(tmp_path, make, message):
    (tmp_path / "empty").mkdir()
    paths, list_file = make(tmp_path)
    with pytest.raises(JitvocError, match=message):
        corpus.collect(paths, list_file=list_file)


@pytest.mark.parametrize("jobs, batch", [pytest.param(1, 1, marks=pytest.mark.slow), (2, 1),
                                         (1, 3), pytest.param(2, 2, marks=pytest.mark.slow)])
def test_each_output_equals_the_single_file_result(model_path, inputs, tmp_path, jobs, batch,
                                                   capsys):
    """Also with --batch B: the files generated B at a time (synthesize_batch), same bytes."""
    out = tmp_path / "out"
    assert cli("corpus", model_path, inputs, "-o", out, "--jobs", jobs, "--batch", batch) == 0
    err = capsys.readouterr().err
    assert f"wrote 5 of 5 files to {out}" in err and "x realtime" in err
    assert "note: 1 input was mixed down or resampled" in err
    for source, name, command in (("a1.wav", "a1.wav", "resynth"),
                                  ("sub/b.flac", "sub/b.wav", "resynth"),
                                  ("sub/m.npy", "sub/m.wav", "synth")):
        want = single(model_path, command, inputs / source, tmp_path / "single.wav")
        assert (out / name).read_bytes() == want, name
    assert sorted(p.name for p in out.rglob("*")) == sorted(
        ["a0.wav", "a1.wav", "a2.wav", "sub", "b.wav", "m.wav"])   # no temporary files


@pytest.mark.parametrize("jobs, batch", [(2, 1), (1, 5)])
def test_resynth_takes_many_files_and_reports_failures(model_path, inputs, tmp_path, capsys,
                                                       jobs, batch):
    """Failures are per file, also among the files of one batch."""
    (inputs / "bad.wav").write_bytes(b"not audio")
    (inputs / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    code = cli("resynth", model_path, inputs / "a0.wav", inputs / "bad.wav", inputs / "gone.wav",
               inputs / "a2.wav", inputs / "empty.wav", "-o", out, "--jobs", jobs,
               "--batch", batch)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"error: {inputs / 'bad.wav'}: not a readable audio file (Error opening " \
           f"'{inputs / 'bad.wav'}'" in err
    assert f"error: {inputs / 'gone.wav'}: no such file" in err
    assert f"{inputs / 'empty.wav'}: not a readable audio file" in err
    assert "wrote 2 of 5 files" in err and "3 of 5 files failed" in err
    assert sorted(os.listdir(out)) == ["a0.wav", "a2.wav"]


def test_a_default_model_and_the_model_first(model_path, inputs, tmp_path, capsys):
    """With several inputs the first is the model only if it names one."""
    args = ["a0.wav", "a2.wav", "-o", tmp_path / "o", "--jobs", 1]
    os.chdir(inputs)
    assert cli("resynth", model_path, *args) == 0
    assert cli("resynth", "no_such_model", *args) == 2
    assert "unknown model name 'no_such_model'" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--batch", "65"], "--batch must be at most 64"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--address", "auto"], "--address names a Ray cluster: it needs --ray"),
])
def test_bad_options(model_path, inputs, tmp_path, capsys, argv, message):
    assert cli("corpus", model_path, inputs, "-o", tmp_path / "o", *argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_one_input_into_a_folder(model_path, inputs, tmp_path, capsys):
    """-o naming a folder (existing, or ending in '/') makes even one input a corpus run."""
    want = single(model_path, "resynth", inputs / "a0.wav", tmp_path / "single.wav")
    assert cli("resynth", model_path, inputs / "a0.wav", "-o", f"{tmp_path / 'new'}/") == 0
    assert (tmp_path / "new" / "a0.wav").read_bytes() == want
    assert cli("resynth", model_path, inputs / "a0.wav", "-", "-o", tmp_path / "new") == 2
    assert "'-' (stdin) is for a single input" in capsys.readouterr().err


def test_output_folder_must_be_a_folder(model_path, inputs, tmp_path, capsys):
    (tmp_path / "file").write_bytes(b"x")
    assert cli("resynth", model_path, inputs, "-o", tmp_path / "file") == 2
    assert "file is not a folder" in capsys.readouterr().err
    assert (tmp_path / "file").read_bytes() == b"x"


def test_an_input_is_never_overwritten(model_path, inputs, capsys):
    before = (inputs / "a0.wav").read_bytes()
    assert cli("resynth", model_path, inputs, "-o", inputs, "--jobs", 1) == 1
    assert "it is the input file" in capsys.readouterr().err
    assert (inputs / "a0.wav").read_bytes() == before


@pytest.mark.slow
def test_the_kernels_are_compiled_once(model_path, inputs, tmp_path):
    """With an empty kernel cache the parent builds each engine (the batched one of --batch
    included) and compiles each module once, before it forks the worker, which inherits
    them: a worker that built an engine of its own would print its plan again."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JITVOC_CACHE=str(tmp_path / "cache"),
               JITVOC_DEBUG="2")
    r = subprocess.run([sys.executable, "-m", "jitvoc", "-v", "corpus", str(model_path),
                        str(inputs), "-o", str(tmp_path / "out"), "--jobs", "2", "--batch", "2"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    compiled = re.findall(r"compiled (\S+) for", r.stderr)
    assert compiled and len(compiled) == len(set(compiled)), compiled
    engines = re.findall(r"vocoder plan (\S+):", r.stderr)   # built: planned, then loaded
    assert len(engines) == 2 and len(set(engines)) == 2, engines   # B = 1 and B = 2, once
    assert "wrote 5 of 5 files" in r.stderr


def test_workers_fork_from_one_thread(model_path, inputs, tmp_path, monkeypatch):
    """The workers are forked from a process that runs no thread of jitvoc's (the progress
    bar's included): a fork copies no other thread, and any lock one held stays held."""
    before, at_fork = set(threading.enumerate()), []
    run_processes = corpus._run_processes

    def probe(*args):
        at_fork.append(set(threading.enumerate()) - before)
        return run_processes(*args)
    monkeypatch.setattr(corpus, "_run_processes", probe)
    assert cli("corpus", model_path, inputs, "-o", tmp_path / "out", "--jobs", 2,
               "--batch", 2) == 0
    assert at_fork == [set()]


def test_jobs_n_is_this_process_and_n_minus_1_forked(model_path, inputs, tmp_path):
    """--jobs 2: this process vocodes too, beside one forked worker (which inherits the
    patch that records who vocoded what; this process is slowed down, so that the worker
    surely gets files on a loaded machine)."""
    parent, pids, process = os.getpid(), tmp_path / "pids", corpus.process

    def recorded(*args):
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        if os.getpid() == parent:
            time.sleep(0.3)
        return process(*args)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(corpus, "process", recorded)
        corpus.run(str(model_path), corpus.collect([inputs]), tmp_path / "out", jobs=2)
    seen = pids.read_text().split()
    assert len(seen) == 5 and str(os.getpid()) in seen and len(set(seen)) == 2, seen


def test_a_dead_worker_stops_the_run(model_path, inputs, tmp_path):
    """A worker that dies (here: exits in its first file) is an error, not a hang."""
    parent, process = os.getpid(), corpus.process

    def dies_in_a_worker(*args):
        if os.getpid() != parent:
            os._exit(3)
        return process(*args)
    items = corpus.collect([inputs])
    with pytest.MonkeyPatch.context() as m:   # the forked worker inherits the patch
        m.setattr(corpus, "process", dies_in_a_worker)
        with pytest.raises(JitvocError, match=r"a worker process died \(exit status 3\)"):
            corpus.run(str(model_path), items, tmp_path / "out", jobs=2)


# --- Ray ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'jitvoc[ray]'")
    pytest.importorskip("ray.data", reason="ray.data is not installed: pip install 'ray[data]'")
    root = str(Path(jitvoc.__file__).resolve().parents[1])   # the actors run the jitvoc tested
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_outputs_equal_the_single_process_result(local_ray, model_path, inputs, tmp_path,
                                                    capsys):
    (inputs / "bad.wav").write_bytes(b"not audio")
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert cli("corpus", model_path, inputs, "-o", local, "--jobs", 1) == 1
    assert cli("corpus", model_path, inputs, "-o", on_ray, "--ray", "--jobs", 2) == 1
    err = capsys.readouterr().err
    assert f"error: {inputs / 'bad.wav'}: not a readable audio file" in err
    assert "wrote 5 of 6 files" in err and "Ray, 2 workers" in err
    names = sorted(str(p.relative_to(local)) for p in local.rglob("*.wav"))
    assert len(names) == 5
    assert sorted(str(p.relative_to(on_ray)) for p in on_ray.rglob("*.wav")) == names
    for name in names:
        assert (on_ray / name).read_bytes() == (local / name).read_bytes(), name


@pytest.mark.slow
def test_ray_says_nothing_of_its_own(model_path, inputs, tmp_path):
    """`jitvoc corpus --ray` as a command on a local instance of its own: stderr holds jitvoc's
    messages only, none of Ray's (its token authentication warning, its core's error about
    actors restarted with arguments in the object store, Ray Data's "Progress bars disabled",
    "Started a local Ray instance"), and a bad file's error."""
    pytest.importorskip("ray.data", reason="ray[data] is not installed: pip install 'jitvoc[ray]'")
    (inputs / "bad.wav").write_bytes(b"not audio")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(ROOT)   # the instance's workers inherit it: the jitvoc tested
    run = subprocess.run([sys.executable, "-m", "jitvoc", "corpus", str(model_path), str(inputs),
                          "-o", str(tmp_path / "out"), "--ray", "--jobs", "2"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.splitlines()
    assert any(line.startswith(f"jitvoc: error: {inputs / 'bad.wav'}") for line in lines)
    assert any(line.startswith("jitvoc: wrote 5 of 6 files") for line in lines), run.stderr
    assert [line for line in lines if not line.startswith("jitvoc: ")] == []


def _actors() -> set:
    """The pids of this process's tree titled ray::MapWorker... (Ray Data's actors)."""
    found = set()
    for pid in _TreeCpu._sample():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:   # ended meanwhile
            continue
        if title.startswith(b"ray::MapWorker"):
            found.add(pid)
    return found


def _kill_an_actor_once_written(out: Path, killed: list, earlier: set,
                                timeout: float = 120.0) -> None:
    """Wait for the first output in `out`, then kill (SIGKILL, as the kernel's OOM killer does)
    one Ray Data actor of this run of the local Ray instance (not one of `earlier`: an earlier
    test's actor may still be ending), its pid appended to `killed`."""
    deadline = time.monotonic() + timeout
    while not any(out.glob("*.wav")) and time.monotonic() < deadline:
        time.sleep(0.005)
    for pid in sorted(_actors() - earlier):
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        return


@pytest.mark.slow
def test_a_dead_ray_actor_ends_the_run_or_loses_nothing(local_ray, model_path, tmp_path, capsys):
    """An actor whose process dies (killed once the first output is written) ends the run with
    jitvoc's error and exit status 2, as a dead worker process does with --jobs, not a hang or
    retries without end (actors are not restarted). Ray Data 2.60 goes on with the other
    actor instead in some runs (one in two to five here, 2026-12-01), and the run then ends
    whole (status 0, every file). Either way the outputs written are complete: each equals
    the single-process result, and no temporary file is left."""
    inputs, out, local = tmp_path / "in", tmp_path / "out", tmp_path / "local"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):   # 2 s each: the run goes on for about a second after the first output
        sf.write(inputs / f"f{i:02d}.wav", rng.standard_normal(2 * SR) * 0.1, SR,
                 subtype="PCM_16")
    killed = []
    killer = threading.Thread(target=_kill_an_actor_once_written,
                              args=(out, killed, _actors()))
    killer.start()
    status = cli("corpus", model_path, inputs, "-o", out, "--ray", "--jobs", 2)
    killer.join()
    err = capsys.readouterr().err
    written = sorted(p.name for p in out.iterdir())
    assert killed and status in (0, 2), err
    assert all(re.fullmatch(r"f\d\d\.wav", n) for n in written), written
    if status == 2:
        assert re.search(r"^jitvoc: error: a Ray actor died \(.+\); the outputs written so far "
                         r"are complete$", err, re.M), err
        assert 0 < len(written) < 40
    else:
        assert re.search(r"^jitvoc: wrote 40 of 40 files", err, re.M) and len(written) == 40, err
    assert cli("corpus", model_path, *(inputs / n for n in written), "-o", local,
               "--jobs", 1) == 0
    for name in written:
        assert (out / name).read_bytes() == (local / name).read_bytes(), name


@pytest.mark.parametrize("address, env, joined, auth", [
    (None, {}, "local", "token"),                      # a new local instance, token auth chosen
    (None, {"RAY_AUTH_MODE": "disabled"}, "local", "disabled"),   # the user's choice kept
    (None, {"RAY_ADDRESS": "head:6379"}, "head:6379", None),      # $RAY_ADDRESS joined
    ("auto", {}, "auto", None)])                       # a cluster's mode is the cluster's
def test_init_ray_starts_or_joins(monkeypatch, address, env, joined, auth):
    """init_ray: a local instance unless --address or $RAY_ADDRESS names a cluster; for a local
    one RAY_AUTH_MODE=token (Ray's default, chosen before Ray's import so that Ray does not
    warn); Ray's notes off unless jitvoc's debug messages are on."""
    for name in ("RAY_AUTH_MODE", "RAY_ADDRESS"):
        monkeypatch.setenv(name, "")   # restored (unset) after the test
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    calls = []
    fake = types.SimpleNamespace(is_initialized=lambda: False,
                                 init=lambda **kw: calls.append(kw))
    monkeypatch.setattr(corpus, "require", lambda *a: fake)
    log = logging.getLogger("jitvoc.test-init-ray")   # jitvoc's logger, at the CLI's default
    log.setLevel(logging.INFO)
    monkeypatch.setattr(corpus, "log", log)
    assert corpus.init_ray(address) is fake
    assert calls[0]["address"] == joined and calls[0]["logging_level"] == logging.WARNING
    assert os.environ.get("RAY_AUTH_MODE") == auth
    log.setLevel(logging.DEBUG)   # jitvoc -v
    assert corpus._ray_log_level() == logging.INFO


def test_run_ray_sends_the_longest_files_first(monkeypatch, model_path, tmp_path):
    """run_ray hands the pipeline its files longest first, as the processes take them (the
    last ones sent are the shortest: the actors end together), with Ray Data's own progress
    bars off (jitvoc's bar reports)."""
    items = []
    for i, size in enumerate((100, 300, 200)):
        (tmp_path / f"f{i}.npy").write_bytes(b"x" * size)
        items.append(corpus.Item(str(tmp_path / f"f{i}.npy"), f"f{i}.wav", "mel"))
    sent, ds = [], types.SimpleNamespace(context=types.SimpleNamespace(),
                                         iter_rows=lambda: iter(()))
    monkeypatch.setattr(corpus, "init_ray", lambda address=None: None)
    monkeypatch.setattr(corpus, "pipeline", lambda model, chosen, *a, **k: sent.extend(chosen)
                        or ds)
    corpus.run_ray(str(model_path), items, tmp_path / "out")
    assert [item.name for item in sent] == ["f1.wav", "f2.wav", "f0.wav"]
    assert ds.context.enable_progress_bars is False


def test_run_ray_reports_an_actor_killed_for_memory(monkeypatch, model_path, tmp_path):
    """An actor that Ray's memory monitor kills (the node low on memory) ends the run with
    jitvoc's error, as a dead actor does, not Ray's traceback."""
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'jitvoc[ray]'")

    def rows():
        raise ray.exceptions.OutOfMemoryError("1 worker(s) were killed due to the node running "
                                              "low on memory.\nMemory on the node ...")
        yield
    ds = types.SimpleNamespace(context=types.SimpleNamespace(), iter_rows=rows)
    monkeypatch.setattr(corpus, "init_ray", lambda address=None: ray)
    monkeypatch.setattr(corpus, "pipeline", lambda *a, **k: ds)
    with pytest.raises(JitvocError, match=r"^a Ray actor died \(1 worker\(s\) were killed due "
                                          r"to the node running low on memory\.\); the outputs"):
        corpus.run_ray(str(model_path), corpus.collect([_corpus(tmp_path / "in")]),
                       tmp_path / "out")


def test_run_ray_refuses_a_bad_cpu_before_the_pipeline(monkeypatch, model_path, tmp_path):
    """The driver's load (its engine built while Ray starts) fails the run, not every actor."""
    monkeypatch.setattr(corpus, "init_ray", lambda address=None: None)
    monkeypatch.setattr(corpus, "pipeline", lambda *a, **k: pytest.fail("pipeline started"))
    with pytest.raises(JitvocError, match="no-such-cpu"):
        corpus.run_ray(str(model_path), corpus.collect([_corpus(tmp_path / "in")]),
                       tmp_path / "out", cpu="no-such-cpu")


def test_a_bad_mel_fails_alone_in_its_batch(model_path):
    """A mel the vocoder refuses (NaN) fails by itself; the rest of its batch is vocoded, each
    as alone."""
    voc = corpus.load(str(model_path))
    good = np.random.default_rng(1).normal(-4, 2, (5, 8)).astype(np.float32)
    data = []
    for m in (good, np.full((3, 8), np.nan, np.float32), good[:2]):
        buf = io.BytesIO()
        np.save(buf, m)
        data.append(buf.getvalue())
    out = corpus.vocode_many(voc, [("mel", d, f"m{i}.npy") for i, d in enumerate(data)],
                             corpus.Settings(batch=3))
    assert isinstance(out[1], Exception) and "NaN" in str(out[1])
    for i in (0, 2):
        assert out[i] == corpus.vocode(voc, "mel", data[i], f"m{i}.npy", corpus.Settings())


def bench_corpus(tmp_path, *argv) -> dict:
    """The JSON record of `jitvoc bench corpus ARGV` on a tiny model (hidden size 32, files of
    0.05 s, one round)."""
    out = tmp_path / "corpus.json"
    assert main(["bench", "corpus", "--hidden", "32", "--seconds", "0.05", "--repeats", "1",
                 "--json", str(out), *argv]) == 0
    return json.loads(out.read_text())


def test_bench_corpus_batches_runs(tmp_path):
    """`jitvoc bench corpus --batch-only` on a tiny model: one record per B, each with a rate."""
    rates = bench_corpus(tmp_path, "--batch-only", "--files", "3",
                         "--batches", "1,2")["samples_per_s_by_batch"]
    assert sorted(rates) == ["1", "2"] and all(min(r) > 0 for r in rates.values())
    assert bench_corpus(tmp_path, "--batch-only", "--files", "3",
                        "--batches", "2")["batch_ratios"] == {}   # no B = 1: no ratios


def test_batch_ratios_pair_the_runs_of_a_round():
    """B's ratio to B = 1, of the medians and paired round by round: with the machine's speed
    drifting between rounds (x1, x3, x2) and one disturbed B = 8 run, the medians come from
    different rounds (0.75x), the paired ratio stays the rounds' own 1.5x."""
    by_batch = {1: [100.0, 300.0, 200.0], 8: [150.0, 450.0, 100.0]}
    ratios = batch_ratios(by_batch)
    assert ratios[1] == (1.0, 1.0)
    assert ratios[8] == (pytest.approx(0.75), pytest.approx(1.5))
    assert batch_ratios({8: [1.0]}) == {}


def test_measure_batches_reverses_the_order_every_other_round():
    """Each round times every B once, in the order given, then reversed, and so on."""
    seen = []

    class Vocoder:
        hop_length = 1

        def synthesize_batch(self, mels, batch):
            seen.append(batch)

    mels = [np.zeros((3, 2), np.float32)]
    with mock.patch.object(corpus, "prepare", lambda *a: (mels[0],)), \
            mock.patch.object(corpus, "read_bytes", lambda source: b""):
        out = measure_batches(Vocoder(), [corpus.Item("f", "f.wav", "audio")], [1, 2, 4], 3)
    assert seen[3:] == [1, 2, 4, 4, 2, 1, 1, 2, 4] and all(len(v) == 3 for v in out.values())


def test_bench_corpus_setups_chooses_the_rows(tmp_path, capsys):
    """--setups times the setups it names (here one, without the batches: --batches ''), and
    refuses one that is not a setup, or too few files for a setup's steady figure."""
    record = bench_corpus(tmp_path, "--files", "3", "--batches", "", "--setups", "processes:1")
    assert list(record["speeds"]) == ["processes 1"] and record["samples_per_s_by_batch"] == {}
    assert main(["bench", "corpus", "--setups", "processes:3"]) == 2
    assert "no setup 'processes:3'" in capsys.readouterr().err
    assert main(["bench", "corpus", "--files", "2", "--setups", "independent:2"]) == 2
    assert "needs more files than workers (2 files, 2 workers)" in capsys.readouterr().err


def test_bench_corpus_independent_rows_and_their_ratios(tmp_path):
    """The independent setups' rows beside corpus mode's, in the JSON and the markdown: each
    process's own time within the run's, every ratio the quotient of the two setups' medians
    of measured times, and every paired ratio the median of the rounds' quotients."""
    files, seconds = 4, 0.05
    record = bench_corpus(tmp_path, "--files", str(files), "--batches", "", "--repeats", "3",
                          "--markdown", str(tmp_path / "corpus.md"), "--setups",
                          "processes:1,processes:2,independent:1,independent:2")
    speeds = record["speeds"]
    assert sorted(speeds) == ["independent 1", "independent 2", "processes 1", "processes 2"]
    for workers in (1, 2):
        runs = speeds[f"independent {workers}"]
        for whole, slower, faster in zip(runs["whole"], runs["slower"], runs["faster"]):
            assert 0 < faster <= slower <= files * seconds / whole * (1 + 1e-9)
    assert runs["slower"][0] > runs["faster"][0]   # two processes' own times
    median = {name: {kind: np.median(v) for kind, v in runs.items()}
              for name, runs in speeds.items()}
    pairs = (("processes 2", "processes 1"), ("independent 2", "independent 1"),
             ("processes 2", "independent 2"), ("processes 1", "independent 1"))
    for kind in ("whole", "steady"):
        assert record["ratios"][kind] == pytest.approx({
            f"{a} / {b}": median[a][kind] / median[b][kind] for a, b in pairs})
        assert record["paired_ratios"][kind] == pytest.approx({   # the rounds' own ratios
            f"{a} / {b}": np.median([x / y for x, y in zip(speeds[a][kind], speeds[b][kind])])
            for a, b in pairs})
    markdown = (tmp_path / "corpus.md").read_text()
    assert "| independent processes | 2 |" in markdown
    assert "whole: processes 2 / independent 2: " in markdown


def test_independent_processes_report_a_failed_file(model_path, tmp_path):
    """A file an independent process cannot vocode fails the setup's run, as in corpus mode;
    the process that had nothing wrong ends too (no hang)."""
    voc = jitvoc.load(model_path, dtype="int8")
    good = tmp_path / "a.npy"
    np.save(good, np.random.default_rng(1).normal(-4, 2, (5, 8)).astype(np.float32))
    items = [corpus.Item(str(good), "a.wav", "mel"), corpus.Item(str(tmp_path / "no.npy"),
                                                                 "no.wav", "mel")]
    assert len(_time_independent(1, voc, items[:1])[1]) == 1
    with pytest.raises(RuntimeError, match="no.npy: no such file"):
        _time_independent(2, voc, items)


def test_steady_speed_leaves_out_each_workers_first_file():
    """x realtime from the W-th result to the last: 4 files of 3 s in 2 s after the 2nd."""
    stamps = [5.0, 5.1, 6.0, 6.1, 7.0, 7.1]
    assert steady_speed(stamps, 2, 3.0) == pytest.approx(4 * 3.0 / 2.0)
    assert steady_speed(stamps, 1, 3.0) == pytest.approx(5 * 3.0 / 2.1)
    with pytest.raises(ValueError, match="more files than workers"):
        steady_speed(stamps[:2], 2, 3.0)


@pytest.mark.slow
def test_bench_corpus_processes_runs(tmp_path):
    """`jitvoc bench corpus --no-ray` on a tiny model: whole and steady figures per setup."""
    speeds = bench_corpus(tmp_path, "--no-ray", "--files", "4", "--batches", "1")["speeds"]
    assert sorted(speeds) == ["independent 1", "independent 2", "processes 1", "processes 2"]
    for name, runs in speeds.items():   # x realtime, CPU seconds (, each process's own time)
        own = ["faster", "slower"] if name.startswith("independent") else []
        assert sorted(runs) == ["cpu", *own, "steady", "whole"]
        assert min(v for values in runs.values() for v in values) > 0


def test_tree_cpu_counts_a_descendant_that_ended():
    """The bench's CPU of a Ray run counts processes that end inside the block (the actors),
    as sampled before they end."""
    with _TreeCpu() as tree:
        subprocess.run([sys.executable, "-c",
                        "import time\nt = time.process_time()\n"
                        "while time.process_time() - t < 0.5: pass"], check=True)
        time.sleep(0.05)
    assert 0.35 < tree.seconds < 5


def test_files_are_vocoded_with_one_blas_thread(monkeypatch, tmp_path):
    """Each worker vocodes with one BLAS thread: spare ones would spin on the other workers'
    cores."""
    seen = []

    def vocode_many(vocoder, inputs, settings):
        seen.append(thread_counts())
        return [RuntimeError("not vocoded")] * len(inputs)
    monkeypatch.setattr(corpus, "vocode_many", vocode_many)
    (tmp_path / "a.npy").write_bytes(b"")
    out = corpus.vocode_files(None, [corpus.Item(str(tmp_path / "a.npy"), "a.wav", "mel")],
                              corpus.Settings())
    assert isinstance(out[0], RuntimeError) and seen and all(n == [1] * len(n) for n in seen)
