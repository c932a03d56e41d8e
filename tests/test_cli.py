"""The `jitvoc info`, `jitvoc kernels` and `jitvoc bench` commands (tiny models and matrices)."""
import json
import os

import numpy as np
import pytest

from jitvoc import cpu as cpu_mod
from jitvoc.bench import cells as bench_cells
from jitvoc.bench import corpus as bench_corpus
from jitvoc.bench import kernels as bench_kernels
from jitvoc.bench import report
from jitvoc.bench import scan as bench_scan
from jitvoc.bench import synth as bench_synth
from jitvoc.bench import vocoder as bench_vocoder
from jitvoc.cli import main
from jitvoc.cli.bench import select_generations
from jitvoc.model import random_model

KERNEL_FIELDS = ("cpu", "rows", "cols", "density", "dtype", "spec", "ns_per_call", "gmacs",
                 "roofline_gmacs", "numpy_ns", "scipy_csr_ns")


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny.npz"
    random_model(hidden=32, density=0.25, sample_rate=16000, n_mels=8, cond_channels=8).save(path)
    return path


@pytest.fixture
def sse2_only(monkeypatch):
    """Pretend this host has SSE2 only: AVX generations become compile-only."""
    sse2 = frozenset({"sse2"})
    monkeypatch.setattr(cpu_mod, "host_features", lambda: sse2)
    monkeypatch.setattr(cpu_mod, "host_generation",
                        lambda: cpu_mod.Generation("native", "x86-64", "", sse2))


