"""The NumPy oracle and the Vocoder around it: probabilities, the two-pass structure, sampling,
streaming, conditioning, bad input."""

import numpy as np
import pytest

import jitvoc
from jitvoc.errors import InputError
from jitvoc.model import Model, random_model
from jitvoc.representation import Representation
from jitvoc.engine import GenState, conditioning, receptive_radius
from jitvoc.reference.vocoder import ReferenceEngine, draw, uniform, upsample
from jitvoc.vocoder import COND_BLOCK

H, N_MELS, HOP = 32, 8, 25


def small_model(upsample_mode="linear", representation=None):
    """A 32-unit model with a 25-sample hop, so tests generate few samples per frame."""
    m = random_model(hidden=H, density=0.25, sample_rate=16000, n_mels=N_MELS, cond_channels=8,
                     representation=representation)
    meta = m.meta
    meta["mel"].update(n_fft=64, hop_length=HOP, win_length=50)
    meta["conditioning"]["upsample"] = upsample_mode
    return Model(m.weights, m.masks, meta)


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def vocoder(model):
    return jitvoc.load(model, engine=ReferenceEngine)


def random_mel(frames, seed=0):
    return np.random.default_rng(seed).normal(-4, 2, (frames, N_MELS)).astype(np.float32)


def full_k(model, mel):
    K = conditioning(model, mel)
    return np.concatenate([K, K[-1:]])


# --- sampling -------------------------------------------------------------------------------

def test_uniform_hand_computed():
    # seed 1, t 5, k 1: x = 12 ^ 0x9E3779B9, mixed as in docs/model.md, gives 3928667181.
    assert uniform(1, 5, 1) == np.float32(((3928667181 >> 9) + 0.5) / 2 ** 23)
    # seed 0, t 0: x = 1 (the mixer maps 0 to 0, the lowest ξ: a click at every start)
    assert uniform(0, 0, 0) == np.float32(((1753845952 >> 9) + 0.5) / 2 ** 23)
    t = np.arange(1000, 1010)
    np.testing.assert_array_equal(uniform(42, t, 0), [uniform(42, int(i), 0) for i in t])
    xi = uniform(7, np.arange(100000), 1)
    assert xi.dtype == np.float32 and 0 < xi.min() and xi.max() < 1
    assert abs(xi.mean() - 0.5) < 0.01


def test_draw_inverse_cdf():
    logits = np.log([0.25, 0.25, 0.5]).astype(np.float32)
    assert [int(draw(logits, xi)) for xi in (0.0, 0.2, 0.3, 0.6, 0.999)] == [0, 0, 1, 2, 2]
    batch = np.stack([logits, logits[::-1]])
    np.testing.assert_array_equal(draw(batch, np.float32([0.3, 0.3])), [1, 0])


def test_upsample():
    K = np.arange(6, dtype=np.float32).reshape(3, 2) * 10
    k = upsample(K, np.array([0, 2, 4, 5]), 4, "linear")
    np.testing.assert_array_equal(k, [[0, 10], [10, 20], [20, 30], [25, 35]])
    np.testing.assert_array_equal(upsample(K, np.array([3, 4]), 4, "repeat"), [[0, 10], [20, 30]])


# --- conditioning ---------------------------------------------------------------------------

def naive_conditioning(model, mel):
    x = mel.astype(np.float64)
    for layer in model.conditioning_layers:
        W = model.weights[layer["name"] + ".weight"]
        b = model.weights[layer["name"] + ".bias"]
        r = (layer["kernel"] - 1) // 2
        xp = np.pad(x, ((r, r), (0, 0)))
        y = np.array([b + sum(W[:, :, j] @ xp[p + j] for j in range(layer["kernel"]))
                      for p in range(len(x))])
        x = np.maximum(y, 0) if layer["activation"] == "relu" else y
    return x @ model.weights["cond.proj"].T + model.weights["gru.b"]


