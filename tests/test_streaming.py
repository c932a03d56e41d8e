"""stream() holds a bounded window of mel frames: its conditioning equals the whole mel's bit
for bit, and an hour of audio takes no more memory than a minute. synthesize computes K's first
blocks, then the rest on a thread while it generates their frames: the same samples as one call
over the whole K."""
import numpy as np
import pytest

import jitvoc
from jitvoc import vocoder
from jitvoc.blas import thread_counts
from jitvoc.errors import InputError
from jitvoc.model import random_model
from jitvoc.engine import GenState, blockwise_conditioning, conditioning
from jitvoc.vocoder import COND_BLOCK, FIRST_SHARE, _Conditioner, read_model

SR = 16000


@pytest.fixture(scope="module")
def model():
    return random_model(hidden=32, density=0.25, sample_rate=SR, n_mels=80, cond_channels=8)


@pytest.mark.parametrize("sizes", [[1] * 300, [7, 0, 50, 3] * 25, [299, 1]])
def test_windowed_conditioning_equals_the_whole_mel(model, sizes):
    mel = np.random.default_rng(0).standard_normal((sum(sizes), model.n_mels)).astype(np.float32)
    cond, rows = _Conditioner(model), []
    for chunk in np.split(mel, np.cumsum(sizes)[:-1]):
        cond.push(chunk)
        rows += list(cond.blocks(final=False))
    rows += list(cond.blocks(final=True))
    if max(sizes) < 100:   # the window really moved
        assert cond.first > 0 and len(cond._mel) < len(mel) // 2
    whole = [conditioning(model, mel, b, min(b + COND_BLOCK, len(mel)))
             for b in range(0, len(mel), COND_BLOCK)]
    assert np.array_equal(np.concatenate(rows), np.concatenate(whole))


@pytest.mark.parametrize("which", ["random", "shipped"])
@pytest.mark.parametrize("frames", [1, 15, 16, 17, 48, 301])
def test_blockwise_conditioning_is_the_blocks_bit_for_bit(model, which, frames):
    """synthesize's K (the full blocks stacked through each product) against stream's blocks."""
    m = model if which == "random" else read_model("multivoice_wavernn_16k")
    mel = np.random.default_rng(frames).standard_normal((frames, m.n_mels)).astype(np.float32)
    whole = [conditioning(m, mel, b, min(b + COND_BLOCK, frames))
             for b in range(0, frames, COND_BLOCK)]
    out = np.full((frames + 1, 3 * m.hidden), np.nan, np.float32)
    blockwise_conditioning(m, mel, COND_BLOCK, out)
    assert np.array_equal(out[:frames], np.concatenate(whole))
    assert np.isnan(out[frames]).all()   # only the rows asked for are written
    blocks = -(-frames // COND_BLOCK)
    for first, stop in ((1, None), (0, 1), (1, 2), (blocks - 1, blocks)):
        part = np.full_like(out, np.nan)
        blockwise_conditioning(m, mel, COND_BLOCK, part, first=first, stop=stop)
        rows = slice(first * COND_BLOCK, min(frames, (stop or blocks) * COND_BLOCK))
        assert np.array_equal(part[rows], out[rows])
        part[rows] = np.nan
        assert np.isnan(part).all()   # nothing outside blocks [first, stop)


@pytest.fixture(scope="module")
def voc(model):
    return jitvoc.load(jitvoc.calibrate(model), dtype="int8")


@pytest.mark.parametrize("frames", [1, 31, 32, 33, 16 * FIRST_SHARE * 2 + 5])
def test_synthesize_is_one_call_over_the_whole_k(voc, frames):
    """The first piece (generated while a thread computes the rest of K) and the rest, with
    and without progress pieces, against the engine called once over _conditioning's K."""
    mel = np.random.default_rng(frames).standard_normal((frames, voc.n_mels)).astype(np.float32)
    n = frames * voc.hop_length
    whole = voc._engine.generate(voc._conditioning(mel), 0, n, GenState.initial(32), 5)
    pieces = []
    assert np.array_equal(voc.synthesize(mel, seed=5), whole)
    assert np.array_equal(voc.synthesize(mel, seed=5, progress=pieces.append), whole)
    assert sum(pieces) == n and (frames < 2 * COND_BLOCK or len(pieces) >= 2)


def test_the_conditioning_thread_runs_on_one_blas_thread_and_reraises(voc, monkeypatch):
    mel = np.random.default_rng(0).standard_normal((100, voc.n_mels)).astype(np.float32)
    before, seen = thread_counts(), []

    def watched(model, mel, block, out, first=0, stop=None):
        seen.append(thread_counts())
        if first > 0:
            raise InputError("conditioning failed on the thread")
        return blockwise_conditioning(model, mel, block, out, first, stop)
    monkeypatch.setattr(vocoder, "blockwise_conditioning", watched)
    with pytest.raises(InputError, match="failed on the thread"):
        voc.synthesize(mel)
    assert len(seen) == 2 and all(c == [1] * len(c) for c in seen)
    assert thread_counts() == before


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.slow
def test_an_hour_of_streaming_takes_flat_memory(model):
    """Used to keep every frame: 90 MiB per hour at 80 mels."""
    voc = jitvoc.load(jitvoc.calibrate(model), dtype="int8")
    chunk = np.random.default_rng(0).standard_normal((400, model.n_mels)).astype(np.float32) - 5
    n_chunks = 3600 * SR // voc.hop_length // len(chunk)
    samples, rss = 0, []
    for i, piece in enumerate(voc.stream((chunk for _ in range(n_chunks)), seed=0)):
        samples += len(piece)
        if i % 1000 == 0:
            rss.append(_rss_mib())
    assert samples == 3600 * SR
    after_a_minute = rss[len(rss) // 60]
    assert max(rss) - after_a_minute < 4, rss
