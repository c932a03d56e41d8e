"""The vocoder from its definition (issue 13 item 3): JitEngine runs the WaveRNN cell
(jitvoc.cells.wavernn, and wavernn_teacher for teacher forcing) with the vocoder plan's kernels;
its samples, states and teacher-forced probabilities are pinned to those of the hand-written
loop it replaced (LOOP_DIGESTS), and jitvoc.compile_cell of the same cells (kernels from
build_matvec) gives the engine's bits, by the GRU lowering rule (jitvoc.cells.rules).
`python tests/test_cells_loop.py` prints the measurement of docs/cells.md ("The WaveRNN cell
against the hand-written loop") between compile_cell's runner and the engine."""
import hashlib

import numpy as np
import pytest

import jitvoc
from jitvoc import cells, cpu
from jitvoc.bench.cells import random_weights
from jitvoc.calibration import calibrate
from jitvoc.emit.cell import CellEmitter
from jitvoc.engine import GenState
from jitvoc.engine_jit import JitEngine, activation_ranges
from jitvoc.errors import CellError, InputError
from jitvoc.model import random_model
from jitvoc.plan import cell as plan_cell
from jitvoc.plan.vocoder import plan_vocoder, vocoder_cell
from jitvoc.representation import Representation

REP = Representation("mulaw", 0.85, 0.995)
DTYPES = ["float32", "int16", "int8"]
# sha256 (first 16 hex digits) of the hand-written loop's (emit.loop at fff05ef, the commit
# before the engine ran the cell) int16 samples and final h for case(n=2000), seed 1, and of its
# teacher-forced probabilities of the first 600 of those samples: the same on every CPU
# generation (tests/test_vocoder_jit.py), so the engine's cell must give them anywhere.
LOOP_DIGESTS = {"float32": ("b096591d905c775d", "884d29e974211fa6"),
                "int16": ("524d12fb541b1a7a", "7aea7be3c218c7b1"),
                "int8": ("7b25941c9455f2f7", "3b23b924a1f6f86b")}


