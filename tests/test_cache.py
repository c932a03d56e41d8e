"""The kernel cache: an entry that does not verify is a miss that recompiles, never a crash or a
wrong result; an unusable cache folder means compiling without it, with one warning."""
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jitvoc import cache, config, jit
from jitvoc.matvec import build_matvec
from jitvoc import decisions
from jitvoc.reference.matvec import matvec_quantized

ROOT = Path(__file__).resolve().parent.parent
W = np.random.default_rng(0).standard_normal((24, 40)).astype(np.float32)
X = np.random.default_rng(1).standard_normal(40).astype(np.float32)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("JITVOC_CACHE", str(d))
    cache._warned.clear()
    return d


@pytest.fixture
def compiles(monkeypatch):
    """The names of the modules compiled from now on."""
    names = []
    real = jit.compile_object
    monkeypatch.setattr(jit, "compile_object", lambda m, g: names.append(m.name) or real(m, g))
    return names


def _check(mv, w=W, x=X):
    expected = matvec_quantized(mv.plan.w_codes, mv.plan.row_scale, x, mv.format_for(x))
    assert np.array_equal(mv(x), expected), mv.spec


def _entry(cache_dir, mv) -> Path:
    (path,) = cache_dir.glob(f"{mv.spec}-*.o")
    return path


def test_folder_is_private_even_under_umask_000(cache_dir):
    old = os.umask(0)
    try:
        build_matvec(W, "int8")
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    for path in cache_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0, path


def test_second_load_compiles_nothing(cache_dir, compiles):
    build_matvec(W, "int8")
    compiles.clear()
    _check(build_matvec(W, "int8"))
    assert compiles == []


@pytest.mark.parametrize("damage", ["planted_other_kernel", "truncated", "empty", "flipped_byte",
                                    "flipped_header"])