# --- info ----------------------------------------------------------------------------------------
def test_info_text(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    host = cpu_mod.describe_host()
    assert host["brand"] in out and host["llvm_cpu"] in out
    assert "SIMD (LLVM)" in out and "SIMD (py-cpuinfo)" in out and "can run" in out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("brand", "llvm_cpu", "llvm_simd_features", "cpuinfo_simd_flags",
                "runnable_generations", "not_runnable"):
        assert key in d
    assert "x86-64" in d["runnable_generations"]


# --- kernels -------------------------------------------------------------------------------------
def test_kernels_model_both(model_file, tmp_path, capsys):
    out = tmp_path / "k"
    assert main(["kernels", str(model_file), "--cpu", "native", "--emit", "both",
                 "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert set(plan["matrices"]) == {"gru.R", "out.O1", "out.O2", "out.O3", "out.O4"}
    for entry in plan["matrices"].values():
        assert {"dtype", "block", "isa", "variant", "name", "panels", "density"} <= set(entry)
        assert entry["dtype"] == "int8" and 0 < entry["density"] <= 1
        assert (out / f"{entry['name']}.ll").exists() and (out / f"{entry['name']}.s").exists()
    assert plan["loop"] and (out / f"{plan['loop']}.ll").exists()
    assert "define" in (out / f"{plan['loop']}.ll").read_text()
    assert (out / f"{plan['loop']}.s").stat().st_size > 0
    assert sorted(plan["files"]) == sorted(os.listdir(out))


def test_kernels_for_a_generation_the_host_cannot_run(model_file, tmp_path, sse2_only, capsys):
    out = tmp_path / "k"
    assert main(["kernels", str(model_file), "--cpu", "skylake-avx512", "--emit", "asm",
                 "--dtype", "int16", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["runnable_here"] is False and plan["dtype"] == "int16"
    assert not list(out.glob("*.ll")) and list(out.glob("*.s"))
    assert "cannot run" in capsys.readouterr().out


def test_kernels_default_cpu_from_env(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("JITVOC_CPU", "x86-64")
    out = tmp_path / "k"
    assert main(["kernels", str(model_file), "--emit", "ll", "--out", str(out)]) == 0
    assert json.loads((out / "plan.json").read_text())["cpu"] == "x86-64"


def test_kernels_matrix_file(tmp_path):
    rng = np.random.default_rng(0)
    sparse = rng.standard_normal((64, 32)).astype(np.float32) * (rng.random((64, 32)) < 0.2)
    np.savez(tmp_path / "m.npz", dense=rng.standard_normal((48, 40)).astype(np.float32),
             sparse=sparse)
    out = tmp_path / "k"
    assert main(["kernels", str(tmp_path / "m.npz"), "--dtype", "float32", "--emit", "ll",
                 "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["kind"] == "matrices" and plan["loop"] is None
    assert set(plan["matrices"]) == {"dense", "sparse"}
    assert plan["matrices"]["dense"]["density"] == 1.0
    for entry in plan["matrices"].values():
        assert entry["dtype"] == "float32" and (out / f"{entry['name']}.ll").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: np.savez(p, bad=np.zeros((2, 3, 4), np.float32)), "2-D"),
    (lambda p: p.write_bytes(b"not a zip"), "not a readable"),
    (lambda p: None, "no such file"),
])
def test_kernels_bad_input(tmp_path, capsys, make, message):
    path = tmp_path / "in.npz"
    make(path)
    assert main(["kernels", str(path), "--out", str(tmp_path / "k")]) == 2
    assert message in capsys.readouterr().err


def test_kernels_unknown_cpu(model_file, tmp_path, capsys):
    assert main(["kernels", str(model_file), "--cpu", "pentium9", "--out",
                 str(tmp_path / "k")]) == 2
    assert "unknown CPU generation 'pentium9'" in capsys.readouterr().err


def test_kernels_cell(tmp_path, capsys):
    """--cell: the cell's fused loop, its products' kernels (hoisted: B-vector and one-vector)
    and the schedule, compiled only."""
    out = tmp_path / "k"
    assert main(["kernels", "--cell", "lstm:24:40", "--dtype", "int8", "--density", "0.5",
                 "--emit", "both", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["loop"].startswith("cell_lstm_") and set(plan["products"]) == {"p0", "p1"}
    assert len(plan["products"]["p0"]) == 2 and len(plan["products"]["p1"]) == 1
    assert f'define void @"{plan["loop"]}_run"' in (out / f"{plan['loop']}.ll").read_text()
    assert sorted(plan["files"]) == sorted(os.listdir(out))
    schedule = (out / "schedule.txt").read_text()
    assert "hoisted p0 = [weight_ih] @ x [160x24]" in schedule
    assert "pass 0, sweep of 40: 16 nodes fused" in schedule and schedule in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--cell", "rnn:4"], "a cell is NAME:HIDDEN"),
    (["--cell", "gru:4", "--density", "0"], "--density must be in (0, 1]"),
    ([], "give a MODEL or --cell"),
])
def test_kernels_cell_bad_input(tmp_path, capsys, argv, message):
    assert main(["kernels", *argv, "--out", str(tmp_path / "k")]) == 2
    assert message in capsys.readouterr().err


def test_kernels_out_that_is_a_file_is_refused(model_file, tmp_path, capsys):
    out = tmp_path / "k"
    out.write_text("a file")
    assert main(["kernels", str(model_file), "--emit", "ll", "--out", str(out)]) == 2
    assert f"{out} is not a folder: --out names the folder" in capsys.readouterr().err


# --- bench ---------------------------------------------------------------------------------------
def test_select_generations(sse2_only):
    gens, skipped = select_generations(None, quick=False)
    assert [g.name for g in gens] == ["x86-64", "native"]
    assert any("haswell" in s and "avx2" in s for s in skipped)
    assert [g.name for g in select_generations("x86-64,x86-64", False)[0]] == ["x86-64"]
    with pytest.raises(cpu_mod.UnsupportedCPU, match="cannot run"):
        select_generations("haswell", False)
    with pytest.raises(cpu_mod.UnsupportedCPU, match="unknown"):
        select_generations("x86-64,bogus", False)


@pytest.mark.parametrize("argv, message", [
    (["bench", "kernels", "--cpu", "bogus"], "unknown CPU generation"),
    (["bench", "--quick", "--dtype", "int4"], "--dtype"),
])
def test_bench_bad_arguments(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["vocoder", "--quick", "--json"], ["--plot"],
                                  ["scan", "--json"], ["synth", "--markdown"],
                                  ["corpus", "--markdown"], ["cells", "--json"]])
def test_bench_output_that_cannot_be_written_is_refused_before_measuring(monkeypatch, tmp_path,
                                                                         capsys, argv):
    for module in (bench_kernels, bench_vocoder, bench_scan, bench_synth, bench_corpus,
                   bench_cells):
        monkeypatch.setattr(module, "run", lambda *args: pytest.fail("measured"))
    out = tmp_path / "missing" / "out"
    assert main(["bench", *argv, str(out)]) == 2
    assert f"cannot write {out}: {out.parent} does not exist" in capsys.readouterr().err


def test_bench_non_runnable_cpu(sse2_only, capsys):
    assert main(["bench", "vocoder", "--cpu", "skylake-avx512"]) == 2
    assert "cannot run code for CPU generation 'skylake-avx512'" in capsys.readouterr().err


def test_bench_plot_needs_matplotlib(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert main(["bench", "--quick", "--plot", str(tmp_path / "p.png")]) == 2
    assert "needs matplotlib" in capsys.readouterr().err


@pytest.fixture
def tiny_bench(monkeypatch):
    tiny = bench_kernels.Matrix("tiny", 64, 32, 0.25)
    monkeypatch.setattr(bench_kernels, "QUICK_MATRICES", (tiny,))
    monkeypatch.setattr(bench_kernels, "AUTOTUNE_MATRICES", (tiny,))
    monkeypatch.setattr(bench_kernels, "VECTORS_MATRICES", (tiny,))
    monkeypatch.setattr(bench_kernels, "ROOFLINE_SHAPE", (64, 64))
    monkeypatch.setattr(bench_vocoder, "MODEL", dict(bench_vocoder.MODEL, hidden=32))


@pytest.mark.slow
def test_bench_quick_outputs(tiny_bench, tmp_path, capsys):
    j, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    argv = ["bench", "--quick", "--cpu", "native", "--repeats", "3", "--json", str(j),
            "--markdown", str(md), "--no-progress"]
    try:
        import matplotlib  # noqa: F401
        argv += ["--plot", str(png)]
    except ImportError:
        png = None
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "block-sparse matrix-vector kernels" in out and "x realtime" in out
    doc = json.loads(j.read_text())
    recs = doc["records"]
    kern = [r for r in recs if r["bench"] == "kernel"]
    assert len(kern) == 1 and all(k in kern[0] for k in KERNEL_FIELDS)
    assert kern[0]["cpu"] == "native" and kern[0]["ns_per_call"] > 0
    assert [r["bench"] for r in recs].count("roofline") == 1
    assert [r["bench"] for r in recs].count("autotune") == 1
    vectors = [r for r in recs if r["bench"] == "vectors"]
    assert len(vectors) == 1 and sorted(map(int, vectors[0]["by_vectors"])) == [1, 2, 4, 8, 16]
    assert "kernels for B vectors" in out
    jit = [r for r in recs if r["bench"] == "vocoder" and r["engine"] == "jit"]
    assert len(jit) == 1 and jit[0]["realtime"] == pytest.approx(jit[0]["samples_per_s"] / 24000)
    assert any(r["engine"] == "numpy_reference" for r in recs if r["bench"] == "vocoder")
    assert doc["command"].startswith("jitvoc bench all")
    assert "| cpu |" in md.read_text() and "Command:" in md.read_text()
    if png:
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_bench_kernels_only_json(tiny_bench, tmp_path):
    j = tmp_path / "k.json"
    assert main(["bench", "kernels", "--quick", "--cpu", "x86-64", "--dtype", "int16",
                 "--repeats", "1", "--json", str(j), "--no-progress"]) == 0
    recs = json.loads(j.read_text())["records"]
    assert {r["bench"] for r in recs} == {"kernel", "roofline"}   # autotune: native only
    assert [r["dtype"] for r in recs if r["bench"] == "kernel"] == ["int16"]


# --- report --------------------------------------------------------------------------------------
def test_summary_and_spread_warning():
    med, spread = report.summary([100, 100, 100, 100])
    assert (med, spread) == (100, 0)
    assert report.spread_warning([{"bench": "kernel", "label": "a", "ns_spread": 0.05}]) is None
    w = report.spread_warning([{"bench": "kernel", "label": "a", "ns_spread": 0.3}])
    assert "noisy" in w and "a (30%)" in w


def test_table_text_and_markdown():
    t = report.Table("T", ["x", "y"], [["a", 1], ["bb", 22]], ["note"])
    assert t.text().splitlines()[0] == "T" and "note" in t.text()
    assert "| x | y |" in t.markdown() and "| bb | 22 |" in t.markdown()


@pytest.mark.slow   # 13 s: autotunes the int8 cells of the whole quick bench
def test_bench_cells_without_torch(monkeypatch, tmp_path, capsys):
    """Tiny cells; without torch its rows are skipped with a message."""
    monkeypatch.setattr(bench_cells, "HIDDEN_QUICK", (32,))
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    assert main(["bench", "cells", "--quick", "--steps", "20", "--repeats", "1",
                 "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "torch is not installed: the PyTorch and TorchScript rows are skipped" in out
    records = json.loads((tmp_path / "c.json").read_text())["records"]
    assert {r["engine"] for r in records} == {"jitvoc float32", "jitvoc int8"}
    assert {(r["cell"], r["density"]) for r in records} == {
        (c, d) for c in ("lstm", "gru") for d in (1.0, 0.1)}
    assert all(r["us_per_step"] > 0 for r in records)


@pytest.mark.slow   # 7 s: imports torch and scripts its cells
def test_bench_cells_with_torch(monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.setattr(bench_cells, "HIDDEN_QUICK", (32,))
    monkeypatch.setattr(bench_cells, "DENSITIES", (0.5,))
    assert main(["bench", "cells", "--quick", "--steps", "20", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "torch eager float32" in out and "torchscript float32" in out


def test_a_command_imports_only_its_own_module():
    """`jitvoc resynth` starts without the bench modules (they brought in the cell compiler);
    --help and an unknown command still see every command."""
    import subprocess
    import sys
    script = ("import sys\n"
              "from jitvoc.cli import build_parser\n"
              "build_parser(['-v', 'resynth', 'in.wav', '-o', 'out.wav'])\n"
              "print(sorted(m for m in sys.modules if m.startswith('jitvoc.cli.')))\n"
              "print('jitvoc.bench' in sys.modules, 'jitvoc.cellrun' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.stdout.split("\n")[:2] == ["['jitvoc.cli.synth']", "False False"], r.stdout
    from jitvoc.cli import build_parser
    for argv in ([], ["--help"], ["resynt"]):
        commands = build_parser(argv)._subparsers._group_actions[0].choices
        assert {"info", "models", "kernels", "synth", "resynth", "corpus", "bench",
                "cache"} <= set(commands), argv


def _as_command(script: str, **variables) -> str:
    """stdout of `script` in a fresh interpreter whose stderr is a pipe (no terminal), no BLAS
    thread count in its environment but `variables`."""
    import subprocess
    import sys

    from jitvoc.cli import BLAS_THREAD_VARIABLES
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES} | variables
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                       env={**env, "PYTHONPATH": os.pathsep.join(sys.path)})
    return r.stdout


def test_the_command_process_starts_numpy_with_one_blas_thread():
    """Run as the command (argv from sys.argv), jitvoc sets OpenBLAS to one thread before numpy
    is imported, unless the user chose a count; `bench` keeps the library's default; what the
    command imported is frozen out of the cyclic collector's way."""
    script = ("import gc, os, sys\n"
              "sys.argv = ['jitvoc'] + sys.argv[1:]\n"
              "from jitvoc.cli import main\n"
              "main()\n"
              "import numpy\n"
              "from jitvoc.blas import thread_counts\n"
              "print(os.environ.get('OPENBLAS_NUM_THREADS'), thread_counts(), "
              "gc.get_freeze_count() > 0)\n")
    models = script.replace("sys.argv[1:]", "['models']")
    assert _as_command(models).split("\n")[-2] == "1 [1] True"
    assert _as_command(models, OMP_NUM_THREADS="2").split("\n")[-2] == (
        "None [2] True")
    bench = script.replace("sys.argv[1:]", "['bench', '--help']").replace("main()\n", (
        "try:\n    main()\nexcept SystemExit:\n    pass\n"))
    assert _as_command(bench).split("\n")[-2].startswith("None")


def test_a_hidden_progress_bar_imports_no_tqdm():
    """Without a terminal (or with enabled=False) the bar shows nothing and tqdm stays
    unimported: its import is ~8 ms of a command."""
    script = ("import sys\n"
              "from jitvoc.progress import Steps, progress_bar\n"
              "with progress_bar(10, unit='x') as bar:\n"
              "    bar.update(3)\n"
              "steps = Steps(2)\n"
              "steps.step('a'); steps.close()\n"
              "print('tqdm' in sys.modules)\n")
    assert _as_command(script).split() == ["False"]


# --- what a new user gets wrong: a clear error, not a traceback ----------------------------------
@pytest.fixture
def mel_file(tmp_path):
    path = tmp_path / "mel.npy"
    np.save(path, np.random.default_rng(1).normal(-4, 2, (6, 8)).astype(np.float32))
    return path


@pytest.mark.parametrize("output, why", [("a_file/out.wav", "a_file is not a folder"),
                                         ("missing/out.wav", "missing does not exist")])
def test_single_output_in_no_folder_is_refused_before_any_work(model_file, mel_file, tmp_path,
                                                               capsys, output, why):
    (tmp_path / "a_file").write_text("a file")
    output = tmp_path / output
    assert main(["synth", str(model_file), str(mel_file), "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write {output}: {tmp_path}/{why}" in err and "compiling" not in err


@pytest.mark.parametrize("mel, message", [(np.zeros((6, 9), np.float32), "mel must be [frames, 8]"),
                                          (np.zeros((0, 8), np.float32), "mel is empty"),
                                          (np.full((6, 8), np.nan, np.float32), "mel holds NaN")])
def test_single_bad_mel_is_named(model_file, tmp_path, capsys, mel, message):
    path = tmp_path / "bad.npy"
    np.save(path, mel)
    assert main(["synth", str(model_file), str(path), "-o", str(tmp_path / "o.wav"),
                 "--dtype", "float32"]) == 2
    assert f"error: {path}: {message}" in capsys.readouterr().err


def test_no_help_shows_a_doubled_percent_sign():
    """argparse expands % in help strings only: a description with %% printed it twice."""
    from jitvoc.cli import build_parser
    pending, seen = [build_parser()], 0
    while pending:
        parser = pending.pop()
        seen += 1
        assert "%%" not in parser.format_help(), parser.prog
        pending += [sub for action in parser._actions if isinstance(action.choices, dict)
                    for sub in action.choices.values()]
    assert seen >= 10


def test_corpus_on_a_ray_cluster_that_is_not_there(monkeypatch, mel_file, tmp_path, capsys):
    """--ray --address auto with no cluster running: Ray's ConnectionError as a jitvoc error."""
    ray = pytest.importorskip("ray")

    def no_cluster(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    assert main(["corpus", "--dtype", "float32", str(mel_file), "-o", str(tmp_path / "out"),
                 "--ray", "--address", "auto"]) == 2
    assert ("error: cannot join the Ray cluster at auto: Could not find any running Ray "
            "instance." in capsys.readouterr().err)


@pytest.mark.parametrize("argv, message", [
    (["cells", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["cells", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (["scan", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (["synth", "--repeats", "-1"], "argument --repeats: must be at least 1, got -1"),
    (["vocoder", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (["kernels", "--repeats", "x"], "argument --repeats: invalid int value: 'x'"),
    (["corpus", "--files", "0"], "argument --files: must be at least 1, got 0"),
    (["corpus", "--seconds", "nan"], "argument --seconds: must be a positive number, got nan"),
    (["corpus", "--batches", "1,x"], "argument --batches: must be integers of at least 1"),
])
def test_bench_counts_are_refused_before_measuring(capsys, argv, message):
    """A count of 0 (or no count) once ran the whole benchmark and ended in a traceback, or
    fell back to the default repeats without a word."""
    with pytest.raises(SystemExit) as stop:
        main(["bench", *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_corpus_output_named_as_audio_file_is_refused(model_file, mel_file, tmp_path, capsys):
    """`jitvoc synth ./missing mel.npy -o o.wav`: ./missing is taken as an input (it names no
    model), so the run is a corpus; it made a folder o.wav and wrote one file into it."""
    out = tmp_path / "o.wav"
    assert main(["synth", str(tmp_path / "missing"), str(mel_file), "-o", str(out)]) == 2
    assert "names an audio file, but a corpus's outputs" in capsys.readouterr().err
    assert not out.exists()


def test_autotune_record_picks_on_even_rounds_and_compares_on_odd(monkeypatch):
    """untuned/best: the best candidate chosen on some rounds and compared on the others,
    paired, so that the least of many noisy medians does not pass for the best kernel's time:
    here every kernel takes 100 ns in the odd rounds, every candidate but the untuned kernel
    60 ns in the even ones (the old way, one median over all rounds: untuned/best 1.25)."""
    m = bench_kernels.Matrix("tiny", 64, 32, 0.25)
    w, mask = bench_kernels.make_matrix(m)
    calls = {}

    def scripted(mv, x, repeats):
        k = calls[mv.spec] = calls.get(mv.spec, 0) + 1
        lucky = k % 2 == 1 and mv.spec != untuned_spec   # the even rounds
        return [60.0 if lucky else 100.0]

    gen = cpu_mod.resolve("native")
    untuned_spec = bench_kernels._compiled(bench_kernels._plan(w, mask, "int8", gen), gen)[0].spec
    monkeypatch.setattr(bench_kernels.report, "time_native", scripted)
    rec = bench_kernels.autotune_record(m, w, mask, "int8", gen, repeats=3, baked=False)
    assert rec["candidates"] > 1 and rec["untuned_over_best"] == pytest.approx(1.0)
    assert rec["best_ns"] == rec["untuned_ns"] == 100.0