def test_conditioning_matches_definition(model):
    mel = random_mel(20)
    np.testing.assert_allclose(conditioning(model, mel), naive_conditioning(model, mel),
                               rtol=1e-4, atol=1e-4)


def test_conditioning_rows_need_only_their_context(model):
    mel, R = random_mel(40), receptive_radius(model)
    assert R == 3
    full = conditioning(model, mel, 8, 24)
    np.testing.assert_array_equal(conditioning(model, mel[:24 + R], 8, 24), full)
    np.testing.assert_allclose(full, conditioning(model, mel)[8:24], rtol=1e-5, atol=1e-6)


# --- the engine -----------------------------------------------------------------------------

def test_teacher_forced_probabilities(model):
    audio = np.random.default_rng(1).integers(-3000, 3000, 8 * HOP).astype(np.int16)
    probs = ReferenceEngine(model).teacher_forced(full_k(model, random_mel(8)), audio)
    assert probs.shape == (len(audio), 2, 256) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert probs.min() >= 0
    entropy = -(probs * np.log(probs + 1e-30)).sum(-1).mean()
    assert 1.0 < entropy < np.log(256) - 0.1  # neither saturated nor uniform


def test_coarse_probabilities_do_not_see_current_coarse(model):
    engine, K = ReferenceEngine(model), full_k(model, random_mel(4))
    audio = np.random.default_rng(2).integers(-3000, 3000, 4 * HOP).astype(np.int16)
    t = 37
    other = audio.copy()
    other[t] += 256 * 40  # another coarse class, same fine class
    p, q = engine.teacher_forced(K, audio), engine.teacher_forced(K, other)
    np.testing.assert_array_equal(p[:t + 1, 0], q[:t + 1, 0])  # P(c_t) unchanged
    np.testing.assert_array_equal(p[:t, 1], q[:t, 1])
    assert not np.array_equal(p[t, 1], q[t, 1])  # P(f_t) sees c_t
    assert not np.array_equal(p[t + 1, 0], q[t + 1, 0])  # and the next step sees it


@pytest.mark.parametrize("representation", [None, Representation("mulaw", 0.85),
                                            Representation("mulaw", 0.85, 0.995)])
def test_generate_is_deterministic_and_split_invariant(representation):
    model = small_model(representation=representation)
    engine, K = ReferenceEngine(model), full_k(model, random_mel(6))
    runs = {}
    for seed in (5, 5, 6):
        state = GenState.initial(H)
        runs.setdefault(seed, []).append(engine.generate(K, 0, 6 * HOP, state, seed))
        assert state.t == 6 * HOP
    np.testing.assert_array_equal(*runs[5])
    assert not np.array_equal(runs[5][0], runs[6][0])
    state = GenState.initial(H)
    parts = [engine.generate(K[:3], 0, 2 * HOP, state, 5),
             engine.generate(K[2:], 2 * HOP, 4 * HOP, state, 5)]
    np.testing.assert_array_equal(np.concatenate(parts), runs[5][0])


def test_generate_checks_its_arguments(model):
    engine, K = ReferenceEngine(model), full_k(model, random_mel(3))
    with pytest.raises(InputError, match="need 4 rows of K, got 3"):
        engine.generate(K[:3], 0, 3 * HOP, GenState.initial(H), 0)
    with pytest.raises(InputError, match="not a non-negative multiple of hop"):
        engine.generate(K, 3, HOP, GenState(np.zeros(H, np.float32), t=3), 0)
    with pytest.raises(InputError, match="state is at sample 0"):
        engine.generate(K, HOP, HOP, GenState.initial(H), 0)
    with pytest.raises(InputError, match="K must be float32"):
        engine.generate(K.astype(np.float64), 0, HOP, GenState.initial(H), 0)
    with pytest.raises(InputError, match="de-emphasis"):
        engine.generate(K, 0, HOP, GenState(np.zeros(H, np.float32), s_prev=np.nan), 0)
    with pytest.raises(InputError, match="float32, not int8"):
        ReferenceEngine(model, dtype="int8")