def test_damaged_entry_is_a_miss(cache_dir, compiles, damage):
    mv = build_matvec(W, "int8")
    path = _entry(cache_dir, mv)
    data = path.read_bytes()
    if damage == "planted_other_kernel":
        other = build_matvec(W[:, :17], "int8")
        data = _entry(cache_dir, other).read_bytes()
    elif damage == "truncated":
        data = data[:len(data) // 2]
    elif damage == "empty":
        data = b""
    elif damage == "flipped_byte":
        data = data[:-100] + bytes([data[-100] ^ 0x10]) + data[-99:]
    else:
        data = bytes([data[0] ^ 1]) + data[1:]
    path.write_bytes(data)
    compiles.clear()
    _check(build_matvec(W, "int8"))
    assert compiles == [mv.spec]
    assert cache.parse_entry(path.read_bytes(), jit.cache_key(mv.spec, mv.gen, "jitvoc.matvec"))


def test_entry_writable_by_others_is_ignored_with_a_warning(cache_dir, compiles):
    mv = build_matvec(W, "int8")
    _entry(cache_dir, mv).chmod(0o666)
    compiles.clear()
    with pytest.warns(cache.CacheWarning, match="writable by others"):
        _check(build_matvec(W, "int8"))
    assert compiles == [mv.spec]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file away")
def test_entry_of_another_user_is_ignored(cache_dir, compiles):
    mv = build_matvec(W, "int8")
    os.chown(_entry(cache_dir, mv), 65534, 65534)
    compiles.clear()
    with pytest.warns(cache.CacheWarning, match="owned by uid 65534"):
        _check(build_matvec(W, "int8"))
    assert compiles == [mv.spec]


def test_folder_writable_by_others_is_not_used(cache_dir, compiles):
    cache_dir.mkdir(mode=0o700)
    cache_dir.chmod(0o777)
    with pytest.warns(cache.CacheWarning, match="writable by others"):
        _check(build_matvec(W, "int8"))
    assert list(cache_dir.iterdir()) == []


def test_cache_naming_a_file_compiles_without_it(cache_dir, compiles):
    cache_dir.write_text("not a folder")
    with pytest.warns(cache.CacheWarning, match="not a folder"):
        _check(build_matvec(W, "int8"))
        _check(build_matvec(W, "int8"))
    assert len(compiles) == 2


def test_full_disk_compiles_without_caching_and_leaves_nothing(cache_dir, compiles, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.warns(cache.CacheWarning, match="No space left"):
        _check(build_matvec(W, "int8"))
    assert list(cache_dir.iterdir()) == []


def _sparse_w():
    rng = np.random.default_rng(3)
    return (rng.standard_normal((32, 64)) * (rng.random((32, 64)) < 0.1)).astype(np.float32)


@pytest.mark.parametrize("how", ["edited",
                                 pytest.param("edited_and_redigested", marks=pytest.mark.slow)])
def test_tampered_decision_is_a_miss(cache_dir, how):
    w = _sparse_w()
    first = build_matvec(w, "int8", autotune=True)
    path = cache_dir / decisions.DECISIONS
    key = decisions._decisions_key()
    table = json.loads(cache.parse_entry(path.read_bytes(), key))
    for d in table.values():
        d["dtype"] = "float32"
    payload = json.dumps(table).encode()
    if how == "edited":
        data = path.read_bytes()
        data = data[:len(data) - len(payload)] + payload if len(payload) < len(data) else payload
        path.write_bytes(data)
    else:
        path.write_bytes(cache.entry_bytes(key, payload))
    second = build_matvec(w, "int8", autotune=True)
    assert second.kernel.dtype == "int8"
    x = np.random.default_rng(4).standard_normal(64).astype(np.float32)
    _check(second, w, x)
    _check(first, w, x)


def _run(code, env):
    """Run `code` in a fresh process importing jitvoc from env's PYTHONPATH (not the cwd)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd="/",
                          capture_output=True, text=True, timeout=300)


SCRIPT = """
    import numpy as np
    from jitvoc import jit
    from jitvoc.matvec import build_matvec
    compiled = []
    real = jit.compile_object
    jit.compile_object = lambda m, g: compiled.append(m.name) or real(m, g)
    w = np.random.default_rng(0).standard_normal((24, 40)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal(40).astype(np.float32)
    mv = build_matvec(w, "int8")
    print(len(compiled), mv(x).tobytes().hex(), jit.__file__)
"""


def test_changed_source_file_recompiles(cache_dir, tmp_path):
    """A legal edit of a module that shapes the packed layout (in a copy of the package)
    changes the key: the next process compiles afresh instead of loading the old object."""
    shutil.copytree(ROOT / "jitvoc", tmp_path / "pkg" / "jitvoc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "kernels_templates", tmp_path / "pkg" / "kernels_templates")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "pkg"), JITVOC_CACHE=str(cache_dir))
    runs = []
    for edit in (None, None, "\n# a comment changes nothing but the source\n"):
        if edit:
            with open(tmp_path / "pkg" / "jitvoc" / "layout.py", "a") as f:
                f.write(edit)
        r = _run(SCRIPT, env)
        assert r.returncode == 0, r.stderr
        runs.append(r.stdout.split())
    assert {f for _, _, f in runs} == {str(tmp_path / "pkg" / "jitvoc" / "jit.py")}
    assert [n for n, _, _ in runs] == ["1", "0", "1"]
    assert len({y for _, y, _ in runs}) == 1
    assert len(list(cache_dir.glob("*.o"))) == 2


def test_two_processes_compiling_at_once(cache_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JITVOC_CACHE=str(cache_dir))
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT)], env=env, cwd="/",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert len({out.split()[1] for out, _ in outputs}) == 1
    r = _run(SCRIPT, env)
    assert r.stdout.split()[0] == "0"   # the entry one of them left verifies
    assert not list(cache_dir.glob("*.tmp")) and not list(cache_dir.glob(".*.tmp"))


def test_stored_decisions_accumulate(cache_dir):
    for i in range(3):
        decisions.store_decision(f"k{i}", build_matvec(W, "int8").kernel)
    assert sorted(decisions._decisions()) == ["k0", "k1", "k2"]


def test_info_and_clear(cache_dir):
    build_matvec(W, "int8")
    info = cache.info()
    assert info["path"] == str(cache_dir) and info["entries"] >= 1 and info["problem"] is None
    assert cache.clear() == info["entries"]
    assert cache.info()["entries"] == 0


def test_default_location_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("JITVOC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config.cache_dir() == tmp_path / "xdg" / "jitvoc"


def test_cli_cache_info_and_clear(cache_dir, capsys):
    from jitvoc.cli import main
    build_matvec(W, "int8")
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(cache_dir) in out and "entries: 1 " in out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert list(cache_dir.iterdir()) == []


def test_least_recently_used_entries_are_evicted(cache_dir, monkeypatch):
    first = build_matvec(W, "int8")
    size = _entry(cache_dir, first).stat().st_size
    monkeypatch.setattr(cache, "MAX_BYTES", int(2.5 * size))
    second = build_matvec(W[:, :30], "int8")
    os.utime(_entry(cache_dir, first), (1, 1))   # used long ago
    os.utime(_entry(cache_dir, second))          # just now
    third = build_matvec(W[:, :20], "int8")
    assert [bool(list(cache_dir.glob(f"{mv.spec}-*.o"))) for mv in (first, second, third)] \
        == [False, True, True]


# --- model files and vocoder plans (jitvoc.vocoder.read_model, jitvoc.engine_jit.planned) ---------

def _arrays(model) -> dict:
    return dict(model.weights, **{f"{k}.mask": v for k, v in model.masks.items()})


def _same_model(a, b) -> None:
    assert a.meta == b.meta and a.fingerprint == b.fingerprint
    x, y = _arrays(a), _arrays(b)
    assert x.keys() == y.keys()
    for k in x:   # bit for bit: dtype, shape, every byte (-0.0 included)
        assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
        assert x[k].tobytes() == y[k].tobytes(), k
        assert not y[k].flags.writeable, k


def _small_model(seed=0):
    from jitvoc.calibration import calibrate
    from jitvoc.model import Model, random_model
    m = random_model(hidden=64, sample_rate=16000, seed=seed, cond_channels=16)
    w = m.weights
    w["cond.proj"] = w["cond.proj"].copy()
    w["cond.proj"][0, 0] = -0.0   # a zero with a sign bit: kept as it is
    return calibrate(Model(w, m.masks, m.meta))


def _no_call(*args, **kwargs):
    raise AssertionError("called although the cache holds the entry")


def test_model_file_comes_back_from_the_cache_bit_for_bit(cache_dir, tmp_path, monkeypatch):
    from jitvoc import vocoder
    from jitvoc.model import load_model
    path = tmp_path / "m.npz"
    _small_model().save(path)
    first = vocoder.read_model(path)
    (entry,) = cache_dir.glob("model-*.pkl")
    monkeypatch.setattr(vocoder, "load_model", _no_call)
    cached = vocoder.read_model(path)
    _same_model(load_model(path), cached)
    _same_model(first, cached)


def test_cached_model_decodes_its_matrices_at_their_first_use(cache_dir, tmp_path):
    """A model from the cache gives its meta, fingerprint and dense weights (what the
    conditioning reads) without decoding its block-sparse matrices; they come back bit for bit
    when read, in the file's key order."""
    from jitvoc import vocoder, wavernn
    from jitvoc.engine import conditioning
    from jitvoc.model import load_model
    path = tmp_path / "m.npz"
    _small_model().save(path)
    vocoder.read_model(path)
    cached, loaded = vocoder.read_model(path), load_model(path)
    assert cached.fingerprint == loaded.fingerprint
    dense = cached.dense_weights
    assert dense.keys() == loaded.dense_weights.keys() == loaded.weights.keys() - set(wavernn.NAMES)
    assert all(dense[k].tobytes() == loaded.weights[k].tobytes() for k in dense)
    mel = np.zeros((20, cached.n_mels), np.float32)
    assert np.array_equal(conditioning(cached, mel), conditioning(loaded, mel))
    assert "_weights" not in vars(cached) and "_masks" not in vars(cached)
    assert list(cached.weights) == list(loaded.weights)
    _same_model(loaded, cached)


def test_changed_model_file_is_read_again(cache_dir, tmp_path):
    from jitvoc import vocoder
    path = tmp_path / "m.npz"
    _small_model(0).save(path)
    vocoder.read_model(path)
    other = _small_model(1)
    other.save(path)
    _same_model(other, vocoder.read_model(path))


def test_model_is_stored_under_the_bytes_it_was_parsed_from(cache_dir, tmp_path, monkeypatch):
    """The file hashed for the lookup is read again on a miss: a file replaced in between is
    stored under the digest of the bytes parsed, never under the first file's."""
    import hashlib

    from jitvoc import vocoder
    path, first, second = tmp_path / "m.npz", _small_model(0), _small_model(1)
    first.save(path)
    file_digest = hashlib.file_digest

    def replaced_after_hashing(f, name):
        digest = file_digest(f, name)
        second.save(path)
        return digest
    monkeypatch.setattr(hashlib, "file_digest", replaced_after_hashing)
    _same_model(second, vocoder.read_model(path))
    monkeypatch.setattr(hashlib, "file_digest", file_digest)
    first.save(path)
    _same_model(first, vocoder.read_model(path))   # a miss: no entry under its digest
    monkeypatch.setattr(vocoder, "load_model", _no_call)
    second.save(path)
    _same_model(second, vocoder.read_model(path))   # a hit


@pytest.mark.parametrize("kind", ["model", "plan"])
def test_damaged_model_or_plan_entry_is_a_miss(cache_dir, tmp_path, kind):
    from jitvoc import cpu, engine_jit, vocoder
    path = tmp_path / "m.npz"
    _small_model().save(path)
    model = vocoder.read_model(path)
    gen = cpu.resolve(None)
    plan, arrays = engine_jit.planned(model, "int8", gen)
    (entry,) = cache_dir.glob(f"{kind}-*.pkl")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 1
    entry.write_bytes(bytes(data))
    _same_model(model, vocoder.read_model(path))
    again, arrays_again = engine_jit.planned(model, "int8", gen)
    assert again.name == plan.name
    assert all(np.array_equal(arrays[k], arrays_again[k]) for k in arrays)


def test_plan_and_arrays_come_back_from_the_cache(cache_dir, monkeypatch):
    from jitvoc import cpu, engine_jit
    from jitvoc.model import Model
    from jitvoc.plan import vocoder as plan_vocoder_module
    from jitvoc.plan.vocoder import plan_vocoder
    model, gen = _small_model(), cpu.resolve(None)
    fresh = plan_vocoder(model, "int8", gen, engine_jit.activation_ranges(model))
    expected = engine_jit.param_arrays(fresh, model.weights)
    engine_jit.planned(model, "int8", gen)
    monkeypatch.setattr(plan_vocoder_module, "plan_vocoder", _no_call)
    plan, arrays = engine_jit.planned(model, "int8", gen)
    assert plan.name == fresh.name
    assert arrays.keys() == expected.keys()
    for k, a in arrays.items():
        assert a.dtype == expected[k].dtype and a.tobytes() == expected[k].tobytes(), k
        assert a.ctypes.data % 64 == 0, k   # on a cache line, as the kernels read them
    # another calibration is another model: planned again, never served the old plan
    meta = model.meta
    meta["quantization"]["activation_ranges"]["out.O2"]["max"] *= 4
    with pytest.raises(AssertionError, match="cache holds"):
        engine_jit.planned(Model(model.weights, model.masks, meta), "int8", gen)


def test_import_graph_comes_back_from_the_cache_and_is_verified(cache_dir, monkeypatch):
    """Which jitvoc module imports which (the code fingerprints' closures) is parsed once per
    set of sources, only as far as the closures asked for need; a damaged entry is parsed
    again."""
    def fresh():
        jit._import_graph.cache_clear()
        jit.code_closure.cache_clear()
    parsed, real = [], jit._imported_modules
    monkeypatch.setattr(jit, "_imported_modules", lambda n, p: parsed.append(n) or real(n, p))
    fresh()
    closure = jit.code_closure("jitvoc.engine_jit")
    assert "jitvoc.engine_jit" in parsed and "jitvoc.cli" not in parsed
    (entry,) = cache_dir.glob("imports-*.json")
    parsed.clear()
    fresh()
    assert jit.code_closure("jitvoc.engine_jit") == closure and parsed == []
    jit.code_closure("jitvoc.cli")
    assert "jitvoc.cli" in parsed and "jitvoc.engine_jit" not in parsed
    entry.write_bytes(entry.read_bytes().replace(b"jitvoc.layout", b"jitvoc.lay0ut"))
    parsed.clear()
    fresh()
    assert jit.code_closure("jitvoc.engine_jit") == closure and "jitvoc.engine_jit" in parsed
    fresh()


def test_first_synthesis_compiles_the_sampling_loop_only(cache_dir):
    """The teacher-forced loop is a module of its own, compiled at its first use: a first
    synthesis compiles half the fused loop."""
    import jitvoc
    from jitvoc.engine import GenState
    voc = jitvoc.load(_small_model(), dtype="int8")
    mel = np.zeros((3, voc.n_mels), np.float32) - 5
    audio = voc.synthesize(mel, seed=0)

    def loops():
        return sorted(p.name.split("-")[0] for p in cache_dir.glob(voc._engine.plan.name + "*"))
    assert loops() == [voc._engine.plan.name + "_generate"]
    probs = voc.teacher_forced(audio, mel)
    assert loops() == [voc._engine.plan.name + "_generate", voc._engine.plan.name + "_teacher"]
    assert probs.shape == (len(audio), 2, 256) and np.allclose(probs.sum(axis=2), 1, atol=1e-3)
    again = jitvoc.load(_small_model(), dtype="int8")   # the cached teacher loop, same numbers
    assert np.array_equal(again.teacher_forced(audio, mel), probs)
    assert np.array_equal(again._engine.generate(
        voc._conditioning(mel), 0, len(audio), GenState.initial(voc.model.hidden), 0), audio)


def test_a_cached_plan_whose_objects_are_gone_compiles_them(cache_dir, monkeypatch):
    """The plan's entry holds the loop's CompiledCell, so a warm engine schedules no cell; with
    the compiled objects gone, the engine schedules the cached plan's cell, compiles the loop
    and its cores again under the same names and gives the same samples."""
    import jitvoc
    from jitvoc.plan import vocoder as plan_vocoder_module
    mel = np.zeros((3, _small_model().n_mels), np.float32) - 5
    audio = jitvoc.load(_small_model(), dtype="int8").synthesize(mel, seed=0)
    objects = sorted(p.name for p in cache_dir.glob("*.o"))
    for name in objects:
        (cache_dir / name).unlink()
    monkeypatch.setattr(plan_vocoder_module, "plan_vocoder", _no_call)
    again = jitvoc.load(_small_model(), dtype="int8").synthesize(mel, seed=0)
    assert sorted(p.name for p in cache_dir.glob("*.o")) == objects and len(objects) > 1
    assert np.array_equal(again, audio)


def test_a_cold_engine_packs_while_its_code_compiles(cache_dir, monkeypatch):
    """On a miss the engine's arrays are packed (and their entry stored) after the modules are
    handed to the compiling workers and before any object is stored; on a hit, packed once
    too; the arrays are those `planned` gives, and no cache write flushes to disk."""
    import multiprocessing
    from jitvoc import atomic, cpu, engine_jit
    from jitvoc.emit import cell as emit_cell
    from jitvoc.plan.vocoder import vocoder_cell
    seen, real = [], engine_jit.param_arrays
    monkeypatch.setattr(engine_jit, "param_arrays", lambda *a: seen.append(
        (len(multiprocessing.active_children()), len(list(cache_dir.glob("*.o"))))) or real(*a))
    monkeypatch.setattr(atomic.os, "fsync", _no_call)
    model = _small_model()
    cold = engine_jit.JitEngine(model, dtype="int8")
    (workers, objects), = seen   # workers compiling, nothing compiled stored yet
    modules = 1 + len(emit_cell.core_modules(*vocoder_cell(cold.plan), cold.gen))
    assert workers >= 1 and objects == 0 and len(list(cache_dir.glob("*.o"))) == modules
    warm = engine_jit.JitEngine(model, dtype="int8")
    assert len(seen) == 1   # the arrays came from the plan's entry
    _, expected = engine_jit.planned(model, "int8", cpu.resolve(None))
    for engine in (cold, warm):
        assert engine._arrays.keys() == expected.keys()
        assert all(engine._arrays[k].tobytes() == expected[k].tobytes() for k in expected)
