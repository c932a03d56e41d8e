"""The batched engine (the WaveRNN cell in streams mode, JitEngine(vectors=B)) and the API over it
(Vocoder.synthesize_batch, synthesize_folded): stream i of a batch gives exactly the samples
`synthesize` gives alone, for several B, dtypes, CPU generations and lengths."""
import functools

import numpy as np
import pytest

import jitvoc
from jitvoc import cpu
from jitvoc.engine import GenState
from jitvoc.engine_jit import JitEngine, activation_ranges
from jitvoc.errors import InputError
from jitvoc.reference.vocoder import ReferenceEngine
from jitvoc.model import random_model
from jitvoc.emit.cell import CellEmitter
from jitvoc.plan.vocoder import plan_vocoder, vocoder_cell
from jitvoc.representation import Representation
from jitvoc.vocoder import crossfade_unfold, fold_spans

from conftest import RUNNABLE, diagonal

FRAMES = (5, 3, 7, 1, 4, 6, 2, 5)   # streams of different lengths, the longest not first


@functools.cache
def make_model(representation="mulaw+pre+dc"):
    rep = {"linear": Representation(),
           "mulaw+pre+dc": Representation("mulaw", 0.85, 0.995)}[representation]
    return jitvoc.calibrate(random_model(hidden=64, density=0.25, output_density=0.5,
                                         sample_rate=16000, seed=1, representation=rep))


def mels_of(model, frames, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((f, model.n_mels)).astype(np.float32) - 4 for f in frames]


@functools.cache
def vocoder(dtype, cpu=None, representation="mulaw+pre+dc"):
    return jitvoc.load(make_model(representation), dtype=dtype, cpu=cpu)


def check_batch(voc, batch, frames=FRAMES):
    mels = mels_of(voc.model, frames)
    seeds = [3 + i for i in range(len(mels))]
    got = voc.synthesize_batch(mels, seeds=seeds, batch=batch)
    for i, (mel, seed, out) in enumerate(zip(mels, seeds, got)):
        np.testing.assert_array_equal(out, voc.synthesize(mel, seed=seed),
                                      err_msg=f"stream {i} of B = {batch}")


@pytest.mark.parametrize("batch, dtype, cpu", diagonal([2, 3, 8, 1], ["int8", "int16", "float32"],
                                                       RUNNABLE))
def test_streams_equal_synthesize(batch, dtype, cpu):
    """Every stream equals synthesize alone: 8 mels of 1 to 7 frames in batches of B (the
    last batch of B = 3 holding two streams and an idle lane)."""
    check_batch(vocoder(dtype, cpu), batch, FRAMES[:max(batch, 3) + 2])


@pytest.mark.parametrize("representation", ["linear", "mulaw+pre+dc"])
def test_representations(representation):
    check_batch(vocoder("int8", representation=representation), 4, FRAMES[:4])


@pytest.mark.parametrize("density, variant", [(0.25, "idx"), (1.0, "dense")])
def test_streams_kernels(density, variant):
    """The loop of B streams takes plan.vocoder.STREAMS_KERNEL's index-driven kernels, or dense
    ones where the planner plans a matrix dense, and its streams equal synthesize with both."""
    model = jitvoc.calibrate(random_model(hidden=64, density=density, output_density=density,
                                          sample_rate=16000, seed=2))
    plans = JitEngine(model, None, "int8", vectors=2).plan.plans.values()
    assert {p.spec.variant for p in plans} == {variant}
    check_batch(jitvoc.load(model, dtype="int8"), 2, FRAMES[:3])


@pytest.mark.parametrize("cpu_name, dtype, batch, unroll", [
    ("emeraldrapids", "int16", 8, 2),    # isa.KERNEL_CHOICES, measured there
    ("emeraldrapids", "int16", 4, 4), ("emeraldrapids", "int8", 8, 4),
    ("znver4", "int16", 8, 4), ("sapphirerapids", "int16", 8, 4)])