# --- the Vocoder ----------------------------------------------------------------------------

def test_synthesize(vocoder):
    out = vocoder.synthesize(random_mel(5), seed=3)
    assert out.dtype == np.int16 and out.shape == (5 * HOP,)
    assert out.std() > 100
    assert (vocoder.sample_rate, vocoder.n_mels, vocoder.hop_length) == (16000, N_MELS, HOP)
    assert (vocoder.dtype, vocoder.cpu, vocoder.backend) == ("float32", None, "reference")


def test_vocoder_conditioning_matches_definition(model, vocoder):
    mel = random_mel(2 * COND_BLOCK + 3)  # blocked K, with K_F := K_{F-1} appended
    audio = np.random.default_rng(3).integers(-900, 900, len(mel) * HOP).astype(np.int16)
    direct = ReferenceEngine(model).teacher_forced(full_k(model, mel), audio)
    np.testing.assert_allclose(vocoder.teacher_forced(audio, mel), direct, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sizes", [[1], [2, 0, 3], [COND_BLOCK], [COND_BLOCK + 3, 5],
                                   [7, 11, 13, 100], [40]])
@pytest.mark.parametrize("upsample_mode", ["linear", "repeat"])
def test_stream_equals_synthesize(sizes, upsample_mode, model):
    vocoder = jitvoc.load(model if upsample_mode == "linear" else small_model("repeat"),
                          engine=ReferenceEngine)
    mel = random_mel(2 * COND_BLOCK + 5, seed=4)
    bounds = np.cumsum(sizes * (len(mel) // sum(sizes) + 1))
    chunks = np.split(mel, bounds[bounds < len(mel)])
    pieces = list(vocoder.stream(iter(chunks), seed=9))
    assert all(len(p) > 0 and len(p) % HOP == 0 for p in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), vocoder.synthesize(mel, seed=9))


def test_stream_holds_back_only_what_needs_look_ahead(vocoder):
    gen = vocoder.stream(random_mel(1) for _ in range(COND_BLOCK + 3 + 1))
    assert len(next(gen)) == COND_BLOCK * HOP - HOP  # the block's last frame waits for K_{f+1}


def test_teacher_forced_through_vocoder(vocoder):
    audio = np.random.default_rng(5).integers(-500, 500, 3 * HOP - 4).astype(np.int16)
    probs = vocoder.teacher_forced(audio, random_mel(3))
    assert probs.shape == (len(audio), 2, 256)
    with pytest.raises(InputError, match="do not match 4 mel frames"):
        vocoder.teacher_forced(audio, random_mel(4))


@pytest.mark.parametrize("mel, problem", [
    (np.zeros((4, N_MELS + 1), np.float32), r"mel must be \[frames, 8\], got shape \(4, 9\)"),
    (np.zeros(N_MELS, np.float32), r"got shape \(8,\)"),
    (np.zeros((0, N_MELS), np.float32), "empty"),
    (np.full((2, N_MELS), np.nan, np.float32), "NaN or infinite"),
    (np.full((2, N_MELS), 1e300), "NaN or infinite"),  # overflows float32
    (np.zeros((2, N_MELS), np.int64), "float array"),
])
def test_bad_mel(vocoder, mel, problem):
    with pytest.raises(InputError, match=problem):
        vocoder.synthesize(mel)
    with pytest.raises(InputError, match=problem):
        list(vocoder.stream([random_mel(2), mel] if len(mel) else [mel]))


def test_load_arguments(model, tmp_path):
    with pytest.raises(InputError, match="engine must be an engine class"):
        jitvoc.load(model, engine="reference")
    with pytest.raises(InputError, match="dtype must be one of"):
        jitvoc.load(model, dtype="int4")
    with pytest.raises(InputError, match="float32, not int16"):
        jitvoc.load(model, dtype="int16", engine=ReferenceEngine)
    model.save(tmp_path / "m.npz")
    assert jitvoc.load(tmp_path / "m.npz", engine=ReferenceEngine).model.meta == model.meta
