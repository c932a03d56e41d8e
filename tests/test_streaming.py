"""stream() holds a bounded window of mel frames: its conditioning equals the whole mel's bit
for bit, and an hour of audio takes no more memory than a minute."""
import numpy as np
import pytest

import jitvoc
from jitvoc.model import random_model
from jitvoc.engine import blockwise_conditioning, conditioning
from jitvoc.vocoder import COND_BLOCK, _Conditioner, read_model

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