def test_streams_kernel_per_generation(cpu_name, dtype, batch, unroll):
    """The B-vector kernels' unroll is the one measured on the generation (isa.KERNEL_CHOICES),
    else STREAMS_KERNEL's, and the streams of an engine planned with it give the samples of
    synthesize on Zen 4 (znver4), where the default was measured."""
    model = make_model()
    gen = cpu.generation(cpu_name)
    plan = plan_vocoder(model, dtype, gen, activation_ranges(model), vectors=batch)
    assert {p.spec.unroll for p in plan.plans.values() if p.spec.variant == "idx"} == {unroll}
    if not (cpu.runnable(gen) and cpu.runnable(cpu.generation("znver4"))):
        pytest.skip(f"the host cannot run {cpu_name} and znver4")
    mels = mels_of(model, FRAMES[:batch])
    got = vocoder(dtype, cpu_name).synthesize_batch(mels, seeds=list(range(batch)), batch=batch)
    for i, (mel, out) in enumerate(zip(mels, got)):
        np.testing.assert_array_equal(out, vocoder(dtype, "znver4").synthesize(mel, seed=i),
                                      err_msg=f"stream {i} of B = {batch} on {cpu_name}")


@pytest.mark.parametrize("cpu_name, readers", [
    ("haswell", {"gru.R", "out.O1", "out.O3"}), ("x86-64", {"gru.R", "out.O1", "out.O3"}),
    ("icelake-server", set())])
def test_kept_codes_interleaved_once(cpu_name, readers):
    """In streams mode R, O1 and O3 read h's codes from one buffer interleaved once per step
    (each half's columns after the pass that stores it) where their kernels read interleaved
    codes (gathering without byte permutes); byte-permute kernels read the rows of codes, each
    its own; and the streams equal synthesize where the generation runs here."""
    model = make_model()
    gen = cpu.generation(cpu_name)
    plan = plan_vocoder(model, "int8", gen, activation_ranges(model), vectors=8)
    schedule, kernels = vocoder_cell(plan)
    together = CellEmitter(schedule, kernels, gen, "loop", streams=8)._interleaved_readers()
    assert {p.weights[0] for p in schedule.products if p.label in together} == readers
    if cpu.runnable(gen):
        check_batch(vocoder("int8", cpu_name), 8)


@functools.cache
def full_size():
    """random_model(896) at 24 kHz in int8 (the benchmark's model), its mels of 1 to 3
    frames, and each one's synthesize (B = 1)."""
    voc = jitvoc.load(jitvoc.calibrate(random_model(hidden=896, sample_rate=24000, seed=0)),
                      dtype="int8")
    mels = mels_of(voc.model, [1 + i % 3 for i in range(17)], seed=2)
    return voc, mels, [voc.synthesize(mel, seed=i) for i, mel in enumerate(mels)]


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(2, 17))
def test_full_size_streams_equal_synthesize(batch):
    """Every B of the batched loop at hidden 896 (its kernels: grouped, byte permutes, order
    tables) gives each stream B = 1's samples: B + 1 streams, the second batch one stream and
    B - 1 idle lanes. (Before jit.Library loaded each object on its own, the cores read their
    order tables 8 bytes off here, and no stream matched.)"""
    voc, mels, alone = full_size()
    got = voc.synthesize_batch(mels[:batch + 1], seeds=list(range(batch + 1)), batch=batch)
    for i, (out, want) in enumerate(zip(got, alone)):
        np.testing.assert_array_equal(out, want, err_msg=f"stream {i} of B = {batch}")

def test_generate_batch_in_chunks():
    """Two calls of generate_batch (the states advanced in place) give the samples of one;
    a stream shorter than the first call stops there and its state with it."""
    voc = vocoder("int8")
    model, hop = voc.model, voc.hop_length
    mels = mels_of(model, (6, 2, 5))
    Ks = [voc._conditioning(m) for m in mels]
    lengths = [len(m) * hop for m in mels]
    engine = JitEngine(model, dtype="int8", vectors=4)
    whole = engine.generate_batch(Ks, lengths, [GenState.initial(64) for _ in mels], [1, 2, 3])
    states = [GenState.initial(64) for _ in mels]
    first = engine.generate_batch(Ks, [min(n, 3 * hop) for n in lengths], states, [1, 2, 3])
    assert [st.t for st in states] == [3 * hop, 2 * hop, 3 * hop]
    states[1].t = 3 * hop   # finished: it takes no more samples
    second = engine.generate_batch([K[3:] for K in Ks], [max(0, n - 3 * hop) for n in lengths],
                                   states, [1, 2, 3])
    for w, a, b in zip(whole, first, second):
        np.testing.assert_array_equal(w, np.concatenate([a, b]))