def case(H=32, n=2000, seed=1):
    """(model, K) of a random calibrated model and conditioning for n samples."""
    model = calibrate(random_model(hidden=H, density=0.25, sample_rate=16000, n_mels=8,
                                   cond_channels=8, representation=REP, seed=seed))
    K = np.random.default_rng(seed).standard_normal((n // model.hop_length + 2, 3 * H))
    return model, K.astype(np.float32)


def loop_ranges(model) -> dict:
    """compile_cell's ranges that give the loop's input formats: s8q7 / s16q15 for the
    readers of h (R, O1, O3: the formats covering 127/128), O2 and O4 covering the calibrated
    ranges of their relu inputs (plan.vocoder.input_formats)."""
    ranges = model.meta["quantization"]["activation_ranges"]
    return {**{m: ranges[m]["max"] for m in ("out.O2", "out.O4")},
            **{m: 127 / 128 for m in ("gru.R", "out.O1", "out.O3")}}


def compiled(model, dtype):
    cell = cells.wavernn(model.hidden, model.representation, upsample="linear")
    return jitvoc.compile_cell(cell, model.weights, dtype=dtype,
                               ranges=None if dtype == "float32" else loop_ranges(model))


def digest(*arrays) -> str:
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()[:16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_engine_gives_the_hand_written_loops_samples_and_probabilities(dtype):
    model, K = case(n=2000)
    engine, state = JitEngine(model, dtype=dtype), GenState.initial(model.hidden)
    audio = engine.generate(K, 0, 2000, state, 1)
    probs = engine.teacher_forced(K, audio[:600])
    assert (digest(audio, state.h), digest(probs)) == LOOP_DIGESTS[dtype]


def test_calls_past_the_kept_rows_and_outputs_give_the_same_samples(monkeypatch):
    """A _Calls keeps the rows of K for ROWS_KEPT samples and a thread's outputs of short calls
    (OUTPUTS_KEPT bytes); calls longer than those, alternating with short ones, give the
    pinned samples, and a short call's outputs are this call's (copied after the run, not
    before) and do not change with the next call."""
    from jitvoc import engine_jit
    monkeypatch.setattr(engine_jit, "ROWS_KEPT", 300)
    monkeypatch.setattr(engine_jit, "OUTPUTS_KEPT", 12 * 500)   # 500 steps of wavernn's outputs
    model, K = case(n=2000)
    engine, state = JitEngine(model, dtype="int8"), GenState.initial(model.hidden)
    hop = model.hop_length
    sizes = [hop, 5 * hop, hop, 2000 - 7 * hop]   # kept, past both, kept, past both
    assert 5 * hop > 500 and hop < 300 and sizes[-1] > 500
    audio, t0 = [], 0
    for n in sizes:
        audio.append(engine.generate(K[t0 // hop:], t0, n, state, 1))
        t0 += n
    audio = np.concatenate(audio)
    first = engine.teacher_forced(K, audio[:2])   # 2 steps of 512 floats: kept
    again = first.copy()
    engine.teacher_forced(K, audio[2:4])
    np.testing.assert_array_equal(first, again)
    probs = engine.teacher_forced(K, audio[:600])
    np.testing.assert_array_equal(first, probs[:2])
    assert (digest(audio, state.h), digest(probs)) == LOOP_DIGESTS["int8"]


def teacher_inputs(model, K, audio) -> dict:
    """wavernn_teacher's inputs for the true samples `audio` (K from sample 0)."""
    c, f = model.representation.encode(audio)
    return cells.wavernn_inputs(K, model.hop_length, len(audio)) | {
        "c": np.r_[128, c[:-1]], "f": np.r_[0, f[:-1]], "c_t": c}


def test_the_teacher_forced_cell_gives_the_engines_probabilities():
    """compile_cell(wavernn_teacher): the engine's teacher_forced bit for bit in every dtype;
    float32 within 1e-6 of the interpreter, every row a distribution."""
    from jitvoc.reference.cells import run
    model, K = case(n=400)
    audio = JitEngine(model, dtype="float32").generate(K, 0, 400, GenState.initial(32), 1)
    cell, inputs = cells.wavernn_teacher(32, upsample="linear"), teacher_inputs(model, K, audio)
    for dtype in DTYPES:
        runner = jitvoc.compile_cell(cell, model.weights, dtype=dtype,
                                     ranges=None if dtype == "float32" else loop_ranges(model))
        p = runner.run(inputs)[0]["p"].reshape(-1, 2, 256)
        np.testing.assert_array_equal(p, JitEngine(model, dtype=dtype).teacher_forced(K, audio))
        if dtype == "float32":
            np.testing.assert_allclose(p, run(cell, model.weights, inputs)[0]["p"].reshape(p.shape),
                                       atol=1e-6, rtol=0)
            np.testing.assert_allclose(p.sum(axis=2), 1, atol=1e-5)


def to_int16(value):
    return np.clip(np.rint(value * np.float32(32768)), -32768, 32767).astype(np.int16)


def both(model, K, n, dtype, seed, runner=None):
    """(the engine's samples and final state, compile_cell's samples and final state)."""
    state = GenState.initial(model.hidden)
    loop = JitEngine(model, dtype=dtype).generate(K, 0, n, state, seed)
    inputs = cells.wavernn_inputs(K, model.hop_length, n)
    out, end = (runner or compiled(model, dtype)).run(inputs, {"c": 128, "f": 0}, seed=seed)
    return loop, state, to_int16(out["value"]), end


def assert_same(loop, state, cell, end):
    np.testing.assert_array_equal(cell, loop)
    np.testing.assert_array_equal(end["h"], state.h)
    assert (end["c"], end["f"]) == (state.c_prev, state.f_prev)
    assert (float(end["s"]), float(end["y"])) == (state.s_prev, state.y_prev)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cell_gives_the_loops_samples_and_state_bit_for_bit(dtype):
    model, K = case(n=2000)
    runner = compiled(model, dtype)
    for seed in (1, 2):
        loop, state, cell, end = both(model, K, 2000, dtype, seed, runner)
        assert len(np.unique(loop)) > 100       # not a trivial run
        assert_same(loop, state, cell, end)


def test_the_gru_rule_is_recognised_where_the_product_is_the_gates_alone():
    cell = cells.wavernn(32, REP, upsample="linear")
    plan = plan_cell.plan(cell, "int8")
    (r_product,) = [p for p in plan.products if p.weights == ("gru.R",)]
    assert len(plan.gru) == 2 and plan.gate_unit == {r_product.label}
    assert [rule.starts for rule in plan.gru.values()] == [(0, 32, 64), (16, 48, 80)]
    assert plan_cell.plan(cell, "float32").gate_unit == frozenset()
    with pytest.raises(CellError, match="upsample"):
        cells.wavernn(32, REP, upsample="repeat")
    assert not plan_cell.plan(cells.gru(8, 16), "int8").gru
    # R h also an output: its rows reach more than the gates, so no rule (gate units would
    # change that output)
    b = cells.CellBuilder("shared")
    x, h = b.input("k", 48), b.state("h", 16)
    a = b.weight("R", (48, 16)) @ h
    pre = a + b.weight("bR", 48)
    (au, ar, ae), (ku, kr, ke) = cells.split(pre, 3), cells.split(x, 3)
    col = cells.column(b.weight("I", (48, 3)), 0)
    cs = cells.split(col * cells.lookup(cells.const(np.zeros(256)), b.state("c", dtype="int32")), 3)
    u, r = cells.sigmoid(au + (cs[0] + ku)), cells.sigmoid(ar + (cs[1] + kr))
    e = cells.tanh(r * ae + (cs[2] + ke))
    h_new = u * h + (1 - u) * e
    c_new = cells.sample(b.weight("O", (256, 16)) @ h_new, stream=0)
    shared = b.build(update={"h": h_new, "c": c_new}, outputs={"a": a})
    assert not plan_cell.plan(shared, "int8").gru
    alone = b.build(update={"h": h_new, "c": c_new}, outputs={"h": h_new})
    assert len(plan_cell.plan(alone, "int8").gru) == 1


def test_h_is_quantized_once_a_step_for_r_o1_and_o3():
    """plan.codes: R reads h's codes, which the GRU sweeps write for the next h, and O1 and O3
    read their halves (the same format); an O1 of another format quantizes its own."""
    cell = cells.wavernn(32, REP, upsample="linear")
    assert plan_cell.plan(cell, "int8").codes == {"h": (("p0", 0), ("p1", 0), ("p3", 16))}
    assert plan_cell.plan(cell, "int8", {"out.O1": 2.0}).codes == {"h": (("p0", 0), ("p3", 16))}
    assert plan_cell.plan(cell, "float32").codes == {}
    model, _ = case(n=16)
    for dtype in ("int8", "int16"):
        runner = compiled(model, dtype)
        in_loop = {p.label: runner.kernels()[p.label][0].plan for p in runner.plan.products}
        emitter = CellEmitter(runner.plan, in_loop, runner.gen, "shared")
        emitter.build()
        assert set(emitter.reads) == {"p0", "p1", "p3"} and set(emitter.codes) == {"h"}


def test_the_streams_mode_shares_h_codes_and_refuses_hoisted_products():
    """emit.cell's streams mode (JitEngine(vectors=B)): R, O1 and O3 read the codes of h kept
    per stream, interleaved (h quantized once a step); a cell with hoisted products (a GRU
    over its input sequence) has no streams mode."""
    model, _ = case(n=16)
    gen = cpu.generation("icelake-server")
    plan = plan_vocoder(model, "int8", gen, activation_ranges(model), vectors=4)
    emitter = CellEmitter(*vocoder_cell(plan), gen, "streams", streams=4)
    emitter.build()
    assert set(emitter.reads) == {"p0", "p1", "p3"} and set(emitter.codes) == {"h"}
    gru = cells.named("gru:24:40")
    schedule = plan_cell.plan(gru, "float32")
    assert schedule.hoisted
    kernels = plan_cell.in_loop_kernels(schedule, random_weights(gru), gen)
    with pytest.raises(CellError, match="hoisted"):
        CellEmitter(schedule, kernels, gen, "streams", streams=2).build()


def test_build_matvec_lays_shifted_tables_out_with_a_given_stride():
    """x_stride (the codes a cell's products share): a gathering kernel's tables that far
    apart, the same products; bad values refused."""
    W = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    x = np.random.default_rng(1).uniform(-1, 1, 16).astype(np.float32)
    own, wide = (jitvoc.build_matvec(W, "int16", block=(16, 1), cpu="haswell", x_stride=s)
                 for s in (0, 32))
    assert wide.spec == own.spec + "_s32" and wide.kernel.x_stride == 32
    if jitvoc.cpu.runnable(own.gen):
        np.testing.assert_array_equal(wide(x), own(x))
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="x_stride"):
            jitvoc.build_matvec(W, "int16", x_stride=bad)


@pytest.mark.slow   # about a minute: three compilations of the hidden-896 cell and the loop
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_shipped_model_cell_gives_the_loops_samples_bit_for_bit(dtype):
    model, K = shipped_case(8000)
    runner = compiled(model, dtype)
    for seed in (3, 4, 5):
        assert_same(*both(model, K, 8000, dtype, seed, runner))


def shipped_case(n):
    """The shipped model (hidden 896) and random conditioning K ~ N(0, 0.3²) for n samples."""
    model = jitvoc.load("multivoice_wavernn_16k", dtype="int8").model
    K = 0.3 * np.random.default_rng(0).standard_normal((n // model.hop_length + 2,
                                                         3 * model.hidden))
    return model, K.astype(np.float32)


def shipped(n=8000, rounds=21):
    """The shipped model on random conditioning, seed 3: whether the engine's and compile_cell's
    samples part, and their CPU time per sample side by side (medians of alternating rounds;
    compile_cell's inputs k0, k1, alpha made ahead, not timed)."""
    import time
    model, K = shipped_case(n)
    H, inputs = model.hidden, cells.wavernn_inputs(K, model.hop_length, n)
    for dtype in DTYPES:
        engine, runner = JitEngine(model, dtype=dtype), compiled(model, dtype)
        loop = lambda: engine.generate(K, 0, n, GenState.initial(H), 3)
        cell = lambda: to_int16(runner.run(inputs, {"c": 128, "f": 0}, seed=3)[0]["value"])
        differ = int((loop() != cell()).sum())
        times = {loop: [], cell: []}
        for _ in range(rounds):
            for fn in times:
                t = time.process_time()
                fn()
                times[fn].append((time.process_time() - t) / n * 1e6)
        us_loop, us_cell = (float(np.median(times[f])) for f in (loop, cell))
        print(f"{dtype:8s} shipped: {differ} of {n} samples differ; engine {us_loop:.2f} "
              f"µs/sample, compile_cell {us_cell:.2f} ({us_cell / us_loop:.2f}x)", flush=True)


if __name__ == "__main__":
    shipped()