def test_batched_engine_errors():
    voc = vocoder("int8")
    engine = JitEngine(voc.model, dtype="int8", vectors=2)
    K = voc._conditioning(mels_of(voc.model, (2,))[0])
    st = [GenState.initial(64) for _ in range(3)]
    with pytest.raises(InputError, match="1 to 2 streams"):
        engine.generate_batch([K] * 3, [10] * 3, st, [0] * 3)
    st[1].t = 200
    with pytest.raises(InputError, match="start together"):
        engine.generate_batch([K] * 2, [10] * 2, st[:2], [0] * 2)
    with pytest.raises(InputError, match="vectors > 1"):
        voc._engine.generate_batch([K], [10], st[:1], [0])
    with pytest.raises(InputError, match="use generate_batch"):
        engine.generate(K, 0, 10, GenState.initial(64), 0)
    with pytest.raises(InputError, match="vectors"):
        JitEngine(voc.model, dtype="int8", vectors=0)
    with pytest.raises(InputError, match="batch must be"):
        voc.synthesize_batch([K], batch=0)
    with pytest.raises(InputError, match="one per mel"):
        voc.synthesize_batch(mels_of(voc.model, (2, 3)), seeds=[1, 2, 3])


def test_reference_backend_batch():
    """The reference backend runs synthesize per mel."""
    model = make_model()
    ref = jitvoc.load(model, engine=ReferenceEngine)
    mels = mels_of(model, (2, 1))
    got = ref.synthesize_batch(mels, seeds=[4, 5], batch=2)
    for mel, seed, out in zip(mels, [4, 5], got):
        np.testing.assert_array_equal(out, ref.synthesize(mel, seed=seed))


def test_fold_spans():
    assert fold_spans(10, 4, 2) == [(0, 4), (2, 8), (6, 10)]
    assert fold_spans(8, 8, 2) == [(0, 8)]


def test_crossfade_equal_power():
    """Over the crossfade the two gains' squares sum to 1; a constant joins a constant with no
    step; the first half of the overlap is the earlier segment's."""
    a, b = np.full(12, 1000, np.int16), np.full(10, 1000, np.int16)
    out = crossfade_unfold([a, b], [0, 8], 4, 18)
    assert out[:10].tolist() == [1000] * 10 and out[12:].tolist() == [1000] * 6
    assert (out[10:12] >= 1000).all() and (out[10:12] <= 1415).all()   # √2 at most
    silent = crossfade_unfold([a, np.zeros(10, np.int16)], [0, 8], 4, 18)
    assert silent[:10].tolist() == [1000] * 10 and silent[11:].tolist() == [0] * 7


def test_folded_has_no_click():
    """A long mel folded into 5 segments (8 frames, 4 of overlap): its length, and at every
    seam (the overlaps, and the samples either side) no sample-to-sample jump larger than the
    largest of the unfolded output (same mel, seed). Elsewhere each segment is a stream of
    its own seed, as noisy as the unfolded one; the first is exact up to the first seam."""
    voc = vocoder("int8")
    hop = voc.hop_length
    mel = mels_of(voc.model, (40,), seed=3)[0]
    whole = voc.synthesize(mel, seed=9)
    folded = voc.synthesize_folded(mel, seed=9, batch=8)
    assert folded.shape == whole.shape
    jumps = np.abs(np.diff(folded.astype(np.int64)))
    seams = [jumps[a * hop - 1:(a + 4) * hop + 1].max() for a, _ in fold_spans(40, 8, 4)[1:]]
    assert len(seams) == 4 and max(seams) <= np.abs(np.diff(whole.astype(np.int64))).max()
    np.testing.assert_array_equal(folded[:6 * hop], whole[:6 * hop])


def test_folded_short_mel_is_synthesize():
    """A mel no longer than one segment is one stream from silence: synthesize's samples."""
    voc = vocoder("int8")
    mel = mels_of(voc.model, (6,))[0]
    np.testing.assert_array_equal(voc.synthesize_folded(mel, seed=4, segment_frames=8),
                                  voc.synthesize(mel, seed=4))


def test_folded_errors():
    voc = vocoder("int8")
    mel = mels_of(voc.model, (20,))[0]
    with pytest.raises(InputError, match="overlap_frames"):
        voc.synthesize_folded(mel, overlap_frames=1)
    with pytest.raises(InputError, match="segment_frames"):
        voc.synthesize_folded(mel, segment_frames=3, overlap_frames=2)
